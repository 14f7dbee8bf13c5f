"""Optimizer rules, checked through explain() text with optimization on and off (no processes)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import terabatch as tb
from terabatch.plan.nodes import (
    Drop,
    Filter,
    Head,
    MapBatches,
    Rename,
    Scan,
    Select,
    WithColumns,
    lineage,
)
from terabatch.plan.optimize import RULES, optimize
from terabatch.plan.optimize.prune_columns import prune_columns
from terabatch.plan.optimize.pushdown_predicates import pushdown_predicates

RUN = {"progress": False}


@pytest.fixture
def ds(tmp_path: Path) -> tb.Dataset:
    path = tmp_path / "t.csv"
    path.write_text("a,b,c,d\n1,2,x,4.5\n3,4,y,5.5\n")
    return tb.read_csv(path)


def _scan(dataset: tb.Dataset, rule=optimize) -> Scan:
    return lineage(rule(dataset._plan))[0]


def _double(frame: pl.DataFrame) -> pl.DataFrame:
    return frame


def test_rules_are_listed_in_order() -> None:
    assert (pushdown_predicates, prune_columns) == RULES


def test_explain_golden(ds: tb.Dataset) -> None:
    query = ds.filter(pl.col("a") > 1).with_columns(e=pl.col("b") * 2).select("e", "c")
    assert query.explain().splitlines() == [
        "scan csv: 1 file(s), 28 B; columns [a, b, c]",
        '  filter [(col("a")) > (dyn int: 1)]',
        '  with_columns [(col("b")) * (dyn int: 2)].alias("e")',
        '  select col("e"), col("c")',
        "stage 1: streaming, no shuffle; operators fused into each task",
    ]
    unoptimized = query.explain(optimized=False).splitlines()
    assert unoptimized[0] == "scan csv: 1 file(s), 28 B; columns [*]"
    assert unoptimized[1:] == query.explain().splitlines()[1:4]
    assert "<terabatch.Dataset" in repr(query)


def test_explain_head_stage(ds: tb.Dataset) -> None:
    text = ds.head(3).explain()
    assert text.splitlines()[-1].endswith("the driver keeps the first 3 rows in input order")


@pytest.mark.parametrize(
    ("build", "columns"),
    [
        (lambda d: d.select("c"), ("c",)),
        (lambda d: d.select((pl.col("a") + pl.col("d")).alias("s")), ("a", "d")),
        (lambda d: d.drop("a"), None),  # everything else is needed
        (lambda d: d.drop("a").select("b"), ("b",)),
        (lambda d: d.rename({"a": "z"}).select("z"), ("a",)),
        (lambda d: d.rename({"a": "z"}).select("b"), ("b",)),
        (lambda d: d.with_columns(a=pl.col("b")).select("a"), ("b",)),
        (lambda d: d.with_columns(e=pl.col("b")).select("e", "a"), ("a", "b")),
        (lambda d: d.filter(pl.col("d") > 0).select("c"), ("c", "d")),
        (lambda d: d.head(1).select("b"), ("b",)),
        (lambda d: d.select(pl.all()), None),
        (lambda d: d.select(pl.col("^[ab]$")), None),
        (lambda d: d.map_batches(_double).select("a"), None),  # the function may read anything
        (lambda d: d.select("a", "b").map_batches(_double), ("a", "b")),
    ],
)
def test_prune_columns(ds: tb.Dataset, build, columns) -> None:
    query = build(ds)
    assert _scan(query).columns == columns
    # The result does not change, only the columns read.
    assert_frame_equal(query.collect(**RUN), _run_unoptimized(query))


def _run_unoptimized(query: tb.Dataset) -> pl.DataFrame:
    """The plan's operators applied by polars to the whole file at once: the reference."""
    scan, ops = lineage(query._plan)
    frame = pl.read_csv(scan.source.files[0].path)
    for op in ops:
        if isinstance(op, Filter):
            frame = frame.filter(op.predicate)
        elif isinstance(op, WithColumns):
            frame = frame.with_columns(*op.exprs)
        elif isinstance(op, Select):
            frame = frame.select(*op.exprs)
        elif isinstance(op, Drop):
            frame = frame.drop(*op.columns)
        elif isinstance(op, Rename):
            frame = frame.rename(dict(op.mapping))
        elif isinstance(op, Head):
            frame = frame.head(op.n)
        elif isinstance(op, MapBatches):
            frame = op.fn(frame)
    return frame


@pytest.mark.parametrize(
    ("build", "pushed"),
    [
        (lambda d: d.filter(pl.col("a") > 1), '[(col("a")) > (dyn int: 1)]'),
        (
            lambda d: d.filter(pl.col("a") > 1).filter(pl.col("b") < 9),
            '[([(col("a")) > (dyn int: 1)]) & ([(col("b")) < (dyn int: 9)])]',
        ),
        (
            lambda d: d.with_columns(e=pl.col("a")).filter(pl.col("b") > 0),
            '[(col("b")) > (dyn int: 0)]',
        ),
        (lambda d: d.with_columns(b=pl.col("a")).filter(pl.col("b") > 0), None),
        (lambda d: d.select("a", "b").filter(pl.col("b") > 0), None),
        (lambda d: d.rename({"a": "b", "b": "a"}).filter(pl.col("a") > 0), None),
        (lambda d: d.head(1).filter(pl.col("a") > 0), None),
        (lambda d: d.map_batches(_double).filter(pl.col("a") > 0), None),
    ],
)
def test_pushdown_predicates(ds: tb.Dataset, build, pushed: str | None) -> None:
    scan = _scan(build(ds), pushdown_predicates)
    assert (None if scan.predicate is None else str(scan.predicate)) == pushed


def test_optimizer_keeps_the_filters(ds: tb.Dataset) -> None:
    # Pushing a predicate copies it to the scan; the filter itself still runs on every row.
    query = ds.filter(pl.col("a") > 1)
    _, ops = lineage(optimize(query._plan))
    assert len(ops) == 1
    assert query.collect(**RUN)["a"].to_list() == [3]


def test_rules_are_pure(ds: tb.Dataset) -> None:
    query = ds.filter(pl.col("a") > 1).select("b")
    before = query.explain(optimized=False)
    optimize(query._plan)
    assert query.explain(optimized=False) == before
    assert _scan(query, lambda p: p).columns is None
