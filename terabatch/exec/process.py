"""One local worker process and the two pipes to it; spare workers started ahead of a job.

A worker takes about a third of a second to start (the interpreter, Polars and Arrow). A job's
driver spends about as long importing the same libraries and reading its inputs' headers before
its first task is ready, so the readers start workers at once (``start_spares``) and the job's
executor adopts them (``take_spare``): the two start-ups overlap instead of adding up. A spare
that no job adopts is stopped after ``SPARE_IDLE_SECONDS``.

This module imports neither Polars nor Arrow, so a spare can be started before the driver
imports them.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection

from terabatch.exec.calls import read_progress, unpack

WORKER_ENV = {
    "POLARS_MAX_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    # Polars' jemalloc: give freed memory back to the system quickly, so RSS tracks real use.
    "_RJEM_MALLOC_CONF": "background_thread:true,dirty_decay_ms:500,muzzy_decay_ms:0",
}
SPARE_IDLE_SECONDS = 60.0

# Called with a running task's rows and bytes read so far.
Progress = Callable[[int, int], None]


class WorkerDied(Exception):
    """The worker process running a call exited before answering."""


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _stderr_identity() -> tuple[int, int] | None:
    """Where the driver's stderr leads now (a worker's output goes there)."""
    try:
        info = os.fstat(sys.stderr.fileno())
    except (AttributeError, OSError, ValueError):
        return None
    return info.st_dev, info.st_ino


def _setup() -> tuple[dict[str, str], tuple[int, int] | None]:
    """A new worker's environment and output: what decides whether a spare may serve a job."""
    env = {**os.environ, **WORKER_ENV}
    # cloudpickle sends functions of importable modules by reference: a worker must be able
    # to import whatever the driver can (the script's directory, test directories, ...).
    env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p or os.curdir) for p in sys.path)
    return env, _stderr_identity()


class WorkerProcess:
    """One ``python -m terabatch.exec.worker`` process and the two pipes to it."""

    def __init__(self) -> None:
        self.env, self.stderr = _setup()
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "terabatch.exec.worker", str(to_child_r), str(from_child_w)],
            pass_fds=(to_child_r, from_child_w),
            stdin=subprocess.DEVNULL,
            stdout=sys.stderr.fileno() if self.stderr is not None else None,
            env=self.env,
            close_fds=True,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self.outbox = Connection(to_child_w, readable=False)
        self.inbox = Connection(from_child_r, writable=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def fits_now(self) -> bool:
        """Alive, and started with the environment and output a new worker would get now."""
        return self.process.poll() is None and (self.env, self.stderr) == _setup()

    def call(self, blob: bytes, on_progress: Progress | None = None) -> object:
        """Run one call; progress messages before its answer go to ``on_progress``."""
        try:
            self.outbox.send_bytes(blob)
            while True:
                payload = self.inbox.recv_bytes()
                counts = read_progress(payload)
                if counts is None:
                    break
                if on_progress is not None:
                    # A display that fails must not leave the answer unread in the pipe.
                    with contextlib.suppress(Exception):
                        on_progress(*counts)
        except (EOFError, OSError, BrokenPipeError):
            code = self.process.wait()
            raise WorkerDied(f"worker process {self.pid} died ({_describe_exit(code)})") from None
        return unpack(payload)

    def stop(self) -> None:
        """Close the pipes, which ends the worker's loop, and wait for it to exit."""
        for conn in (self.outbox, self.inbox):
            with contextlib.suppress(OSError):
                conn.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        """Stop at once: for a worker holding nothing (a spare)."""
        with contextlib.suppress(OSError):
            self.process.kill()
        self.stop()


_spares: list[WorkerProcess] = []
_spares_lock = threading.Lock()


def start_spares(count: int | None = None) -> None:
    """Start workers now, up to ``count`` (the machine's cores) spares alive, for the job the
    caller is about to build."""
    wanted = count or os.cpu_count() or 1
    with _spares_lock:
        for worker in [w for w in _spares if w.process.poll() is not None]:
            _spares.remove(worker)
            worker.stop()  # reaps it and closes its pipes
        while len(_spares) < wanted:
            worker = WorkerProcess()
            _spares.append(worker)
            timer = threading.Timer(SPARE_IDLE_SECONDS, _expire, args=(worker,))
            timer.daemon = True
            timer.start()


def _expire(worker: WorkerProcess) -> None:
    with _spares_lock:
        if worker not in _spares:
            return  # adopted by a job, or already stopped
        _spares.remove(worker)
    worker.kill()


def take_spare() -> WorkerProcess | None:
    """A spare worker fit to serve a job started now, or None; unfit spares are stopped."""
    with _spares_lock:
        while _spares:
            worker = _spares.pop(0)
            if worker.fits_now():
                return worker
            worker.kill()
    return None


def stop_spares() -> None:
    """Stop the spares no executor adopted: a job's workers are all it may run."""
    with _spares_lock:
        spares, _spares[:] = list(_spares), []
    for worker in spares:
        worker.kill()


# Spares hear of the driver's exit anyway (their pipe closes, and Linux kills them with it);
# stopping them first keeps the interpreter from warning about children still running.
atexit.register(stop_spares)
