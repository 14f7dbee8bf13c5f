"""Grouping small shuffle partitions into one reduce task (terabatch.plan.coalesce)."""

from __future__ import annotations

import itertools
from pathlib import Path

import polars as pl
import pytest
from helpers import make_frame
from hypothesis import given
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

import terabatch as tb
import terabatch.plan.coalesce as coalesce
from terabatch.plan.coalesce import group_partitions

PRODUCTION_MIN = 16 << 20


@given(
    sizes=st.lists(st.integers(0, 1000), min_size=1, max_size=60),
    target=st.integers(1, 3000),
)
def test_runs_cover_every_partition_once_in_order(sizes: list[int], target: int) -> None:
    by_partition = {p: n for p, n in enumerate(sizes) if n}
    runs = group_partitions(by_partition, len(sizes), target)
    covered = [p for first, count, _ in runs for p in range(first, first + count)]
    assert covered == list(range(len(sizes)))
    assert sum(nbytes for *_, nbytes in runs) == sum(sizes)
    for first, count, nbytes in runs:
        assert nbytes == sum(sizes[first : first + count])
        # A run passes the target only when it holds a single non-empty partition.
        held = [sizes[p] for p in range(first, first + count) if sizes[p]]
        assert len(held) <= 1 or nbytes <= target
    # Next-door runs could not have been one: each run stopped because the next would pass.
    for (_, _, a), (first, _, _) in itertools.pairwise(runs):
        assert a + sizes[first] > target


def test_no_rows_at_all_is_one_task() -> None:
    assert group_partitions({}, 8, 100) == [(0, 8, 0)]


@pytest.fixture
def production_grouping(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(coalesce, "MIN_TASK_MEMORY", PRODUCTION_MIN)


def _files(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("*.parquet"))


def test_few_groups_are_one_file(tmp_path: Path, tiny_splits, production_grouping: None) -> None:
    frame = make_frame(5000, seed=3)
    src = tmp_path / "in.csv"
    frame.write_csv(src)
    tiny_splits(20_000)
    out = tmp_path / "out"
    summary = (
        tb.read_csv(src)
        .group_by("group")
        .agg(pl.col("value").sum(), pl.col("value").first().alias("first"), pl.len())
        .write_parquet(out, workers=2, progress=False)
    )
    want = frame.group_by("group", maintain_order=True).agg(
        pl.col("value").sum(), pl.col("value").first().alias("first"), pl.len()
    )
    got = pl.read_parquet(out / "*.parquet")
    assert_frame_equal(got.sort("group"), want.sort("group"), check_dtypes=False)
    assert _files(out) == ["part-00000-000.parquet"]
    map_tasks = summary.tasks - 1
    assert map_tasks > 4  # many map tasks, one reduce task
    assert summary.files_written == 1


def test_sort_grouped_keeps_global_order(
    tmp_path: Path, tiny_splits, production_grouping: None
) -> None:
    frame = make_frame(4000, seed=5)
    src = tmp_path / "in.parquet"
    frame.write_parquet(src, row_group_size=500)
    out = tmp_path / "out"
    tb.read_parquet(src).sort("score", "id").write_parquet(out, workers=2, progress=False)
    got = pl.read_parquet(out / "*.parquet")
    assert_frame_equal(got, frame.sort("score", "id"))


def test_join_partitions_grouped_with_both_sides(
    tmp_path: Path, production_grouping: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import terabatch.plan.stages as stages

    monkeypatch.setattr(stages, "BROADCAST_BYTES", 0)  # a partitioned join, not a broadcast
    left = pl.DataFrame({"k": list(range(300)) * 3, "a": list(range(900))})
    right = pl.DataFrame({"k": list(range(100, 500)), "b": list(range(400))})
    left.write_parquet(tmp_path / "l.parquet")
    right.write_parquet(tmp_path / "r.parquet")
    for how in ("inner", "left", "right", "full", "anti"):
        got = (
            tb.read_parquet(tmp_path / "l.parquet")
            .join(tb.read_parquet(tmp_path / "r.parquet"), on="k", how=how)
            .collect(workers=2, progress=False)
        )
        want = left.join(right, on="k", how=how)
        columns = sorted(want.columns)
        (
            assert_frame_equal(
                got.select(columns).sort(columns, nulls_last=True),
                want.select(columns).sort(columns, nulls_last=True),
            ),
            how,
        )
