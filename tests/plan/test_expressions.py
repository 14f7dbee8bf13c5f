"""Which expressions are row-wise (safe batch by batch) and which columns they read."""

from __future__ import annotations

import polars as pl
import pytest

from terabatch.plan.expressions import across_rows, input_columns

ROW_WISE = [
    pl.col("a") + 1,
    pl.col("a").str.to_uppercase(),
    pl.col("a").list.sort(),
    pl.col("a").list.len(),
    pl.col("a").alias("Rank"),
    pl.col("Sort") * 2,
    pl.when(pl.col("a") > 1).then(pl.lit("x")).otherwise(pl.lit("y")),
    pl.col("a").is_in([1, 2]),
    pl.col("a").fill_null(0),
    pl.col("a").map_elements(lambda v: v, return_dtype=pl.Int64),
    pl.col("ts").str.slice(0, 10).alias("day"),
]

ACROSS_ROWS = [
    (pl.col("a").sum(), "an aggregation"),
    (pl.col("a").mean().alias("m"), "an aggregation"),
    (pl.col("a") - pl.col("a").min(), "an aggregation"),
    (pl.col("a").cum_sum(), "a cumulative function"),
    (pl.col("a").rank().over("b"), "a window (over)"),
    (pl.col("a").shift(1), "shift"),
    (pl.col("a").sort(), "sorting"),
    (pl.col("a").head(2), "slicing"),
    (pl.len(), "len()"),
    (pl.col("a").is_duplicated(), "is_duplicated"),
    (pl.col("a").fill_null(strategy="forward"), "fill_null with a strategy"),
    (pl.col("a").map_batches(lambda s: s), "a function over whole batches (map_batches)"),
]


@pytest.mark.parametrize("expr", ROW_WISE, ids=str)
def test_row_wise_expressions_pass(expr: pl.Expr) -> None:
    assert across_rows(expr) is None


@pytest.mark.parametrize(("expr", "what"), ACROSS_ROWS, ids=lambda v: str(v)[:40])
def test_expressions_across_rows_are_named(expr: pl.Expr, what: str) -> None:
    assert across_rows(expr) == what


def test_input_columns() -> None:
    assert input_columns(pl.col("a") + pl.col("b").str.len_chars()) == {"a", "b"}
    assert input_columns(pl.lit(1)) == set()
    assert input_columns(pl.all()) is None
    assert input_columns(pl.col(pl.Int64)) is None
