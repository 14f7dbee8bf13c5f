"""Shuffle files: every row lands in exactly one partition, and a partition too large to load
is refused with its heaviest key named instead of running a worker out of memory."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from terabatch.errors import PartitionTooLargeError
from terabatch.io.shuffle import ShuffleSink, ShuffleWriter, map_dir
from terabatch.io.shuffle_read import ShufflePartition, ShuffleSource

SKEWED = pl.DataFrame({"k": ["hot"] * 5_000 + [f"c{i}" for i in range(500)], "v": range(5_500)})


def write_map_outputs(root: Path, frame: pl.DataFrame, partitions: int, maps: int) -> None:
    sink = ShuffleSink(str(root), ("k",), partitions)
    for task_id, part in enumerate(frame.iter_slices(-(-frame.height // maps))):
        writer = ShuffleWriter(sink, map_dir(str(root), task_id))
        writer.write(part)
        writer.close()


def read_partition(root: Path, maps: int, index: int, room: int | None) -> pl.DataFrame:
    source = ShuffleSource(str(root), maps, ("k",), room)
    frames = [b.frame for b in source.read(ShufflePartition(index), None, 1 << 20)]
    return pl.concat(frames) if frames else SKEWED.clear()


def test_every_row_lands_in_exactly_one_partition(tmp_path: Path) -> None:
    write_map_outputs(tmp_path, SKEWED, partitions=4, maps=3)
    parts = [read_partition(tmp_path, 3, i, None) for i in range(4)]
    assert_frame_equal(pl.concat(parts).sort("v"), SKEWED)
    # A key never spans two partitions.
    owners = [set(p["k"].to_list()) for p in parts]
    assert all(not (a & b) for i, a in enumerate(owners) for b in owners[i + 1 :])


def test_a_partition_too_large_names_its_heaviest_key(tmp_path: Path) -> None:
    write_map_outputs(tmp_path, SKEWED, partitions=2, maps=2)
    hot = next(i for i in range(2) if "hot" in read_partition(tmp_path, 2, i, None)["k"])
    with pytest.raises(PartitionTooLargeError, match=r"key \{'k': 'hot'\} alone has 5,000 rows"):
        read_partition(tmp_path, 2, hot, room=1_000)
    assert read_partition(tmp_path, 2, hot, room=1 << 30)["k"].to_list().count("hot") == 5_000
