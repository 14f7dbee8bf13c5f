"""``terabatch demo``: the generated data, the pipeline's result, the command end to end."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from click.testing import CliRunner
from polars.testing import assert_frame_equal

from terabatch.cli import cli
from terabatch.demo import add_size_class, make_logs, write_logs


def test_logs_are_deterministic_and_plausible() -> None:
    logs = make_logs(5_000)
    assert_frame_equal(logs, make_logs(5_000))
    assert logs["ts"].str.slice(0, 10).n_unique() == 7
    assert logs["ts"].is_sorted()
    assert 0.8 < (logs["status"] == 200).mean() < 0.97
    assert logs["bytes"].min() >= 0


def test_write_logs_mixes_gzip_and_plain_files(tmp_path: Path) -> None:
    logs = make_logs(1_001)
    files = write_logs(logs, tmp_path)
    assert [f.name for f in files] == [
        "access-0.csv.gz",
        "access-1.csv.gz",
        "access-2.csv",
        "access-3.csv",
    ]
    assert_frame_equal(pl.concat(pl.read_csv(f) for f in files), logs)


def test_demo_command(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["demo", "--rows", "20000", "--keep", str(tmp_path), "--workers", "2"]
    )
    assert result.exit_code == 0, result.output
    out = tmp_path / "requests_by_day"
    assert (out / "_SUCCESS").is_file()
    logs = pl.read_csv(str(tmp_path / "logs" / "*.csv*"))
    expected = add_size_class(logs.filter(pl.col("status") == 200))
    written = pl.read_parquet(str(out / "**" / "*.parquet"), hive_partitioning=True)
    assert written.height == expected.height
    assert written["bytes"].sum() == expected["bytes"].sum()
    assert (
        written["size_class"].value_counts().sort("size_class").rows()
        == expected["size_class"].value_counts().sort("size_class").rows()
    )
    assert f"{expected.height:,}" in result.stdout
    assert f"terabatch inspect {out}" in result.stdout
    assert "rows read 20,000" in result.stderr


def test_demo_runs_again_into_the_same_directory(tmp_path: Path) -> None:
    args = ["demo", "--rows", "2000", "--keep", str(tmp_path), "--workers", "1"]
    assert CliRunner().invoke(cli, args).exit_code == 0
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
