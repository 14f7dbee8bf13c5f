"""Fault injection: workers killed at random moments, in map and in reduce tasks.

Every round must end in exactly the expected output (the killed task is retried on a fresh
worker) or, if a task kept dying, in a clear error with nothing a reader could mistake for
output. The rounds, their kill moments and their victims are drawn from a fixed seed.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path

import polars as pl
import pytest
from helpers import visible_files

import terabatch as tb
from terabatch.exec.local import LocalExecutor

FILES, ROWS = 10, 2_000


def _slow(frame: pl.DataFrame) -> pl.DataFrame:
    time.sleep(0.03)
    return frame


def _slow_reduce(frame: pl.DataFrame) -> pl.DataFrame:
    time.sleep(0.5)  # leaves a reduce task running when the killer strikes, even on a busy CI
    return frame


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("faults") / "src"
    src.mkdir()
    for i in range(FILES):
        ids = range(i * ROWS, (i + 1) * ROWS)
        pl.DataFrame({"k": [n % 11 for n in ids], "v": list(ids)}).write_csv(src / f"{i}.csv")
    return src


def _pipeline(src: Path) -> tb.Dataset:
    return (
        tb.read_csv(str(src / "*.csv"))
        .map_batches(_slow, batch_size=500)
        .group_by("k")
        .agg(total=pl.col("v").sum(), n=pl.len())
        .map_batches(_slow_reduce)
    )


def _expected(src: Path) -> pl.DataFrame:
    frame = pl.read_csv(str(src / "*.csv"))
    return frame.group_by("k").agg(total=pl.col("v").sum(), n=pl.len()).sort("k")


def _done_markers(root: Path, stage: str) -> int:
    return len(list(root.glob(f".terabatch/*/done/{stage}-*.json")))


@pytest.mark.parametrize("round_", range(6))
def test_random_worker_kills_never_change_the_answer(
    tmp_path: Path, inputs: Path, round_: int
) -> None:
    rng = random.Random(1000 + round_)
    phase = "map" if round_ % 2 == 0 else "reduce"
    executor = LocalExecutor(2)
    executor.start()
    out = tmp_path / "out"
    outcome: dict[str, object] = {}

    def job() -> None:
        try:
            outcome["summary"] = _pipeline(inputs).write_parquet(
                out, executor=executor, progress=False
            )
        except tb.TerabatchError as exc:
            outcome["error"] = exc

    runner = threading.Thread(target=job)
    runner.start()
    kills = 0
    deadline = time.monotonic() + 60
    # Map: at a random moment of the map stage. Reduce: once the map stage is all committed.
    while runner.is_alive() and time.monotonic() < deadline:
        ready = (
            _done_markers(tmp_path, "000") >= rng.randint(1, FILES - 2)
            if phase == "map"
            else _done_markers(tmp_path, "000") == FILES
        )
        if ready:
            time.sleep(rng.uniform(0, 0.15))
            pids = executor.worker_pids()
            if pids:
                os.kill(rng.choice(pids), signal.SIGKILL)
                kills += 1
            if kills >= rng.randint(1, 2):
                break
        time.sleep(0.01)
    runner.join(timeout=120)
    assert not runner.is_alive()
    assert kills >= 1, "the job ended before a worker could be killed"
    if "error" in outcome:
        assert "\n" not in str(outcome["error"]).strip()
        assert not out.exists() or visible_files(out) == {}
        return
    got = pl.read_parquet(str(out / "*.parquet")).sort("k")
    assert got.equals(_expected(inputs))
    assert outcome["summary"].rows_read == FILES * ROWS
