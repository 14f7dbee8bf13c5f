"""Progress on stderr: a rich bar per stage on a terminal, plain log lines otherwise."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from terabatch.run.memory import format_size

PLAIN_EVERY_SECONDS = 5.0


class StageProgress:
    """Progress of one stage: tasks done, rows, bytes read, throughput and ETA.

    Finished tasks count whole; running tasks count by what they have read so far, as their
    workers report it (``running``), so a stage of a few large tasks still moves. A stage that
    reads planned input (``nbytes``) advances its bar by bytes, a reduce stage by tasks.
    """

    def __init__(self, reporter: ProgressReporter, name: str, tasks: int, nbytes: int) -> None:
        self.reporter, self.name, self.tasks, self.nbytes = reporter, name, tasks, nbytes
        self.done = self.rows = self.bytes_done = 0
        self.started = time.monotonic()
        self._last_line = self.started
        self._running: dict[int, tuple[int, int]] = {}
        self._lock = threading.Lock()  # workers report from their dispatcher threads
        self._bar = None
        if reporter.rich is not None:
            self._bar = reporter.rich.add_task(
                name,
                total=nbytes or max(tasks, 1),
                tasks=f"0/{tasks}",
                rows="0",
                read=self._read_text(0),
                rate="",
            )

    def _read_text(self, read: int) -> str:
        # Reduce stages read shuffle files whose size is not planned: show what was read only.
        if not self.nbytes:
            return format_size(read)
        return f"{format_size(read)} of {format_size(self.nbytes)}"

    def running(self, task_id: int, rows: int, nbytes: int) -> None:
        """A running task has read ``rows`` rows and ``nbytes`` bytes so far."""
        with self._lock:
            self._running[task_id] = (rows, nbytes)
            self._show()

    def advance(self, task_id: int, rows: int, nbytes: int) -> None:
        """Task ``task_id`` finished, having read ``rows`` rows and ``nbytes`` bytes."""
        with self._lock:
            self._running.pop(task_id, None)
            self.done += 1
            self.rows += rows
            self.bytes_done += nbytes
            self._show()

    def _show(self) -> None:
        rows = self.rows + sum(r for r, _ in self._running.values())
        read = self.bytes_done + sum(b for _, b in self._running.values())
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = f"{format_size(read / elapsed)}/s"
        if self._bar is not None and self.reporter.rich is not None:
            self.reporter.rich.update(
                self._bar,
                completed=min(read, self.nbytes) if self.nbytes else self.done,
                tasks=f"{self.done}/{self.tasks}",
                rows=f"{rows:,}",
                read=self._read_text(read),
                rate=rate,
            )
        elif self.reporter.enabled:
            now = time.monotonic()
            if now - self._last_line >= PLAIN_EVERY_SECONDS or self.done == self.tasks:
                self._last_line = now
                self.reporter.line(
                    f"{self.name}: {self.done}/{self.tasks} tasks, {rows:,} rows, "
                    f"{self._read_text(read)} read, {rate}"
                )


class ProgressReporter:
    """Owns the stderr display for one job."""

    def __init__(self, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.rich: Progress | None = None
        if enabled and self.stream.isatty():
            self.rich = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(bar_width=16),
                TextColumn("{task.fields[tasks]}"),
                TextColumn("{task.fields[rows]} rows  {task.fields[read]}  {task.fields[rate]}"),
                TextColumn("ETA"),
                TimeRemainingColumn(compact=True),
                console=Console(file=self.stream),
                transient=False,
            )

    def stage(self, name: str, tasks: int, nbytes: int) -> StageProgress:
        return StageProgress(self, name, tasks, nbytes)

    def line(self, text: str) -> None:
        if self.enabled:
            print(f"terabatch: {text}", file=self.stream, flush=True)

    def __enter__(self) -> ProgressReporter:
        if self.rich is not None:
            self.rich.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.rich is not None:
            self.rich.stop()
