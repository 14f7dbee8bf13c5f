"""write_parquet / write_csv / write_json: contents, layout, the _SUCCESS manifest, modes."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from helpers import files_under, make_frame, one_line_error, visible_files
from polars.testing import assert_frame_equal

import terabatch as tb
from terabatch.errors import OutputExistsError, SchemaError, UserFunctionError
from terabatch.io.sinks import partition_dir

RUN = {"progress": False}


def _rows_in(path: Path) -> int:
    name = path.name
    if name.endswith(".parquet"):
        return pq.ParquetFile(path).metadata.num_rows
    data = path.read_bytes()
    if name.endswith(".gz"):
        data = gzip.decompress(data)
    if ".csv" in name:
        return pl.read_csv(data).height
    return pl.read_ndjson(data).height


def check_manifest(out: Path) -> dict:
    """The _SUCCESS manifest lists exactly the data files on disk, with their rows and bytes."""
    manifest = json.loads((out / "_SUCCESS").read_text())
    on_disk = {p: b for p, b in files_under(out).items() if not p.startswith("_")}
    assert sorted(f["path"] for f in manifest["files"]) == sorted(on_disk)
    for entry in manifest["files"]:
        assert entry["bytes"] == len(on_disk[entry["path"]]), entry
        assert entry["rows"] == _rows_in(out / entry["path"]), entry
    assert manifest["rows"] == sum(f["rows"] for f in manifest["files"])
    assert manifest["bytes"] == sum(len(b) for b in on_disk.values())
    assert not (out / "_temporary").exists()
    return manifest


@pytest.fixture
def source(tmp_path: Path, tiny_splits) -> tuple[tb.Dataset, pl.DataFrame]:
    """A CSV dataset read as several tasks, and polars' reading of it."""
    path = tmp_path / "in.csv"
    make_frame(1500, seed=3).write_csv(path)
    tiny_splits(15_000, 4000)
    return tb.read_csv(path), pl.read_csv(path)


def test_write_parquet_zstd(tmp_path: Path, source) -> None:
    ds, expected = source
    out = tmp_path / "out"
    summary = ds.write_parquet(out, compression="zstd", **RUN)
    files = sorted(out.glob("*.parquet"))
    assert len(files) == summary.files_written == summary.tasks > 1
    for path in files:
        meta = pq.ParquetFile(path).metadata
        assert meta.row_group(0).column(0).compression == "ZSTD"
    # Part files are named in task order, so reading them in name order gives input order.
    assert_frame_equal(pl.read_parquet(out / "*.parquet"), expected)
    manifest = check_manifest(out)
    assert manifest["rows"] == summary.rows_written == summary.rows_read == 1500
    assert manifest["format"] == "parquet" and manifest["compression"] == "zstd"
    assert summary.bytes_written == manifest["bytes"]
    assert summary.files == [f["path"] for f in manifest["files"]]
    assert summary.rows_read == summary.rows_written + summary.rows_filtered


@pytest.mark.parametrize("keys", [["group"], ["group", "flag"]])
def test_write_parquet_partitioned(tmp_path: Path, source, keys: list[str]) -> None:
    ds, expected = source
    out = tmp_path / "out"
    summary = ds.filter(pl.col("value") > -500).write_parquet(out, partition_by=keys, **RUN)
    expected = expected.filter(pl.col("value") > -500)
    dirs = {p.parent.relative_to(out).as_posix() for p in out.rglob("*.parquet")}
    values = expected.select(keys).unique().rows()
    assert dirs == {partition_dir(tuple(keys), v) for v in values}
    got = pl.read_parquet(out / "**" / "*.parquet", hive_partitioning=True)
    cols = expected.columns
    assert_frame_equal(got.select(cols).sort("id"), expected.sort("id"), check_dtypes=False)
    # The key columns are not repeated inside the files.
    some_file = next(out.rglob("*.parquet"))
    assert not set(keys) & set(pq.ParquetFile(some_file).schema_arrow.names)
    manifest = check_manifest(out)
    assert manifest["partition_by"] == keys
    assert summary.rows_written == expected.height
    assert summary.rows_filtered == 1500 - expected.height


def test_partition_values_with_special_characters_round_trip(tmp_path: Path) -> None:
    frame = pl.DataFrame(
        {
            "id": range(8),
            "key": ["a/b", "x y", 'q"uote', "ünï", None, "a,b", "100%", "=eq"],
            "n": [1, 2, 3, 4, 5, 6, 7, -8],
        }
    )
    frame.write_parquet(tmp_path / "in.parquet")
    out = tmp_path / "out"
    tb.read_parquet(tmp_path / "in.parquet").write_parquet(out, partition_by=["key", "n"], **RUN)
    back = tb.read_parquet(out)
    assert back.schema["n"] == pl.Int64
    got = back.collect(**RUN).select(frame.columns).sort("id")
    assert_frame_equal(got, frame)


def test_max_rows_per_file(tmp_path: Path, source) -> None:
    ds, expected = source
    out = tmp_path / "out"
    summary = ds.write_parquet(out, max_rows_per_file=128, **RUN)
    counts = [pq.ParquetFile(p).metadata.num_rows for p in sorted(out.glob("*.parquet"))]
    assert max(counts) == 128 and sum(counts) == 1500
    assert summary.files_written == len(counts) >= -(-1500 // 128)
    assert_frame_equal(pl.read_parquet(out / "*.parquet"), expected)
    check_manifest(out)


def test_max_rows_per_file_with_partitions(tmp_path: Path, source) -> None:
    ds, expected = source
    out = tmp_path / "out"
    ds.write_parquet(out, partition_by="group", max_rows_per_file=50, **RUN)
    for path in out.rglob("*.parquet"):
        assert pq.ParquetFile(path).metadata.num_rows <= 50
    got = pl.read_parquet(out / "**" / "*.parquet", hive_partitioning=True)
    assert_frame_equal(got.select(expected.columns).sort("id"), expected.sort("id"))
    check_manifest(out)


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_write_csv(tmp_path: Path, source, compression: str | None) -> None:
    ds, expected = source
    out = tmp_path / "out"
    ds.select("id", "text", "score").write_csv(out, compression=compression, **RUN)
    suffix = ".csv.gz" if compression else ".csv"
    files = sorted(out.glob("*" + suffix))
    assert len(files) > 1 and all(f.name.startswith("part-") for f in files)
    back = tb.read_csv(out).collect(**RUN)
    assert_frame_equal(back, expected.select("id", "text", "score"))
    check_manifest(out)


def test_write_csv_partitioned(tmp_path: Path, source) -> None:
    ds, expected = source
    out = tmp_path / "out"
    ds.write_csv(out, partition_by="group", **RUN)
    for group in "abcd":
        part = pl.concat([pl.read_csv(p) for p in sorted((out / f"group={group}").glob("*.csv"))])
        # CSV has no hive convention readers rely on, so the key column stays in the files.
        want = expected.filter(pl.col("group") == group)
        assert_frame_equal(part, want)
    check_manifest(out)


@pytest.mark.parametrize("compression", [None, "zstd"])
def test_write_json(tmp_path: Path, source, compression: str | None) -> None:
    ds, expected = source
    out = tmp_path / "out"
    ds.write_json(out, compression=compression, **RUN)
    assert list(out.glob("*.jsonl.zst" if compression else "*.jsonl"))
    back = tb.read_json(out).collect(**RUN)
    assert_frame_equal(back, expected)
    check_manifest(out)


def test_same_input_gives_byte_identical_output(tmp_path: Path, source) -> None:
    ds, _ = source
    first = files_under(_write_twice_target(ds, tmp_path / "one"))
    second = files_under(_write_twice_target(ds, tmp_path / "two"))
    assert sorted(first) == sorted(second)
    assert len([p for p in first if p.endswith(".parquet")]) > 2
    for name in first:
        assert first[name] == second[name], name


def _write_twice_target(ds: tb.Dataset, out: Path) -> Path:
    ds.with_columns(v2=pl.col("value") * 2).write_parquet(out, partition_by="group", **RUN)
    return out


def _fails_on_id_700(frame: pl.DataFrame) -> pl.DataFrame:
    if (frame["id"] == 700).any():
        raise ValueError("bad batch")
    return frame


def test_failed_job_leaves_no_output(tmp_path: Path, source) -> None:
    ds, _ = source
    out = tmp_path / "out"
    with pytest.raises(UserFunctionError) as caught:
        ds.map_batches(_fails_on_id_700).write_parquet(out, **RUN)
    assert not out.exists() or visible_files(out) == {}
    # Finished tasks stay staged for a resume, and the error says so.
    staged = files_under(out) if out.exists() else {}
    assert all(p.startswith("_temporary/") and "/task-" in p for p in staged)
    notes = "\n".join(getattr(caught.value, "__notes__", []))
    assert ("run the same job again to resume" in notes) == bool(staged)


def test_failed_job_into_an_existing_empty_directory(tmp_path: Path, source) -> None:
    ds, _ = source
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(UserFunctionError):
        ds.map_batches(_fails_on_id_700).write_csv(out, **RUN)
    # Nothing is left that looks like output (the emptied directory itself may be removed).
    assert not out.exists() or visible_files(out) == {}


def test_mode_error_and_overwrite(tmp_path: Path, source) -> None:
    ds, expected = source
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.parquet").write_bytes(b"old")
    (out / "old_dir").mkdir()
    (out / "old_dir" / "x.csv").write_text("x\n")
    with pytest.raises(OutputExistsError) as info:
        ds.write_parquet(out, **RUN)
    assert str(out) in one_line_error(info.value)
    assert isinstance(info.value, FileExistsError)
    assert set(visible_files(out)) == {"old.parquet", "old_dir/x.csv"}

    # A failing overwrite keeps the old output.
    with pytest.raises(UserFunctionError):
        ds.map_batches(_fails_on_id_700).write_parquet(out, mode="overwrite", **RUN)
    assert set(visible_files(out)) == {"old.parquet", "old_dir/x.csv"}

    ds.head(10).write_parquet(out, mode="overwrite", **RUN)
    assert [p for p in files_under(out) if not p.startswith("_")] == ["part-00000-000.parquet"]
    ds.write_parquet(out, mode="overwrite", **RUN)
    assert_frame_equal(pl.read_parquet(out / "*.parquet"), expected)
    check_manifest(out)


def test_output_path_is_a_file(tmp_path: Path, source) -> None:
    ds, _ = source
    target = tmp_path / "file.parquet"
    target.write_bytes(b"x")
    with pytest.raises(OutputExistsError):
        ds.write_parquet(target, mode="overwrite", **RUN)


def test_bad_write_arguments(tmp_path: Path, source) -> None:
    ds, _ = source
    with pytest.raises(SchemaError) as info:
        ds.write_parquet(tmp_path / "o", partition_by="gruop", **RUN)
    assert "did you mean 'group'" in one_line_error(info.value)
    with pytest.raises(tb.TerabatchError):
        ds.write_parquet(tmp_path / "o", max_rows_per_file=0, **RUN)
    with pytest.raises(tb.TerabatchError) as info:
        ds.write_parquet(tmp_path / "o", mode="append", **RUN)
    assert "mode" in one_line_error(info.value)
    assert not (tmp_path / "o").exists()


def test_head_then_write(tmp_path: Path, source) -> None:
    ds, expected = source
    out = tmp_path / "out"
    summary = ds.filter(pl.col("flag")).head(321).write_json(out, **RUN)
    assert summary.rows_written == 321
    back = pl.concat([pl.read_ndjson(p) for p in sorted(out.glob("*.jsonl"))])
    assert_frame_equal(back, expected.filter(pl.col("flag")).head(321))
    check_manifest(out)


@pytest.mark.parametrize("method", ["write_parquet", "write_csv"])
def test_empty_result_is_written_with_its_columns(tmp_path: Path, source, method: str) -> None:
    ds, expected = source
    out = tmp_path / "out"
    getattr(ds.filter(pl.col("id") < 0), method)(out, **RUN)
    back = (tb.read_parquet(out) if method == "write_parquet" else tb.read_csv(out)).collect()
    assert back.height == 0
    assert back.columns == expected.columns
    check_manifest(out)
