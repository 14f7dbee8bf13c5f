"""Progress of a stage: finished tasks count whole, running tasks by what they have read."""

from __future__ import annotations

import io

import pytest

import terabatch.run.progress as progress_module
from terabatch.run.progress import ProgressReporter


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def every_update(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress_module, "PLAIN_EVERY_SECONDS", 0.0)


def test_plain_lines_count_running_tasks_by_what_they_read(every_update) -> None:
    stream = io.StringIO()
    with ProgressReporter(True, stream) as reporter:
        stage = reporter.stage("read csv", 2, 1000)
        stage.running(0, 10, 400)
        stage.running(0, 30, 450)  # a later report replaces the earlier one
        stage.advance(0, 40, 500)
        stage.running(1, 5, 100)
        stage.advance(1, 60, 500)
    lines = [line.split(" read, ")[0] for line in stream.getvalue().splitlines()]
    assert lines == [
        "terabatch: read csv: 0/2 tasks, 10 rows, 400 B of 1000 B",
        "terabatch: read csv: 0/2 tasks, 30 rows, 450 B of 1000 B",
        "terabatch: read csv: 1/2 tasks, 40 rows, 500 B of 1000 B",
        "terabatch: read csv: 1/2 tasks, 45 rows, 600 B of 1000 B",
        "terabatch: read csv: 2/2 tasks, 100 rows, 1000 B of 1000 B",
    ]


def test_plain_lines_wait_between_updates_but_not_for_the_last() -> None:
    stream = io.StringIO()
    with ProgressReporter(True, stream) as reporter:
        stage = reporter.stage("read csv", 2, 1000)
        stage.running(0, 10, 400)  # within PLAIN_EVERY_SECONDS of the start: no line
        stage.advance(0, 40, 500)
        stage.advance(1, 60, 500)
    assert [line.split(",")[0] for line in stream.getvalue().splitlines()] == [
        "terabatch: read csv: 2/2 tasks"
    ]


def test_bar_advances_by_bytes_when_the_input_is_planned_else_by_tasks() -> None:
    with ProgressReporter(True, _Terminal()) as reporter:
        assert reporter.rich is not None
        read = reporter.stage("read csv", 4, 1000)
        read.running(0, 10, 250)
        read.running(1, 10, 125)
        reduce = reporter.stage("reduce", 3, 0)
        reduce.running(0, 7, 4096)
        reduce.advance(0, 7, 4096)
        bars = {task.description: task for task in reporter.rich.tasks}
        assert (bars["read csv"].completed, bars["read csv"].total) == (375, 1000)
        assert bars["read csv"].fields["tasks"] == "0/4"
        assert (bars["reduce"].completed, bars["reduce"].total) == (1, 3)
        assert bars["reduce"].fields["read"] == "4.0 KiB"


def test_disabled_progress_prints_nothing(every_update) -> None:
    stream = io.StringIO()
    with ProgressReporter(False, stream) as reporter:
        stage = reporter.stage("read csv", 1, 10)
        stage.running(0, 1, 5)
        stage.advance(0, 2, 10)
    assert stream.getvalue() == ""
