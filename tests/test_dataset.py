"""The Dataset API: lazy, immutable, schema known before running, results of every kind."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import terabatch as tb
from terabatch.errors import TerabatchError

RUN = {"progress": False}


@pytest.fixture
def ds(csv_file: Path) -> tb.Dataset:
    return tb.read_csv(csv_file)


def test_public_api() -> None:
    assert set(tb.__all__) >= {"Dataset", "JobSummary", "TerabatchError", "read_csv"}
    assert tb.__version__


def test_methods_return_new_datasets_and_leave_the_original(ds: tb.Dataset, frame) -> None:
    before = ds.explain(optimized=False)
    derived = ds.filter(pl.col("value") > 0).select("id").head(3)
    assert isinstance(derived, tb.Dataset) and derived is not ds
    assert ds.explain(optimized=False) == before
    assert ds.columns == frame.columns
    assert derived.columns == ["id"]


def test_schema_follows_the_operators(ds: tb.Dataset) -> None:
    query = (
        ds.with_columns(half=pl.col("value") / 2, label=pl.lit("x"))
        .rename({"id": "key"})
        .drop("text")
        .select("key", "half", "label", pl.col("flag").not_().alias("no"))
    )
    assert query.schema == pl.Schema(
        {"key": pl.Int64, "half": pl.Float64, "label": pl.String, "no": pl.Boolean}
    )


def test_schema_after_map_batches(ds: tb.Dataset) -> None:
    unknown = ds.map_batches(lambda f: f)
    with pytest.raises(TerabatchError, match="schema is unknown after map_batches"):
        _ = unknown.schema
    # Later steps are not checked until the run; a declared schema checks them at once.
    unknown.select("anything")
    declared = ds.map_batches(lambda f: f.select("id"), schema={"id": pl.Int64})
    assert declared.columns == ["id"]
    with pytest.raises(tb.TerabatchError, match="did you mean 'id'"):
        declared.select("idd")


def test_map_batches_without_schema_then_select(ds: tb.Dataset, frame: pl.DataFrame) -> None:
    query = ds.map_batches(lambda f: f.with_columns(z=pl.col("value") + 1)).select("id", "z")
    assert_frame_equal(query.collect(**RUN), frame.select("id", z=pl.col("value") + 1))


def test_empty_results_keep_their_schema(ds: tb.Dataset) -> None:
    query = ds.filter(pl.col("id") < 0).select("id", "text")
    got = query.collect(**RUN)
    assert got.height == 0 and got.schema == query.schema
    assert query.count(**RUN) == 0
    assert sum(b.height for b in query.iter_batches(**RUN)) == 0
    headed = ds.head(0).collect(**RUN)
    assert headed.height == 0 and headed.schema == ds.schema


def test_count_without_columns(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("a,b\n1,2\n3,4\n")
    assert tb.read_csv(path).drop("a", "b").count(**RUN) == 2


def test_workers_option(ds: tb.Dataset, frame: pl.DataFrame) -> None:
    assert_frame_equal(ds.collect(workers=1, **RUN), frame)


@pytest.mark.parametrize(
    "build",
    [
        lambda ds: ds.select(pl.col("value").sum()),
        lambda ds: ds.with_columns(r=pl.col("value").rank()),
        lambda ds: ds.filter(pl.col("value") > pl.col("value").mean()),
        lambda ds: ds.select(pl.lit(1)),
    ],
)
def test_operations_across_rows_are_refused(csv_file: Path, build) -> None:
    # Batch by batch these would silently give one answer per batch instead of one overall.
    with pytest.raises(TerabatchError) as info:
        build(tb.read_csv(csv_file))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("method", "codec"), [("write_csv", "snappy"), ("write_parquet", "bogus")])
def test_unknown_compression_is_refused_before_running(
    tmp_path: Path, csv_file: Path, method: str, codec: str
) -> None:
    with pytest.raises(TerabatchError, match="compression"):
        getattr(tb.read_csv(csv_file), method)(tmp_path / "out", compression=codec)
    assert not (tmp_path / "out").exists()
