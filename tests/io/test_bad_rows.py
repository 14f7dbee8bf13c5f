"""Bad rows: fail (default), quarantine or skip; every row read is accounted for.

Each expected answer comes from the same file with the bad lines removed by hand, read by
Polars; the quarantine must name exactly the removed lines.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from helpers import visible_files
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import terabatch as tb
from terabatch.errors import BadRowError
from terabatch.exec.inline import InlineExecutor

SCHEMA = {"id": pl.Int64, "name": pl.String, "score": pl.Float64}
GOOD = ["1,a,1.5", "4,d,4.0", '5,"e,f",5', "8,h,"]
BAD = {  # line text -> reason fragment
    "2,b": "expected 3 fields, found 2",
    "3,c,x": "'x' is not a valid Float64",
    "6,g,6,7": "expected 3 fields, found 4",
    "7,\xff,1": "invalid UTF-8",
}


def _csv(path: Path) -> tuple[Path, dict[int, str]]:
    """The file, and the line number of every bad line."""
    lines = ["id,name,score", "1,a,1.5", "2,b", "3,c,x", "4,d,4.0", '5,"e,f",5', "6,g,6,7"]
    lines += ["7,\xff,1", "8,h,"]
    data = "\n".join(lines).encode("utf-8").replace("\xff".encode(), b"\xff") + b"\n"
    path.write_bytes(data)
    bad = {i + 1: line for i, line in enumerate(lines) if line in BAD}
    return path, bad


def _expected(tmp_path: Path) -> pl.DataFrame:
    good = tmp_path / "good.csv"
    good.write_text("id,name,score\n" + "\n".join(GOOD) + "\n")
    return pl.read_csv(good, schema=SCHEMA)


def test_fail_is_the_default_and_names_the_first_bad_line(tmp_path: Path) -> None:
    path, _ = _csv(tmp_path / "in.csv")
    with pytest.raises(BadRowError, match=r"in\.csv: line 3: expected 3 fields, found 2"):
        tb.read_csv(path, schema=SCHEMA).collect()


@pytest.mark.parametrize("workers", [None, 2])
def test_quarantine_keeps_good_rows_and_records_bad_ones(tmp_path: Path, workers) -> None:
    path, bad_lines = _csv(tmp_path / "in.csv")
    out = tmp_path / "out"
    run = {"executor": InlineExecutor()} if workers is None else {"workers": workers}
    summary = tb.read_csv(path, schema=SCHEMA, on_bad_rows="quarantine").write_parquet(
        out, progress=False, **run
    )
    got = pl.read_parquet(out / "*.parquet")
    assert got.sort("id").equals(_expected(tmp_path))
    quarantine = pl.read_parquet(out / "_quarantine" / "*.parquet").sort("line")
    assert quarantine["line"].to_list() == sorted(bad_lines)
    assert set(quarantine["file"]) == {str(path)}
    data = path.read_bytes()
    for row in quarantine.iter_rows(named=True):
        text = bad_lines[row["line"]]
        assert BAD[text] in row["reason"], row
        assert data[row["offset"] :].startswith(row["raw"].split("\n")[0][:1].encode())
        assert row["step"] == "read"
    assert summary.rows_read == 8 == summary.rows_written + summary.rows_bad
    assert summary.rows_bad == 4 and summary.rows_filtered == 0
    manifest = json.loads((out / "_SUCCESS").read_text())
    assert manifest["rows_read"] == 8 and manifest["rows_bad"] == 4
    assert manifest["inputs"] == [
        {"file": str(path), "rows_read": 8, "rows_bad": 4, "rows_written": 4, "rows_filtered": 0}
    ]
    assert manifest["quarantine"] == ["_quarantine/stage-000-part-00000.parquet"]


def test_skip_drops_and_counts(tmp_path: Path) -> None:
    path, _ = _csv(tmp_path / "in.csv")
    out = tmp_path / "out"
    summary = (
        tb.read_csv(path, schema=SCHEMA, on_bad_rows="skip")
        .filter(pl.col("id") > 1)
        .write_parquet(out, progress=False, executor=InlineExecutor())
    )
    assert pl.read_parquet(out / "*.parquet").sort("id").equals(_expected(tmp_path)[1:])
    assert not (out / "_quarantine").exists()
    assert (summary.rows_read, summary.rows_written, summary.rows_bad) == (8, 3, 4)
    assert summary.rows_filtered == 1
    assert "bad 4" in summary.render() and "4 bad rows skipped" in summary.render()


def test_json_lines_quarantine(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    lines = [
        '{"id": 1, "v": "x"}',
        '{"id": "two", "v": "y"}',
        "not json",
        "[1, 2]",
        '{"id": 3, "v": "z"}',
        '{"id": 4, "v": "\xff"}',
    ]
    path.write_bytes(("\n".join(lines) + "\n").encode().replace("\xff".encode(), b"\xff"))
    out = tmp_path / "out"
    tb.read_json(
        path, schema={"id": pl.Int64, "v": pl.String}, on_bad_rows="quarantine"
    ).write_parquet(out, progress=False, executor=InlineExecutor())
    assert pl.read_parquet(out / "*.parquet").rows() == [(1, "x"), (3, "z")]
    q = pl.read_parquet(out / "_quarantine" / "*.parquet").sort("line")
    assert q["line"].to_list() == [2, 3, 4, 6]
    reasons = q["reason"].to_list()
    assert "'two' is not a valid Int64" in reasons[0]
    assert reasons[1].startswith("invalid JSON") and "JSON object" in reasons[2]
    assert reasons[3] == "invalid UTF-8"


def test_map_batches_on_error_isolates_the_failing_rows(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    pl.DataFrame({"id": range(1000)}).write_csv(path)

    def picky(frame: pl.DataFrame) -> pl.DataFrame:
        if (frame["id"] % 97 == 3).any():
            raise ValueError("no ids that are 3 mod 97")
        return frame.with_columns(double=pl.col("id") * 2)

    out = tmp_path / "out"
    summary = tb.read_csv(path).map_batches(picky, batch_size=64, on_error="quarantine")
    summary = summary.write_parquet(out, progress=False, executor=InlineExecutor())
    want = pl.DataFrame({"id": range(1000)}).filter(pl.col("id") % 97 != 3)
    got = pl.read_parquet(out / "*.parquet")
    assert got.equals(want.with_columns(double=pl.col("id") * 2))
    q = pl.read_parquet(out / "_quarantine" / "*.parquet")
    assert sorted(json.loads(r)["id"] for r in q["raw"]) == [i for i in range(1000) if i % 97 == 3]
    assert q["step"].unique().to_list() == [
        "map_batches(test_map_batches_on_error_isolates_the_failing_rows.<locals>.picky)"
    ]
    assert all("no ids that are 3 mod 97" in r for r in q["reason"])
    assert summary.rows_read == 1000 and summary.rows_bad == 11


def test_max_bad_rows_stops_a_job_of_garbage(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("a,b\n" + "".join("1,2\n" if i % 3 else "oops\n" for i in range(3000)))
    ds = tb.read_csv(path, on_bad_rows="quarantine")
    out = tmp_path / "out"
    with pytest.raises(
        tb.TerabatchError, match=r"stopped: 1,000 bad rows, more than max_bad_rows=10"
    ):
        ds.write_parquet(out, progress=False, max_bad_rows=10, executor=InlineExecutor())
    assert not out.exists() or visible_files(out) == {}
    with pytest.raises(tb.TerabatchError, match=r"of 3,000 rows read were bad \(33.3%\)"):
        ds.write_parquet(out, progress=False, max_bad_rows=0.1, executor=InlineExecutor())
    summary = ds.write_parquet(out, progress=False, max_bad_rows=0.5, executor=InlineExecutor())
    assert summary.rows_bad == 1000 and summary.rows_written == 2000


def test_cli_quarantine(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from terabatch.cli import cli

    path, _ = _csv(tmp_path / "in.csv")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli, ["convert", str(path), str(out), "--to", "parquet", "--on-bad-rows", "quarantine"]
    )
    assert result.exit_code == 0, result.output
    # Without a schema, "x" makes score a string column: three bad rows, not four.
    assert len(pl.read_parquet(out / "_quarantine" / "*.parquet")) == 3
    result = CliRunner().invoke(
        cli,
        [
            "convert",
            str(path),
            str(tmp_path / "o2"),
            "--to",
            "csv",
            "--on-bad-rows",
            "skip",
            "--max-bad-rows",
            "1",
        ],
    )
    assert result.exit_code == 2
    assert "more than max_bad_rows=1" in result.output


@st.composite
def _mutated_csv(draw) -> bytes:
    rows = draw(st.lists(st.tuples(st.integers(0, 99), st.integers(0, 9)), min_size=1, max_size=40))
    lines = [f"{a},{b}" for a, b in rows]
    for _ in range(draw(st.integers(0, 6))):
        i = draw(st.integers(0, len(lines) - 1))
        lines[i] = draw(
            st.sampled_from([lines[i] + ",9", lines[i].split(",")[0], "x,1", "1,\xff", ",", "1;2"])
        )
    return ("a,b\n" + "\n".join(lines) + "\n").encode().replace("\xff".encode(), b"\xff")


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=_mutated_csv())
def test_every_row_is_written_or_quarantined(tmp_path_factory, data: bytes) -> None:
    root = tmp_path_factory.mktemp("fuzz")
    path = root / "in.csv"
    path.write_bytes(data)
    out = root / "out"
    ds = tb.read_csv(path, schema={"a": pl.Int64, "b": pl.Int64}, on_bad_rows="quarantine")
    summary = ds.write_parquet(out, progress=False, executor=InlineExecutor())
    records = sum(1 for line in data.split(b"\n")[1:] if line)  # blank lines hold no record
    written = pl.read_parquet(out / "*.parquet").height
    quarantined = (
        pl.read_parquet(out / "_quarantine" / "*.parquet").height
        if (out / "_quarantine").exists()
        else 0
    )
    assert summary.rows_read == records == written + quarantined
    assert summary.rows_bad == quarantined
