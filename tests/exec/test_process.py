"""Spare workers: started by the readers, adopted by a job's local executor, never misused."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import psutil
import pytest
from polars.testing import assert_frame_equal

import terabatch as tb
from terabatch.exec import process
from terabatch.exec.local import LocalExecutor
from terabatch.exec.process import start_spares, stop_spares, take_spare

RUN = {"progress": False}


def _pid(_: int) -> int:
    return os.getpid()


def _env(name: str) -> str | None:
    return os.environ.get(name)


@pytest.fixture(autouse=True)
def no_spares():
    stop_spares()
    yield
    stop_spares()


def _spare_pids() -> set[int]:
    return {w.pid for w in process._spares}


def test_a_reader_starts_spares_and_the_job_adopts_them(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    frame = pl.DataFrame({"k": [1, 2, 1, 3], "v": [1.0, 2.0, 3.0, 4.0]})
    frame.write_csv(path)
    dataset = tb.read_csv(path)
    spares = _spare_pids()
    assert len(spares) == (os.cpu_count() or 1)
    children = {p.pid for p in psutil.Process().children()}
    assert spares <= children

    executor = LocalExecutor(workers=1)
    try:
        assert executor.submit(_pid, 0).result(timeout=60) in spares
        # The job needs one worker: the other spares are stopped, not left idle.
        assert process._spares == []
    finally:
        executor.close()
    result = dataset.group_by("k").agg(pl.col("v").sum()).collect(**RUN)
    want = frame.group_by("k").agg(pl.col("v").sum())
    assert_frame_equal(result.sort("k"), want.sort("k"))


def test_a_spare_started_under_another_environment_is_not_adopted(monkeypatch) -> None:
    start_spares(1)
    (spare,) = process._spares
    monkeypatch.setenv("TERABATCH_TEST_MARK", "after")
    assert take_spare() is None
    assert spare.process.poll() is not None  # stopped, not leaked
    executor = LocalExecutor(workers=1)
    try:
        # A fresh worker sees the environment of now.
        assert executor.submit(_env, "TERABATCH_TEST_MARK").result(timeout=60) == "after"
    finally:
        executor.close()


def test_a_spare_nobody_adopts_is_stopped_after_its_idle_time(monkeypatch) -> None:
    monkeypatch.setattr(process, "SPARE_IDLE_SECONDS", 0.2)
    start_spares(1)
    (spare,) = process._spares
    spare.process.wait(timeout=30)
    assert process._spares == []


def test_a_job_on_another_executor_stops_the_spares(tmp_path: Path) -> None:
    from terabatch.exec.inline import InlineExecutor

    path = tmp_path / "in.csv"
    pl.DataFrame({"a": [1, 2, 3]}).write_csv(path)
    dataset = tb.read_csv(path)
    spares = list(process._spares)
    assert spares
    assert dataset.count(executor=InlineExecutor(), **RUN) == 3
    assert process._spares == []
    assert all(w.process.poll() is not None for w in spares)
