"""Bad rows that the user asked to quarantine or skip instead of failing the job.

Readers and ``map_batches`` report bad rows to the ``BadRows`` collector of the task that is
running (a context variable: each task, even on a multi-threaded Dask worker, has its own).
At the end of the task the collector's rows are written to one Parquet file of the quarantine,
with the source file, line, byte offset, raw text and reason of every row.
"""

from __future__ import annotations

import contextvars
import json
import posixpath
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import polars as pl

from terabatch.errors import TerabatchError
from terabatch.io.storage import filesystem

MODES = ("fail", "quarantine", "skip")
QUARANTINE_SCHEMA = pl.Schema(
    {
        "file": pl.String,
        "line": pl.Int64,
        "offset": pl.Int64,
        "raw": pl.String,
        "reason": pl.String,
        "step": pl.String,
    }
)


def check_mode(name: str, mode: str) -> str:
    """Validate an ``on_bad_rows`` / ``on_error`` argument.

    >>> check_mode("on_bad_rows", "skip")
    'skip'
    """
    if mode not in MODES:
        raise TerabatchError(f"{name} must be 'fail', 'quarantine' or 'skip', not {mode!r}")
    return mode


@dataclass
class BadRows:
    """The bad rows one task met: counted always, kept when quarantining."""

    file: str = ""  # the task's input file, for rows a function rejects
    read: int = 0  # rows the reader dropped: they were read but never reached a batch
    rejected: int = 0  # rows a user function rejected after they were read
    first: str | None = None
    records: list[dict] = field(default_factory=list)

    @property
    def count(self) -> int:
        return self.read + self.rejected

    def add(
        self,
        mode: str,
        file: str,
        line: int | None,
        offset: int | None,
        raw: str,
        reason: str,
        step: str = "read",
    ) -> None:
        if step == "read":
            self.read += 1
        else:
            self.rejected += 1
        if self.first is None:
            where = f"line {line}" if line is not None else f"byte {offset}"
            self.first = f"{file}: {where}: {reason}"
        if mode == "quarantine":
            raw = _printable(raw)
            self.records.append(
                {
                    "file": file,
                    "line": line,
                    "offset": offset,
                    "raw": raw,
                    "reason": reason,
                    "step": step,
                }
            )

    def frame(self) -> pl.DataFrame:
        return pl.DataFrame(self.records, schema=QUARANTINE_SCHEMA, orient="row")

    def write(self, directory: str, name: str, storage_options: dict | None = None) -> str | None:
        """Write the quarantined rows as ``<directory>/<name>``; return its URL (None if none)."""
        if not self.records:
            return None
        fs, root = filesystem(directory, storage_options or {})
        fs.makedirs(root, exist_ok=True)
        path = posixpath.join(root, name)
        partial = path + ".partial"
        with fs.open(partial, "wb") as handle:
            self.frame().write_parquet(handle, compression="zstd", statistics=False)
        fs.mv(partial, path)  # whole or absent: a retried task rewrites the same bytes
        return directory.rstrip("/") + "/" + name


def _printable(raw: str) -> str:
    """Raw text as valid UTF-8: undecodable bytes (kept as surrogates) become U+FFFD."""
    try:
        data = raw.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        data = raw.encode("utf-8", "replace")
    return data.decode("utf-8", "replace")


_current: contextvars.ContextVar[BadRows | None] = contextvars.ContextVar(
    "terabatch_bad_rows", default=None
)


@contextmanager
def collecting(file: str = "") -> Iterator[BadRows]:
    """Collect the bad rows reported while the block runs (one task reading ``file``)."""
    bad = BadRows(file)
    token = _current.set(bad)
    try:
        yield bad
    finally:
        _current.reset(token)


def current() -> BadRows:
    """The running task's collector (a throwaway one outside of a task)."""
    bad = _current.get()
    return bad if bad is not None else BadRows()


def row_as_text(frame: pl.DataFrame, index: int) -> str:
    """A row of a frame as a JSON object, for the quarantine's ``raw`` column.

    >>> row_as_text(pl.DataFrame({"a": [1], "b": ["x"]}), 0)
    '{"a": 1, "b": "x"}'
    """
    return json.dumps(frame.row(index, named=True), default=str, ensure_ascii=False)
