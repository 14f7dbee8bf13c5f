"""Where a task's rows go: files in a staging directory, or back to the driver.

Writers stream batch by batch. Partitioned writes keep one open file per partition value and
buffer small slices per partition so that row groups do not shrink to a few rows; names derive
from the task id only, so a rerun writes the same names and bytes.
"""

from __future__ import annotations

import contextlib
import posixpath
from dataclasses import dataclass, field
from datetime import date, datetime
from urllib.parse import quote

import fsspec
import polars as pl
import pyarrow.parquet as pq

from terabatch.io.parquet import HIVE_NULL
from terabatch.io.storage import filesystem, is_local

FILE_FORMATS = ("parquet", "csv", "json")
CODECS = {
    "parquet": ("zstd", "snappy", "gzip", "lz4", "brotli", "none", None),
    "csv": ("gzip", "zstd", "bz2", "none", None),
    "json": ("gzip", "zstd", "bz2", "none", None),
}
EXTENSIONS = {"parquet": "parquet", "csv": "csv", "json": "jsonl"}
_BUFFER_BYTES = 64 << 20
# Each open file on an object store buffers one upload part: with many partitions open at once,
# s3fs' default of 50 MiB per file would take gigabytes. 8 MiB parts allow files up to 80 GB.
_UPLOAD_PART_BYTES = 8 << 20


@dataclass(frozen=True)
class FileSink:
    """Write files of ``format`` under a staging directory (chosen per task attempt)."""

    format: str
    compression: str | None = "zstd"
    compression_level: int | None = None
    partition_by: tuple[str, ...] = ()
    max_rows_per_file: int | None = None
    row_group_rows: int = 1 << 20
    # Never shown: storage options hold credentials.
    storage_options: dict | None = field(default=None, repr=False)


@dataclass(frozen=True)
class CollectSink:
    """Return the task's rows to the driver (results that fit in memory)."""


@dataclass(frozen=True)
class SpillSink:
    """Write the task's rows to an Arrow IPC file for the driver to stream back in order."""

    storage_options: dict | None = field(default=None, repr=False)


@dataclass(frozen=True)
class CountSink:
    """Return only the number of rows."""


Sink = FileSink | CollectSink | SpillSink | CountSink


@dataclass(frozen=True)
class WrittenFile:
    """A file a task wrote: path relative to the output root, rows, bytes."""

    path: str
    rows: int
    bytes: int


def partition_dir(keys: tuple[str, ...], values: tuple) -> str:
    """Hive-style directory for one partition value.

    >>> partition_dir(("day", "kind"), ("2026-01-01", "a/b"))
    'day=2026-01-01/kind=a%2Fb'
    """
    parts = []
    for key, value in zip(keys, values, strict=True):
        if value is None:
            text = HIVE_NULL
        elif isinstance(value, datetime | date):
            text = value.isoformat()
        else:
            text = str(value)
        parts.append(f"{key}={quote(text, safe='-_.: ')}")
    return "/".join(parts)


def dictionary_columns(frame: pl.DataFrame, sample_rows: int = 50_000) -> list[str]:
    """Columns worth dictionary-encoding: few distinct values in a sample of the first batch.

    Dictionary encoding a column of mostly distinct values costs time and then falls back to
    plain encoding anyway; skipping it makes writing about a fifth faster on typical data.

    >>> dictionary_columns(pl.DataFrame({"k": ["a", "b"] * 50, "v": list(range(100))}))
    ['k']
    """
    sample = frame.head(sample_rows)
    if sample.height == 0:
        return list(frame.columns)
    try:
        distinct = sample.select(pl.all().n_unique()).row(0)
    except pl.exceptions.PolarsError:
        return list(frame.columns)
    return [
        name for name, n in zip(frame.columns, distinct, strict=True) if n <= sample.height // 2
    ]


class _OneFile:
    """One output file being written, in any of the file formats."""

    def __init__(
        self, sink: FileSink, fs: fsspec.AbstractFileSystem, root: str, relative: str
    ) -> None:
        self.sink, self.fs, self.relative = sink, fs, relative
        self.path = f"{root}/{relative}"
        self.rows = 0
        fs.makedirs(posixpath.dirname(self.path), exist_ok=True)
        text_codec = sink.compression if sink.format != "parquet" else None
        block = {} if is_local(fs) else {"block_size": _UPLOAD_PART_BYTES}
        self._handle = fs.open(self.path, "wb", compression=text_codec, **block)
        self._parquet: pq.ParquetWriter | None = None

    def write(self, frame: pl.DataFrame) -> None:
        if self.sink.format == "parquet":
            # Arrow string views convert from Polars without a copy; store_schema=False keeps
            # the files readable by tools that do not know view types.
            table = frame.to_arrow(compat_level=pl.CompatLevel.newest())
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(
                    self._handle,
                    table.schema,
                    compression=self.sink.compression or "none",
                    compression_level=self.sink.compression_level,
                    write_statistics=True,
                    store_schema=False,
                    use_dictionary=dictionary_columns(frame),
                )
            elif table.schema != self._parquet.schema:
                table = table.cast(self._parquet.schema)
            self._parquet.write_table(table, row_group_size=self.sink.row_group_rows)
        elif self.sink.format == "csv":
            frame.write_csv(self._handle, include_header=self.rows == 0)
        else:
            frame.write_ndjson(self._handle)
        self.rows += frame.height

    def close(self) -> int:
        if self._parquet is not None:
            self._parquet.close()
        self._handle.close()
        return self.fs.size(self.path)


class FileWriter:
    """Write one task's batches as files ``part-<task>-<n>.<ext>`` under ``root``."""

    def __init__(self, sink: FileSink, root: str, task_id: int) -> None:
        self.sink, self.root, self.task_id = sink, root.rstrip("/"), task_id
        self.fs, _ = filesystem(root, sink.storage_options or {})
        self.written: list[WrittenFile] = []
        self._open: dict[tuple, _OneFile] = {}
        self._sequence: dict[tuple, int] = {}
        self._pending: dict[tuple, list[pl.DataFrame]] = {}
        self._pending_bytes = 0

    def _relative(self, key: tuple) -> str:
        n = self._sequence.get(key, 0)
        self._sequence[key] = n + 1
        name = f"part-{self.task_id:05d}-{n:03d}.{EXTENSIONS[self.sink.format]}"
        if self.sink.format != "parquet" and self.sink.compression:
            name += {"gzip": ".gz", "zstd": ".zst", "bz2": ".bz2"}[self.sink.compression]
        if not self.sink.partition_by:
            return name
        return posixpath.join(partition_dir(self.sink.partition_by, key), name)

    def write(self, frame: pl.DataFrame) -> None:
        if not self.sink.partition_by:
            self._emit((), frame)
            return
        keys = list(self.sink.partition_by)
        # Parquet readers take hive keys from the directories; CSV and JSON readers usually do
        # not, so text files keep the key columns.
        include_key = self.sink.format != "parquet"
        for key, part in frame.partition_by(
            keys, as_dict=True, include_key=include_key, maintain_order=True
        ).items():
            self._pending.setdefault(key, []).append(part)
            self._pending_bytes += part.estimated_size()
            if sum(p.height for p in self._pending[key]) >= self.sink.row_group_rows:
                self._flush(key)
        while self._pending_bytes > _BUFFER_BYTES and self._pending:
            largest = max(
                self._pending, key=lambda k: sum(p.estimated_size() for p in self._pending[k])
            )
            self._flush(largest)

    def _flush(self, key: tuple) -> None:
        parts = self._pending.pop(key, [])
        if parts:
            frame = pl.concat(parts)
            self._pending_bytes -= sum(p.estimated_size() for p in parts)
            self._emit(key, frame)

    def _emit(self, key: tuple, frame: pl.DataFrame) -> None:
        limit = self.sink.max_rows_per_file
        while frame.height:
            current = self._open.get(key)
            if current is None:
                current = _OneFile(self.sink, self.fs, self.root, self._relative(key))
                self._open[key] = current
            room = frame.height if limit is None else limit - current.rows
            current.write(frame.slice(0, room))
            frame = frame.slice(room)
            if limit is not None and current.rows >= limit:
                self._close(key)

    def _close(self, key: tuple) -> None:
        current = self._open.pop(key)
        size = current.close()
        self.written.append(WrittenFile(current.relative, current.rows, size))

    def write_empty(self, frame: pl.DataFrame) -> None:
        """Write one file with no rows, so that an empty result still records its columns."""
        name = f"part-{self.task_id:05d}-000.{EXTENSIONS[self.sink.format]}"
        empty = _OneFile(self.sink, self.fs, self.root, name)
        empty.write(frame.clear())
        self.written.append(WrittenFile(name, 0, empty.close()))

    def close(self) -> list[WrittenFile]:
        for key in list(self._pending):
            self._flush(key)
        for key in list(self._open):
            self._close(key)
        return sorted(self.written, key=lambda w: w.path)

    def abort(self) -> None:
        for current in self._open.values():
            with contextlib.suppress(Exception):
                current.close()
        self._open.clear()
