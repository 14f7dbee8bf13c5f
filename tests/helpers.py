"""Helpers shared by the tests: data generators and checks (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import polars as pl
from polars.testing import assert_frame_equal

from terabatch.errors import TerabatchError
from terabatch.exec.inline import InlineExecutor
from terabatch.io.sinks import CollectSink
from terabatch.run.job import RunOptions, run

INLINE = RunOptions(progress=False, executor=InlineExecutor())


def make_frame(n: int, seed: int = 0, start: int = 0) -> pl.DataFrame:
    """A frame with an id column, ints, floats, strings with commas and quotes, bools and nulls."""
    rng = random.Random(seed)
    words = ["alpha", "beta", 'say "hi"', "a,b", "ünïcödé", "x y"]
    return pl.DataFrame(
        {
            "id": list(range(start, start + n)),
            "group": [rng.choice(["a", "b", "c", "d"]) for _ in range(n)],
            "value": [rng.randint(-1000, 1000) for _ in range(n)],
            "score": [
                None if rng.random() < 0.1 else round(rng.random() * 100, 3) for _ in range(n)
            ],
            "text": [None if rng.random() < 0.1 else rng.choice(words) for _ in range(n)],
            "flag": [rng.random() < 0.5 for _ in range(n)],
        }
    )


def reference_csv(paths: list[Path] | Path, **kwargs) -> pl.DataFrame:
    """Polars' reading of CSV files, concatenated in the given order."""
    paths = paths if isinstance(paths, list) else [paths]
    return pl.concat([pl.read_csv(p, **kwargs) for p in paths])


def one_line_error(exc: BaseException) -> str:
    """The message of a terabatch error, checked to be a TerabatchError with a one-line message."""
    assert isinstance(exc, TerabatchError), f"{type(exc).__name__} is not a TerabatchError: {exc}"
    text = str(exc)
    assert text and "\n" not in text, f"message is not one line: {text!r}"
    return text


def files_under(root: Path) -> dict[str, bytes]:
    """Every file under ``root``, by relative path, with its bytes."""
    found = {}
    for folder, _, names in os.walk(root):
        for name in names:
            full = Path(folder) / name
            found[full.relative_to(root).as_posix()] = full.read_bytes()
    return found


def visible_files(root: Path) -> dict[str, bytes]:
    """The files a reader of ``root`` sees: none under a name starting with ``_`` or ``.``."""
    return {
        path: data
        for path, data in files_under(root).items()
        if not any(part.startswith(("_", ".")) for part in path.split("/"))
    }


def collect_inline(ds) -> pl.DataFrame:
    """Run a dataset's plan on the inline executor (every task in this process)."""
    frame = run(ds._plan, CollectSink(), INLINE).frame
    assert frame is not None
    return frame


def same_rows(got: pl.DataFrame, want: pl.DataFrame, keys: list[str]) -> None:
    """Equal frames once both are sorted on ``keys`` (for results in no particular order)."""
    assert_frame_equal(
        got.sort(keys, nulls_last=True), want.sort(keys, nulls_last=True), check_exact=False
    )
