"""Progress on stderr: a rich bar per stage on a terminal, plain log lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from terabatch.run.memory import format_size

PLAIN_EVERY_SECONDS = 5.0


class StageProgress:
    """Progress of one stage: tasks done, rows, bytes read, throughput and ETA."""

    def __init__(self, reporter: ProgressReporter, name: str, tasks: int, nbytes: int) -> None:
        self.reporter, self.name, self.tasks, self.nbytes = reporter, name, tasks, nbytes
        self.done = self.rows = self.bytes_done = 0
        self.started = time.monotonic()
        self._last_line = self.started
        self._bar = None
        if reporter.rich is not None:
            self._bar = reporter.rich.add_task(
                name, total=max(tasks, 1), rows="0", read=format_size(0), rate=""
            )

    def _read_text(self) -> str:
        # Reduce stages read shuffle files whose size is not planned: show what was read only.
        if not self.nbytes:
            return format_size(self.bytes_done)
        return f"{format_size(self.bytes_done)} of {format_size(self.nbytes)}"

    def advance(self, rows: int, nbytes: int) -> None:
        self.done += 1
        self.rows += rows
        self.bytes_done += nbytes
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = f"{format_size(self.bytes_done / elapsed)}/s"
        if self._bar is not None and self.reporter.rich is not None:
            self.reporter.rich.update(
                self._bar,
                advance=1,
                rows=f"{self.rows:,}",
                read=self._read_text(),
                rate=rate,
            )
        elif self.reporter.enabled:
            now = time.monotonic()
            if now - self._last_line >= PLAIN_EVERY_SECONDS or self.done == self.tasks:
                self._last_line = now
                self.reporter.line(
                    f"{self.name}: {self.done}/{self.tasks} tasks, {self.rows:,} rows, "
                    f"{self._read_text()} read, {rate}"
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
                MofNCompleteColumn(),
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
