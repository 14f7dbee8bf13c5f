"""A real Dask cluster for the executor tests: ``dask scheduler`` and ``dask worker`` processes.

The session cluster has two workers (one process, one thread each, behind a nanny that
restarts a killed worker). Its scheduler runs with ``allowed-failures: 0``, so a worker lost
mid-task fails the Dask task at once and terabatch's own retry has to rerun it. The processes
import terabatch from this worktree (``PYTHONPATH``) and are stopped at the end, also on
failure: terminated, then killed, each with its process group.

They are started detached (through a launcher process that exits at once), so they are not
children of the test process: the job driver counts its children's memory as its own, and
other tests check that no worker process outlives its job.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

distributed = pytest.importorskip("distributed")

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 60.0


@dataclass
class DaskCluster:
    """Scheduler and worker processes on 127.0.0.1, started by ``start_cluster``."""

    address: str
    scheduler: psutil.Process
    workers: list[psutil.Process]
    logs: Path

    @property
    def url(self) -> str:
        """The ``executor=`` string a user would write."""
        return self.address.replace("tcp://", "dask://", 1)

    def client(self) -> distributed.Client:
        return distributed.Client(self.address, timeout=10, set_as_default=False)

    def wait_for_workers(self, n: int) -> None:
        with self.client() as client:
            client.wait_for_workers(n, timeout=START_TIMEOUT)

    def worker_pids(self) -> dict[str, int]:
        """The process id of every connected worker (not of its nanny), by worker address."""
        with self.client() as client:
            return client.run(os.getpid)

    def stop(self) -> None:
        processes = [*self.workers, self.scheduler]
        family = processes + [c for p in processes if _alive(p) for c in _children(p)]
        for process in processes:
            _signal_group(process.pid, signal.SIGTERM)
        _wait_gone(family, 10)
        for process in processes:
            # The group as well: a nanny's worker child outlives a nanny that was killed.
            _signal_group(process.pid, signal.SIGKILL)
        _wait_gone(family, 10)


def _children(process: psutil.Process) -> list[psutil.Process]:
    try:
        return process.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_gone(processes: list[psutil.Process], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in processes) and time.monotonic() < deadline:
        time.sleep(0.05)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _env(extra: dict[str, str]) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0",
        **extra,
    }


_LAUNCH = """
import subprocess, sys
with open(sys.argv[1], "wb") as log:
    child = subprocess.Popen(
        sys.argv[2:], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
print(child.pid)
"""


def _spawn(args: list[str], log: Path, env: dict[str, str]) -> psutil.Process:
    """Start ``python -m args`` detached, in its own session, output to ``log``."""
    launcher = subprocess.run(
        [sys.executable, "-c", _LAUNCH, str(log), sys.executable, "-m", *args],
        env=env,
        cwd=log.parent,
        capture_output=True,
        text=True,
        check=True,
    )
    return psutil.Process(int(launcher.stdout))


def start_cluster(
    logs: Path, workers: int = 2, nanny: bool = True, env: dict[str, str] | None = None
) -> DaskCluster:
    """Start a scheduler on a free port of 127.0.0.1 and ``workers`` workers connected to it."""
    logs.mkdir(parents=True, exist_ok=True)
    environment = _env(env or {})
    scheduler_file = logs / "scheduler.json"
    scheduler = _spawn(
        [
            "distributed.cli.dask_scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--no-dashboard",
            "--scheduler-file",
            str(scheduler_file),
        ],
        logs / "scheduler.log",
        environment,
    )
    cluster = DaskCluster("", scheduler, [], logs)
    try:
        cluster.address = _read_address(scheduler_file, scheduler, logs / "scheduler.log")
        for i in range(workers):
            args = [
                "distributed.cli.dask_worker",
                cluster.address,
                "--nworkers",
                "1",
                "--nthreads",
                "1",
                "--no-dashboard",
                "--memory-limit",
                "0",
                "--host",
                "127.0.0.1",
                "--nanny" if nanny else "--no-nanny",
            ]
            cluster.workers.append(_spawn(args, logs / f"worker-{i}.log", environment))
        cluster.wait_for_workers(workers)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _read_address(scheduler_file: Path, scheduler: psutil.Process, log: Path) -> str:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if not _alive(scheduler):
            raise RuntimeError(f"dask scheduler exited: {log.read_text()[-2000:]}")
        with contextlib.suppress(FileNotFoundError, ValueError):
            return json.loads(scheduler_file.read_text())["address"]
        time.sleep(0.1)
    raise RuntimeError(f"dask scheduler did not start in {START_TIMEOUT} s")


@pytest.fixture(scope="session")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskCluster]:
    """Two workers behind nannies, shared by the tests of the session."""
    cluster = start_cluster(tmp_path_factory.mktemp("dask-cluster"))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[Callable[..., DaskCluster]]:
    """Call ``own_cluster(workers=1, nanny=False)`` for a cluster this test may break."""
    started: list[DaskCluster] = []

    def start(**kwargs) -> DaskCluster:
        cluster = start_cluster(tmp_path / f"cluster-{len(started)}", **kwargs)
        started.append(cluster)
        return cluster

    try:
        yield start
    finally:
        for cluster in started:
            cluster.stop()
