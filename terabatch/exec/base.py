"""The executor contract and the one scheduling loop every executor shares.

An executor only knows how to ``submit`` a function call and how to start afresh when its
workers died. Ordering, the bounded window of tasks in flight, holding back under memory
pressure, retries and progress live here, once.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Protocol

from terabatch.errors import TerabatchError, UserFunctionError
from terabatch.exec.process import WorkerDied
from terabatch.exec.runtime import TaskFailure, TaskResult, run_task
from terabatch.plan.stages import Task


class Executor(Protocol):
    """Runs function calls somewhere: worker processes, a cluster."""

    workers: int

    def submit(self, fn: Callable, *args: object) -> Future: ...

    def close(self) -> None: ...


class JobFailed(TerabatchError):
    """A task kept failing; carries the last traceback from the worker."""

    def __init__(self, message: str, traceback_text: str = "") -> None:
        super().__init__(message)
        self.traceback_text = traceback_text

    def __reduce__(self):
        return (type(self), (str(self), self.traceback_text))


def iter_results(
    executor: Executor,
    tasks: tuple[Task, ...],
    *,
    dirs: Callable[[Task], tuple[str | None, str | None]],
    on_result: Callable[[Task, TaskResult], None],
    max_running: int,
    max_waiting: int | None = None,
    memory_pressure: Callable[[], bool] = lambda: False,
    max_retries: int = 3,
    on_progress: Callable[[Task, int, int], None] | None = None,
) -> Iterator[TaskResult]:
    """Run tasks and yield their results in the order of ``tasks``.

    Tasks of several stages may run together (their ids repeat across stages): tasks are told
    apart by their place in ``tasks``.

    At most ``max_running`` tasks are submitted and unfinished. Finished results wait to be
    yielded in order; ``max_waiting`` bounds how many may wait (for results that hold data), so
    one slow task can stall the others only when results are large. While
    ``memory_pressure()`` is true no new task starts
    unless nothing is running. Executors that report progress within a call (``submit_watched``,
    the local worker processes) send each running task's rows and bytes read to ``on_progress``.
    """
    pending = list(reversed(range(len(tasks))))
    running: dict[Future, int] = {}
    attempts: dict[int, int] = {}
    done: dict[int, TaskResult] = {}
    next_place = 0

    watched = getattr(executor, "submit_watched", None) if on_progress is not None else None

    def submit(place: int) -> None:
        task = tasks[place]
        attempt_dir, task_dir = dirs(task)
        if watched is not None and on_progress is not None:
            report = functools.partial(on_progress, task)
            future = watched(report, run_task, task, attempt_dir, task_dir)
        else:
            future = executor.submit(run_task, task, attempt_dir, task_dir)
        running[future] = place

    try:
        while pending or running or done:
            while (
                pending
                and len(running) < max_running
                and (max_waiting is None or len(running) + len(done) < max_waiting)
                and (not running or not memory_pressure())
            ):
                submit(pending.pop())
            if running:
                finished, _ = wait(list(running), timeout=0.5, return_when=FIRST_COMPLETED)
            else:
                finished = set()
                if pending and not done:
                    time.sleep(0.05)
            for future in finished:
                place = running.pop(future)
                task = tasks[place]
                try:
                    result = future.result()
                except UserFunctionError as exc:
                    # The user's code may fail for a passing reason (a service, a full disk):
                    # retried like a crash; when it keeps failing, its own error and traceback.
                    attempts[place] = attempts.get(place, 0) + 1
                    if attempts[place] > max_retries:
                        raise exc from None
                    pending.append(place)
                    continue
                except TerabatchError:
                    raise  # the input's fault (a bad row, a missing file): the same every time
                except (TaskFailure, WorkerDied, OSError, MemoryError) as exc:
                    attempts[place] = attempts.get(place, 0) + 1
                    if attempts[place] > max_retries:
                        raise JobFailed(
                            f"task {task.task_id} failed {attempts[place]} times, on "
                            f"{task.describe()}: {exc}",
                            getattr(exc, "traceback_text", ""),
                        ) from None
                    pending.append(place)
                    continue
                on_result(task, result)
                done[place] = result
            while next_place in done:
                yield done.pop(next_place)
                next_place += 1
    finally:
        for future in running:
            future.cancel()
