"""The ``terabatch`` command line: results checked against polars reading the same data."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner, Result
from polars.testing import assert_frame_equal

from terabatch import cli as cli_module
from terabatch.cli import cli
from terabatch.errors import UserFunctionError
from terabatch.io import sources

ROWS = 3_000
EXTENSIONS = {"parquet": "parquet", "csv": "csv", "json": "jsonl"}


@pytest.fixture
def logs() -> pl.DataFrame:
    rng = np.random.default_rng(7)
    return pl.DataFrame(
        {
            "id": np.arange(ROWS),
            "status": rng.choice([200, 404, 500], ROWS, p=[0.8, 0.15, 0.05]),
            "user": [f"u{i % 37}" for i in range(ROWS)],
            "bytes": rng.integers(0, 5_000, ROWS),
            "ratio": rng.random(ROWS).round(4),
        }
    )


@pytest.fixture
def csv_path(tmp_path: Path, logs: pl.DataFrame) -> Path:
    path = tmp_path / "logs.csv"
    logs.write_csv(path)
    return path


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def converted(*args: str | Path) -> Result:
    result = run("convert", *args, "--workers", "2", "--quiet")
    assert result.exit_code == 0, result.stderr
    return result


def read_output(directory: Path, fmt: str = "parquet") -> pl.DataFrame:
    # polars does not skip the _SUCCESS manifest in a directory, so name the data files.
    pattern = str(directory / "**" / f"*.{EXTENSIONS[fmt]}")
    if fmt == "parquet":
        return pl.read_parquet(pattern, hive_partitioning=True)
    if fmt == "csv":
        return pl.read_csv(pattern)
    return pl.read_ndjson(pattern)


def assert_same_rows(expected: pl.DataFrame, actual: pl.DataFrame) -> None:
    assert_frame_equal(expected.sort("id"), actual.select(expected.columns).sort("id"))


def error_line(result: Result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("terabatch: error: ")
    return lines[0]


# convert -------------------------------------------------------------------------------------


def test_csv_to_parquet_keeps_every_row_and_value(
    tmp_path: Path, csv_path: Path, tiny_splits: Callable[..., None]
) -> None:
    tiny_splits(16_000)  # several tasks, as with a large file
    out = tmp_path / "out"
    result = converted(csv_path, out, "--to", "parquet")
    assert result.stdout == f"{out}\t{ROWS}\n"
    assert len(list(out.glob("*.parquet"))) > 1
    assert_same_rows(pl.read_csv(csv_path), read_output(out))
    assert (out / "_SUCCESS").is_file()


def test_summary_goes_to_stderr_unless_quiet(tmp_path: Path, csv_path: Path) -> None:
    result = run("convert", csv_path, tmp_path / "out", "--to", "parquet", "--workers", "1")
    assert result.exit_code == 0
    assert f"rows read {ROWS:,}" in result.stderr
    assert result.stdout.count("\n") == 1


def test_gzip_csv_to_partitioned_parquet(tmp_path: Path, logs: pl.DataFrame) -> None:
    source = tmp_path / "logs.csv.gz"
    with gzip.open(source, "wb") as handle:
        logs.write_csv(handle)
    out = tmp_path / "out"
    converted(source, out, "--to", "parquet", "--partition-by", "status")
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [
        "status=200",
        "status=404",
        "status=500",
    ]
    assert_same_rows(logs, read_output(out))


def test_filter_takes_a_sql_predicate(tmp_path: Path, csv_path: Path, logs: pl.DataFrame) -> None:
    out = tmp_path / "out"
    result = converted(
        csv_path, out, "--to", "parquet", "--filter", "status = 200 AND bytes > 1000"
    )
    expected = logs.filter((pl.col("status") == 200) & (pl.col("bytes") > 1000))
    assert result.stdout.endswith(f"\t{expected.height}\n")
    assert_same_rows(expected, read_output(out))


def test_select_keeps_the_named_columns_in_order(tmp_path: Path, csv_path: Path) -> None:
    out = tmp_path / "out"
    converted(csv_path, out, "--to", "parquet", "--select", "user, id", "--filter", "bytes < 100")
    frame = read_output(out)
    assert frame.columns == ["user", "id"]
    expected = pl.read_csv(csv_path).filter(pl.col("bytes") < 100).select("user", "id")
    assert_same_rows(expected, frame)


def test_json_to_parquet(tmp_path: Path, logs: pl.DataFrame) -> None:
    source = tmp_path / "logs.jsonl"
    logs.write_ndjson(source)
    out = tmp_path / "out"
    converted(source, out, "--to", "parquet", "--max-rows-per-file", "1000")
    assert len(list(out.glob("*.parquet"))) >= 3
    assert_same_rows(pl.read_ndjson(source), read_output(out))


def test_parquet_to_compressed_csv(tmp_path: Path, logs: pl.DataFrame) -> None:
    source = tmp_path / "in"
    source.mkdir()
    logs.head(1000).write_parquet(source / "a.parquet")
    logs.tail(ROWS - 1000).write_parquet(source / "b.parquet")
    out = tmp_path / "out"
    converted(source, out, "--to", "csv", "--compression", "gzip")
    files = sorted(out.glob("*.csv.gz"))
    assert files
    assert_same_rows(logs, pl.concat(pl.read_csv(f) for f in files))


def test_several_sources_and_a_tsv(tmp_path: Path, logs: pl.DataFrame) -> None:
    first, second = tmp_path / "a.tsv", tmp_path / "b.tsv"
    logs.head(10).write_csv(first, separator="\t")
    logs.slice(10, 5).write_csv(second, separator="\t")
    out = tmp_path / "out"
    result = converted(first, second, out, "--to", "json")
    assert result.stdout.endswith("\t15\n")
    assert_same_rows(logs.head(15), read_output(out, "json"))


def test_overwrite_replaces_the_output(tmp_path: Path, csv_path: Path) -> None:
    out = tmp_path / "out"
    converted(csv_path, out, "--to", "parquet")
    result = converted(csv_path, out, "--to", "parquet", "--filter", "id < 10", "--overwrite")
    assert result.stdout.endswith("\t10\n")
    assert read_output(out).height == 10


# errors --------------------------------------------------------------------------------------


def test_missing_path(tmp_path: Path) -> None:
    result = run("convert", tmp_path / "nope", tmp_path / "out", "--to", "csv")
    assert "path not found" in error_line(result)


def test_glob_matching_nothing(tmp_path: Path) -> None:
    result = run("convert", str(tmp_path / "*.csv"), tmp_path / "out", "--to", "parquet")
    assert "no file matches" in error_line(result)


def test_unknown_column_in_filter_suggests_a_close_name(tmp_path: Path, csv_path: Path) -> None:
    result = run("convert", csv_path, tmp_path / "out", "--to", "parquet", "--filter", "stauts = 1")
    assert "did you mean 'status'" in error_line(result)
    assert not (tmp_path / "out").exists()


def test_unparsable_filter(tmp_path: Path, csv_path: Path) -> None:
    result = run("convert", csv_path, tmp_path / "out", "--to", "parquet", "--filter", "a = = 1")
    assert "not a SQL predicate" in error_line(result)


def test_existing_output_needs_overwrite(tmp_path: Path, csv_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = run("convert", csv_path, out, "--to", "parquet")
    assert "--overwrite" in error_line(result)
    assert (out / "keep.txt").read_text() == "mine"


def test_unknown_format_suffix(tmp_path: Path) -> None:
    source = tmp_path / "data.log"
    source.write_text("a\n1\n")
    assert "cannot tell the format" in error_line(
        run("convert", source, tmp_path / "out", "--to", "csv")
    )
    converted(source, tmp_path / "out", "--to", "csv", "--from", "csv")


def test_codec_must_suit_the_output_format(tmp_path: Path, csv_path: Path) -> None:
    result = run("convert", csv_path, tmp_path / "out", "--to", "csv", "--compression", "snappy")
    assert result.exit_code == 2
    assert "not available for csv" in result.stderr


def test_a_bad_memory_size(tmp_path: Path, csv_path: Path) -> None:
    result = run("convert", csv_path, tmp_path / "out", "--to", "csv", "--memory", "lots")
    assert "not a size" in error_line(result)


def test_user_function_traceback_follows_the_message(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> dict:
        raise UserFunctionError("your function failed on x.csv, line 3", "Traceback ...\nKeyError")

    monkeypatch.setattr(cli_module, "inspect_path", fail)
    result = run("inspect", "x.csv")
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "terabatch: error: your function failed on x.csv, line 3",
        "Traceback from your function:",
        "Traceback ...",
        "KeyError",
    ]


def test_internal_error_is_one_line_unless_debugging(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> dict:
        raise RuntimeError("wires crossed\nsecond line")

    monkeypatch.setattr(cli_module, "inspect_path", fail)
    monkeypatch.delenv("TERABATCH_DEBUG", raising=False)
    result = run("inspect", "x.csv")
    assert result.exit_code == 1
    assert result.stderr == (
        "terabatch: internal error: RuntimeError: wires crossed second line "
        "(set TERABATCH_DEBUG=1 for the traceback)\n"
    )
    monkeypatch.setenv("TERABATCH_DEBUG", "1")
    with pytest.raises(RuntimeError, match="wires crossed"):
        run("inspect", "x.csv")


def test_interrupt_exits_130(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupt(*args: object, **kwargs: object) -> dict:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_module, "inspect_path", interrupt)
    result = run("inspect", "x.csv")
    assert (result.exit_code, result.stderr) == (130, "terabatch: interrupted\n")


def test_usage_errors_keep_clicks_exit_code(tmp_path: Path) -> None:
    result = run("convert", tmp_path / "only-one-argument", "--to", "csv")
    assert result.exit_code == 2
    assert "Missing argument" in result.stderr


def test_version() -> None:
    result = run("--version")
    assert result.exit_code == 0
    assert "0.1.0" in result.stdout


def test_console_script_reports_errors_on_one_line(tmp_path: Path) -> None:
    script = shutil.which("terabatch", path=str(Path(sys.executable).parent))
    assert script is not None, "the terabatch console script is not installed"
    done = subprocess.run(
        [script, "inspect", str(tmp_path / "missing.csv")], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == f"terabatch: error: path not found: '{tmp_path / 'missing.csv'}'\n"


# bad input files ------------------------------------------------------------------------------


def test_empty_input_file_is_named(tmp_path: Path, csv_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    result = run("convert", csv_path, empty, tmp_path / "out", "--to", "parquet")
    assert error_line(result) == (
        f"terabatch: error: {empty}: file is empty (0 bytes); remove or fix it, or pass "
        "on_bad_files='skip' (CLI: --on-bad-files skip) to leave it out"
    )
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_truncated_gzip_input_fails_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The 64 KiB sampled when planning decompress fine: the task reading finds the cut.
    monkeypatch.setattr(sources, "SAMPLE_BYTES", 64 << 10)
    data = b"id,x\n" + b"".join(b"%d,%d\n" % (i, i % 7) for i in range(40_000))
    packed = gzip.compress(data, compresslevel=1)
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(packed[: len(packed) // 2])
    out = tmp_path / "out"
    result = run("convert", path, out, "--to", "parquet", "--workers", "1", "--quiet")
    line = error_line(result)
    assert line.startswith(f"terabatch: error: {path}: corrupt or truncated gzip stream"), line
    assert "Traceback" not in result.output
    assert not out.exists() or not any(out.iterdir())


def test_schema_drift_is_an_error_unless_union(tmp_path: Path, logs: pl.DataFrame) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    a, b = folder / "a.csv", folder / "b.csv"
    logs.head(1000).write_csv(a)
    logs.tail(2000).drop("ratio").with_columns(late=pl.col("id") % 3 == 0).write_csv(b)
    out = tmp_path / "out"
    line = error_line(run("convert", folder, out, "--to", "parquet"))
    assert line.startswith(f"terabatch: error: {b}: column 'ratio' is missing (present in {a})")
    assert "--schema-mode union" in line
    assert not out.exists()
    converted(folder, out, "--to", "parquet", "--schema-mode", "union")
    expected = pl.concat([pl.read_csv(a), pl.read_csv(b)], how="diagonal_relaxed")
    assert_same_rows(expected, read_output(out))


def test_skipped_files_are_warned_about_on_stderr(tmp_path: Path, csv_path: Path) -> None:
    # A real process: pytest's log capture would otherwise take the warning from stderr.
    script = shutil.which("terabatch", path=str(Path(sys.executable).parent))
    assert script is not None, "the terabatch console script is not installed"
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    out = tmp_path / "out"
    args = [csv_path, empty, out, "--to", "parquet", "--on-bad-files", "skip", "--quiet"]
    done = subprocess.run(
        [script, "convert", *map(str, args), "--workers", "1"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == f"terabatch: warning: skipping {empty}: file is empty (0 bytes)\n"
    assert_same_rows(pl.read_csv(csv_path), read_output(out))


# inspect -------------------------------------------------------------------------------------


@pytest.fixture
def parquet_dir(tmp_path: Path, csv_path: Path) -> Path:
    out = tmp_path / "pq"
    converted(csv_path, out, "--to", "parquet", "--partition-by", "status")
    return out


def test_inspect_json_parses(parquet_dir: Path) -> None:
    result = run("inspect", parquet_dir, "--json")
    assert result.exit_code == 0
    facts = json.loads(result.stdout)
    assert facts["rows"] == ROWS
    assert facts["partitions"] == {"status": 3}
    assert facts["complete"]["rows"] == ROWS


def test_inspect_table_shows_the_facts(parquet_dir: Path) -> None:
    result = run("inspect", parquet_dir)
    assert result.exit_code == 0
    out = result.stdout
    for fact in ("parquet", f"{ROWS:,}", "zstd", "status (3 values)", "_SUCCESS", "ratio"):
        assert fact in out


def test_inspect_counts_csv_rows(csv_path: Path) -> None:
    result = run("inspect", csv_path, "--quiet", "--workers", "2")
    assert result.exit_code == 0
    assert f"{ROWS:,}" in result.stdout
    assert result.stderr == ""
