"""Shuffle files: every row lands in exactly one partition, a map task writes one data file and
its index whatever the number of partitions, and a partition too large to load is refused with
its heaviest key named instead of running a worker out of memory."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from terabatch.errors import PartitionTooLargeError
from terabatch.io.repartition import load, pieces_of
from terabatch.io.shuffle import PartitionedFile, ShuffleSink, ShuffleWriter, map_dir
from terabatch.io.shuffle_read import ShufflePartition, ShuffleSource
from terabatch.io.storage import filesystem

SKEWED = pl.DataFrame({"k": ["hot"] * 5_000 + [f"c{i}" for i in range(500)], "v": range(5_500)})


def write_map_outputs(root: Path, frame: pl.DataFrame, partitions: int, maps: int) -> None:
    sink = ShuffleSink(str(root), ("k",), partitions)
    for task_id, part in enumerate(frame.iter_slices(-(-frame.height // maps))):
        writer = ShuffleWriter(sink, map_dir(str(root), task_id))
        writer.write(part)
        writer.close()


def read_partition(root: Path, index: int, room: int | None) -> pl.DataFrame:
    source = ShuffleSource(str(root), ("k",), room)
    frames = [b.frame for b in source.read(ShufflePartition(index), None, 1 << 20)]
    return pl.concat(frames) if frames else SKEWED.clear()


def test_every_row_lands_in_exactly_one_partition(tmp_path: Path) -> None:
    write_map_outputs(tmp_path, SKEWED, partitions=4, maps=3)
    parts = [read_partition(tmp_path, i, None) for i in range(4)]
    assert_frame_equal(pl.concat(parts).sort("v"), SKEWED)
    # A key never spans two partitions.
    owners = [set(p["k"].to_list()) for p in parts]
    assert all(not (a & b) for i, a in enumerate(owners) for b in owners[i + 1 :])


def test_a_partition_too_large_names_its_heaviest_key(tmp_path: Path) -> None:
    write_map_outputs(tmp_path, SKEWED, partitions=2, maps=2)
    hot = next(i for i in range(2) if "hot" in read_partition(tmp_path, i, None)["k"])
    with pytest.raises(PartitionTooLargeError, match=r"key \{'k': 'hot'\} alone has 5,000 rows"):
        read_partition(tmp_path, hot, room=1_000)
    assert read_partition(tmp_path, hot, room=1 << 30)["k"].to_list().count("hot") == 5_000


def test_a_map_task_writes_one_data_file_and_its_index(tmp_path: Path) -> None:
    write_map_outputs(tmp_path, SKEWED, partitions=64, maps=3)
    for task_id in range(3):
        names = sorted(p.name for p in Path(map_dir(str(tmp_path), task_id)).iterdir())
        assert names == ["data.arrow", "index.json"]
    parts = [read_partition(tmp_path, i, None) for i in range(64)]
    assert sum(p.height for p in parts) == SKEWED.height
    assert_frame_equal(pl.concat(parts).sort("v"), SKEWED)


def test_a_map_task_without_rows_writes_an_empty_index(tmp_path: Path) -> None:
    writer = ShuffleWriter(ShuffleSink(str(tmp_path), ("k",), 4), map_dir(str(tmp_path), 0))
    writer.write(SKEWED.clear())
    writer.close()
    names = sorted(p.name for p in Path(map_dir(str(tmp_path), 0)).iterdir())
    assert names == ["index.json"]
    assert read_partition(tmp_path, 0, None).height == 0


@settings(max_examples=60, deadline=None)
@given(
    writes=st.lists(st.lists(st.integers(0, 5), min_size=0, max_size=30), min_size=1, max_size=6),
    buffer_bytes=st.sampled_from([0, 100, 1 << 30]),
)
def test_property_pieces_hold_each_number_in_write_order(
    tmp_path_factory, writes, buffer_bytes
) -> None:
    """Rows written in several frames come back per number, in the order written, whether
    they were held before writing or not; held rows are written as one batch per number."""
    root = tmp_path_factory.mktemp("pf")
    fs, path = filesystem(str(root / "f.arrow"), {})
    file = PartitionedFile(fs, path, buffer_bytes)
    frames, seen = [], 0
    for numbers in writes:
        frame = pl.DataFrame({"row": range(seen, seen + len(numbers))}, schema={"row": pl.Int64})
        seen += len(numbers)
        frames.append(frame.with_columns(n=pl.Series(numbers, dtype=pl.UInt32)))
        file.write_numbered(frame, pl.Series(numbers, dtype=pl.UInt32))
    file.close()
    pieces = pieces_of(path, file.batches)
    everything = pl.concat(frames)
    assert set(pieces) == set(everything["n"].to_list())
    for number, piece in pieces.items():
        expected = everything.filter(pl.col("n") == number)["row"]
        got = load(fs, piece)["row"]
        assert got.to_list() == expected.to_list()
        assert piece.measured == sum(b.memory_bytes for b in file.batches if b.partition == number)
        if buffer_bytes > seen * 8:
            assert len(piece.segments[0].batches) == 1


def test_the_layout_locates_runs_of_partitions_as_the_tasks_would(tmp_path: Path) -> None:
    """The driver reads the indexes once and hands each reduce task its batches: the same
    rows, in the same order, as a task reading the indexes itself."""
    write_map_outputs(tmp_path, SKEWED, partitions=8, maps=3)
    source = ShuffleSource(str(tmp_path), ("k",))
    layout = source.layout()
    fs, _ = source.location()
    sizes = layout.partition_bytes()
    files = sum(p.stat().st_size for p in tmp_path.glob("map-*/data.arrow"))
    assert 0.9 * files < sum(sizes.values()) < files  # files add a header and a footer
    assert set(sizes) == {i for i in range(8) if read_partition(tmp_path, i, None).height}
    for first, count in [(0, 1), (2, 3), (5, 3), (0, 8)]:
        split = ShufflePartition(first, count=count)
        located = ShufflePartition(first, count=count, pieces=(layout.piece(first, count),))
        alone = [b.frame for b in source.read(split, None, 1 << 20)]
        told = [b.frame for b in source.read(located, None, 1 << 20)]
        assert_frame_equal(pl.concat(told), pl.concat(alone))
        assert source.piece(fs, split) == located.pieces[0]
