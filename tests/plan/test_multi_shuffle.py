"""Pipelines with several shuffles, checked against Polars' in-memory answer on the same data.

Each runs on the inline executor with tiny splits and many partitions, so that the reduce
tasks of one shuffle are the map tasks of the next and every row crosses each shuffle's files.
Orders are compared exactly after a sort, and as sets of rows where the order is undefined.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from helpers import INLINE, collect_inline, same_rows
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

import terabatch as tb
import terabatch.plan.stages as stages_module
import terabatch.run.sizing as sizing_module
from terabatch.io.sinks import CollectSink
from terabatch.run.job import run

DATA = pl.DataFrame(
    {
        "k": ["a", None, "b", "a", "c", None, "b", "a", "a", "c", "d", "b"] * 4,
        "j": [1, 2, None, 1, 3, 2, 2, 1, None, 3, 4, 5] * 4,
        "v": list(range(48)),
        "w": [None if n % 5 == 0 else n / 4 for n in range(48)],
    }
)
OTHER = pl.DataFrame(
    {
        "k": ["a", "b", None, "d", "a", "e", "b"],
        "m": [10, 20, 30, 40, 50, 60, 70],
    }
)
Build = Callable[[object, object], object]


@pytest.fixture
def partitions(monkeypatch: pytest.MonkeyPatch, tiny_splits) -> None:
    """Tiny splits and about eight partitions per shuffle (these inputs are about 12 KB)."""
    tiny_splits(200)
    monkeypatch.setattr(sizing_module, "MAX_PARTITION", 1500)


def _read(tmp_path: Path, frame: pl.DataFrame, name: str) -> tb.Dataset:
    path = tmp_path / f"{name}.parquet"
    frame.write_parquet(path, row_group_size=5)
    return tb.read_parquet(path)


def check(tmp_path: Path, build: Build, data: pl.DataFrame = DATA, ordered: bool = False) -> None:
    """Run ``build(left, right)`` on terabatch datasets and on Polars frames; compare."""
    got = collect_inline(build(_read(tmp_path, data, "left"), _read(tmp_path, OTHER, "right")))
    want = build(data, OTHER)
    assert got.columns == want.columns
    if ordered:
        assert_frame_equal(got, want, check_exact=False)
    else:
        same_rows(got, want, want.columns)


PIPELINES: dict[str, tuple[Build, bool]] = {
    "group_by then sort": (
        lambda d, o: d.group_by("k").agg(n=pl.col("v").sum()).sort("n", "k", descending=True),
        True,
    ),
    "group_by with median then sort": (
        lambda d, o: (
            d.group_by("k", "j")
            .agg(pl.col("w").median(), n=pl.len())
            .sort("n", "k", "j", descending=[True, False, False], nulls_last=True)
        ),
        True,
    ),
    "unique then group_by": (
        lambda d, o: d.select("k", "j").unique().group_by("k").agg(pl.col("j").sum(), pl.len()),
        False,
    ),
    "group_by then join group_by": (
        lambda d, o: (
            d.group_by("k")
            .agg(total=pl.col("v").sum())
            .join(o.group_by("k").agg(pl.col("m").max()), on="k")
        ),
        False,
    ),
    "window then group_by": (
        lambda d, o: (
            d.with_columns(share=pl.col("v") / pl.col("v").sum().over("k"))
            .group_by("j")
            .agg(pl.col("share").sum(), pl.col("v").max())
        ),
        False,
    ),
    "sort then group_by": (
        lambda d, o: d.sort("v", descending=True).group_by("k").agg(pl.col("v").first()),
        False,
    ),
    "group_by, narrow, group_by": (
        lambda d, o: (
            d.group_by("k", "j")
            .agg(n=pl.len(), s=pl.col("v").sum())
            .filter(pl.col("s") > 10)
            .with_columns(big=pl.col("s") > 40)
            .group_by("big")
            .agg(pl.col("n").sum(), pl.col("k").n_unique())
        ),
        False,
    ),
    "join then group_by then sort": (
        lambda d, o: (
            d.join(o, on="k", how="left")
            .group_by("k")
            .agg(pl.col("m").sum(), pl.col("v").mean())
            .sort("k", nulls_last=True)
        ),
        True,
    ),
    "sort, head, join": (
        lambda d, o: (
            d.group_by("k")
            .agg(n=pl.col("v").sum())
            .sort("n", descending=True)
            .head(3)
            .join(o, on="k", how="left")
        ),
        False,
    ),
    "top_k then group_by": (
        lambda d, o: d.top_k(10, by="v").group_by("k").agg(pl.col("v").sum()),
        False,
    ),
    "head then unique then sort": (
        lambda d, o: d.head(20).unique(["k"], keep="last").sort("v"),
        True,
    ),
    "group_by, top_k, sort, head": (
        lambda d, o: d.group_by("k").agg(n=pl.col("v").sum()).top_k(3, by="n").sort("n").head(2),
        True,
    ),
    "three shuffles": (
        lambda d, o: (
            d.with_columns(pl.col("v").max().over("k").alias("top"))
            .unique(["k", "top"], keep="any")
            .select("k", "top")
            .join(o.unique(), on="k", how="full")
            .sort("m", "k", nulls_last=True)
        ),
        True,
    ),
}


@pytest.mark.parametrize("broadcast", [True, False], ids=["broadcast", "shuffled join"])
@pytest.mark.parametrize("name", list(PIPELINES))
def test_pipeline_equals_polars(
    tmp_path: Path, partitions, monkeypatch: pytest.MonkeyPatch, name: str, broadcast: bool
) -> None:
    build, ordered = PIPELINES[name]
    if not broadcast:
        monkeypatch.setattr(stages_module, "BROADCAST_BYTES", 0)
    check(tmp_path, build, ordered=ordered)


@pytest.mark.parametrize("rows", [0, 1], ids=["empty", "one row"])
@pytest.mark.parametrize("name", list(PIPELINES))
def test_pipeline_on_tiny_inputs(tmp_path: Path, partitions, name: str, rows: int) -> None:
    build, ordered = PIPELINES[name]
    check(tmp_path, build, DATA.head(rows), ordered=ordered)


def test_right_side_with_its_own_sort_and_head(tmp_path: Path, partitions) -> None:
    def build(d, o):
        best = o.sort("m", descending=True).head(3)
        return d.group_by("k").agg(pl.col("v").sum()).join(best, on="k", how="semi")

    check(tmp_path, build)


def test_written_output_of_group_by_then_sort(tmp_path: Path, tiny_splits) -> None:
    # On worker processes, to files: the sorted partitions are the files in name order.
    tiny_splits(300)
    out = tmp_path / "out"
    ds = _read(tmp_path, DATA, "left").group_by("k", "j").agg(n=pl.col("v").sum())
    summary = ds.sort("n").write_parquet(out, workers=2, progress=False)
    files = sorted(out.glob("*.parquet"))
    assert len(files) >= 2  # the ranges came from a sample of the first shuffle's output
    got = pl.concat([pl.read_parquet(f) for f in files])
    want = DATA.group_by("k", "j").agg(n=pl.col("v").sum()).sort("n")
    assert_frame_equal(got, want)
    assert summary.rows_read == DATA.height


def test_rows_read_count_each_input_once(tmp_path: Path, partitions) -> None:
    ds = _read(tmp_path, DATA, "left")
    right = _read(tmp_path, OTHER, "right").group_by("k").agg(pl.col("m").sum())
    query = ds.group_by("k").agg(pl.len()).sort("len").join(right, on="k")
    summary = run(query._plan, CollectSink(), INLINE).summary
    assert summary.rows_read == DATA.height + OTHER.height


# Random pipelines of two shuffles, with narrow operators, head or top_k between and after.
# Every step keeps the columns k (str), j (int), v (int), so that any step can follow any other.
SHUFFLES: dict[str, Build] = {
    "group_by k, j": lambda d, o: d.group_by("k", "j").agg(pl.col("v").sum()),
    "group_by j": lambda d, o: (
        d.group_by("j").agg(pl.col("k").min(), pl.col("v").max()).select("k", "j", "v")
    ),
    "group_by k, median": lambda d, o: (
        d.group_by("k")
        .agg(pl.col("j").max(), pl.col("v").median().cast(pl.Int64))
        .select("k", "j", "v")
    ),
    "unique": lambda d, o: d.unique(),
    "unique keep none": lambda d, o: d.unique(["k", "j", "v"], keep="none"),
    "sort": lambda d, o: d.sort("v", "k", "j", descending=[True, False, False]),
    "window": lambda d, o: d.with_columns(pl.col("v").sum().over("k")),
    "join": lambda d, o: d.join(o, on="k", how="inner").select("k", "j", "v"),
    "anti join": lambda d, o: d.join(o, on="k", how="anti"),
    "join grouped right": lambda d, o: d.join(
        o.group_by("k").agg(pl.col("m").sum()), on="k", how="left"
    ).select("k", "j", pl.col("v") + pl.col("m").fill_null(0)),
}
BETWEEN: dict[str, Build] = {
    "nothing": lambda d, o: d,
    "filter": lambda d, o: d.filter(pl.col("v") % 3 != 1),
    "with_columns": lambda d, o: d.with_columns(v=pl.col("v") * 2 - pl.col("j").fill_null(0)),
    "top_k": lambda d, o: d.top_k(4, by=["v", "k", "j"]),
    "sorted head": lambda d, o: d.sort("v", "k", "j", nulls_last=True).head(5),
}
rows = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c", None]),
        st.integers(-2, 2) | st.none(),
        st.integers(-50, 50),
    ),
    max_size=40,
)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=rows,
    first=st.sampled_from(list(SHUFFLES)),
    second=st.sampled_from(list(SHUFFLES)),
    between=st.sampled_from(list(BETWEEN)),
    after=st.sampled_from(list(BETWEEN)),
    broadcast=st.booleans(),
)
def test_property_two_shuffles(
    tmp_path: Path,
    partitions,
    monkeypatch: pytest.MonkeyPatch,
    data,
    first: str,
    second: str,
    between: str,
    after: str,
    broadcast: bool,
) -> None:
    frame = pl.DataFrame(data, schema={"k": pl.String, "j": pl.Int64, "v": pl.Int64}, orient="row")
    monkeypatch.setattr(stages_module, "BROADCAST_BYTES", 64 << 20 if broadcast else 0)
    steps = [SHUFFLES[first], BETWEEN[between], SHUFFLES[second], BETWEEN[after]]

    def build(d, o):
        for step in steps:
            d = step(d, o)
        return d

    # A sort's order is exact only if nothing after it reorders rows.
    ordered = second == "sort" and after in ("nothing", "filter", "with_columns", "sorted head")
    check(tmp_path, build, frame, ordered=ordered or after == "sorted head")


def _double(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(pl.col("v") * 2)


def test_top_k_over_rebatched_gathered_rows(tmp_path: Path, partitions) -> None:
    # The one task after a head sees its rows in batches of 5 (map_batches): its top_k must
    # still be over all of them.
    ds = _read(tmp_path, DATA, "left").head(30).map_batches(_double, batch_size=5)
    got = collect_inline(ds.top_k(3, by="v").group_by("k").agg(pl.col("v").sum()))
    want = _double(DATA.head(30)).top_k(3, by="v").group_by("k").agg(pl.col("v").sum())
    same_rows(got, want, ["k"])
