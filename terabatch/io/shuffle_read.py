"""Shuffle files, the reading side: reduce task i reads partition i from every map task.

A partition that fits the worker's room is read whole, as one batch. A larger one is reduced in
pieces (``terabatch.io.repartition``), one batch per piece; every reduce operation gives exact
results piece by piece, because a piece holds every row of its keys (or, for a sort, a key
range). A join whose matches would not fit is joined in pieces too, and a key whose rows or
matches alone exceed the room stops the task with an error naming the key.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import fsspec
import polars as pl

from terabatch.errors import PartitionTooLargeError
from terabatch.io.repartition import Piece, Segment, Splitter, fanout, fits, load
from terabatch.io.shuffle import (
    DATA_FILE,
    INDEX_FILE,
    WORKING_FACTOR,
    RangeSpec,
    map_dir,
    partition_of,
)
from terabatch.io.sources import Batch
from terabatch.io.storage import filesystem
from terabatch.run.memory import format_size

# A join split in memory, by output size, hashes with a seed no split on disk uses.
IN_MEMORY_SEED = 97


@dataclass(frozen=True)
class ShufflePartition:
    """Partitions ``index`` to ``index + count - 1`` of shuffle number ``shuffle``: the split
    of one reduce task (several small partitions are reduced together).

    ``pieces`` says where their rows are (one piece, or a join's left and right), once the
    driver has read the map tasks' indexes; without it the task reads them itself.
    """

    index: int
    nbytes: int = 0
    shuffle: int = 1
    count: int = 1
    pieces: tuple[Piece, ...] = field(default=(), repr=False, compare=False)

    def describe(self) -> str:
        if self.count == 1:
            return f"shuffle {self.shuffle} partition {self.index}"
        last = self.index + self.count - 1
        return f"shuffle {self.shuffle} partitions {self.index}-{last}"


_MAP_INDEX = re.compile(r"map-(\d+)/" + re.escape(INDEX_FILE))


def map_outputs(fs, directory: str) -> Iterator[tuple[int, list[list[int]]]]:
    """Every committed map task's index, in map task order: one ``[partition, rows, disk
    bytes, memory bytes]`` per batch of its file (none when it wrote no rows).

    Attempts in progress and a reduce task's scratch pieces live under other names.
    """
    if not fs.exists(directory):
        return
    root = directory.rstrip("/") + "/"
    found: dict[int, str] = {}
    for path in fs.find(directory):
        match = _MAP_INDEX.fullmatch(path[len(root) :]) if path.startswith(root) else None
        if match is not None:
            found[int(match.group(1))] = path
    for task_id in sorted(found):
        with fs.open(found[task_id], "rb") as handle:
            yield task_id, json.loads(handle.read())["batches"]


@dataclass
class _Found:
    """One partition's batches in one map task's file."""

    task_id: int
    batches: list[int] = field(default_factory=list)
    disk_bytes: int = 0
    memory_bytes: int = 0


@dataclass
class Layout:
    """Where each partition of a shuffle is: for each map task, in order, the numbers of its
    batches in the task's file and their bytes on disk and in memory.

    Read from the indexes once, by the driver: a map task writes a batch per partition it has
    rows for, and a reduce task reading every index itself read them all (db-benchmark q5 at
    1e9: 140 indexes of 6 k batches, for each of 1024 reduce tasks).
    """

    root: str
    parts: dict[int, list[_Found]]

    @classmethod
    def read(cls, fs, root: str) -> Layout:
        parts: dict[int, list[_Found]] = {}
        for task_id, rows in map_outputs(fs, root):
            held: dict[int, _Found] = {}
            for number, (partition, _, disk, memory) in enumerate(rows):
                found = held.setdefault(partition, _Found(task_id))
                found.batches.append(number)
                found.disk_bytes += disk
                found.memory_bytes += memory
            for partition, found in held.items():
                parts.setdefault(partition, []).append(found)
        return cls(root, parts)

    def partition_bytes(self) -> dict[int, int]:
        """Bytes on disk of each partition that has rows."""
        return {p: sum(f.disk_bytes for f in found) for p, found in self.parts.items()}

    def piece(self, first: int, count: int = 1) -> Piece:
        """Partitions ``first`` to ``first + count - 1``: from every map task, in map task
        order, their batches in file order (which keeps ``first`` and ``last`` exact: a key's
        rows are in one partition)."""
        numbers: dict[int, list[int]] = {}
        disk = memory = 0
        for partition in range(first, first + count):
            for found in self.parts.get(partition, ()):
                numbers.setdefault(found.task_id, []).extend(found.batches)
                disk, memory = disk + found.disk_bytes, memory + found.memory_bytes
        segments = tuple(
            Segment(posixpath.join(map_dir(self.root, t), DATA_FILE), tuple(sorted(numbers[t])))
            for t in sorted(numbers)
        )
        return Piece(segments, disk, memory)


@dataclass(frozen=True)
class ShuffleSource:
    """The rows a shuffle's map stage wrote, read back one whole partition (or piece) at a time.

    ``order`` is the sort a range shuffle serves: a partition too large is then cut into key
    sub-ranges rather than hashed. ``storage_options`` reach ``directory``, as for the
    ``ShuffleSink`` that wrote it (never shown: they hold credentials).
    """

    directory: str
    keys: tuple[str, ...] = ()
    data_room: int | None = None
    order: RangeSpec | None = None
    format: str = "shuffle"
    storage_options: dict | None = field(default=None, hash=False, repr=False)

    def location(self) -> tuple[fsspec.AbstractFileSystem, str]:
        """The filesystem of the shuffle directory, and the directory's path on it."""
        return filesystem(self.directory, self.storage_options or {})

    def layout(self) -> Layout:
        """Where every partition's rows are, once the map stage has finished."""
        return Layout.read(*self.location())

    def piece(self, fs, split: ShufflePartition, side: int = 0) -> Piece:
        """The split's rows (``side`` 1: a join's right side, located by the driver)."""
        if split.pieces:
            return split.pieces[side]
        return Layout.read(fs, self.location()[1]).piece(split.index, split.count)

    def read(
        self, split: ShufflePartition, columns: list[str] | None, chunk_bytes: int
    ) -> Iterator[Batch]:
        fs, root = self.location()
        piece = self.piece(fs, split)
        if not piece.segments:
            return
        if self.data_room is None or fits(piece.memory_bytes, self.data_room):
            yield Batch(load(fs, piece), split.describe)
            return
        splitter = _splitter(fs, root, self.data_room, chunk_bytes, split)
        try:
            if self.order is not None:
                frames = splitter.ranged(piece, self.order)
            else:
                frames = splitter.hashed(piece, self.keys)
            for frame in frames:
                yield Batch(frame, split.describe)
        finally:
            _remove(fs, splitter.scratch)


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
        fs, root = self.left.location()
        left, right = self.left.piece(fs, split), self.right.piece(fs, split, side=1)
        room = self.left.data_room
        schemas = (self.left_schema, self.right_schema)
        splitter = None
        if room is None or fits(left.memory_bytes + right.memory_bytes, room):
            pairs = iter([(load(fs, left, schemas[0]), load(fs, right, schemas[1]))])
        else:
            splitter = _splitter(fs, root, room, chunk_bytes, split)
            pairs = splitter.paired(left, right, (self.left_on, self.right_on), schemas)
        try:
            for left_rows, right_rows in pairs:
                for joined in self._joined(left_rows, right_rows, room, split):
                    if joined.height:
                        yield Batch(joined, split.describe)
        finally:
            if splitter is not None:
                _remove(fs, splitter.scratch)

    def _join(self, left: pl.DataFrame, right: pl.DataFrame) -> pl.DataFrame:
        return left.join(
            right,
            left_on=list(self.left_on),
            right_on=list(self.right_on),
            how=self.how,
            suffix=self.suffix,
            maintain_order="left_right",
        )

    def _joined(
        self, left: pl.DataFrame, right: pl.DataFrame, room: int | None, split: ShufflePartition
    ) -> Iterator[pl.DataFrame]:
        """The join of two loaded sides, in pieces by key when its output would not fit.

        Keys with many rows on both sides multiply: the output can be far larger than the
        inputs, so it is estimated from the key counts of both sides before joining.
        """
        # One chunk per column: a join of frames in several chunks (one per map task) gathers
        # across them, three times as slow (db-benchmark join q5, 500 k rows a side: 0.35
        # against 0.12 s, rechunking 0.015 s).
        left, right = left.rechunk(), right.rechunk()
        if room is None or self.how in ("semi", "anti") or not left.height or not right.height:
            yield self._join(left, right)
            return
        row_bytes = left.estimated_size() / left.height + right.estimated_size() / right.height
        # No left row matches more right rows than the most frequent right key has: usually a
        # bound small enough to skip counting the left side's keys.
        bound = left.height * _most_rows_per_key(right, self.right_on) + right.height
        if fits(bound * row_bytes, room):
            yield self._join(left, right)
            return
        right_counts = right.group_by(list(self.right_on)).agg(pl.len().alias("__right"))
        counts = (
            left.group_by(list(self.left_on))
            .agg(pl.len().alias("__left"))
            .join(right_counts, left_on=list(self.left_on), right_on=list(self.right_on))
            .with_columns(__rows=pl.col("__left").cast(pl.Int64) * pl.col("__right"))
        )
        rows = int(counts["__rows"].sum() or 0) + left.height + right.height
        if fits(rows * row_bytes, room):
            yield self._join(left, right)
            return
        top = counts.sort("__rows", descending=True).row(0, named=True)
        if not fits(top["__rows"] * row_bytes, room):
            key = {k: top[k] for k in self.left_on}
            nbytes = top["__rows"] * row_bytes
            raise PartitionTooLargeError(
                f"{split.describe()}: join key {key} matches {top['__left']:,} left rows with "
                f"{top['__right']:,} right rows, {top['__rows']:,} joined rows of about "
                f"{format_size(nbytes)} ({format_size(nbytes * WORKING_FACTOR)} to process), "
                f"more than a worker's {format_size(room)} of room allows; raise memory= or "
                "filter that key out first"
            )
        k = fanout(rows * row_bytes, room)
        left_parts = left.with_columns(partition_of(left, self.left_on, k, IN_MEMORY_SEED))
        right_parts = right.with_columns(partition_of(right, self.right_on, k, IN_MEMORY_SEED))
        column = left_parts.columns[-1]
        lefts = left_parts.partition_by(column, as_dict=True, include_key=False)
        rights = right_parts.partition_by(column, as_dict=True, include_key=False)
        for n in range(k):
            pair = lefts.get((n,), left.clear()), rights.get((n,), right.clear())
            if pair[0].height or pair[1].height:
                yield self._join(*pair)


def _most_rows_per_key(frame: pl.DataFrame, keys: tuple[str, ...]) -> int:
    """How many rows the most frequent key of ``frame`` has.

    Unique keys (a join on an id) are recognised by a distinct count, which is several times
    cheaper than counting every key's rows (db-benchmark join q5, 500 k int keys per
    partition, in a worker: 8-17 ms against 84-145 ms).

    >>> _most_rows_per_key(pl.DataFrame({"k": [1, 2, 2, None]}), ("k",))
    2
    """
    key = pl.col(keys[0]) if len(keys) == 1 else pl.struct(list(keys))
    if frame.select(key.n_unique()).item() == frame.height:
        return 1
    return int(frame.group_by(list(keys)).agg(pl.len().alias("__rows"))["__rows"].max())


def _splitter(fs, root: str, room: int, chunk_bytes: int, split: ShufflePartition) -> Splitter:
    # Pieces live beside the partition, under a name of their own for every attempt.
    scratch = posixpath.join(root, f"split-{split.index:05d}-{os.urandom(4).hex()}")
    return Splitter(fs, room, chunk_bytes, scratch, split.describe())


def _remove(fs, path: str) -> None:
    if fs.exists(path):
        fs.rm(path, recursive=True)
