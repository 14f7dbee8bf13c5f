"""Shuffle files, the writing side: map tasks write each row to one of P partitions.

A map task writes one Arrow IPC file (lz4), ``map-<task>/data.arrow`` under the shuffle
directory, whose record batches each hold rows of one partition, and ``map-<task>/index.json``
saying which batch holds which partition. Partition numbers come from Polars' seeded hash of the
key columns, which is the same in every process, or from key ranges for a sort. A reduce task
reads its partition from every map task in map-task order (``terabatch.io.shuffle_read``), so
rows keep their input order within a partition: ``first``, ``last`` and ``unique(keep="first")``
see the input as written.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass, field

import polars as pl
import pyarrow as pa

from terabatch.io.storage import filesystem, is_local

PARTITION_COLUMN = "__terabatch_partition"
# In memory, rows take about this many times their compressed IPC size (db-benchmark table,
# measured with zstd; lz4 files are larger, so the estimate errs on the safe side), and a reduce
# operation (Polars' group_by, sort) needs about as much again.
# lz4 rather than zstd: twice as fast to write and read (db-benchmark q3's partials: 38 against
# 62 ms per million rows written), for files 1.7 times larger.
EXPANSION, WORKING_FACTOR = 4, 2
# Compressed in the task's own thread: a worker has one core, and handing buffers to Arrow's
# threads cost a fifth more CPU (5 M rows of db-benchmark's x: 0.81 against 0.63 s).
_IPC_OPTIONS = pa.ipc.IpcWriteOptions(compression="lz4", use_threads=False)


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
    credentials: never shown, and left out of the job's key. A map task holds up to
    ``buffer_bytes`` of rows before writing them, partitioned, to its file.
    """

    directory: str
    keys: tuple[str, ...]
    partitions: int
    ranges: RangeSpec | None = None
    storage_options: dict | None = field(default=None, repr=False)
    buffer_bytes: int = 0


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


@dataclass(frozen=True)
class BatchEntry:
    """One record batch of a partitioned file: its partition, rows, bytes in the file and in
    memory (what reading it back takes)."""

    partition: int
    rows: int
    disk_bytes: int
    memory_bytes: int


def _open_output(fs, path: str):
    # Arrow's own file object writes without a Python call per buffer; fsspec's elsewhere.
    return pa.OSFile(path, "wb") if is_local(fs) else fs.open(path, "wb")


class PartitionedFile:
    """One Arrow IPC file whose record batches each hold rows of one partition.

    Rows arrive as frames numbered row by row; every write adds one batch per partition the
    frame has rows for, so a partition's rows stay in the order they were written. ``batches``
    indexes the file: batch ``i`` of the file is ``batches[i]``. One file per map task instead
    of one per partition: creating and opening hundreds of small files cost more than writing
    their rows (db-benchmark q1: 76 partitions by 20 map tasks), and on S3 each is an object.
    """

    def __init__(self, fs, path: str, buffer_bytes: int = 0) -> None:
        self.fs, self.path = fs, path
        self.fs.makedirs(posixpath.dirname(path), exist_ok=True)
        self.buffer_bytes = buffer_bytes
        self._handle = None
        self._writer: pa.ipc.RecordBatchFileWriter | None = None
        self._schema: pa.Schema | None = None
        self._held: list[pl.DataFrame] = []
        self._held_bytes = 0
        self.batches: list[BatchEntry] = []

    def write_numbered(self, frame: pl.DataFrame, numbers: pl.Series) -> None:
        """Append each row of ``frame`` to the partition its number in ``numbers`` names.

        Rows are held until ``buffer_bytes`` of them have come, then written at once: each
        write adds a batch per partition, and small batches cost a Python call each to write
        and a read each to every reduce task (db-benchmark q5 at 1e9: 8 M rows per map task
        into 1024 partitions took 48 k batches and 6.1 s to write when not held).
        """
        if frame.height == 0:
            return
        self._held.append(frame.with_columns(numbers.alias(PARTITION_COLUMN)))
        self._held_bytes += frame.estimated_size()
        if self._held_bytes >= self.buffer_bytes:
            self._flush()

    def _flush(self) -> None:
        """Write the held rows: sorted by partition (stably, so a partition's rows keep their
        order), one batch per partition, each a slice of one Arrow batch."""
        if not self._held:
            return
        held = pl.concat(self._held, how="vertical_relaxed", rechunk=False)
        self._held, self._held_bytes = [], 0
        numbers = held[PARTITION_COLUMN]
        if not numbers.is_sorted():  # bucketed pre-combining sends partitions in order
            # One chunk per column first: sorting a frame of several chunks gathers across
            # them, twice as slow (5 M rows of db-benchmark's x: 0.97 against 0.50 s,
            # rechunking 0.05 s).
            held = held.rechunk()
            held = held.sort(PARTITION_COLUMN, maintain_order=True)
            numbers = held[PARTITION_COLUMN]
        runs = numbers.rle()
        rows = held.drop(PARTITION_COLUMN)
        del held
        per_row = rows.estimated_size() / rows.height
        table = rows.to_arrow()
        if self._writer is None:
            self._schema = table.schema
            self._handle = _open_output(self.fs, self.path)
            self._writer = pa.ipc.new_file(self._handle, self._schema, options=_IPC_OPTIONS)
        if table.schema != self._schema:
            table = table.cast(self._schema)
        batch = table.combine_chunks().to_batches()[0]
        offset = 0
        for number, length in zip(
            runs.struct.field("value").to_list(), runs.struct.field("len").to_list(), strict=True
        ):
            start = self._handle.tell()
            self._writer.write_batch(batch.slice(offset, length))
            disk = self._handle.tell() - start
            self.batches.append(BatchEntry(number, length, disk, int(per_row * length)))
            offset += length

    def close(self) -> int:
        """Finish the file; return its bytes (0, and no file, when no row was written)."""
        self._flush()
        if self._writer is None:
            return 0
        self._writer.close()
        self._handle.close()
        self._writer = self._handle = None
        return self.fs.size(self.path)

    def abort(self) -> None:
        self._held, self._held_bytes = [], 0
        if self._writer is not None:
            try:
                self._writer.close()
            finally:
                self._handle.close()
        self._writer = self._handle = None


DATA_FILE, INDEX_FILE = "data.arrow", "index.json"


class ShuffleWriter(PartitionedFile):
    """One map task's rows, partitioned: ``data.arrow`` and its index, ``index.json``."""

    def __init__(self, sink: ShuffleSink, attempt_dir: str) -> None:
        fs, root = filesystem(attempt_dir, sink.storage_options or {})
        super().__init__(fs, posixpath.join(root, DATA_FILE), sink.buffer_bytes)
        self.root = root
        self.sink = sink

    def write(self, frame: pl.DataFrame) -> None:
        if frame.height == 0:
            return
        if self.sink.ranges is not None:
            numbers = range_partition_of(frame, self.sink.ranges)
        else:
            numbers = partition_of(frame, self.sink.keys, self.sink.partitions)
        self.write_numbered(frame, numbers)

    def close(self) -> int:
        """Finish the data file and write the index; return the bytes of both."""
        nbytes = super().close()
        rows = [[b.partition, b.rows, b.disk_bytes, b.memory_bytes] for b in self.batches]
        index = json.dumps({"batches": rows}).encode()
        with self.fs.open(posixpath.join(self.root, INDEX_FILE), "wb") as handle:
            handle.write(index)
        return nbytes + len(index)
