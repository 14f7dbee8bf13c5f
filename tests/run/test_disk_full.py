"""A full disk stops the job with one clear line, commits nothing, and the job resumes later.

Where the machine allows it (root, tmpfs), the output goes to a real 3 MiB filesystem;
otherwise, and in addition, "no space left on device" is injected into the writer.
"""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from helpers import visible_files

import terabatch as tb
from terabatch.errors import DiskFullError
from terabatch.exec.inline import InlineExecutor
from terabatch.io.sinks import FileWriter


@pytest.fixture
def small_disk(tmp_path: Path):
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def noisy_csv(tmp_path: Path) -> Path:
    """About 12 MB of incompressible numbers in 6 files."""
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(7)
    for i in range(6):
        n = 50_000
        pl.DataFrame(
            {"k": rng.integers(0, 1000, n), "x": rng.random(n), "y": rng.random(n)}
        ).write_csv(src / f"{i}.csv")
    return src


def test_output_filling_a_real_disk(small_disk: Path, noisy_csv: Path) -> None:
    out = small_disk / "out"
    ds = tb.read_csv(str(noisy_csv / "*.csv"))
    with pytest.raises(DiskFullError, match="no space left on device") as caught:
        ds.write_parquet(out, compression="none", workers=2, progress=False)
    assert "\n" not in str(caught.value)
    assert not out.exists() or visible_files(out) == {}
    # Room again: the same job runs to completion (resuming what was finished).
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    summary = ds.write_parquet(out, compression="none", workers=2, progress=False)
    expected = pl.read_csv(str(noisy_csv / "*.csv"))
    got = pl.read_parquet(str(out / "*.parquet"))
    assert got.sort(pl.all()).equals(expected.sort(pl.all()))
    assert summary.rows_written == expected.height
    assert list(small_disk.glob(".terabatch*")) == []


def test_shuffle_files_filling_a_real_disk(small_disk: Path, noisy_csv: Path, tmp_path) -> None:
    ds = tb.read_csv(str(noisy_csv / "*.csv")).group_by("k").agg(pl.col(["x", "y"]).median())
    with pytest.raises((DiskFullError, tb.TerabatchError), match=r"space|spill limit"):
        ds.write_parquet(tmp_path / "out", run_dir=small_disk / "run", progress=False)
    assert not (tmp_path / "out").exists() or visible_files(tmp_path / "out") == {}
    assert list(small_disk.rglob("attempt-*")) == []


def test_injected_disk_full(tmp_path: Path, noisy_csv: Path, monkeypatch) -> None:
    def full(self, frame):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(FileWriter, "write", full)
    out = tmp_path / "out"
    with pytest.raises(DiskFullError, match="run the same job again to resume"):
        tb.read_csv(str(noisy_csv / "*.csv")).write_parquet(
            out, executor=InlineExecutor(), progress=False
        )
    assert not out.exists() or visible_files(out) == {}
