"""Cut an optimized plan into tasks: one per split of the input, each a frozen description.

A narrow plan is one stage. ``head(n)`` ends the parallel part: every task stops after ``n``
rows, the driver keeps the first ``n`` in input order and runs what follows ``head`` itself.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from terabatch.io.sinks import CollectSink, Sink
from terabatch.io.sources import Source, Split
from terabatch.plan.nodes import Head, Narrow, Node, Scan, lineage


@dataclass(frozen=True, eq=False)
class Task:
    """Everything a worker needs to run one task, and nothing else."""

    task_id: int
    source: Source
    split: Split
    columns: tuple[str, ...] | None
    ops: tuple[Narrow, ...]
    limit: int | None
    sink: Sink
    output_dir: str | None
    chunk_bytes: int
    memory_limit: int | None

    def describe(self) -> str:
        return self.split.describe()


@dataclass(frozen=True, eq=False)
class Stage:
    """The tasks of one stage, and the operators the driver runs on their combined rows."""

    name: str
    scan: Scan
    tasks: tuple[Task, ...]
    driver_ops: tuple[Narrow, ...]
    limit: int | None

    @property
    def input_bytes(self) -> int:
        return sum(t.split.nbytes for t in self.tasks)


def split_at_head(ops: list[Narrow]) -> tuple[list[Narrow], int | None, list[Narrow]]:
    """Operators for tasks (up to the first head), the head's n, and operators after it."""
    for i, op in enumerate(ops):
        if isinstance(op, Head):
            return ops[:i], op.n, ops[i + 1 :]
    return ops, None, []


def plan_stage(
    plan: Node, sink: Sink, split_bytes: int, chunk_bytes: int, memory_limit: int | None
) -> Stage:
    """The single stage of a narrow plan, with one task per input split."""
    scan, ops = lineage(plan)
    task_ops, limit, driver_ops = split_at_head(ops)
    task_sink = CollectSink() if limit is not None and not isinstance(sink, CollectSink) else sink
    splits = scan.source.splits(split_bytes, scan.predicate)
    bare = _without_file_list(scan.source)
    tasks = tuple(
        Task(
            i,
            bare,
            split,
            scan.columns,
            tuple(task_ops),
            limit,
            task_sink,
            None,
            chunk_bytes,
            memory_limit,
        )
        for i, split in enumerate(splits)
    )
    return Stage(f"read {scan.source.format}", scan, tasks, tuple(driver_ops), limit)


def _without_file_list(source: Source) -> Source:
    # Each task names its own file in its split; shipping the whole list to every task would
    # make task descriptions grow with the number of input files.
    fields = {"files": ()}
    if hasattr(source, "data_starts"):
        fields["data_starts"] = ()
    return replace(source, **fields)
