"""A reduce partition larger than a worker's room is split again on disk, not refused.

``tiny_room`` leaves reduce tasks a few kilobytes for data, so that every partition of these
small inputs is too large and is re-partitioned into pieces (a spy on ``repartition.split``
proves it happened). Results must equal Polars' in-memory answer on the same data, with the
exact order for a sort. One key whose rows alone exceed the room stops the task early with an
error naming the key; aggregations pre-combined in the map tasks never get there.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from helpers import collect_inline, one_line_error, same_rows
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

import terabatch as tb
import terabatch.plan.stages as stages_module
from terabatch.errors import PartitionTooLargeError
from terabatch.io.shuffle import ShuffleSink, ShuffleWriter, map_dir
from terabatch.io.shuffle_read import JoinSource, ShufflePartition, ShuffleSource

ROOM = 40_000


def make_data(n: int, keys: int, hot: float = 0.0, seed: int = 0) -> pl.DataFrame:
    """Keys of several types with nulls; a share ``hot`` of the rows has the key "hot"."""
    rng = np.random.default_rng(seed)
    k = rng.integers(0, keys, n).astype(str).astype(object)
    k[rng.random(n) < 0.01] = None
    k[rng.random(n) < hot] = "hot"
    return pl.DataFrame(
        {
            "k": k.tolist(),
            "j": [None if x == 0 else int(x) for x in rng.integers(0, 6, n)],
            "d": [dt.date(2026, 1, 1) + dt.timedelta(days=int(x)) for x in rng.integers(0, 9, n)],
            "v": rng.permutation(n),
            "w": [None if x < 0.1 else float(x) for x in rng.random(n)],
        },
        schema={"k": pl.String, "j": pl.Int64, "d": pl.Date, "v": pl.Int64, "w": pl.Float64},
    )


DATA = make_data(4_000, keys=300)
SKEWED = make_data(4_000, keys=300, hot=0.5, seed=1)


@pytest.fixture
def splits(tiny_splits, tiny_room, recorded_splits) -> list[int]:
    """Split the input finely, give reduce tasks ``ROOM`` bytes, and record every re-split."""
    tiny_splits(4_000)
    tiny_room(ROOM)
    return recorded_splits


def read(tmp_path: Path, frame: pl.DataFrame, name: str = "in") -> tb.Dataset:
    path = tmp_path / f"{name}.parquet"
    frame.write_parquet(path, row_group_size=250)
    return tb.read_parquet(path)


AGGS = [
    pl.col("w").median().alias("median"),
    pl.col("v").n_unique().alias("distinct"),
    pl.col("w").std().alias("std"),
    pl.col("v").first().alias("first"),
    pl.col("v").implode().alias("all"),  # in input order: pieces keep it
]


@pytest.mark.parametrize("keys", [["k"], ["j", "d"], ["k", "j"]])
def test_group_by_in_pieces_equals_polars(tmp_path: Path, splits, keys) -> None:
    got = collect_inline(read(tmp_path, DATA).group_by(*keys).agg(*AGGS))
    same_rows(got, DATA.group_by(keys).agg(*AGGS), keys)
    assert splits


@pytest.mark.parametrize("keep", ["first", "last", "none", "any"])
def test_unique_in_pieces_equals_polars(tmp_path: Path, splits, keep: str) -> None:
    got = collect_inline(read(tmp_path, DATA).unique(["k", "j"], keep=keep))
    want = DATA.unique(["k", "j"], keep=keep, maintain_order=True)
    columns = ["k", "j"] if keep == "any" else DATA.columns
    same_rows(got.select(columns), want.select(columns), columns)
    assert splits


def test_window_in_pieces_equals_polars(tmp_path: Path, splits) -> None:
    exprs = [
        pl.col("v").cum_sum().over("k").alias("running"),
        (pl.col("w") - pl.col("w").mean().over("k")).alias("centered"),
    ]
    got = collect_inline(read(tmp_path, DATA).with_columns(*exprs))
    same_rows(got, DATA.with_columns(*exprs), ["v"])
    assert splits


@pytest.mark.parametrize(
    ("data", "by"),
    [(DATA, ["k", "j"]), (SKEWED, ["k", "j"]), (SKEWED, ["k"])],
    ids=["spread", "one key holds half", "one key alone exceeds the room"],
)
@pytest.mark.parametrize(("descending", "nulls_last"), [(False, False), (True, True)])
def test_sort_in_pieces_keeps_the_global_order(
    tmp_path: Path, splits, data: pl.DataFrame, by: list[str], descending: bool, nulls_last: bool
) -> None:
    # The rows of "hot" alone exceed the room (a median over them fails below): they get a
    # piece of their own, streamed as it is; the sort is stable, so they keep input order.
    flags = [descending] + [False] * (len(by) - 1)
    got = collect_inline(read(tmp_path, data).sort(by, descending=flags, nulls_last=nulls_last))
    want = data.sort(by, descending=flags, nulls_last=nulls_last, maintain_order=True)
    assert_frame_equal(got, want)
    assert splits


@pytest.mark.parametrize("how", ["inner", "left", "right", "full", "semi", "anti"])
def test_join_in_pieces_equals_polars(
    tmp_path: Path, splits, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    monkeypatch.setattr(stages_module, "BROADCAST_BYTES", 0)
    right = make_data(3_000, keys=400, seed=2).select("k", "j", r=pl.col("v"))
    ds = read(tmp_path, DATA).join(read(tmp_path, right, "right"), on=["k", "j"], how=how)
    got = collect_inline(ds)
    want = DATA.join(right, on=["k", "j"], how=how)
    same_rows(got, want.select(got.columns), got.columns)
    assert splits


def test_join_with_large_matches_is_joined_in_pieces(
    tmp_path: Path, tiny_splits, tiny_room, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Inputs that fit, but 40 x 40 matches per key: the output would not; it is cut by key.
    tiny_splits(4_000)
    tiny_room(2_000_000)
    monkeypatch.setattr(stages_module, "BROADCAST_BYTES", 0)
    joins = []
    join = JoinSource._join

    def spy(self, left, right):
        joins.append(left.height)
        return join(self, left, right)

    monkeypatch.setattr(JoinSource, "_join", spy)
    left = pl.DataFrame({"k": [i % 100 for i in range(4_000)], "a": range(4_000)})
    right = pl.DataFrame({"k": [i % 100 for i in range(4_000)], "b": range(4_000)})
    got = collect_inline(read(tmp_path, left, "l").join(read(tmp_path, right, "r"), on="k"))
    same_rows(got, left.join(right, on="k"), ["a", "b"])
    assert len(joins) > 2  # more joins than partitions


def test_several_shuffles_in_pieces(tmp_path: Path, splits) -> None:
    def build(d):
        return (
            d.group_by("k", "j")
            .agg(pl.col("w").median(), n=pl.len())
            .with_columns(pl.col("w").rank().over("k").alias("rank"))
            .sort("n", "k", "j", descending=[True, False, False], nulls_last=True)
        )

    assert_frame_equal(collect_inline(build(read(tmp_path, DATA))), build(DATA))
    assert splits


# Skew: one key holds half of all rows.


def test_one_key_too_large_for_a_holistic_aggregation_stops_early(tmp_path: Path, splits) -> None:
    ds = read(tmp_path, SKEWED).group_by("k").agg(pl.col("w").median())
    with pytest.raises(PartitionTooLargeError) as info:
        collect_inline(ds)
    text = one_line_error(info.value)
    hot = SKEWED.filter(pl.col("k") == "hot").height
    assert f"key {{'k': 'hot'}} alone has {hot:,} rows" in text
    assert "raise memory=" in text and "shuffle 1 partition" in text
    assert not splits  # found from a sample of the keys, before writing any piece


@pytest.mark.parametrize(
    "build",
    [
        lambda d: d.group_by("k").agg(
            pl.col("v").sum(),
            pl.col("w").mean().alias("mean"),
            pl.len().alias("n"),
            pl.col("v").min().alias("min"),
            pl.col("w").max().alias("max"),
            pl.col("v").first().alias("first"),
            pl.col("v").last().alias("last"),
        ),
        lambda d: d.unique(["k"], keep="first"),
        lambda d: d.unique(["k"], keep="last"),
        lambda d: d.unique(["k", "j"], keep="any").select("k", "j"),
    ],
    ids=["decomposable aggregations", "unique first", "unique last", "unique any"],
)
def test_pre_combined_work_completes_with_one_key_holding_half(
    tmp_path: Path, splits, build
) -> None:
    # The same room in which a median over the key fails: the map tasks shrink the key's rows
    # to one per batch before the shuffle.
    got = collect_inline(build(read(tmp_path, SKEWED)))
    want = build(SKEWED.lazy()).collect()
    same_rows(got, want.select(got.columns), got.columns)


def test_a_window_over_one_huge_key_stops_early(tmp_path: Path, splits) -> None:
    ds = read(tmp_path, SKEWED).with_columns(pl.col("v").rank().over("k"))
    with pytest.raises(PartitionTooLargeError, match=r"key \{'k': 'hot'\} alone has"):
        collect_inline(ds)


def test_a_join_key_with_a_huge_match_set_stops_early(
    tmp_path: Path, tiny_splits, tiny_room, monkeypatch: pytest.MonkeyPatch
) -> None:
    tiny_splits(4_000)
    tiny_room(2_000_000)
    monkeypatch.setattr(stages_module, "BROADCAST_BYTES", 0)
    left = pl.DataFrame({"k": ["hot"] * 2_000 + ["x", "y"], "a": range(2_002)})
    right = pl.DataFrame({"k": ["hot"] * 2_000 + ["y"], "b": range(2_001)})
    ds = read(tmp_path, left, "l").join(read(tmp_path, right, "r"), on="k", how="left")
    with pytest.raises(PartitionTooLargeError) as info:
        collect_inline(ds)
    text = one_line_error(info.value)
    assert "join key {'k': 'hot'} matches 2,000 left rows with 2,000 right rows" in text
    assert "4,000,000 joined rows" in text


def test_a_join_key_too_large_on_both_sides_stops_early(
    tmp_path: Path, splits, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stages_module, "BROADCAST_BYTES", 0)
    right = SKEWED.select("k", r=pl.col("v")).head(300)
    ds = read(tmp_path, SKEWED).join(read(tmp_path, right, "right"), on="k", how="semi")
    hot_left = SKEWED.filter(pl.col("k") == "hot").height
    hot_right = right.filter(pl.col("k") == "hot").height
    with pytest.raises(PartitionTooLargeError) as info:
        collect_inline(ds)
    assert (
        f"join key {{'k': 'hot'}} ({hot_left:,} left and {hot_right:,} right rows)"
        in one_line_error(info.value)
    )


# The read side on its own: pieces on disk, and what is left of them.


def test_pieces_hold_every_row_once_and_are_removed(tmp_path: Path) -> None:
    frame = make_data(3_000, keys=200)
    sink = ShuffleSink(str(tmp_path), ("k",), 1)
    for task_id, part in enumerate(frame.iter_slices(500)):
        writer = ShuffleWriter(sink, map_dir(str(tmp_path), task_id))
        writer.write(part)
        writer.close()
    source = ShuffleSource(str(tmp_path), ("k",), data_room=ROOM)
    pieces = [b.frame for b in source.read(ShufflePartition(0), None, 1 << 16)]
    assert len(pieces) > 1
    assert_frame_equal(pl.concat(pieces).sort("v"), frame.sort("v"))
    owners = [set(p["k"].to_list()) for p in pieces]
    assert all(not (a & b) for i, a in enumerate(owners) for b in owners[i + 1 :])
    assert not list(tmp_path.glob("split-*"))


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    seed=st.integers(0, 2**16),
    keys=st.sampled_from([1, 3, 40, 2_000]),
    hot=st.sampled_from([0.0, 0.3]),
    room=st.sampled_from([30_000, 60_000]),
    op=st.sampled_from(["group_by", "unique", "sort"]),
)
def test_property_pieces_equal_polars(
    tmp_path: Path, tiny_splits, tiny_room, seed, keys, hot, room, op
) -> None:
    assume(op != "group_by" or (keys >= 40 and hot == 0))  # else one key is too large
    tiny_splits(4_000)
    tiny_room(room)
    data = make_data(2_000, keys=keys, hot=hot, seed=seed)
    ds = read(tmp_path, data)
    if op == "group_by":
        aggs = [pl.col("v").sort().head(2).alias("low"), pl.col("w").quantile(0.5).alias("q")]
        same_rows(collect_inline(ds.group_by("k").agg(*aggs)), data.group_by("k").agg(*aggs), ["k"])
    elif op == "unique":
        got = collect_inline(ds.unique(["k", "j"], keep="last"))
        same_rows(got, data.unique(["k", "j"], keep="last"), data.columns)
    else:
        got = collect_inline(ds.sort("j", "k", nulls_last=True))
        assert_frame_equal(got, data.sort("j", "k", nulls_last=True, maintain_order=True))


def test_pieces_on_worker_processes(tmp_path: Path, tiny_splits, tiny_room) -> None:
    tiny_splits(4_000)
    tiny_room(ROOM)
    ds = read(tmp_path, SKEWED)
    got = ds.sort("k").collect(workers=2)
    assert_frame_equal(got, SKEWED.sort("k", maintain_order=True))
    with pytest.raises(PartitionTooLargeError, match=r"key \{'k': 'hot'\} alone has"):
        ds.group_by("k").agg(pl.col("w").median()).collect(workers=2)
