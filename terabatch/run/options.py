"""Run options: what every terminal method (``collect``, ``write_*``, ...) and the CLI accept.

``RunKwargs`` is the keyword set users write; ``run_options`` validates it once into the frozen
``RunOptions`` that the driver reads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, TypedDict

from terabatch.errors import TerabatchError
from terabatch.run.memory import parse_size


@dataclass(frozen=True)
class RunOptions:
    """How to run a job.

    ``executor`` is None for local worker processes, an executor object (``InlineExecutor`` in
    tests), a ``"dask://host:port"`` address or a ``distributed.Client``. ``spill_limit`` caps
    the bytes of shuffle files (default: 90 % of the free disk space). ``run_dir`` holds the
    run state and the shuffle files (default: ``.terabatch`` beside the output), reached with
    the ``storage_options`` of ``write_*``; ``resume`` is None to resume an
    unfinished run of the same job when one exists, True to require one, False to start afresh.
    ``max_bad_rows`` aborts a job with more quarantined or skipped rows than this count (an
    int) or share of the rows read (a float below 1).
    """

    workers: int | None = None
    memory: int | None = None
    progress: bool = True
    max_retries: int = 3
    executor: Any = None
    spill_limit: int | None = None
    run_dir: str | None = None
    resume: bool | None = None
    max_bad_rows: int | float | None = None


class RunKwargs(TypedDict, total=False):
    """The run options as keyword arguments (see ``RunOptions``)."""

    workers: int | None
    memory: str | int | None
    progress: bool
    max_retries: int
    executor: Any
    spill_limit: str | int | None
    run_dir: str | os.PathLike | None
    resume: bool | None
    max_bad_rows: int | float | None


def run_options(progress: bool = True, **run: Any) -> RunOptions:
    """Validate run keyword arguments into ``RunOptions``.

    >>> run_options(workers=2, memory="1GB").memory
    1073741824
    """
    unknown = sorted(set(run) - set(RunKwargs.__annotations__))
    if unknown:
        allowed = ", ".join(sorted(RunKwargs.__annotations__))
        raise TerabatchError(f"unknown run option {unknown[0]!r}; the run options are {allowed}")
    workers = run.get("workers")
    if workers is not None and workers < 1:
        raise TerabatchError(f"workers must be at least 1, not {workers}")
    retries = run.get("max_retries", 3)
    if not isinstance(retries, int) or retries < 0:
        raise TerabatchError(f"max_retries must be a whole number >= 0, not {retries!r}")
    bad = run.get("max_bad_rows")
    if bad is not None and (
        isinstance(bad, bool)
        or not isinstance(bad, int | float)
        or bad < 0
        or (isinstance(bad, float) and bad >= 1)
    ):
        raise TerabatchError(
            f"max_bad_rows must be a count (an int >= 0) or a share of the rows read "
            f"(a float between 0 and 1), not {bad!r}"
        )
    resume = run.get("resume")
    if resume not in (None, True, False):
        raise TerabatchError(f"resume must be True, False or None, not {resume!r}")
    run_dir = run.get("run_dir")
    return RunOptions(
        workers=workers,
        memory=parse_size(run.get("memory")),
        progress=progress,
        max_retries=retries,
        executor=run.get("executor"),
        spill_limit=parse_size(run.get("spill_limit")),
        run_dir=None if run_dir is None else os.fspath(run_dir),
        resume=resume,
        max_bad_rows=bad,
    )
