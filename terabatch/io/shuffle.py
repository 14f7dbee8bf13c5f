"""Shuffle files, the writing side: map tasks write each row to one of P partitions.

A map task writes ``map-<task>/part-<p>.arrow`` (Arrow IPC, lz4) under the shuffle directory,
one file per partition it has rows for. Partition numbers come from Polars' seeded hash of the
key columns, which is the same in every process, or from key ranges for a sort. A reduce task
reads its partition from every map task in map-task order (``terabatch.io.shuffle_read``), so
rows keep their input order within a partition: ``first``, ``last`` and ``unique(keep="first")``
see the input as written.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field

import polars as pl
import pyarrow as pa

from terabatch.io.storage import filesystem

PARTITION_COLUMN = "__terabatch_partition"
# In memory, rows take about this many times their compressed IPC size (db-benchmark table,
# measured with zstd; lz4 files are larger, so the estimate errs on the safe side), and a reduce
# operation (Polars' group_by, sort) needs about as much again.
# lz4 rather than zstd: twice as fast to write and read (db-benchmark q3's partials: 38 against
# 62 ms per million rows written), for files 1.7 times larger.
EXPANSION, WORKING_FACTOR = 4, 2
_IPC_OPTIONS = pa.ipc.IpcWriteOptions(compression="lz4")


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
    or by key ranges when ``ranges`` is given.

    ``storage_options`` reach ``directory`` (in the run directory, on S3 say). They hold
    credentials: never shown, and left out of the job's key.
    """

    directory: str
    keys: tuple[str, ...]
    partitions: int
    ranges: RangeSpec | None = None
    storage_options: dict | None = field(default=None, repr=False)


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


def partition_of(
    frame: pl.DataFrame, keys: tuple[str, ...], partitions: int, seed: int = 0
) -> pl.Series:
    """The partition number of every row: a seeded hash of the keys, modulo ``partitions``.

    The map side hashes with seed 0; a reduce task that splits its partition again hashes with
    another seed, under which the rows of one seed-0 partition spread evenly.

    >>> partition_of(pl.DataFrame({"k": ["a", "b", "a"]}), ("k",), 4).to_list()[0] in range(4)
    True
    """
    if len(keys) == 1:
        columns = pl.col(keys[0])  # hashing a column is 4x faster than a one-field struct
    else:
        columns = pl.struct(list(keys)) if keys else pl.struct(pl.all())
    hashed = frame.select(columns.hash(seed=seed) % partitions).to_series()
    return hashed.alias(PARTITION_COLUMN)


def map_dir(directory: str, task_id: int) -> str:
    return posixpath.join(directory, f"map-{task_id:05d}")


def partition_file(directory: str, task_id: int, partition: int) -> str:
    return posixpath.join(map_dir(directory, task_id), f"part-{partition:05d}.arrow")


class PartitionFiles:
    """Numbered Arrow IPC files in the directory ``root`` of ``fs``, opened as rows arrive."""

    def __init__(self, fs, root: str) -> None:
        self.fs, self.root = fs, root
        self.fs.makedirs(self.root, exist_ok=True)
        self._writers: dict[int, tuple[object, pa.ipc.RecordBatchFileWriter, pa.Schema]] = {}
        # Bytes in memory of the rows written to each file: what reading it back will take.
        self.memory: dict[int, int] = {}

    def path(self, number: int) -> str:
        return posixpath.join(self.root, f"part-{number:05d}.arrow")

    def write_numbered(self, frame: pl.DataFrame, numbers: pl.Series) -> None:
        """Append each row of ``frame`` to the file its number in ``numbers`` names."""
        if frame.height == 0:
            return
        parts = frame.with_columns(numbers.alias(PARTITION_COLUMN))
        for (number,), part in parts.partition_by(
            PARTITION_COLUMN, as_dict=True, include_key=False, maintain_order=True
        ).items():
            table = part.to_arrow()
            self.memory[int(number)] = self.memory.get(int(number), 0) + part.estimated_size()
            writer, schema = self._open(int(number), table.schema)
            writer.write_table(table.cast(schema) if table.schema != schema else table)

    def _open(self, number: int, schema: pa.Schema):
        if number not in self._writers:
            handle = self.fs.open(self.path(number), "wb")
            writer = pa.ipc.new_file(handle, schema, options=_IPC_OPTIONS)
            self._writers[number] = (handle, writer, schema)
        _, writer, schema = self._writers[number]
        return writer, schema

    def close_files(self) -> dict[int, int]:
        """Finish every file; return the bytes of each, by number."""
        sizes = {}
        for number, (handle, writer, _) in sorted(self._writers.items()):
            writer.close()
            handle.close()
            sizes[number] = self.fs.size(self.path(number))
        self._writers.clear()
        return sizes

    def close(self) -> int:
        """Finish every file; return the bytes written."""
        return sum(self.close_files().values())

    def abort(self) -> None:
        for handle, writer, _ in self._writers.values():
            try:
                writer.close()
            finally:
                handle.close()
        self._writers.clear()


class ShuffleWriter(PartitionFiles):
    """One map task's partition files."""

    def __init__(self, sink: ShuffleSink, attempt_dir: str) -> None:
        super().__init__(*filesystem(attempt_dir, sink.storage_options or {}))
        self.sink = sink

    def write(self, frame: pl.DataFrame) -> None:
        if frame.height == 0:
            return
        if self.sink.ranges is not None:
            numbers = range_partition_of(frame, self.sink.ranges)
        else:
            numbers = partition_of(frame, self.sink.keys, self.sink.partitions)
        self.write_numbered(frame, numbers)
