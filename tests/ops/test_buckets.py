"""One query per bucket of rows (terabatch.ops.buckets), and when pre-combining takes it."""

from __future__ import annotations

from collections.abc import Iterator

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

import terabatch.ops.stream as stream_module
from terabatch.io.shuffle import partition_of
from terabatch.io.sources import Batch
from terabatch.ops.buckets import bucketed_query
from terabatch.ops.stream import stream_query


def _batches(frames: list[pl.DataFrame]) -> Iterator[Batch]:
    for i, frame in enumerate(frames):
        yield Batch(frame, lambda i=i: f"batch {i}")


def _partials(rows: pl.LazyFrame) -> pl.LazyFrame:
    return rows.group_by("k").agg(pl.col("v").sum(), pl.col("v").first().alias("f"), pl.len())


def _combined(results: list[pl.DataFrame]) -> pl.DataFrame:
    # the results in the order they came: the first partial of a key holds its first value
    return (
        pl.concat(results)
        .group_by("k", maintain_order=True)
        .agg(pl.col("v").sum(), pl.col("f").first(), pl.col("len").sum())
        .sort("k")
    )


def _bucket(frame: pl.DataFrame, buckets: int) -> pl.Series:
    return partition_of(frame, ("k",), buckets)


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 200), min_size=1, max_size=10),
    keys=st.integers(1, 60),
    buckets=st.integers(1, 9),
    limit=st.integers(1, 5_000),
)
def test_bucket_results_combine_to_polars_answer(
    sizes: list[int], keys: int, buckets: int, limit: int
) -> None:
    frames, start = [], 0
    for n in sizes:
        values = list(range(start, start + n))
        rows = {"k": [f"k{(v * 31) % keys}" for v in values], "v": values}
        frames.append(pl.DataFrame(rows, schema={"k": pl.String, "v": pl.Int64}))
        start += n
    out = list(bucketed_query(_batches(frames), _partials, lambda f: _bucket(f, buckets), limit, 0))
    rows = pl.concat(frames)
    if rows.height == 0:
        assert out == []
        return
    for batch in out:  # each result holds one bucket's keys
        assert _bucket(batch.frame, buckets).n_unique() == 1
    want = rows.group_by("k").agg(pl.col("v").sum(), pl.col("v").first().alias("f"), pl.len())
    assert_frame_equal(_combined([b.frame for b in out]), want.sort("k"), check_dtypes=False)


def test_rows_are_held_until_the_bound_then_queried_bucket_by_bucket() -> None:
    frames = [pl.DataFrame({"k": [f"k{j % 10}" for j in range(100)], "v": [1] * 100})] * 6
    size = frames[0].estimated_size()
    out = list(bucketed_query(_batches(frames), _partials, lambda f: _bucket(f, 3), 2 * size, 0))
    buckets = _bucket(frames[0], 3).n_unique()
    assert len(out) == 3 * buckets  # two batches per round, one result per bucket per round
    assert sum(b.frame["len"].sum() for b in out) == 600


K = [pl.col("k")]


def test_a_probe_with_many_keys_hands_the_rows_to_buckets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(stream_module, "MANY_KEYS", 5)
    frames = [pl.DataFrame({"k": [f"k{j % 10}" for j in range(100)], "v": range(100)})] * 4
    size = frames[0].estimated_size()

    def query() -> list[Batch]:
        out = stream_query(
            _batches(frames), _partials, 8 * size, size, bucket_of=lambda f: _bucket(f, 4), keys=K
        )
        return list(out)

    cut = query()
    assert len(cut) == _bucket(frames[0], 4).n_unique()  # one query per bucket
    want = (
        pl.concat(frames)
        .group_by("k")
        .agg(pl.col("v").sum(), pl.col("v").first().alias("f"), pl.len())
    )
    assert_frame_equal(_combined([b.frame for b in cut]), want.sort("k"), check_dtypes=False)
    monkeypatch.setattr(stream_module, "MANY_KEYS", 11)  # the probe found 10 keys: one query
    whole = query()
    assert len(whole) == 1
