"""The local executor: worker processes on this machine, one dispatcher thread each.

Each worker runs one call at a time. A worker that dies (killed, out of memory, segfault) fails
only the call it was running, with ``WorkerDied``, and is replaced by a fresh process; the shared
scheduling loop decides whether to retry. Workers are configured for one thread per library, so
``workers`` processes use ``workers`` cores and no more.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future

import cloudpickle

from terabatch.exec.process import Progress, WorkerDied, WorkerProcess, stop_spares, take_spare


class LocalExecutor:
    """Run calls on ``workers`` worker processes."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = max(1, workers or os.cpu_count() or 1)
        self._queue: queue.Queue = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._live: dict[int, WorkerProcess] = {}
        self._busy: set[int] = set()
        self._lock = threading.Lock()

    def worker_pids(self) -> list[int]:
        with self._lock:
            return [w.pid for w in self._live.values()]

    def _dispatch(self, slot: int, first: WorkerProcess | None) -> None:
        worker: WorkerProcess | None = first or WorkerProcess()
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
                    worker = WorkerProcess()
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
        """Start the worker processes now, so that their start-up overlaps the planning; adopt
        spares started by the readers (``exec/process.py``) and stop those left over."""
        if self._threads:
            return
        spares = [take_spare() for _ in range(self.workers)]
        stop_spares()
        for slot, spare in enumerate(spares):
            thread = threading.Thread(
                target=self._dispatch,
                args=(slot, spare),
                daemon=True,
                name=f"terabatch-worker-{slot}",
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
