"""Aggregations pre-combined in map tasks, checked against Polars' in-memory answer.

Every case runs through the public API on many map tasks (Parquet row groups of 7 rows, or
several files cut at random points), so partials of one group really are combined, and checks
through ``explain()`` that the aggregations were split: an unsplit plan computes the same
answer and would make these tests pass for the wrong reason.
"""

from __future__ import annotations

import itertools
import random
from fractions import Fraction
from pathlib import Path

import polars as pl
import pytest
from helpers import collect_inline
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

import terabatch as tb


def _data() -> pl.DataFrame:
    """Groups a-e over every row group, a one-row group, a group whose x, y and i are all
    null, and null keys; y follows x loosely; s is Int8 so that max - min overflows."""
    rng = random.Random(7)
    rows = []
    for n in range(180):
        key = None if n % 17 == 0 else "abcde"[n % 5]
        x = None if n % 11 == 0 else rng.uniform(-50, 50)
        y = None if n % 13 == 0 or (x is None and n % 2) else (x or 0) * 0.3 + rng.gauss(0, 5)
        i = None if n % 9 == 0 else rng.randint(-1000, 1000)
        rows.append((key, x, y, i, rng.randint(-120, 120), n % 3 == 0, rng.uniform(0, 1)))
    rows.append(("solo", 2.5, 1.0, 4, 7, True, 0.5))
    rows += [("nulls", None, None, None, 1, None, None)] * 3
    schema = {
        "k": pl.String,
        "x": pl.Float64,
        "y": pl.Float64,
        "i": pl.Int64,
        "s": pl.Int8,
        "b": pl.Boolean,
        "f": pl.Float32,
    }
    return pl.DataFrame(rows, schema=schema, orient="row")


DATA = _data()


def grouped(tmp_path: Path, frame: pl.DataFrame, aggs: list[pl.Expr]):
    path = tmp_path / "in.parquet"
    frame.write_parquet(path, row_group_size=7)
    return tb.read_parquet(path).group_by("k").agg(*aggs)


def assert_close(got: pl.DataFrame, want: pl.DataFrame, keys: list[str]) -> None:
    """Equal once sorted on ``keys``: integers, lists and nulls exactly, floats to 1e-9."""
    assert_frame_equal(
        got.sort(keys, nulls_last=True),
        want.sort(keys, nulls_last=True),
        check_exact=False,
        rel_tol=1e-9,
        abs_tol=1e-12,
    )


x, y, i = pl.col("x"), pl.col("y"), pl.col("i")

CASES = {
    "moments": (
        [
            x.std(),
            x.var(ddof=0).alias("var0"),
            x.var(ddof=2).alias("var2"),
            i.std().alias("int_std"),
            pl.col("b").var().alias("bool_var"),
            pl.col("f").std().alias("f32_std"),
        ],
        "std, var, var, std, var, std",
    ),
    "pairs": (
        [
            pl.corr("x", "y"),
            pl.corr("i", "y").alias("int_corr"),
            pl.cov("x", "y").alias("cov"),
            pl.cov("x", "i", ddof=0).alias("cov0"),
        ],
        "corr, corr, cov, cov",
    ),
    "expressions": (
        [
            (pl.col("s").max() - pl.col("s").min()).alias("range"),
            pl.corr("x", "y").pow(2).alias("r2"),
            (i.sum() / pl.len()).alias("per_row"),
            pl.when(x.count() > 2).then(x.std()).otherwise(-1.0).alias("guarded"),
            x.mean().sqrt().abs().alias("root"),
            (i.max().cast(pl.Float64) * 2 + i.min()).alias("mixed"),
        ],
        "max - min, pow(corr, 2), sum / len, when(count > 2, std, -1.0), abs(sqrt(mean)), "
        "(max * 2) + min",
    ),
    "simple": (
        [
            x.first(ignore_nulls=True).alias("first_x"),
            y.last(ignore_nulls=True).alias("last_y"),
            x.nan_max().alias("nan_max"),
            x.len().alias("rows"),
            pl.col("b").mean().alias("share"),
            pl.col("f").mean().alias("f32_mean"),
        ],
        "first_non_null, last_non_null, nan_max, count, mean, mean",
    ),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_split_aggregations_equal_polars(tmp_path: Path, many_partitions, case: str) -> None:
    aggs, kinds = CASES[case]
    ds = grouped(tmp_path, DATA, aggs)
    assert f"pre-combined per task: {kinds};" in ds.explain()
    assert_close(collect_inline(ds), DATA.group_by("k").agg(*aggs), ["k"])


def test_edge_groups_follow_polars_rules(tmp_path: Path, many_partitions) -> None:
    """One value: std null, var(ddof=0) 0, corr NaN, cov null. No value: nulls, corr NaN."""
    aggs = [
        x.std(),
        x.var(ddof=0).alias("v0"),
        pl.corr("x", "y").alias("r"),
        pl.cov("x", "y").alias("c"),
    ]
    got = collect_inline(grouped(tmp_path, DATA, aggs)).filter(pl.col("k").is_in(["solo", "nulls"]))
    want = pl.DataFrame(
        {"k": ["nulls", "solo"], "x": [None, None], "v0": [None, 0.0], "r": [float("nan")] * 2},
        schema_overrides={"x": pl.Float64, "v0": pl.Float64},
    ).with_columns(c=pl.lit(None, pl.Float64))
    assert_close(got, want, ["k"])
    assert_close(
        got, DATA.group_by("k").agg(*aggs).filter(pl.col("k").is_in(["solo", "nulls"])), ["k"]
    )


def test_constant_column_has_exactly_zero_spread(tmp_path: Path, many_partitions) -> None:
    # 0.7 has no exact binary form: partial means differ by an ulp, yet the variance is 0.
    frame = pl.DataFrame({"k": ["a"] * 40, "x": [0.7] * 40, "y": [float(n) for n in range(40)]})
    aggs = [x.var(), x.std().alias("sd"), pl.corr("x", "y").alias("r"), pl.cov("x", "y").alias("c")]
    got = collect_inline(grouped(tmp_path, frame, aggs))
    assert got.select("x", "sd", "c").row(0) == (0.0, 0.0, 0.0)
    assert got["r"].is_nan().all()
    assert_close(got, frame.group_by("k").agg(*aggs), ["k"])


def _exact_moments(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Sample variance of xs and covariance of xs and ys, in exact rational arithmetic."""
    fx, fy = [Fraction(v) for v in xs], [Fraction(v) for v in ys]
    mx, my = sum(fx) / len(fx), sum(fy) / len(fy)
    var = sum((a - mx) ** 2 for a in fx) / (len(fx) - 1)
    cov = sum((a - mx) * (b - my) for a, b in zip(fx, fy, strict=True)) / (len(fx) - 1)
    return float(var), float(cov)


def test_large_offsets_keep_their_precision(tmp_path: Path, many_partitions) -> None:
    """Values around 1e9 with a spread of about 100: sum(x^2) - sum(x)^2 / n would keep
    no correct digit. Polars itself is only within about 2e-9 of the exact answer here, so
    the exact answer is the reference."""
    rng = random.Random(3)
    xs = [1e9 + rng.uniform(0, 100) for _ in range(600)]
    ys = [-2e9 + 0.5 * (v - 1e9) + rng.uniform(0, 50) for v in xs]
    frame = pl.DataFrame({"k": [n % 3 for n in range(600)], "x": xs, "y": ys})
    aggs = [x.var(), pl.cov("x", "y").alias("cov")]
    got = collect_inline(grouped(tmp_path, frame, aggs)).sort("k")
    for key, var, cov in got.iter_rows():
        exact_var, exact_cov = _exact_moments(xs[key::3], ys[key::3])
        assert var == pytest.approx(exact_var, rel=1e-9)
        assert cov == pytest.approx(exact_cov, rel=1e-9)
    assert_frame_equal(got, frame.group_by("k").agg(*aggs).sort("k"), rel_tol=1e-8)


def test_holistic_aggregations_ship_rows_and_stay_exact(tmp_path: Path, many_partitions) -> None:
    """top_k's list order comes from Polars' selection over the whole group, and Spearman
    needs ranks: with either, nothing is pre-combined and the answer is Polars' own."""
    aggs = [x.top_k(3).alias("top"), i.bottom_k(2).alias("bottom"), x.sum()]
    ds = grouped(tmp_path, DATA, aggs)
    assert "no pre-combining" in ds.explain()
    want = DATA.group_by("k").agg(*aggs)
    assert_frame_equal(collect_inline(ds).sort("k"), want.sort("k"))
    spearman = [pl.corr("x", "y", method="spearman"), (x.max() - x.median()).alias("m")]
    ds = grouped(tmp_path, DATA, spearman)
    assert "no pre-combining" in ds.explain()
    assert_close(collect_inline(ds), DATA.group_by("k").agg(*spearman), ["k"])


def test_mean_of_dates_is_not_a_sum_over_a_count(tmp_path: Path, many_partitions) -> None:
    frame = DATA.with_columns(d=pl.date(2026, 1, 1) + pl.duration(days=pl.col("s")))
    # Splitting it into a sum and a count failed the job: Polars cannot sum dates.
    aggs = [pl.col("d").mean(), pl.len()]
    ds = grouped(tmp_path, frame, aggs)
    assert "no pre-combining" in ds.explain()
    assert_close(collect_inline(ds), frame.group_by("k").agg(*aggs), ["k"])


def test_partitions_split_again_stay_exact(
    tmp_path: Path, tiny_splits, tiny_room, recorded_splits
) -> None:
    """A reduce partition too large for its task is re-split by key into pieces; the pooled
    means (windows over the keys) and the combine then run per piece."""
    tiny_splits(4_000)
    tiny_room(20_000)
    pieces = recorded_splits
    rng = random.Random(11)
    frame = pl.DataFrame(
        {
            "k": [rng.randint(0, 1500) for _ in range(6000)],
            "x": [None if rng.random() < 0.1 else rng.gauss(0, 10) for _ in range(6000)],
            "y": [rng.gauss(0, 10) for _ in range(6000)],
        }
    )
    aggs = [x.std(), pl.corr("x", "y").alias("r"), (y.max() - x.min()).alias("range")]
    frame.write_parquet(tmp_path / "in.parquet", row_group_size=250)
    got = collect_inline(tb.read_parquet(tmp_path / "in.parquet").group_by("k").agg(*aggs))
    assert pieces
    assert_close(got, frame.group_by("k").agg(*aggs), ["k"])


values = st.one_of(st.none(), st.integers(-40, 40).map(lambda n: n / 4))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(
        st.tuples(st.sampled_from(["p", "q", "r", None]), values, values), min_size=1, max_size=50
    ),
    cuts=st.lists(st.integers(0, 50), max_size=5),
    ddof=st.integers(0, 2),
)
def test_property_moments_over_random_splits(tmp_path: Path, many_partitions, rows, cuts, ddof):
    frame = pl.DataFrame(
        rows, schema={"k": pl.String, "x": pl.Float64, "y": pl.Float64}, orient="row"
    )
    folder = tmp_path / "parts"
    folder.mkdir(exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    bounds = sorted({0, frame.height, *(c for c in cuts if c < frame.height)})
    for n, (start, stop) in enumerate(itertools.pairwise(bounds)):
        frame.slice(start, stop - start).write_parquet(folder / f"part-{n:03}.parquet")
    aggs = [
        x.std(ddof=ddof).alias("sd"),
        y.var(ddof=ddof).alias("var"),
        pl.corr("x", "y").alias("r"),
        pl.cov("x", "y", ddof=ddof).alias("cov"),
    ]
    ds = tb.read_parquet(folder).group_by("k").agg(*aggs)
    assert "pre-combined per task: std, var, corr, cov" in ds.explain()
    assert_close(collect_inline(ds), frame.group_by("k").agg(*aggs), ["k"])


def test_db_benchmark_questions_on_worker_processes(
    tmp_path: Path, tiny_splits, csv_file: Path
) -> None:
    """q7 and q9 shapes (and a std) through worker processes, written to Parquet."""
    tiny_splits(2_000)
    aggs = [
        (pl.col("value").max() - pl.col("score").min()).alias("range"),
        pl.corr("value", "score").pow(2).alias("r2"),
        pl.col("score").std().alias("sd"),
    ]
    ds = tb.read_csv(csv_file).group_by("group", "flag").agg(*aggs)
    assert "pre-combined per task: max - min, pow(corr, 2), std;" in ds.explain()
    ds.write_parquet(tmp_path / "out", workers=2, progress=False)
    want = pl.read_csv(csv_file).group_by("group", "flag").agg(*aggs)
    assert_close(pl.read_parquet(tmp_path / "out" / "*.parquet"), want, ["group", "flag"])
