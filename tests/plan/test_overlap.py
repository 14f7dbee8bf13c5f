"""Stages that run at the same time: the map stages of a join's two sides, never a stage that
reads a shuffle another stage of its group writes, never a first pass."""

from __future__ import annotations

import time
from pathlib import Path

import polars as pl
import pytest

import terabatch as tb
import terabatch.plan.stages as stages_module
from terabatch.io.sinks import CollectSink
from terabatch.plan.optimize import optimize
from terabatch.plan.overlap import groups as _groups
from terabatch.plan.stages import Sizes, Stage, plan_stages


def _stages(ds: tb.Dataset, tmp_path: Path) -> list[Stage]:
    sizes = Sizes(1 << 20, 1 << 20, 3, None)
    return plan_stages(optimize(ds._plan), CollectSink(), sizes, str(tmp_path / "shuffle"))


@pytest.fixture
def tables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[tb.Dataset, tb.Dataset]:
    monkeypatch.setattr(stages_module, "BROADCAST_BYTES", 0)  # shuffled joins
    pl.DataFrame({"k": [1, 2, 3, 1], "v": [4, 5, 6, 7]}).write_csv(tmp_path / "l.csv")
    pl.DataFrame({"k": [1, 3, 5], "w": [8, 9, 10]}).write_csv(tmp_path / "r.csv")
    return tb.read_csv(tmp_path / "l.csv"), tb.read_csv(tmp_path / "r.csv")


def test_both_sides_of_a_join_map_together_and_the_reduce_waits(
    tables: tuple[tb.Dataset, tb.Dataset], tmp_path: Path
) -> None:
    left, right = tables
    stages = _stages(left.join(right, on="k"), tmp_path)
    assert len(stages) == 3
    assert _groups(stages) == [[0, 1], [2]]
    assert stages[2].reads == stages[0].writes == stages[1].writes == {1}


def test_a_join_of_two_group_bys_runs_each_level_together(
    tables: tuple[tb.Dataset, tb.Dataset], tmp_path: Path
) -> None:
    left, right = tables
    query = (
        left.group_by("k").agg(n=pl.len()).join(right.group_by("k").agg(pl.col("w").sum()), on="k")
    )
    stages = _stages(query, tmp_path)
    # the two group-bys' map stages; their reduces, which are the join's map stages; the join
    assert _groups(stages) == [[0, 1], [2, 3], [4]]


def test_a_stage_reading_a_shuffle_of_its_group_starts_a_new_group(
    tables: tuple[tb.Dataset, tb.Dataset], tmp_path: Path
) -> None:
    left, _ = tables
    stages = _stages(left.group_by("k").agg(pl.col("v").sum()).sort("k"), tmp_path)
    # group_by map, then its reduce (which feeds the sort's sample), ...: each alone
    groups = _groups(stages)
    assert all(len(g) == 1 for g in groups), groups
    assert any(s.feeds is not None for s in stages)


def test_the_right_side_starts_while_the_left_side_still_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stages_module, "BROADCAST_BYTES", 0)
    for name in ("a", "b"):
        pl.DataFrame({"k": list(range(100)), "v": list(range(100))}).write_csv(
            tmp_path / f"{name}.csv"
        )
    marks = tmp_path / "marks"
    marks.mkdir()

    def mark(side: str):
        def fn(frame: pl.DataFrame) -> pl.DataFrame:
            (marks / f"{side}-start").write_text(str(time.time()))
            if side == "left":
                time.sleep(1.0)  # the left side's only task runs long
            (marks / f"{side}-end").write_text(str(time.time()))
            return frame

        return fn

    schema = {"k": pl.Int64, "v": pl.Int64}
    left = tb.read_csv(tmp_path / "a.csv").map_batches(mark("left"), schema=schema)
    right = tb.read_csv(tmp_path / "b.csv").map_batches(mark("right"), schema=schema)
    right = right.rename({"v": "w"})
    out = left.join(right, on="k").collect(workers=2, progress=False)

    expected = pl.DataFrame({"k": list(range(100)), "v": list(range(100)), "w": list(range(100))})
    assert out.sort("k").equals(expected)
    right_start = float((marks / "right-start").read_text())
    assert right_start < float((marks / "left-end").read_text())
