"""``inspect_path``: facts about datasets on disk, checked against polars and pyarrow."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

import terabatch as tb
from terabatch.errors import InputNotFoundError, TerabatchError
from terabatch.inspect_path import detect_format, inspect_path


@pytest.fixture
def frame() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "id": range(1_000),
            "day": [f"2026-01-0{1 + i % 3}" for i in range(1_000)],
            "kind": [("a", "b")[i % 2] for i in range(1_000)],
            "value": [i * 0.5 for i in range(1_000)],
        }
    )


@pytest.fixture
def written(tmp_path: Path, frame: pl.DataFrame) -> Path:
    out = tmp_path / "out"
    tb.read_parquet(_parquet(tmp_path, frame)).write_parquet(
        out, partition_by=["day", "kind"], max_rows_per_file=100, workers=1, progress=False
    )
    return out


def _parquet(tmp_path: Path, frame: pl.DataFrame) -> Path:
    path = tmp_path / "in.parquet"
    frame.write_parquet(path)
    return path


def test_parquet_directory_facts(written: Path, frame: pl.DataFrame) -> None:
    facts = inspect_path(written)
    files = sorted(written.rglob("*.parquet"))
    groups = [
        pq.ParquetFile(f).metadata.row_group(g).num_rows
        for f in files
        for g in range(pq.ParquetFile(f).metadata.num_row_groups)
    ]
    assert facts["format"] == "parquet"
    assert facts["rows"] == frame.height
    assert facts["file_count"] == len(files)
    assert facts["total_bytes"] == sum(f.stat().st_size for f in files)
    assert facts["row_groups"] == {
        "count": len(groups),
        "min_rows": min(groups),
        "max_rows": max(groups),
    }
    assert facts["partitions"] == {"day": 3, "kind": 2}
    assert facts["schema"] == {"id": "Int64", "value": "Float64", "day": "String", "kind": "String"}
    assert facts["compression"] == ["zstd"]
    assert facts["complete"]["rows"] == frame.height
    assert facts["complete"]["files"] == len(files)
    json.dumps(facts)


def test_glob_inside_a_partitioned_directory(written: Path) -> None:
    facts = inspect_path(str(written / "day=2026-01-01" / "*" / "*.parquet"))
    assert facts["partitions"] == {"kind": 2}
    assert facts["complete"] is None
    assert facts["rows"] == 334


def test_parent_directories_are_not_partitions(tmp_path: Path, frame: pl.DataFrame) -> None:
    data = tmp_path / "run=3" / "data"
    data.mkdir(parents=True)
    frame.write_parquet(data / "part.parquet")
    assert inspect_path(data)["partitions"] == {}


def test_csv_rows_are_counted(tmp_path: Path, frame: pl.DataFrame) -> None:
    plain, packed = tmp_path / "a.csv", tmp_path / "b.csv.gz"
    frame.write_csv(plain)
    with gzip.open(packed, "wb") as handle:
        frame.head(10).write_csv(handle)
    facts = inspect_path(str(tmp_path / "*.csv*"), workers=2)
    assert facts["format"] == "csv"
    assert facts["rows"] == frame.height + 10
    assert facts["compression"] == ["gzip", "none"]
    assert facts["row_groups"] is None
    assert facts["schema"] == {"id": "Int64", "day": "String", "kind": "String", "value": "Float64"}


def test_tsv_is_read_with_tabs(tmp_path: Path, frame: pl.DataFrame) -> None:
    path = tmp_path / "a.tsv"
    frame.write_csv(path, separator="\t")
    assert list(inspect_path(path, workers=1)["schema"]) == frame.columns


def test_json_lines(tmp_path: Path, frame: pl.DataFrame) -> None:
    path = tmp_path / "a.ndjson"
    frame.write_ndjson(path)
    facts = inspect_path(path, workers=1)
    assert (facts["format"], facts["rows"]) == ("json", frame.height)


def test_detect_format(tmp_path: Path, written: Path) -> None:
    (tmp_path / "x.parquet.bak").write_text("")
    assert detect_format(written) == "parquet"
    assert detect_format(tmp_path / "plain.csv.zst") == "csv"
    with pytest.raises(TerabatchError, match="cannot tell the format"):
        detect_format(tmp_path / "*.bak")
    with pytest.raises(InputNotFoundError, match="path not found"):
        detect_format(tmp_path / "missing")


def test_an_explicit_format_wins(tmp_path: Path) -> None:
    path = tmp_path / "data.log"
    path.write_text("a,b\n1,2\n")
    assert inspect_path(path, "csv", workers=1)["rows"] == 1
    with pytest.raises(TerabatchError, match="format must be one of"):
        inspect_path(path, "xml")


def test_a_complete_output_without_rows(tmp_path: Path, frame: pl.DataFrame) -> None:
    out = tmp_path / "empty"
    dataset = tb.read_parquet(_parquet(tmp_path, frame)).filter(pl.col("id") < 0)
    dataset.write_parquet(out, workers=1, progress=False)
    facts = inspect_path(out)
    # One file without rows is written, so that the output still records its columns.
    assert (facts["rows"], facts["file_count"], facts["complete"]["rows"]) == (0, 1, 0)
    assert list(facts["schema"]) == frame.columns
