"""Narrow operators end to end, each against polars running the same query on the same files.

The input is three CSV files cut into about a dozen tasks, so every operator runs across several
tasks and files and the results must come back in input order.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from helpers import make_frame, one_line_error
from polars.testing import assert_frame_equal

import terabatch as tb
from terabatch.errors import UserFunctionError
from terabatch.io.sinks import CollectSink
from terabatch.io.sources import Batch
from terabatch.ops.narrow import rebatch
from terabatch.plan.optimize import optimize
from terabatch.plan.stages import Sizes, plan_stages

RUN = {"progress": False}
SPLIT, CHUNK = 1500, 600


@pytest.fixture
def multi(csv_files: list[Path], tiny_splits) -> tuple[tb.Dataset, pl.LazyFrame]:
    tiny_splits(SPLIT, CHUNK)
    ds = tb.read_csv(csv_files)
    reference = pl.concat([pl.read_csv(p) for p in csv_files]).lazy()
    return ds, reference


def _tasks(ds: tb.Dataset) -> int:
    return len(
        plan_stages(optimize(ds._plan), CollectSink(), Sizes(SPLIT, CHUNK, 1, None), None)[0].tasks
    )


QUERIES: dict[str, Callable] = {
    "select": lambda d: d.select("text", "id", doubled=pl.col("value") * 2),
    "select-expressions": lambda d: d.select(
        pl.col("score").round(1), pl.col("group").str.to_uppercase()
    ),
    "drop": lambda d: d.drop("text", "flag"),
    "rename": lambda d: d.rename({"value": "v", "group": "g"}).filter(pl.col("v") > 0),
    "filter": lambda d: d.filter(pl.col("value") > 100, pl.col("text").is_not_null()),
    "filter-none-match": lambda d: d.filter(pl.col("id") < 0),
    "with_columns": lambda d: d.with_columns(
        pl.col("value").cast(pl.Float64) / 3, tag=pl.lit("t"), id2=pl.col("id") + 1
    ),
    "chain": lambda d: (
        d.with_columns(big=pl.col("value").abs() > 500)
        .filter(pl.col("big"))
        .rename({"id": "key"})
        .drop("big")
        .select("key", "score", "group")
    ),
    "head": lambda d: d.head(437),
    "head-after-filter": lambda d: d.filter(pl.col("flag")).head(150),
    "ops-after-head": lambda d: d.head(300).filter(pl.col("value") > 0).with_columns(x=pl.lit(1)),
    "head-zero": lambda d: d.head(0),
    "head-more-than-all": lambda d: d.head(10_000),
    "head-head": lambda d: d.head(400).select("id").head(250),
}


@pytest.mark.parametrize("name", QUERIES)
def test_query_equals_polars(multi, name: str) -> None:
    ds, reference = multi
    assert _tasks(ds) >= 9
    query = QUERIES[name]
    expected = query(reference).collect()
    result = query(ds)
    assert result.schema == expected.schema
    assert_frame_equal(result.collect(**RUN), expected)


def test_count(multi) -> None:
    ds, reference = multi
    assert ds.count(**RUN) == 600
    predicate = (pl.col("group") == "a") | (pl.col("score") > 90)
    assert ds.filter(predicate).count(**RUN) == reference.filter(predicate).collect().height
    assert ds.head(77).count(**RUN) == 77


def test_iter_batches_yields_all_rows_in_order(multi) -> None:
    ds, reference = multi
    query = ds.filter(pl.col("value") % 2 == 0).with_columns(half=pl.col("value") // 2)
    batches = list(query.iter_batches(**RUN))
    assert len(batches) > 1
    assert all(isinstance(b, pl.DataFrame) for b in batches)
    expected = reference.filter(pl.col("value") % 2 == 0).with_columns(half=pl.col("value") // 2)
    assert_frame_equal(pl.concat(batches), expected.collect())
    with_head = list(ds.head(5).iter_batches(**RUN))
    assert_frame_equal(pl.concat(with_head), reference.head(5).collect())


def test_collect_to_arrow_to_pandas(multi) -> None:
    ds, reference = multi
    query = ds.select("id", "text", "score")
    expected = reference.select("id", "text", "score").collect()
    table = query.to_arrow(**RUN)
    assert isinstance(table, pa.Table)
    assert table.column_names == ["id", "text", "score"]
    assert_frame_equal(pl.from_arrow(table), expected)
    frame = query.to_pandas(**RUN)
    assert isinstance(frame, pd.DataFrame)
    pd.testing.assert_frame_equal(frame, expected.to_pandas())
    assert_frame_equal(query.to_polars(**RUN), expected)


# map_batches ----------------------------------------------------------------------------------


def _record_calls(frame: pl.DataFrame) -> pl.DataFrame:
    """Tag each row with the size and the first id of the call that saw it."""
    return frame.with_columns(
        call_rows=pl.lit(frame.height, pl.Int64), call_first=pl.lit(frame["id"][0], pl.Int64)
    )


def _call_sizes(result: pl.DataFrame) -> list[int]:
    calls = result.unique(["call_first"], maintain_order=True)
    return calls["call_rows"].to_list()


def test_map_batches_with_batch_size_in_one_task(csv_file: Path, tiny_splits) -> None:
    # One split read in chunks of ~1 KiB (about 40 rows): calls are re-cut to exactly 37 rows.
    tiny_splits(1 << 20, 1000)
    ds = tb.read_csv(csv_file)
    result = ds.map_batches(_record_calls, batch_size=37).collect(**RUN)
    sizes = _call_sizes(result)
    assert sizes[:-1] == [37] * (len(sizes) - 1)
    assert 0 < sizes[-1] <= 37 and sum(sizes) == 600
    assert_frame_equal(result.drop("call_rows", "call_first"), pl.read_csv(csv_file))


def test_map_batches_with_batch_size_across_tasks(multi) -> None:
    ds, reference = multi
    tasks = _tasks(ds)
    result = ds.map_batches(_record_calls, batch_size=23).collect(**RUN)
    sizes = _call_sizes(result)
    # Batches are cut within a task: only each task's last call may be short.
    assert all(0 < s <= 23 for s in sizes) and sum(sizes) == 600
    assert sum(s < 23 for s in sizes) <= tasks
    assert_frame_equal(result.drop("call_rows", "call_first"), reference.collect())


def test_map_batches_between_polars_operators(multi) -> None:
    ds, reference = multi

    def scale(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.with_columns(scaled=pl.col("value") * 10).drop("text")

    query = (
        ds.filter(pl.col("flag"))
        .map_batches(scale, schema={"id": pl.Int64, "value": pl.Int64, "scaled": pl.Int64})
        .filter(pl.col("scaled") > 0)
        .select("id", "scaled")
    )
    expected = (
        reference.filter(pl.col("flag"))
        .with_columns(scaled=pl.col("value") * 10)
        .filter(pl.col("scaled") > 0)
        .select("id", "scaled")
        .collect()
    )
    assert_frame_equal(query.collect(**RUN), expected)


def test_map_batches_with_batch_size_after_head(multi) -> None:
    # After head the driver runs the rest on the kept rows: every re-cut batch must come back.
    ds, reference = multi
    result = ds.head(250).map_batches(_record_calls, batch_size=40).head(230).collect(**RUN)
    assert _call_sizes(result) == [40] * 6  # 250 rows = 6 x 40 + 10; head(230) drops the 10
    assert_frame_equal(result.drop("call_rows", "call_first"), reference.head(230).collect())


def _to_arrow(frame: pl.DataFrame) -> pa.Table:
    return frame.select("id").to_arrow()


def _to_pandas(frame: pl.DataFrame) -> pd.DataFrame:
    return frame.select("id").to_pandas()


@pytest.mark.parametrize("fn", [_to_arrow, _to_pandas])
def test_map_batches_may_return_arrow_or_pandas(csv_file: Path, fn) -> None:
    got = tb.read_csv(csv_file).map_batches(fn).collect(**RUN)
    assert got["id"].to_list() == list(range(600))


def test_map_batches_returning_something_else(csv_file: Path) -> None:
    with pytest.raises(UserFunctionError) as info:
        tb.read_csv(csv_file).map_batches(lambda f: f.height).collect(**RUN)
    assert "must return a polars DataFrame, got int" in one_line_error(info.value)


def test_map_batches_module_level_function_runs_in_workers(csv_file: Path) -> None:
    # A function importable by the driver is pickled by reference: workers must import it too.
    got = tb.read_csv(csv_file).map_batches(_record_calls).collect(**RUN)
    assert got.height == 600


# rebatch, without processes -------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 3, 7, 10, 50])
def test_rebatch_cuts_exact_sizes(size: int) -> None:
    heights = [0, 4, 1, 9, 0, 6, 5]
    frames = []
    start = 0
    for h in heights:
        frames.append(make_frame(h, start=start))
        start += h
    batches = list(rebatch(iter(Batch(f, lambda: "x") for f in frames), size))
    sizes = [b.frame.height for b in batches]
    assert sizes[:-1] == [size] * (len(sizes) - 1) and 0 < sizes[-1] <= size
    assert pl.concat([b.frame for b in batches])["id"].to_list() == list(range(sum(heights)))
