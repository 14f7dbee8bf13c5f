"""group_by and unique through the hash shuffle, checked against Polars on the same data.

Most cases run on the inline executor with tiny splits and many partitions, so that every row
travels through map tasks, shuffle files and reduce tasks; a few run on worker processes.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest
from helpers import collect_inline, same_rows
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

import terabatch as tb
import terabatch.plan.stages as stages_module
from terabatch.errors import SpillLimitError, TerabatchError
from terabatch.io.shuffle import RangeSpec, boundaries_from_sample, range_partition_of


def write_parquet(tmp_path: Path, frame: pl.DataFrame) -> Path:
    path = tmp_path / "in.parquet"
    frame.write_parquet(path, row_group_size=7)
    return path


KEYED = pl.DataFrame(
    {
        "s": ["a", None, "b", "a", "c", None, "b", "a", "a", "c"] * 3,
        "i": [1, 2, None, 1, 3, 2, 2, 1, None, 3] * 3,
        "f": [0.5, 1.5, 0.5, None, 2.5, 1.5, 0.5, 0.5, 2.5, None] * 3,
        "d": [dt.date(2026, 1, 1 + n % 3) for n in range(30)],
        "v": list(range(30)),
        "w": [None if n % 7 == 0 else float(n) / 3 for n in range(30)],
    }
)

AGGREGATIONS = [
    pl.col("v").sum(),
    pl.col("w").mean().alias("mean"),
    pl.len().alias("n"),
    pl.col("w").count().alias("count"),
    pl.col("v").min().alias("min"),
    pl.col("w").max().alias("max"),
    pl.col("v").first().alias("first"),
    pl.col("w").last().alias("last"),
]
HOLISTIC = [
    pl.col("w").median().alias("median"),
    pl.col("w").std().alias("std"),
    pl.col("v").n_unique().alias("distinct"),
    pl.col("v").quantile(0.25).alias("q"),
    pl.corr("v", "w").alias("corr"),
    pl.col("v").sort_by("w", descending=True).head(2).alias("top2"),
    pl.col("v").implode().alias("all"),
]


@pytest.mark.parametrize("keys", [["s"], ["i"], ["f"], ["d"], ["s", "i"], ["d", "s", "f"]])
@pytest.mark.parametrize("aggs", [AGGREGATIONS, HOLISTIC], ids=["decomposable", "holistic"])
def test_group_by_equals_polars(tmp_path: Path, many_partitions, keys, aggs) -> None:
    ds = tb.read_parquet(write_parquet(tmp_path, KEYED))
    got = collect_inline(ds.group_by(*keys).agg(*aggs))
    want = KEYED.group_by(keys, maintain_order=True).agg(*aggs)
    same_rows(got, want, keys)


@pytest.mark.parametrize(
    "aggs",
    [[pl.col(["v", "w"]).median()], [pl.col(["v", "w"]).sum(), pl.len()], [pl.all().max()]],
    ids=["holistic", "decomposable", "all"],
)
def test_aggregation_giving_several_columns(tmp_path: Path, many_partitions, aggs) -> None:
    ds = tb.read_parquet(write_parquet(tmp_path, KEYED))
    got = collect_inline(ds.group_by("s").agg(*aggs))
    same_rows(got, KEYED.group_by("s", maintain_order=True).agg(*aggs), ["s"])


def test_group_by_computed_key_then_narrow_ops(tmp_path: Path, many_partitions) -> None:
    ds = tb.read_parquet(write_parquet(tmp_path, KEYED))
    built = (
        ds.filter(pl.col("v") > 3)
        .group_by(pl.col("v") % 4)
        .agg(total=pl.col("v").sum())
        .with_columns(double=pl.col("total") * 2)
        .filter(pl.col("total") > 10)
    )
    want = (
        KEYED.filter(pl.col("v") > 3)
        .group_by(pl.col("v") % 4)
        .agg(total=pl.col("v").sum())
        .with_columns(double=pl.col("total") * 2)
        .filter(pl.col("total") > 10)
    )
    same_rows(collect_inline(built), want, ["v"])


@pytest.mark.parametrize("keep", ["first", "last", "any", "none"])
@pytest.mark.parametrize("subset", [None, ["s"], ["s", "i"], ["d"]])
def test_unique_equals_polars(tmp_path: Path, many_partitions, keep, subset) -> None:
    frame = KEYED.with_columns(v=pl.col("v") % 5) if subset is None else KEYED
    ds = tb.read_parquet(write_parquet(tmp_path, frame))
    got = collect_inline(ds.unique(subset, keep=keep))
    want = frame.unique(subset, keep=keep, maintain_order=True)
    if keep == "any":
        # Which row of a key survives is unspecified; the keys and their count are not.
        cols = subset or frame.columns
        same_rows(got.select(cols), want.select(cols), cols)
    else:
        same_rows(got, want, frame.columns)


@pytest.mark.parametrize(
    "frame",
    [
        KEYED.head(0),
        KEYED.head(1),
        KEYED.with_columns(s=pl.lit("same")),
    ],
    ids=["empty", "one row", "one key"],
)
def test_edge_inputs(tmp_path: Path, many_partitions, frame: pl.DataFrame) -> None:
    ds = tb.read_parquet(write_parquet(tmp_path, frame))
    got = collect_inline(ds.group_by("s").agg(*AGGREGATIONS))
    same_rows(got, frame.group_by("s").agg(*AGGREGATIONS), ["s"])
    got = collect_inline(ds.unique("s", keep="first"))
    same_rows(got, frame.unique("s", keep="first", maintain_order=True), frame.columns)


rows = st.lists(
    st.tuples(
        st.sampled_from(["x", "y", "z", None]),
        st.integers(-3, 3) | st.none(),
        st.integers(-100, 100),
    ),
    max_size=60,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=rows, keep=st.sampled_from(["first", "last", "none"]))
def test_property_group_by_and_unique(tmp_path: Path, many_partitions, rows, keep) -> None:
    frame = pl.DataFrame(rows, schema={"k": pl.String, "j": pl.Int64, "v": pl.Int64}, orient="row")
    ds = tb.read_parquet(write_parquet(tmp_path, frame))
    aggs = [pl.col("v").sum(), pl.col("v").first().alias("f"), pl.len().alias("n")]
    got = collect_inline(ds.group_by("k", "j").agg(*aggs))
    same_rows(got, frame.group_by("k", "j").agg(*aggs), ["k", "j"])
    got = collect_inline(ds.unique(["k", "j"], keep=keep))
    same_rows(got, frame.unique(["k", "j"], keep=keep, maintain_order=True), frame.columns)


def test_on_worker_processes_write_parquet(tmp_path: Path, tiny_splits, csv_file: Path) -> None:
    tiny_splits(2_000)
    ds = tb.read_csv(csv_file).group_by("group").agg(pl.col("value").sum(), pl.len())
    summary = ds.write_parquet(tmp_path / "out", workers=2, progress=False)
    got = pl.read_parquet(tmp_path / "out" / "*.parquet")
    want = pl.read_csv(csv_file).group_by("group").agg(pl.col("value").sum(), pl.len())
    same_rows(got, want, ["group"])
    assert summary.rows_read == pl.read_csv(csv_file).height
    assert summary.rows_written == want.height


def test_explain_shows_the_shuffle(csv_file: Path) -> None:
    text = tb.read_csv(csv_file).group_by("group").agg(pl.col("value").sum()).explain()
    assert 'hash shuffle 1 on col("group")' in text
    assert "stage 2: reduce" in text
    assert "columns [group, value]" in text
    assert "pre-combined per task: sum" in text
    holistic = tb.read_csv(csv_file).group_by("group").agg(pl.col("value").median()).explain()
    assert "no pre-combining" in holistic
    narrow = tb.read_csv(csv_file).select("value").explain()
    assert "no shuffle" in narrow and "stage 2" not in narrow


def test_bad_group_by_arguments(csv_file: Path) -> None:
    ds = tb.read_csv(csv_file)
    with pytest.raises(TerabatchError, match="not found"):
        ds.group_by("nope").agg(pl.len())
    with pytest.raises(TerabatchError, match="keep"):
        ds.unique(keep="middle")


WINDOWS = [
    pl.col("v").sum().over("s").alias("total"),
    pl.col("v").cum_sum().over("s").alias("running"),
    (pl.col("w") - pl.col("w").mean().over("s")).alias("centered"),
    pl.col("v").rank("ordinal").over("s").alias("rank"),
]


@pytest.mark.parametrize("exprs", [WINDOWS[:1], WINDOWS], ids=["sum", "mixed"])
def test_window_over_equals_polars(tmp_path: Path, many_partitions, exprs) -> None:
    ds = tb.read_parquet(write_parquet(tmp_path, KEYED))
    got = collect_inline(ds.filter(pl.col("v") != 4).with_columns(*exprs))
    want = KEYED.filter(pl.col("v") != 4).with_columns(*exprs)
    # Order-dependent windows (cum_sum, rank by position) see rows in input order.
    same_rows(got, want, ["v"])


def test_window_over_two_keys(tmp_path: Path, many_partitions) -> None:
    ds = tb.read_parquet(write_parquet(tmp_path, KEYED))
    expr = pl.col("v").max().over("s", "i").alias("m")
    same_rows(collect_inline(ds.with_columns(expr)), KEYED.with_columns(expr), ["v"])


def test_windows_must_share_keys_and_stand_alone(csv_file: Path) -> None:
    ds = tb.read_csv(csv_file)
    with pytest.raises(TerabatchError, match="same plain columns"):
        ds.with_columns(pl.col("value").sum().over("group"), pl.col("value").sum().over("id"))
    with pytest.raises(TerabatchError, match="outside over"):
        ds.with_columns(pl.col("value").sum().over("group") + pl.col("value").sum())


CHAINS = {
    # Order-free windows over other keys, and order-dependent ones over the same keys.
    "other keys": lambda d: d.with_columns(
        pl.col("v").rank("ordinal").over("s").alias("r")
    ).with_columns(pl.col("w").sum().over("i").alias("t"), pl.col("v").rank("dense").over("i")),
    "same keys": lambda d: (
        d.with_columns(pl.col("w").mean().over("s").alias("m"))
        .filter(pl.col("v") != 5)
        .with_columns(pl.col("v").cum_sum().over("s").alias("c"), pl.col("w").shift().over("s"))
    ),
    # A group_by or unique on the window's own keys: each group is still in input order.
    "then group_by": lambda d: (
        d.with_columns(pl.col("w").sum().over("s").alias("t"))
        .group_by("s")
        .agg(pl.col("v").first(), pl.col("u").last(), pl.col("t").max())
    ),
    "then unique": lambda d: d.with_columns(pl.col("w").sum().over("s").alias("t")).unique(
        ["s"], keep="last"
    ),
    # A sort gives the rows the order the next windows follow.
    "after a sort": lambda d: (
        d.with_columns(pl.col("w").max().over("s").alias("m"))
        .sort("u")
        .with_columns(pl.col("v").cum_sum().over("i").alias("c"), pl.col("v").first().over("i"))
    ),
}


@pytest.mark.parametrize("chain", list(CHAINS), ids=list(CHAINS))
def test_windows_after_a_window_or_a_sort_equal_polars(
    tmp_path: Path, many_partitions, chain: str
) -> None:
    frame = KEYED.with_columns(u=(pl.int_range(pl.len()) * 17) % 31)  # distinct: a total order
    ds = tb.read_parquet(write_parquet(tmp_path, frame))
    build = CHAINS[chain]
    same_rows(collect_inline(build(ds)), build(frame), ["u"])


def test_an_order_dependent_window_after_a_window_over_other_keys_is_refused(
    csv_file: Path,
) -> None:
    ds = tb.read_csv(csv_file).with_columns(pl.col("value").sum().over("group").alias("t"))
    for expr in (
        pl.col("value").cum_sum().over("id"),
        pl.col("value").shift().over("id"),
        pl.col("value").rank("ordinal").over("id"),
        pl.col("value").first().over("id"),
    ):
        with pytest.raises(TerabatchError, match="grouped by group, not in input order") as info:
            ds.filter(pl.col("value") > 0).with_columns(expr.alias("x"))
        assert "sort the rows first" in str(info.value)
    with pytest.raises(TerabatchError, match=r"agg\(.*first\(\), which follows the order"):
        ds.group_by("id").agg(pl.col("value").sum(), pl.col("value").first())
    with pytest.raises(TerabatchError, match="unique uses keep='first'"):
        ds.unique(["id"], keep="first")
    # Order-free, on the window's keys, over whole rows, or after a sort: accepted.
    ds.group_by("id").agg(pl.col("value").sum(), pl.col("value").sort().first().alias("low"))
    ds.group_by("group").agg(pl.col("value").first())
    ds.unique(["group"], keep="last")
    ds.unique(keep="first")
    ds.sort("id").with_columns(pl.col("value").cum_sum().over("id"))


@pytest.mark.parametrize("largest", [True, False])
def test_top_and_bottom_k(tmp_path: Path, many_partitions, largest: bool) -> None:
    frame = KEYED.with_columns(u=pl.int_range(pl.len()) * 7 % 30)
    ds = tb.read_parquet(write_parquet(tmp_path, frame))
    build = (lambda d: d.top_k(4, by="u")) if largest else (lambda d: d.bottom_k(4, by="u"))
    got = collect_inline(build(ds.filter(pl.col("v") > 2)).select("u", "v"))
    want = build(frame.filter(pl.col("v") > 2)).select("u", "v")
    same_rows(got, want, ["u"])
    grouped = collect_inline(ds.group_by("s").agg(pl.col("v").sum()).top_k(2, by="v"))
    same_rows(grouped, frame.group_by("s").agg(pl.col("v").sum()).top_k(2, by="v"), ["s"])


def test_top_k_written_to_parquet(tmp_path: Path, csv_file: Path) -> None:
    out = tmp_path / "out"
    tb.read_csv(csv_file).top_k(5, by="value").write_parquet(out, progress=False)
    want = pl.read_csv(csv_file).top_k(5, by="value")
    same_rows(pl.read_parquet(out / "*.parquet"), want, ["id"])


def test_spill_limit_stops_the_job_and_leaves_nothing(tmp_path: Path, csv_file: Path) -> None:
    out = tmp_path / "out"
    ds = tb.read_csv(csv_file).group_by("id").agg(pl.col("value").median())
    with pytest.raises(SpillLimitError, match=r"spill limit of 1\.0 KiB") as info:
        ds.write_parquet(out, spill_limit="1KB", workers=1, progress=False)
    assert "\n" not in str(info.value)
    assert not out.exists()
    summary = ds.write_parquet(out, spill_limit="1GB", workers=1, progress=False)
    assert summary.rows_written == pl.read_csv(csv_file)["id"].n_unique()


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=rows,
    descending=st.tuples(st.booleans(), st.booleans()),
    nulls_last=st.booleans(),
)
def test_property_sort_is_global_and_stable(
    tmp_path: Path, many_partitions, rows, descending, nulls_last
) -> None:
    frame = pl.DataFrame(rows, schema={"k": pl.String, "j": pl.Int64, "v": pl.Int64}, orient="row")
    ds = tb.read_parquet(write_parquet(tmp_path, frame))
    got = collect_inline(ds.sort("k", "j", descending=list(descending), nulls_last=nulls_last))
    want = frame.sort(
        "k", "j", descending=list(descending), nulls_last=nulls_last, maintain_order=True
    )
    assert_frame_equal(got, want)


def test_sorted_output_files_are_in_key_order(tmp_path: Path, csv_file: Path, tiny_splits) -> None:
    tiny_splits(2_000)
    out = tmp_path / "out"
    tb.read_csv(csv_file).sort("value").write_parquet(out, workers=2, progress=False)
    files = sorted(out.glob("*.parquet"))
    assert len(files) >= 2
    got = pl.concat([pl.read_parquet(f) for f in files])
    assert_frame_equal(got, pl.read_csv(csv_file).sort("value", maintain_order=True))
    text = tb.read_csv(csv_file).sort("value").explain()
    assert "keep a sample of the sort keys value" in text and "range shuffle 1 on value" in text


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.integers(-5, 5) | st.none(), max_size=40),
    cuts=st.integers(1, 6),
    descending=st.booleans(),
    nulls_last=st.booleans(),
)
def test_range_partitions_follow_the_sort_order(values, cuts, descending, nulls_last) -> None:
    frame = pl.DataFrame({"x": values}, schema={"x": pl.Int64})
    spec = RangeSpec(("x",), (descending,), nulls_last)
    spec = RangeSpec(
        ("x",), (descending,), nulls_last, boundaries_from_sample(frame, spec, cuts + 1)
    )
    parts = frame.with_columns(p=range_partition_of(frame, spec).cast(pl.Int64))
    ordered = parts.sort("x", descending=descending, nulls_last=nulls_last, maintain_order=True)
    # Going through the rows in sort order, the partition number never decreases, and equal
    # keys share one partition.
    assert (ordered["p"].diff().drop_nulls() >= 0).all()
    assert parts.group_by("x").agg(pl.col("p").n_unique())["p"].max() in (None, 1)


RIGHT = pl.DataFrame(
    {
        "key": ["a", "b", None, "d", "a"],
        "n": [1, 2, 2, 4, 3],
        "label": ["x", "y", "z", "w", "v"],
    }
)


@pytest.mark.parametrize("how", ["inner", "left", "right", "full", "semi", "anti"])
def test_join_equals_polars(tmp_path: Path, many_partitions, how: str) -> None:
    left_path = write_parquet(tmp_path, KEYED)
    right_path = tmp_path / "right.parquet"
    RIGHT.write_parquet(right_path)
    got = collect_inline(
        tb.read_parquet(left_path)
        .filter(pl.col("v") < 25)
        .join(tb.read_parquet(right_path), left_on=["s", "i"], right_on=["key", "n"], how=how)
    )
    want = KEYED.filter(pl.col("v") < 25).join(
        RIGHT, left_on=["s", "i"], right_on=["key", "n"], how=how
    )
    same_rows(got, want.select(got.columns), got.columns)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(left=rows, right=rows, how=st.sampled_from(["inner", "left", "full", "anti"]))
def test_property_join(tmp_path: Path, many_partitions, left, right, how) -> None:
    schema = {"k": pl.String, "j": pl.Int64, "v": pl.Int64}
    lf = pl.DataFrame(left, schema=schema, orient="row")
    rf = pl.DataFrame(right, schema=schema, orient="row")
    lf.write_parquet(tmp_path / "l.parquet")
    rf.write_parquet(tmp_path / "r.parquet")
    left_ds, right_ds = (
        tb.read_parquet(tmp_path / "l.parquet"),
        tb.read_parquet(tmp_path / "r.parquet"),
    )
    got = collect_inline(left_ds.join(right_ds, on=["k", "j"], how=how))
    want = lf.join(rf, on=["k", "j"], how=how)
    same_rows(got, want.select(got.columns), got.columns)


def test_join_checks_keys(csv_file: Path) -> None:
    ds = tb.read_csv(csv_file)
    with pytest.raises(TerabatchError, match="differ in type"):
        ds.join(ds.with_columns(pl.col("id").cast(pl.String)), on="id")
    with pytest.raises(TerabatchError, match="not found"):
        ds.join(ds, left_on="idd", right_on="id")
    with pytest.raises(TerabatchError, match="how must be"):
        ds.join(ds, on="id", how="cross")
    text = ds.join(ds.select("id", "group"), on="id").explain()
    assert "stage 1: read csv; the driver collects the right side of the inner join" in text
    assert "[broadcast join, no shuffle]" in text


@pytest.mark.parametrize("how", ["inner", "left", "semi", "anti"])
def test_join_through_the_shuffle_when_broadcast_is_off(
    tmp_path: Path, many_partitions, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    monkeypatch.setattr(stages_module, "BROADCAST_BYTES", 0)
    left_path = write_parquet(tmp_path, KEYED)
    right_path = tmp_path / "right.parquet"
    RIGHT.write_parquet(right_path)
    ds = tb.read_parquet(left_path).join(
        tb.read_parquet(right_path), left_on="s", right_on="key", how=how
    )
    got = collect_inline(ds)
    want = KEYED.join(RIGHT, left_on="s", right_on="key", how=how)
    same_rows(got, want.select(got.columns), got.columns)


def test_skewed_join_with_a_small_side_is_broadcast(tmp_path: Path, many_partitions) -> None:
    # One key holds every left row: a shuffle would put them all in one partition.
    left = pl.DataFrame({"k": ["hot"] * 300, "v": range(300)})
    left.write_parquet(tmp_path / "l.parquet")
    RIGHT.write_parquet(tmp_path / "r.parquet")
    ds = tb.read_parquet(tmp_path / "l.parquet").join(
        tb.read_parquet(tmp_path / "r.parquet"), left_on="k", right_on="key", how="left"
    )
    got = collect_inline(ds)
    assert_frame_equal(got, left.join(RIGHT, left_on="k", right_on="key", how="left"))


# Keys that hardly repeat within a map task leave it row by row, as groups of one row.

DISTINCT = pl.DataFrame(
    {
        "k": [None if n % 97 == 0 else f"k{n // 2 if n < 40 else n}" for n in range(600)],
        "j": [n % 3 for n in range(600)],
        "v": [None if n % 11 == 0 else n for n in range(600)],
        "small": pl.Series([n % 100 - 50 for n in range(600)], dtype=pl.Int8),
        "flag": [None if n % 13 == 0 else n % 2 == 0 for n in range(600)],
        "w": [None if n % 7 == 0 else n / 3 for n in range(600)],
    }
)
ROW_BY_ROW_AGGS = [
    *AGGREGATIONS,
    pl.col("small").sum().alias("small_sum"),
    pl.col("flag").sum().alias("flags"),
    pl.col("small").mean().alias("small_mean"),
    pl.col("flag").max().alias("any_flag"),
]


def distinct_parquet(tmp_path: Path) -> Path:
    path = tmp_path / "distinct.parquet"
    DISTINCT.write_parquet(path, row_group_size=25)
    return path


@pytest.fixture
def row_by_row(monkeypatch: pytest.MonkeyPatch, tiny_splits) -> list[int]:
    """Map tasks of several small batches, pre-combined a few rows at a time; counts the
    batches that left a map task row by row."""
    import terabatch.ops.shuffle as shuffle_ops

    tiny_splits(8_000, 400)
    monkeypatch.setattr(stages_module._Planner, "_hold_bytes", lambda self: 2_000)
    calls: list[int] = []
    streamed = shuffle_ops.stream_query

    def spy(batches, query, limit, first, per_row=None, *rest):
        def counted(frame: pl.DataFrame) -> pl.DataFrame:
            calls.append(frame.height)
            return per_row(frame)

        return streamed(batches, query, limit, first, counted if per_row else None, *rest)

    monkeypatch.setattr(shuffle_ops, "stream_query", spy)
    return calls


@pytest.mark.parametrize("keys", [["k"], ["k", "j"]])
def test_distinct_keys_leave_row_by_row_and_equal_polars(
    tmp_path: Path, row_by_row: list[int], keys: list[str]
) -> None:
    ds = tb.read_parquet(distinct_parquet(tmp_path))
    got = collect_inline(ds.group_by(*keys).agg(*ROW_BY_ROW_AGGS))
    same_rows(got, DISTINCT.group_by(keys).agg(*ROW_BY_ROW_AGGS), keys)
    assert sum(row_by_row) > DISTINCT.height // 2


@pytest.mark.parametrize("keep", ["first", "last", "any"])
def test_distinct_rows_leave_row_by_row_for_unique(
    tmp_path: Path, row_by_row: list[int], keep: str
) -> None:
    ds = tb.read_parquet(distinct_parquet(tmp_path))
    got = collect_inline(ds.unique(["k"], keep=keep))
    want = DISTINCT.unique(["k"], keep=keep)
    if keep == "any":
        assert got["k"].sort(nulls_last=True).equals(want["k"].sort(nulls_last=True))
    else:
        same_rows(got, want, ["k"])
    assert sum(row_by_row) > DISTINCT.height // 2


def test_pre_combining_queries_stop_growing_below_the_worker_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import terabatch.ops.shuffle as shuffle_ops
    from terabatch.exec.inline import InlineExecutor

    caps: list[int | None] = []
    streamed = shuffle_ops.stream_query

    def spy(batches, query, limit, first, per_row, memory_cap, *rest):
        caps.append(memory_cap)
        return streamed(batches, query, limit, first, per_row, memory_cap, *rest)

    monkeypatch.setattr(shuffle_ops, "stream_query", spy)
    frame = pl.DataFrame({"k": [i % 10 for i in range(1000)], "v": range(1000)})
    path = tmp_path / "rows.parquet"
    frame.write_parquet(path)
    ds = tb.read_parquet(path).group_by("k").agg(pl.col("v").sum())
    got = ds.collect(memory="1GB", executor=InlineExecutor(), progress=False)
    same_rows(got, frame.group_by("k").agg(pl.col("v").sum()), ["k"])
    assert caps and all(cap is not None and 0 < cap < (1 << 30) for cap in caps)


@pytest.mark.parametrize("keep", ["first", "last"])
def test_many_string_keys_pre_combine_bucket_by_bucket_and_equal_polars(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_splits, keep: str
) -> None:
    import terabatch.ops.buckets as buckets_module
    import terabatch.ops.stream as stream_module

    tiny_splits(30_000, 400)
    monkeypatch.setattr(stages_module._Planner, "_hold_bytes", lambda self: 2_000)
    monkeypatch.setattr(stream_module, "MANY_KEYS", 1)
    rounds: list[int] = []
    held = buckets_module._Held.results

    def counted(self, query, origin):
        rounds.append(len(self.parts))
        return held(self, query, origin)

    monkeypatch.setattr(buckets_module._Held, "results", counted)
    frame = pl.DataFrame(
        {
            "k": [f"key{i % 6}" if i % 13 else None for i in range(6_000)],
            "v": [float(i % 17) if i % 11 else None for i in range(6_000)],
            "n": range(6_000),
        }
    )
    path = tmp_path / "rows.parquet"
    frame.write_parquet(path, row_group_size=500)
    aggs = [pl.col("v").sum(), pl.col("v").mean().alias("m"), pl.col("n").first().alias("f")]
    ds = tb.read_parquet(path)
    same_rows(collect_inline(ds.group_by("k").agg(*aggs)), frame.group_by("k").agg(*aggs), ["k"])
    got = collect_inline(ds.unique(["k"], keep=keep))
    same_rows(got, frame.unique(["k"], keep=keep), ["k"])
    assert rounds and max(rounds) > 1  # rows were cut into several buckets
