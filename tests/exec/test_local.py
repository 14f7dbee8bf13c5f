"""The local executor and the shared scheduling loop: order, retries, dying workers."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import psutil
import pytest
from helpers import files_under, make_frame, one_line_error
from polars.testing import assert_frame_equal

import terabatch as tb
from terabatch.errors import BadRowError
from terabatch.exec.base import JobFailed, WorkerDied, iter_results
from terabatch.exec.local import LocalExecutor
from terabatch.exec.runtime import TaskFailure, TaskResult

RUN = {"progress": False}


@pytest.fixture
def source(tmp_path: Path, tiny_splits) -> tuple[Path, pl.DataFrame]:
    path = tmp_path / "in.csv"
    make_frame(2000, seed=9).write_csv(path)
    tiny_splits(8000, 3000)  # about ten tasks
    return path, pl.read_csv(path)


def _kill_once(marker: str):
    def fn(frame: pl.DataFrame) -> pl.DataFrame:
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return frame.with_columns(pid=pl.lit(os.getpid()))
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)
        return frame

    return fn


def test_killed_worker_is_replaced_and_its_task_retried(tmp_path: Path, source) -> None:
    path, expected = source
    marker = tmp_path / "killed"
    out = tmp_path / "out"
    summary = tb.read_csv(path).map_batches(_kill_once(str(marker))).write_parquet(out, **RUN)
    assert marker.exists(), "the function never killed its worker"
    killed = int(marker.read_text())
    got = pl.read_parquet(out / "*.parquet")
    assert killed not in set(got["pid"].to_list())
    assert_frame_equal(got.drop("pid"), expected)
    assert summary.rows_read == summary.rows_written == 2000
    assert not (out / "_temporary").exists()
    manifest_files = sorted(p for p in files_under(out) if not p.startswith("_"))
    assert manifest_files == summary.files


def _always_die(frame: pl.DataFrame) -> pl.DataFrame:
    os.kill(os.getpid(), signal.SIGKILL)
    return frame


def test_a_task_that_keeps_killing_its_worker_fails_the_job(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("a\n1\n")
    with pytest.raises(JobFailed) as info:
        tb.read_csv(path).map_batches(_always_die).collect(**RUN)
    message = one_line_error(info.value)
    assert "failed 4 times" in message and str(path) in message and "SIGKILL" in message


def test_one_and_two_workers_give_identical_output(tmp_path: Path, source) -> None:
    path, expected = source
    query = tb.read_csv(path).filter(pl.col("value") > -800).with_columns(x=pl.col("id") * 3)
    one = query.write_parquet(tmp_path / "one", workers=1, **RUN)
    two = query.write_parquet(tmp_path / "two", workers=2, **RUN)
    assert one.workers == 1 and two.workers == 2
    assert files_under(tmp_path / "one") == files_under(tmp_path / "two")
    want = expected.filter(pl.col("value") > -800).with_columns(x=pl.col("id") * 3)
    assert_frame_equal(pl.read_parquet(tmp_path / "one" / "*.parquet"), want)


def test_stopping_iter_batches_early_stops_the_workers(source) -> None:
    path, expected = source
    batches = tb.read_csv(path).iter_batches(**RUN)
    first = next(batches)
    assert_frame_equal(first, expected.head(first.height))
    assert psutil.Process().children(recursive=True)
    batches.close()
    assert psutil.Process().children(recursive=True) == []


def test_bad_row_is_not_retried(tmp_path: Path, tiny_splits) -> None:
    # An error in the data fails at once: retrying cannot fix it.
    path = tmp_path / "bad.csv"
    path.write_text("a,b\n" + "1,2\n" * 50 + "x,2\n")
    with pytest.raises(BadRowError) as info:
        tb.read_csv(path, schema={"a": pl.Int64, "b": pl.Int64}).collect(workers=1, **RUN)
    assert "line 52" in one_line_error(info.value)


# LocalExecutor on its own ----------------------------------------------------------------------


def _square(x: int) -> int:
    return x * x


def _fail(x: int) -> int:
    raise KeyError(x)


def _pid(_: int) -> int:
    return os.getpid()


def _suicide(_: int) -> int:
    os.kill(os.getpid(), signal.SIGKILL)
    return 0


def test_local_executor_runs_calls_and_survives_a_dead_worker() -> None:
    executor = LocalExecutor(workers=2)
    try:
        assert [f.result(timeout=30) for f in [executor.submit(_square, i) for i in range(6)]] == [
            0,
            1,
            4,
            9,
            16,
            25,
        ]
        with pytest.raises(KeyError):
            executor.submit(_fail, 3).result(timeout=30)
        pids = set(executor.worker_pids())
        assert len(pids) == 2 and os.getpid() not in pids
        with pytest.raises(WorkerDied, match="SIGKILL"):
            executor.submit(_suicide, 0).result(timeout=30)
        # The slot starts a fresh worker for the next call.
        after = {executor.submit(_pid, i).result(timeout=30) for i in range(6)}
        assert after and os.getpid() not in after
    finally:
        executor.close()
    assert executor.worker_pids() == []


def _reports_progress(n: int) -> int:
    from terabatch.exec import runtime

    assert runtime._report is not None  # the worker listens for progress
    for i in range(n):
        runtime._report(i, 10 * i)
    return n


def test_progress_messages_reach_the_watcher_before_the_answer() -> None:
    executor = LocalExecutor(workers=1)
    seen: list[tuple[int, int]] = []
    try:
        assert (
            executor.submit_watched(lambda *c: seen.append(c), _reports_progress, 3).result(
                timeout=30
            )
            == 3
        )
        assert seen == [(0, 0), (1, 10), (2, 20)]
        # Unwatched calls drop the messages; the answer still comes through.
        assert executor.submit(_reports_progress, 2).result(timeout=30) == 2
        assert executor.submit(_square, 4).result(timeout=30) == 16
    finally:
        executor.close()


def _slowly(frame: pl.DataFrame) -> pl.DataFrame:
    time.sleep(0.2)
    return frame


def test_a_running_task_shows_its_progress(
    tmp_path: Path, tiny_splits, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    import terabatch.run.progress as progress_module

    monkeypatch.setattr(progress_module, "PLAIN_EVERY_SECONDS", 0.0)
    path = tmp_path / "in.csv"
    make_frame(2000, seed=4).write_csv(path)
    size = path.stat().st_size
    tiny_splits(size, size // 8)  # one task of about eight chunks, 0.2 s each
    tb.read_csv(path).map_batches(_slowly).write_parquet(tmp_path / "out", progress=True)
    lines = [line for line in capsys.readouterr().err.splitlines() if "tasks," in line]
    running = [line for line in lines if ": 0/1 tasks," in line]
    assert running, lines  # reported while the only task was still running
    rows = [int(line.split(" tasks, ")[1].split(" rows")[0].replace(",", "")) for line in running]
    assert 0 < rows[0] < 2000 and rows == sorted(rows)
    assert ": 1/1 tasks, 2,000 rows" in lines[-1]


# The scheduling loop, with an in-process executor ----------------------------------------------


@dataclass(frozen=True)
class FakeTask:
    task_id: int

    def describe(self) -> str:
        return f"fake split {self.task_id}"


class ThreadExecutor:
    """Runs each call on a thread after a random delay; fails chosen tasks a number of times."""

    def __init__(self, failures: dict[int, list[BaseException]], workers: int = 3) -> None:
        self.workers = workers
        self.failures = {k: list(v) for k, v in failures.items()}
        self.running = 0
        self.max_running = 0
        self.calls: list[int] = []
        self._lock = threading.Lock()
        self._rng = random.Random(4)

    def submit(self, fn, task, attempt_dir, task_dir) -> Future:
        future: Future = Future()
        with self._lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
            self.calls.append(task.task_id)
            delay = self._rng.random() * 0.01
            failure = (
                self.failures.get(task.task_id, []).pop(0)
                if self.failures.get(task.task_id)
                else None
            )

        def work() -> None:
            time.sleep(delay)
            with self._lock:
                self.running -= 1
            if not future.set_running_or_notify_cancel():
                return
            if failure is not None:
                future.set_exception(failure)
            else:
                future.set_result(TaskResult(task.task_id, rows_in=task.task_id))

        threading.Thread(target=work, daemon=True).start()
        return future

    def close(self) -> None:
        pass


def _run(executor: ThreadExecutor, n: int, **kwargs) -> list[int]:
    seen: list[int] = []
    results = iter_results(
        executor,
        tuple(FakeTask(i) for i in range(n)),
        dirs=lambda task: (None, None),
        on_result=lambda task, r: seen.append(r.task_id),
        max_running=executor.workers,
        **kwargs,
    )
    ordered = [r.task_id for r in results]
    assert sorted(seen) == ordered
    return ordered


def test_results_come_in_task_order_with_bounded_concurrency() -> None:
    executor = ThreadExecutor({})
    assert _run(executor, 40) == list(range(40))
    assert executor.max_running <= 3
    assert sorted(executor.calls) == list(range(40))


def test_failed_attempts_are_retried() -> None:
    failures = {
        3: [TaskFailure("boom", "tb"), WorkerDied("died")],
        7: [OSError("disk hiccup")],
    }
    executor = ThreadExecutor(failures)
    assert _run(executor, 10, max_retries=3) == list(range(10))
    assert executor.calls.count(3) == 3 and executor.calls.count(7) == 2


def test_a_task_failing_too_often_fails_the_job_with_its_traceback() -> None:
    executor = ThreadExecutor({2: [TaskFailure("boom", "worker traceback")] * 3})
    with pytest.raises(JobFailed) as info:
        _run(executor, 5, max_retries=2)
    message = one_line_error(info.value)
    assert message.startswith("task 2 failed 3 times, on fake split 2: boom")
    assert info.value.traceback_text == "worker traceback"


def test_input_errors_are_not_retried() -> None:
    executor = ThreadExecutor({1: [BadRowError("f.csv: line 3: bad")] * 5})
    with pytest.raises(BadRowError):
        _run(executor, 4)
    assert executor.calls.count(1) == 1
