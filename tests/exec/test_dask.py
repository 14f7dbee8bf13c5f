"""The Dask executor against a real cluster: failures of workers and scheduler, the CLI.

The pipelines themselves are checked on Dask by the conformance suite (test_conformance.py);
this module covers what is Dask's own: a worker killed mid-job, the scheduler killed mid-job,
an address with no scheduler, a ``distributed.Client`` passed in, workers that lack a module.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner
from helpers import files_under, make_frame, one_line_error
from polars.testing import assert_frame_equal

import terabatch as tb
import terabatch.exec.dask as dask_module
from terabatch.cli import cli
from terabatch.errors import ClusterError, TaskLoadError, TerabatchError, UserFunctionError

distributed = pytest.importorskip("distributed")


@pytest.fixture
def csv_path(tmp_path: Path) -> Path:
    path = tmp_path / "in.csv"
    make_frame(600, seed=3).write_csv(path)
    return path


def slow_marking(markers: Path, seconds: float) -> Callable[[pl.DataFrame], pl.DataFrame]:
    """A map_batches function that notes ``<first id>-<pid>`` in ``markers``, then sleeps."""
    markers.mkdir(parents=True, exist_ok=True)

    def mark(frame: pl.DataFrame) -> pl.DataFrame:
        (markers / f"{frame['id'][0]}-{os.getpid()}").touch()
        time.sleep(seconds)
        return frame.with_columns(twice=pl.col("value") * 2)

    return mark


@contextlib.contextmanager
def records_of(name: str) -> Iterator[list[logging.LogRecord]]:
    """The records of one logger while in the block (Dask's loggers do not reach caplog)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def wait_for_marker(markers: Path, pids: set[int], timeout: float = 30) -> int:
    """The pid of the first of ``pids`` that has started a batch."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name in os.listdir(markers):
            pid = int(name.split("-")[1])
            if pid in pids:
                return pid
        time.sleep(0.02)
    raise AssertionError(f"no task started on {pids} within {timeout} s")


def test_a_worker_killed_mid_job_does_not_fail_it(
    dask_cluster, csv_path: Path, tmp_path: Path, tiny_splits
) -> None:
    tiny_splits(2_000)  # 16 tasks
    ds = tb.read_csv(csv_path).filter(pl.col("value") > -800)
    local = tmp_path / "local"
    ds.map_batches(slow_marking(tmp_path / "local-markers", 0)).write_parquet(
        local, workers=2, progress=False
    )

    markers = tmp_path / "markers"
    job = ds.map_batches(slow_marking(markers, 0.15))
    out = tmp_path / "out"
    pids = set(dask_cluster.worker_pids().values())
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(
            job.write_parquet, out, executor=dask_cluster.url, workers=2, progress=False
        )
        victim = wait_for_marker(markers, pids)
        os.kill(victim, signal.SIGKILL)
        summary = running.result(timeout=60)

    assert files_under(out) == files_under(local)
    assert summary.rows_written == pl.read_csv(csv_path).filter(pl.col("value") > -800).height
    # The batch the killed worker had started ran again on another worker.
    started = [name.split("-") for name in os.listdir(markers)]
    killed = {first for first, pid in started if int(pid) == victim}
    rerun = {first for first, pid in started if int(pid) != victim}
    assert killed and killed <= rerun
    dask_cluster.wait_for_workers(2)  # the nanny restarts the killed worker for later tests


def test_losing_the_scheduler_fails_the_job_with_one_line(
    own_cluster, csv_path: Path, tmp_path: Path, tiny_splits
) -> None:
    cluster = own_cluster(workers=1, nanny=False)
    tiny_splits(2_000)
    markers = tmp_path / "markers"
    out = tmp_path / "out"
    job = tb.read_csv(csv_path).map_batches(slow_marking(markers, 0.3))
    with ThreadPoolExecutor(1) as pool, records_of("distributed.client") as dask_log:
        running = pool.submit(job.write_parquet, out, executor=cluster.url, progress=False)
        wait_for_marker(markers, set(cluster.worker_pids().values()))
        cluster.scheduler.kill()
        killed = time.monotonic()
        with pytest.raises(ClusterError) as info:
            running.result(timeout=60)
    assert time.monotonic() - killed < 15
    message = one_line_error(info.value)
    assert message.startswith(f"lost the Dask scheduler at {cluster.address}: ")
    assert "resumed by running the same command again" in message
    assert not [r for r in dask_log if r.levelno >= logging.ERROR]  # no Dask traceback
    # Nothing committed. (The task still running on the worker may yet write under
    # out/_temporary: Dask cannot stop a running task.)
    assert not [p for p in out.rglob("*") if "_temporary" not in p.parts and p.is_file()]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_address_without_a_scheduler_fails_quickly(
    csv_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dask_module, "CONNECT_TIMEOUT", 2.0)
    port = _free_port()
    started = time.monotonic()
    with pytest.raises(ClusterError) as info:
        tb.read_csv(csv_path).count(executor=f"dask://127.0.0.1:{port}", progress=False)
    assert time.monotonic() - started < 10
    message = one_line_error(info.value)
    assert f"cannot connect to the Dask scheduler at tcp://127.0.0.1:{port}" in message
    assert "check that `dask scheduler` is running there" in message


def test_a_client_passed_in_is_used_and_left_open(dask_cluster, csv_path: Path) -> None:
    with dask_cluster.client() as client:
        got = tb.read_csv(csv_path).group_by("group").agg(pl.len()).collect(executor=client)
        assert client.status == "running"
        assert client.submit(sum, [1, 2]).result() == 3
    want = pl.read_csv(csv_path).group_by("group").agg(pl.len())
    assert_frame_equal(got.sort("group"), want.sort("group"))


def test_user_errors_come_back_unchanged(dask_cluster, csv_path: Path) -> None:
    def broken(frame: pl.DataFrame) -> pl.DataFrame:
        raise KeyError("no such thing")

    with pytest.raises(UserFunctionError) as info:
        tb.read_csv(csv_path).map_batches(broken).collect(executor=dask_cluster.url)
    assert "broken) raised KeyError: 'no such thing'" in one_line_error(info.value)
    assert 'raise KeyError("no such thing")' in info.value.traceback_text


def _defined_in_a_test_module(frame: pl.DataFrame) -> pl.DataFrame:
    return frame


def test_a_function_the_workers_cannot_import_is_named(dask_cluster, csv_path: Path) -> None:
    # This module is importable here but not on the workers, so cloudpickle sends the function
    # by reference and the workers cannot load it.
    ds = tb.read_csv(csv_path).map_batches(_defined_in_a_test_module)
    with pytest.raises(TaskLoadError) as info:
        ds.collect(executor=dask_cluster.url, progress=False)
    message = one_line_error(info.value)
    assert f"No module named '{__name__}'" in message
    assert "register_pickle_by_value" in message


def test_cli_convert_on_the_cluster(dask_cluster, csv_path: Path, tmp_path: Path) -> None:
    def convert(out: Path, *extra: str) -> None:
        args = ["convert", str(csv_path), str(out), "--to", "parquet", "--workers", "2", "-q"]
        result = CliRunner().invoke(cli, [*args, *extra])
        assert result.exit_code == 0, result.output
        assert result.stdout.strip().endswith("\t600")

    convert(tmp_path / "local")
    convert(tmp_path / "dask", "--executor", dask_cluster.url)
    assert files_under(tmp_path / "dask") == files_under(tmp_path / "local")


def test_cli_unreachable_scheduler_exits_2(csv_path: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(dask_module, "CONNECT_TIMEOUT", 1.0)
    address = f"dask://127.0.0.1:{_free_port()}"
    args = ["convert", str(csv_path), str(tmp_path / "out"), "--to", "parquet"]
    result = CliRunner().invoke(cli, [*args, "--executor", address])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert "cannot connect to the Dask scheduler" in result.stderr


def test_without_dask_the_message_says_what_to_install(
    csv_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)
    monkeypatch.delitem(sys.modules, "terabatch.exec.dask", raising=False)
    with pytest.raises(TerabatchError) as info:
        tb.read_csv(csv_path).count(executor="dask://127.0.0.1:8786")
    assert 'pip install "terabatch[dask]"' in one_line_error(info.value)


def test_workers_without_terabatch_are_named(own_cluster, csv_path: Path, tmp_path: Path) -> None:
    # A worker whose "terabatch" cannot be imported, as on a machine where it is not installed.
    fake = tmp_path / "site" / "terabatch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('terabatch is not installed here')\n")
    cluster = own_cluster(workers=1, nanny=False, env={"PYTHONPATH": str(fake.parent)})
    with pytest.raises(ClusterError) as info:
        tb.read_csv(csv_path).count(executor=cluster.url, progress=False)
    message = one_line_error(info.value)
    assert "a Dask worker could not run a terabatch task: ImportError: terabatch is not" in message
    assert f"every worker needs terabatch {tb.__version__}" in message
