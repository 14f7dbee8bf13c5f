"""One Polars streaming query over a Python stream of batches (terabatch.ops.stream)."""

from __future__ import annotations

import contextvars
import sys
from collections.abc import Iterator

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from terabatch.io.sources import Batch
from terabatch.ops.stream import stream_query


def _batches(frames: list[pl.DataFrame]) -> Iterator[Batch]:
    for i, frame in enumerate(frames):
        yield Batch(frame, lambda i=i: f"batch {i}")


K = [pl.col("k")]


def _sums(rows: pl.LazyFrame) -> pl.LazyFrame:
    return rows.group_by("k").agg(pl.col("v").sum(), pl.len())


@settings(max_examples=30, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 300), min_size=1, max_size=12),
    keys=st.integers(1, 50),
    limit=st.integers(1, 20_000),
)
def test_combining_the_results_gives_polars_answer(sizes: list[int], keys: int, limit: int) -> None:
    frames = [
        pl.DataFrame(
            {"k": [(i * 7 + j) % keys for j in range(n)], "v": list(range(n))},
            schema={"k": pl.Int64, "v": pl.Int64},
        )
        for i, n in enumerate(sizes)
    ]
    results = [
        b.frame for b in stream_query(_batches(frames), _sums, limit, limit // 2 or 1, keys=K)
    ]
    combined = (
        pl.concat(results).group_by("k").agg(pl.col("v").sum(), pl.col("len").sum())
        if results
        else None
    )
    want = pl.concat(frames).group_by("k").agg(pl.col("v").sum(), pl.len())
    if combined is None:
        assert want.height == 0
        return
    assert_frame_equal(
        combined.sort("k"), want.sort("k"), check_dtypes=False, check_column_order=False
    )


def test_distinct_keys_take_half_the_bound_repeating_keys_all_of_it() -> None:
    frames = [
        pl.DataFrame({"k": range(i * 1000, (i + 1) * 1000), "v": [1] * 1000}) for i in range(8)
    ]
    size = frames[0].estimated_size()
    distinct = list(stream_query(_batches(frames), _sums, 4 * size, size, keys=K))
    assert [b.frame.height for b in distinct] == [2000, 2000, 2000, 2000]  # two batches a query
    repeating = [pl.DataFrame({"k": [j % 10 for j in range(1000)], "v": [1] * 1000})] * 8
    grown = list(stream_query(_batches(repeating), _sums, 4 * size, size, keys=K))
    assert len(grown) == 2  # four batches a query


def test_repeating_keys_take_more_while_memory_allows() -> None:
    frames = [pl.DataFrame({"k": [j % 10 for j in range(1000)], "v": [1] * 1000})] * 8
    size = frames[0].estimated_size()
    roomy = list(
        stream_query(_batches(frames), _sums, 2 * size, size, memory_cap=sys.maxsize, keys=K)
    )
    assert [b.frame["v"].sum() for b in roomy] == [8000]  # one query over everything
    full = list(stream_query(_batches(frames), _sums, 2 * size, size, memory_cap=0, keys=K))
    assert len(full) == 4  # the process is over the cap: queries stop at the bound


def test_queries_again_over_the_probe_see_the_rows_in_input_order() -> None:
    frames = [
        pl.DataFrame({"k": [j % 7 for j in range(i, i + 50)], "v": range(i, i + 50)})
        for i in range(0, 500, 50)
    ]
    size = frames[0].estimated_size()

    def firsts(rows: pl.LazyFrame) -> pl.LazyFrame:
        return rows.group_by("k").agg(pl.col("v").first())

    out = [b.frame for b in stream_query(_batches(frames), firsts, 3 * size, size, keys=K)]
    combined = pl.concat(out).group_by("k", maintain_order=True).agg(pl.col("v").first())
    want = pl.concat(frames).group_by("k").agg(pl.col("v").first())
    assert_frame_equal(combined.sort("k"), want.sort("k"))


def _one_row_groups(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select("k", pl.col("v").fill_null(0), pl.lit(1).alias("len"))


def test_keys_that_never_repeat_leave_row_by_row() -> None:
    frames = [
        pl.DataFrame({"k": range(i * 100, (i + 1) * 100), "v": [1, None] * 50}) for i in range(6)
    ]
    size = frames[0].estimated_size()
    query = stream_query(_batches(frames), _sums, 2 * size, size, _one_row_groups, keys=K)
    out = [b.frame for b in query]
    assert len(out) == 6  # one batch out per batch in
    assert all(f.schema == out[0].schema for f in out)  # cast to the query's types
    want = pl.concat(frames).group_by("k").agg(pl.col("v").sum(), pl.len())
    assert_frame_equal(pl.concat(out).sort("k"), want.sort("k"))


def test_keys_that_repeat_keep_being_queried() -> None:
    frames = [pl.DataFrame({"k": [j % 10 for j in range(100)], "v": [1] * 100})] * 6
    size = frames[0].estimated_size()
    out = list(stream_query(_batches(frames), _sums, 2 * size, size, _one_row_groups, keys=K))
    # two batches per query
    assert [b.frame.height for b in out] == [10, 10, 10]


class Boom(Exception):
    pass


def test_an_error_while_producing_batches_comes_back_unchanged() -> None:
    def failing() -> Iterator[Batch]:
        yield Batch(pl.DataFrame({"k": [1], "v": [1]}), lambda: "first")
        raise Boom("bad row in batch 2")

    with pytest.raises(Boom, match="bad row in batch 2"):
        list(stream_query(failing(), _sums, 1 << 30, keys=K))


collector: contextvars.ContextVar[list[str]] = contextvars.ContextVar("collector")


def test_batches_are_produced_in_the_callers_context() -> None:
    """Polars pulls batches from its own threads; the bad-row collector must still be seen."""
    seen: list[str] = []
    token = collector.set(seen)

    def reporting() -> Iterator[Batch]:
        for i in range(3):
            collector.get().append(f"batch {i}")
            yield Batch(pl.DataFrame({"k": [i], "v": [i]}), lambda: "x")

    try:
        list(stream_query(reporting(), _sums, 1 << 30, keys=K))
    finally:
        collector.reset(token)
    assert seen == ["batch 0", "batch 1", "batch 2"]


def test_a_schema_change_starts_a_new_query() -> None:
    frames = [
        pl.DataFrame({"k": [1, 2], "v": [1, 2]}),
        pl.DataFrame({"k": [1, 2], "v": [1.5, 2.5]}),
    ]
    out = [b.frame for b in stream_query(_batches(frames), _sums, 1 << 30, keys=K)]
    assert [f.schema["v"] for f in out] == [pl.Int64, pl.Float64]
