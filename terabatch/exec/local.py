"""The local executor: worker processes on this machine, one dispatcher thread each.

Each worker runs one call at a time. A worker that dies (killed, out of memory, segfault) fails
only the call it was running, with ``WorkerDied``, and is replaced by a fresh process; the shared
scheduling loop decides whether to retry. Workers are configured for one thread per library, so
``workers`` processes use ``workers`` cores and no more.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from multiprocessing.connection import Connection

import cloudpickle

from terabatch.exec.base import WorkerDied
from terabatch.exec.calls import read_progress, unpack

_WORKER_ENV = {
    "POLARS_MAX_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    # Polars' jemalloc: give freed memory back to the system quickly, so RSS tracks real use.
    "_RJEM_MALLOC_CONF": "background_thread:true,dirty_decay_ms:500,muzzy_decay_ms:0",
}


# Called with a running task's rows and bytes read so far.
Progress = Callable[[int, int], None]


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class _Worker:
    """One worker process and the two pipes to it."""

    def __init__(self) -> None:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        env = {**os.environ, **_WORKER_ENV}
        # cloudpickle sends functions of importable modules by reference: a worker must be able
        # to import whatever the driver can (the script's directory, test directories, ...).
        env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p or os.curdir) for p in sys.path)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "terabatch.exec.worker", str(to_child_r), str(from_child_w)],
            pass_fds=(to_child_r, from_child_w),
            stdin=subprocess.DEVNULL,
            stdout=sys.stderr.fileno() if _has_fileno(sys.stderr) else None,
            env=env,
            close_fds=True,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self.outbox = Connection(to_child_w, readable=False)
        self.inbox = Connection(from_child_r, writable=False)

    @property
    def pid(self) -> int:
        return self.process.pid

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
        for conn in (self.outbox, self.inbox):
            with contextlib.suppress(OSError):
                conn.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _has_fileno(stream: object) -> bool:
    try:
        stream.fileno()  # type: ignore[attr-defined]
        return True
    except (AttributeError, OSError, ValueError):
        return False


class LocalExecutor:
    """Run calls on ``workers`` worker processes."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = max(1, workers or os.cpu_count() or 1)
        self._queue: queue.Queue = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._live: dict[int, _Worker] = {}
        self._busy: set[int] = set()
        self._lock = threading.Lock()

    def worker_pids(self) -> list[int]:
        with self._lock:
            return [w.pid for w in self._live.values()]

    def _dispatch(self, slot: int) -> None:
        worker: _Worker | None = _Worker()
        with self._lock:
            self._live[slot] = worker
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    return
                future, blob, on_progress = item
                if not future.set_running_or_notify_cancel():
                    continue
                if worker is None:
                    worker = _Worker()
                    with self._lock:
                        self._live[slot] = worker
                with self._lock:
                    self._busy.add(slot)
                try:
                    future.set_result(worker.call(blob, on_progress))
                except WorkerDied as exc:
                    future.set_exception(exc)
                    worker.stop()
                    worker = None
                except BaseException as exc:
                    future.set_exception(exc)
                finally:
                    with self._lock:
                        self._busy.discard(slot)
        finally:
            if worker is not None:
                worker.stop()
            with self._lock:
                self._live.pop(slot, None)

    def start(self) -> None:
        """Start the worker processes now, so that their start-up overlaps the planning."""
        if self._threads:
            return
        for slot in range(self.workers):
            thread = threading.Thread(
                target=self._dispatch, args=(slot,), daemon=True, name=f"terabatch-worker-{slot}"
            )
            thread.start()
            self._threads.append(thread)

    def submit(self, fn: Callable, *args: object) -> Future:
        return self.submit_watched(None, fn, *args)

    def submit_watched(self, on_progress: Progress | None, fn: Callable, *args: object) -> Future:
        """``submit``, with the call's progress messages going to ``on_progress`` (from a
        dispatcher thread) while it runs."""
        self.start()
        future: Future = Future()
        self._queue.put((future, cloudpickle.dumps((fn, args)), on_progress))
        return future

    def close(self) -> None:
        """Cancel calls not yet started, kill workers still busy, stop the others."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item[0].cancel()
        with self._lock:
            for slot in self._busy:
                self._live[slot].process.kill()
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join()
        self._threads = []
