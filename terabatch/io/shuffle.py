"""Hash shuffle files: map tasks write each row to one of P partitions; reduce task i reads all.

A map task writes ``map-<task>/part-<p>.arrow`` (Arrow IPC, zstd) under the shuffle directory,
one file per partition it has rows for. Partition numbers come from Polars' seeded hash of the
key columns, which is the same in every process. A reduce task reads its partition from every
map task in map-task order, so rows keep their input order within a partition: ``first``,
``last`` and ``unique(keep="first")`` see the input as written.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from dataclasses import dataclass

import polars as pl
import pyarrow as pa
from fsspec.core import url_to_fs

from terabatch.errors import PartitionTooLargeError
from terabatch.io.sources import Batch

PARTITION_COLUMN = "__terabatch_partition"
# In memory, rows take about this many times their zstd-compressed IPC size (db-benchmark
# table), and a reduce operation (Polars' group_by, sort) needs about as much again.
EXPANSION, WORKING_FACTOR = 4, 2
_IPC_OPTIONS = pa.ipc.IpcWriteOptions(compression="zstd")


@dataclass(frozen=True, eq=False)
class RangeSpec:
    """Range partitioning for a sort: rows go between consecutive ``boundaries`` rows."""

    by: tuple[str, ...]
    descending: tuple[bool, ...]
    nulls_last: bool
    boundaries: pl.DataFrame | None = None


@dataclass(frozen=True, eq=False)
class ShuffleSink:
    """Partition a map task's rows into files: by a hash of ``keys`` (all columns if empty),
    or by key ranges when ``ranges`` is given."""

    directory: str
    keys: tuple[str, ...]
    partitions: int
    ranges: RangeSpec | None = None


def range_partition_of(frame: pl.DataFrame, spec: RangeSpec) -> pl.Series:
    """The range each row falls in: how many boundaries sort before it.

    Boundaries are placed before equal rows, so all rows with one key land in one range.

    >>> spec = RangeSpec(("x",), (False,), False, pl.DataFrame({"x": [10, 20]}))
    >>> range_partition_of(pl.DataFrame({"x": [25, 5, 10, 15]}), spec).to_list()
    [2, 0, 1, 1]
    """
    keys = frame.select(spec.by)
    bounds = spec.boundaries
    if bounds is None or bounds.height == 0:
        return pl.Series(PARTITION_COLUMN, [0] * frame.height, dtype=pl.UInt32)
    tagged = pl.concat(
        [
            bounds.select(spec.by).with_columns(_b=pl.lit(1, pl.UInt32), _i=pl.lit(-1)),
            keys.with_columns(_b=pl.lit(0, pl.UInt32), _i=pl.int_range(pl.len())),
        ],
        how="vertical_relaxed",
    )
    ordered = tagged.sort(
        list(spec.by),
        descending=list(spec.descending),
        nulls_last=spec.nulls_last,
        maintain_order=True,
    ).with_columns(_p=pl.col("_b").cum_sum())
    rows = ordered.filter(pl.col("_b") == 0).sort("_i")
    return rows["_p"].alias(PARTITION_COLUMN)


def boundaries_from_sample(sample: pl.DataFrame, spec: RangeSpec, partitions: int) -> pl.DataFrame:
    """``partitions - 1`` rows that cut the sorted sample into equal parts.

    >>> spec = RangeSpec(("x",), (False,), False)
    >>> boundaries_from_sample(pl.DataFrame({"x": list(range(100))}), spec, 4)["x"].to_list()
    [25, 50, 75]
    """
    ordered = sample.sort(
        list(spec.by), descending=list(spec.descending), nulls_last=spec.nulls_last
    )
    if ordered.height == 0 or partitions < 2:
        return ordered.clear()
    picks = [ordered.height * i // partitions for i in range(1, partitions)]
    return ordered[picks]


def _mib(nbytes: float) -> str:
    return f"{nbytes / 2**20:,.0f}"


def partition_of(frame: pl.DataFrame, keys: tuple[str, ...], partitions: int) -> pl.Series:
    """The partition number of every row: a seeded hash of the keys, modulo ``partitions``.

    >>> partition_of(pl.DataFrame({"k": ["a", "b", "a"]}), ("k",), 4).to_list()[0] in range(4)
    True
    """
    columns = pl.struct(list(keys)) if keys else pl.struct(pl.all())
    hashed = frame.select(columns.hash(seed=0) % partitions).to_series()
    return hashed.alias(PARTITION_COLUMN)


def map_dir(directory: str, task_id: int) -> str:
    return posixpath.join(directory, f"map-{task_id:05d}")


def partition_file(directory: str, task_id: int, partition: int) -> str:
    return posixpath.join(map_dir(directory, task_id), f"part-{partition:05d}.arrow")


class ShuffleWriter:
    """One map task's partition files, opened as rows for them arrive."""

    def __init__(self, sink: ShuffleSink, attempt_dir: str) -> None:
        self.sink = sink
        self.fs, self.root = url_to_fs(attempt_dir)
        self.fs.makedirs(self.root, exist_ok=True)
        self._writers: dict[int, tuple[object, pa.ipc.RecordBatchFileWriter, pa.Schema]] = {}

    def write(self, frame: pl.DataFrame) -> None:
        if frame.height == 0:
            return
        if self.sink.ranges is not None:
            numbers = range_partition_of(frame, self.sink.ranges)
        else:
            numbers = partition_of(frame, self.sink.keys, self.sink.partitions)
        parts = frame.with_columns(numbers)
        for (number,), part in parts.partition_by(
            PARTITION_COLUMN, as_dict=True, include_key=False, maintain_order=True
        ).items():
            table = part.to_arrow()
            writer, schema = self._open(int(number), table.schema)
            writer.write_table(table.cast(schema) if table.schema != schema else table)

    def _open(self, number: int, schema: pa.Schema):
        if number not in self._writers:
            path = posixpath.join(self.root, f"part-{number:05d}.arrow")
            handle = self.fs.open(path, "wb")
            writer = pa.ipc.new_file(handle, schema, options=_IPC_OPTIONS)
            self._writers[number] = (handle, writer, schema)
        _, writer, schema = self._writers[number]
        return writer, schema

    def close(self) -> int:
        """Finish every file; return the bytes written."""
        total = 0
        for number, (handle, writer, _) in self._writers.items():
            writer.close()
            handle.close()
            total += self.fs.size(posixpath.join(self.root, f"part-{number:05d}.arrow"))
        self._writers.clear()
        return total

    def abort(self) -> None:
        for handle, writer, _ in self._writers.values():
            try:
                writer.close()
            finally:
                handle.close()
        self._writers.clear()


@dataclass(frozen=True)
class ShufflePartition:
    """Partition ``index`` of a shuffle: the split of one reduce task."""

    index: int
    nbytes: int = 0

    def describe(self) -> str:
        return f"shuffle partition {self.index}"


@dataclass(frozen=True)
class ShuffleSource:
    """The rows a shuffle's map stage wrote, read back one whole partition at a time."""

    directory: str
    map_tasks: int
    keys: tuple[str, ...] = ()
    data_room: int | None = None
    format: str = "shuffle"

    def read(
        self, split: ShufflePartition, columns: list[str] | None, chunk_bytes: int
    ) -> Iterator[Batch]:
        fs, _ = url_to_fs(self.directory)
        paths = [
            path
            for task_id in range(self.map_tasks)
            if fs.exists(path := partition_file(self.directory, task_id, split.index))
        ]
        self._check_fits(fs, paths, split)
        frames = []
        for path in paths:
            with fs.open(path, "rb") as handle:
                frames.append(pl.from_arrow(pa.ipc.open_file(handle).read_all()))
        if frames:
            yield Batch(pl.concat(frames, how="vertical_relaxed"), split.describe)

    def _check_fits(self, fs, paths: list[str], split: ShufflePartition) -> None:
        """Stop before loading a partition that cannot fit, naming its heaviest key.

        One key's rows always meet in one partition, so a key holding most of the data (skew)
        makes one partition too large for any partition count; better a clear error than a
        worker killed for running out of memory.
        """
        if self.data_room is None or not paths:
            return
        on_disk = {path: fs.size(path) for path in paths}
        needed = sum(on_disk.values()) * EXPANSION * WORKING_FACTOR
        if needed <= self.data_room:
            return
        raise PartitionTooLargeError(
            f"{split.describe()} holds about {_mib(sum(on_disk.values()) * EXPANSION)} MiB of "
            f"rows{self._heaviest_key(fs, max(on_disk, key=on_disk.get))}, more than a worker's "
            f"{_mib(self.data_room)} MiB of room allows; raise memory= (a group_by whose "
            "aggregations combine per batch, like sum, mean, count, min and max, and a join "
            "whose right side is small avoid this)"
        )

    def _heaviest_key(self, fs, path: str) -> str:
        if not self.keys:
            return ""
        with fs.open(path, "rb") as handle:
            keys = pl.from_arrow(pa.ipc.open_file(handle).read_all().select(list(self.keys)))
        top = keys.group_by(list(self.keys)).len().sort("len", descending=True).row(0, named=True)
        count = top.pop("len")
        return f"; key {top} alone has {count:,} rows in one map task's output"


@dataclass(frozen=True, eq=False)
class JoinSource:
    """Partition i of both sides of a join, joined: every row of a key is in partition i."""

    left: ShuffleSource
    right: ShuffleSource
    left_schema: pl.Schema
    right_schema: pl.Schema
    left_on: tuple[str, ...]
    right_on: tuple[str, ...]
    how: str
    suffix: str
    format: str = "join"

    def read(
        self, split: ShufflePartition, columns: list[str] | None, chunk_bytes: int
    ) -> Iterator[Batch]:
        left = _one_frame(self.left.read(split, None, chunk_bytes), self.left_schema)
        right = _one_frame(self.right.read(split, None, chunk_bytes), self.right_schema)
        joined = left.join(
            right,
            left_on=list(self.left_on),
            right_on=list(self.right_on),
            how=self.how,
            suffix=self.suffix,
            maintain_order="left_right",
        )
        if joined.height:
            yield Batch(joined, split.describe)


def _one_frame(batches: Iterator[Batch], schema: pl.Schema) -> pl.DataFrame:
    frames = [batch.frame for batch in batches]
    return pl.concat(frames, how="vertical_relaxed") if frames else pl.DataFrame(schema=schema)
