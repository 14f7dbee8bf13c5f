"""Fill later stages with what the driver collected from a first pass (a stage's ``Slot``).

A sort's key sample becomes the range boundaries of its map tasks, a small right side of a join
becomes the frame its probe tasks join with, and the rows a head or top_k kept become the input
of the one task that carries on with them. The planner leaves placeholders; the job driver runs
the first pass and calls ``fill_later`` on every stage after it.
"""

from __future__ import annotations

from dataclasses import replace

import polars as pl

from terabatch.io.gathered import GatheredSource
from terabatch.io.shuffle import ShuffleSink, boundaries_from_sample
from terabatch.plan.nodes import BroadcastJoin
from terabatch.plan.stages import Stage, Task


def fill_later(stage: Stage, frames: list[pl.DataFrame], later: list[Stage]) -> list[Stage]:
    """The stages after ``stage``, with its collected rows filled into their placeholders.

    ``frames`` are the rows of ``stage``'s tasks, in task order.
    """
    slot = stage.feeds
    if slot is None or (not frames and slot.kind == "boundaries"):
        return later
    rows = pl.concat(frames, how="vertical_relaxed") if frames else None
    if slot.kind == "boundaries":
        fill = _boundaries(slot.key, rows, later)
    elif slot.kind == "broadcast":
        fill = _broadcast(slot.key, rows)
    else:
        kept = rows.head(stage.limit) if rows is not None and stage.limit is not None else rows
        fill = _gathered(slot.key, kept)
    return [replace(s, tasks=tuple(fill(t) for t in s.tasks)) for s in later]


def _boundaries(directory: str, sample: pl.DataFrame, later: list[Stage]):
    def waits(task: Task) -> bool:
        sink = task.sink
        return (
            isinstance(sink, ShuffleSink)
            and sink.ranges is not None
            and sink.directory == directory
        )

    sink = next((t.sink for s in later for t in s.tasks if waits(t)), None)
    if sink is None or sample.width == 0:
        return lambda task: task
    cuts = boundaries_from_sample(sample, sink.ranges, sink.partitions)
    ranged = replace(sink, ranges=replace(sink.ranges, boundaries=cuts))
    return lambda task: replace(task, sink=ranged) if waits(task) else task


def _broadcast(key: str, right: pl.DataFrame | None):
    def fill_op(op):
        if isinstance(op, BroadcastJoin) and op.slot == key and right is not None:
            return replace(op, right=right)
        return op

    def fill(task: Task) -> Task:
        return replace(task, ops=tuple(fill_op(op) for op in task.ops))

    return fill


def _gathered(key: str, rows: pl.DataFrame | None):
    def fill(task: Task) -> Task:
        source = task.source
        if isinstance(source, GatheredSource) and source.slot == key:
            return replace(task, source=replace(source, frame=rows))
        return task

    return fill
