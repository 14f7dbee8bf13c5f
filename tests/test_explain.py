"""explain(): every stage, where each shuffle is, and what the map tasks pre-combine.

Plans with several shuffles are checked through their whole explain text (golden lines), and
the stage lines are checked to be those of the stages a run plans.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

import terabatch as tb
import terabatch.plan.stages as stages_module
from terabatch.exec.inline import InlineExecutor
from terabatch.io.sinks import CollectSink
from terabatch.run.job import Job, RunOptions


@pytest.fixture
def left(tmp_path: Path) -> tb.Dataset:
    path = tmp_path / "left.csv"
    path.write_text("k,j,v,w\na,1,2,0.5\nb,2,3,1.5\n")
    return tb.read_csv(path)


@pytest.fixture
def right(tmp_path: Path) -> tb.Dataset:
    path = tmp_path / "right.csv"
    path.write_text("k,m\na,1\n")
    return tb.read_csv(path)


def test_group_by_then_sort_then_head(left: tb.Dataset) -> None:
    query = left.group_by("k").agg(n=pl.col("v").sum()).sort("n", descending=True).head(3)
    assert query.explain().splitlines() == [
        "scan csv: 1 file(s), 28 B; columns [k, v]",
        '  group_by col("k") agg col("v").sum().alias("n")  [shuffle 1]',
        "  sort by n desc  [shuffle 2]",
        "  head 3",
        'stage 1: read csv; pre-combined per task: sum; hash shuffle 1 on col("k")',
        'stage 2: reduce shuffle 1: group_by col("k") on each whole partition; keep a sample '
        "of the sort keys n (first pass, for the ranges of shuffle 2)",
        'stage 3: reduce shuffle 1: group_by col("k") on each whole partition; range shuffle 2 '
        "on n (boundaries from stage 2's sample)",
        "stage 4: reduce shuffle 2: sort by n on each whole partition, then the operators after "
        "it; partitions come out in key order; the driver keeps the first 3 rows in input order",
    ]


def test_unique_then_holistic_group_by(left: tb.Dataset) -> None:
    lines = left.unique().group_by("k").agg(pl.col("w").median()).explain().splitlines()
    assert lines[1:] == [
        "  unique on all columns, keep=any  [shuffle 1]",
        '  group_by col("k") agg col("w").median()  [shuffle 2]',
        "stage 1: read csv; unique per task (pre-combined); hash shuffle 1 on all columns",
        "stage 2: reduce shuffle 1: unique on all columns (keep=any) on each whole partition; "
        "no pre-combining (an aggregation needs all rows of a group); hash shuffle 2 on "
        'col("k")',
        'stage 3: reduce shuffle 2: group_by col("k") on each whole partition',
    ]


def test_window_then_group_by(left: tb.Dataset) -> None:
    query = (
        left.with_columns(t=pl.col("v").sum().over("k"))
        .filter(pl.col("t") > 1)
        .group_by("j")
        .agg(pl.len(), pl.col("v").mean())
    )
    assert query.explain().splitlines()[-3:] == [
        "stage 1: read csv; hash shuffle 1 on k",
        "stage 2: reduce shuffle 1: windows over k on each whole partition; pre-combined per "
        'task: len, mean; hash shuffle 2 on col("j")',
        'stage 3: reduce shuffle 2: group_by col("j") on each whole partition',
    ]


def test_shuffled_join_of_two_group_bys(
    left: tb.Dataset, right: tb.Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stages_module, "BROADCAST_BYTES", 0)
    query = (
        left.group_by("k").agg(n=pl.len()).join(right.group_by("k").agg(pl.col("m").sum()), on="k")
    )
    assert query.explain().splitlines() == [
        "scan csv: 1 file(s), 28 B; columns [k]",
        '  group_by col("k") agg len().alias("n")  [shuffle 1]',
        "  inner join on k = k with:  [shuffle 3]",
        "    scan csv: 1 file(s), 8 B; columns [k, m]",
        '      group_by col("k") agg col("m").sum()  [shuffle 2]',
        'stage 1: read csv; pre-combined per task: len; hash shuffle 1 on col("k")',
        'stage 2: read csv; pre-combined per task: sum; hash shuffle 2 on col("k"); runs at '
        "the same time as stage 1",
        'stage 3: reduce shuffle 1: group_by col("k") on each whole partition; hash shuffle 3 '
        "on k (left side of the join)",
        'stage 4: reduce shuffle 2: group_by col("k") on each whole partition; hash shuffle 3 '
        "on k (right side of the join); runs at the same time as stage 3",
        "stage 5: reduce shuffle 3: inner join on k = k on each pair of partitions",
    ]


def test_top_k_then_broadcast_join_then_sort(left: tb.Dataset, right: tb.Dataset) -> None:
    grouped = right.group_by("k").agg(pl.col("m").max())
    query = left.top_k(5, by="v").join(grouped, on="k", how="left").sort("v")
    lines = query.explain().splitlines()
    assert "  left join on k = k with:  [broadcast join, no shuffle]" in lines
    probe = "one task over the rows the driver kept, left join of every batch with the collected"
    assert lines[-6:] == [
        "stage 1: read csv; each task keeps its top 5, the driver the top 5 of those",
        'stage 2: read csv; pre-combined per task: max; hash shuffle 1 on col("k")',
        'stage 3: reduce shuffle 1: group_by col("k") on each whole partition; the driver '
        "collects the right side of the left join (8 B of input, under the 64.0 MiB broadcast "
        "limit)",
        f"stage 4: {probe} right side (broadcast join, no shuffle); keep a sample of the sort "
        "keys v (first pass, for the ranges of shuffle 2)",
        f"stage 5: {probe} right side (broadcast join, no shuffle); range shuffle 2 on v "
        "(boundaries from stage 4's sample)",
        "stage 6: reduce shuffle 2: sort by v on each whole partition; partitions come out in "
        "key order",
    ]


def test_head_before_a_shuffle_is_gathered(left: tb.Dataset) -> None:
    lines = left.head(7).unique("k", keep="none").explain().splitlines()
    assert lines[-3:] == [
        "stage 1: read csv; the driver keeps the first 7 rows in input order",
        "stage 2: one task over the rows the driver kept; hash shuffle 1 on k",
        "stage 3: reduce shuffle 1: unique on k (keep=none) on each whole partition",
    ]


def test_explain_reads_no_input(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pl.DataFrame({"k": ["a"], "v": [1]}).write_parquet(path)
    query = tb.read_parquet(path).group_by("k").agg(pl.col("v").sum()).sort("v")
    path.unlink()  # planning the stages for explain() opens no file
    assert "stage 4: reduce shuffle 2" in query.explain()


@pytest.mark.parametrize("broadcast", [True, False])
def test_explained_stages_are_the_stages_that_run(
    left: tb.Dataset, right: tb.Dataset, monkeypatch: pytest.MonkeyPatch, broadcast: bool
) -> None:
    if not broadcast:
        monkeypatch.setattr(stages_module, "BROADCAST_BYTES", 0)
    query = (
        left.head(1)
        .join(right.unique().group_by("k").agg(pl.col("m").sum()), on="k", how="left")
        .sort("m")
    )
    job = Job(query._plan, CollectSink(), RunOptions(progress=False, executor=InlineExecutor()))
    try:
        planned = [f"stage {i}: {s.detail}" for i, s in enumerate(job.stages, 1)]
    finally:
        job.close()
    explained = [line for line in query.explain().splitlines() if line.startswith("stage ")]
    together = [line for line in explained if "; runs at the same time as stage" in line]
    assert [line.split("; runs at the same time")[0] for line in explained] == planned
    # the left side's rows (kept by head) shuffle while the right side's group_by reduces
    assert [t.split(":")[0] + t.split(";")[-1] for t in together] == (
        [] if broadcast else ["stage 4 runs at the same time as stage 3"]
    )
    assert len(planned) == (7 if broadcast else 8)
