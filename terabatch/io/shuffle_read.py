"""Shuffle files, the reading side: reduce task i reads partition i from every map task."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import polars as pl
import pyarrow as pa
from fsspec.core import url_to_fs

from terabatch.errors import PartitionTooLargeError
from terabatch.io.shuffle import EXPANSION, WORKING_FACTOR, RangeSpec, partition_file
from terabatch.io.sources import Batch


def _mib(nbytes: float) -> str:
    return f"{nbytes / 2**20:,.0f}"


@dataclass(frozen=True)
class ShufflePartition:
    """Partition ``index`` of shuffle number ``shuffle``: the split of one reduce task."""

    index: int
    nbytes: int = 0
    shuffle: int = 1

    def describe(self) -> str:
        return f"shuffle {self.shuffle} partition {self.index}"


@dataclass(frozen=True)
class ShuffleSource:
    """The rows a shuffle's map stage wrote, read back one whole partition at a time."""

    directory: str
    map_tasks: int
    keys: tuple[str, ...] = ()
    data_room: int | None = None
    order: RangeSpec | None = None
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
