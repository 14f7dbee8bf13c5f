"""Memory sizes, the budget, and the peak memory a job reports."""

from __future__ import annotations

import time
from pathlib import Path

import polars as pl
import pytest
from helpers import one_line_error
from polars.testing import assert_frame_equal

import terabatch as tb
from terabatch.errors import MemoryBudgetError
from terabatch.run.memory import (
    MemoryMonitor,
    format_size,
    parse_size,
    process_rss,
    tree_rss,
)
from terabatch.run.summary import JobSummary

RUN = {"progress": False}


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("4GB", 4 << 30),
        ("4gb", 4 << 30),
        ("4 GiB", 4 << 30),
        ("512MB", 512 << 20),
        ("512mib", 512 << 20),
        ("1.5G", int(1.5 * (1 << 30))),
        ("100K", 100 << 10),
        ("2T", 2 << 40),
        ("123", 123),
        ("123B", 123),
        (" 7 mb ", 7 << 20),
        (1000000, 1000000),
        (None, None),
    ],
)
def test_parse_size(text, size) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "GB", "4XB", "-1GB", "4 G B", "four", "1e9"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(tb.TerabatchError) as info:
        parse_size(text)
    assert repr(text) in one_line_error(info.value)


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (5 << 20, "5.0 MiB"),
        (3 << 30, "3.0 GiB"),
        (2 << 40, "2.0 TiB"),
        (5000 << 40, "5000.0 TiB"),
    ],
)
def test_format_size(n: int, text: str) -> None:
    assert format_size(n) == text


def test_format_parse_round_trip() -> None:
    for n in [1 << 10, 3 << 20, 7 << 30]:
        assert parse_size(format_size(n).replace(" ", "")) == n


def test_too_small_a_budget_is_refused_before_running(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("a\n1\n")
    with pytest.raises(MemoryBudgetError) as info:
        tb.read_csv(path).collect(memory="50MB", **RUN)
    assert "too small" in one_line_error(info.value)


def test_job_within_a_memory_budget_reports_peak_memory(tmp_path: Path, csv_file: Path) -> None:
    out = tmp_path / "out"
    # The budget covers this (pytest) process too, whose size depends on the tests before.
    budget = process_rss() + (350 << 20)
    summary = tb.read_csv(csv_file).write_parquet(out, memory=budget, **RUN)
    assert isinstance(summary, JobSummary)
    assert summary.peak_memory > 0
    assert summary.rows_written == 600
    assert_frame_equal(pl.read_parquet(out / "*.parquet"), pl.read_csv(csv_file))
    text = summary.render()
    assert "peak memory" in text and "rows read 600 = written 600 + filtered 0" in text
    data = summary.to_dict()
    assert data["rows_filtered"] == 0 and "files" not in data


def test_memory_monitor_sees_memory_the_process_uses() -> None:
    assert tree_rss() > 0
    with MemoryMonitor(interval=0.01) as monitor:
        baseline = monitor.sample()
        block = bytearray(200 << 20)
        block[::4096] = b"x" * len(block[::4096])  # touch every page
        time.sleep(0.05)
    assert monitor.peak >= baseline + (150 << 20)
    del block


def test_memory_monitor_sees_children_started_after_it() -> None:
    import subprocess
    import sys

    grow = "b = bytearray(200 << 20); b[::4096] = b'x' * len(b[::4096]); import time; time.sleep(2)"
    with MemoryMonitor(interval=0.01, relist=0.05) as monitor:
        baseline = monitor.sample()
        child = subprocess.Popen([sys.executable, "-c", grow])
        try:
            deadline = time.monotonic() + 10
            while monitor.peak < baseline + (150 << 20) and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            child.kill()
            child.wait()
    assert monitor.peak >= baseline + (150 << 20)
