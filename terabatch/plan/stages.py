"""Cut an optimized plan into stages of tasks, each task a frozen description.

A narrow plan is one stage, one task per input split. A ``group_by`` or ``unique`` adds a
shuffle: the map stage runs the operators before it and hash-partitions rows on the keys; the
reduce stage runs one task per partition with the operator and what follows it. ``head(n)`` ends
the parallel part: every task stops after ``n`` rows, the driver keeps the first ``n`` in task
order and runs what follows ``head`` itself.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, replace

import polars as pl

from terabatch.errors import TerabatchError
from terabatch.io.shuffle import (
    JoinSource,
    RangeSpec,
    ShufflePartition,
    ShuffleSink,
    ShuffleSource,
    boundaries_from_sample,
)
from terabatch.io.sinks import CollectSink, Sink
from terabatch.io.sources import Source, Split
from terabatch.plan.expressions import output_name
from terabatch.plan.nodes import (
    Aggregate,
    BroadcastJoin,
    Head,
    Join,
    Narrow,
    Node,
    SampleKeys,
    Scan,
    Select,
    Shuffle,
    Sort,
    TopK,
    Unique,
    Window,
    WithColumns,
    lineage,
)
from terabatch.plan.precombine import split_aggregations
from terabatch.plan.schema import output_schema


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
    chunk_bytes: int
    memory_limit: int | None

    def describe(self) -> str:
        return self.split.describe()


@dataclass(frozen=True, eq=False)
class Stage:
    """The tasks of one stage, and the operators the driver runs on their combined rows."""

    name: str
    tasks: tuple[Task, ...]
    driver_ops: tuple[Narrow, ...] = ()
    limit: int | None = None
    reads_input: bool = True
    samples: bool = False
    broadcasts: bool = False

    @property
    def input_bytes(self) -> int:
        return sum(t.split.nbytes for t in self.tasks)

    @property
    def gathers(self) -> bool:
        """Whether the driver finishes the rows (after a head or top_k) before the sink."""
        return self.limit is not None or bool(self.driver_ops)


@dataclass(frozen=True)
class Sizes:
    """How large to cut the work: splits, chunks, shuffle partitions, and the worker budget."""

    split_bytes: int
    chunk_bytes: int
    partitions: int
    memory_limit: int | None
    # A worker's memory for data, past its baseline: what one reduce partition may fill.
    data_room: int | None = None


SAMPLE_ROWS_PER_BATCH = 1000
BROADCAST_KINDS = ("inner", "left", "semi", "anti")
BROADCAST_BYTES = 64 << 20


def split_for_tasks(ops: list) -> tuple[list, int | None, list]:
    """Operators for tasks, the head's n, and operators the driver runs on the gathered rows.

    A ``head`` stops each task after n rows; a ``top_k`` runs in each task (on every batch)
    and again on the driver, over the rows the tasks kept.
    """
    for i, op in enumerate(ops):
        if isinstance(op, Head):
            return ops[:i], op.n, ops[i + 1 :]
        if isinstance(op, TopK):
            return ops[: i + 1], None, ops[i:]
    return ops, None, []


def split_at_head(ops: list) -> tuple[list, int | None, list]:
    """Operators for tasks (up to the first head), the head's n, and operators after it."""
    for i, op in enumerate(ops):
        if isinstance(op, Head):
            return ops[:i], op.n, ops[i + 1 :]
    return ops, None, []


def plan_stages(plan: Node, sink: Sink, sizes: Sizes, shuffle_dir: str | None) -> list[Stage]:
    """Cut a plan into stages: one, or a map and a reduce stage around a shuffle (after a
    sampling pass, for a sort)."""
    scan, ops = lineage(plan)
    at = next((i for i, op in enumerate(ops) if isinstance(op, Shuffle)), None)
    map_tasks = _scan_tasks(scan, sizes)
    if at is None:
        task_ops, limit, driver_ops = split_for_tasks(ops)
        task_sink = _sink_before_gather(sink, limit, driver_ops)
        tasks = tuple(
            replace(t, ops=tuple(task_ops), limit=limit, sink=task_sink) for t in map_tasks
        )
        return [Stage(f"read {scan.source.format}", tasks, tuple(driver_ops), limit)]
    if shuffle_dir is None:
        raise ValueError("a plan with a shuffle needs a shuffle directory")
    shuffle, before, after = ops[at], ops[:at], ops[at + 1 :]
    if any(isinstance(op, Shuffle) for op in after):
        raise TerabatchError(
            "only one group_by, unique, window or sort per pipeline is supported so far"
        )
    if isinstance(shuffle, Join):
        return _join_stages(scan, map_tasks, before, shuffle, after, sink, sizes, shuffle_dir)
    keys, prepare = _shuffle_keys(shuffle)
    combine_map, combine_reduce = _precombine(shuffle, keys)
    ranges = None
    if isinstance(shuffle, Sort):
        ranges = RangeSpec(shuffle.by, shuffle.descending, shuffle.nulls_last)
    map_sink = ShuffleSink(shuffle_dir, keys, sizes.partitions, ranges)
    mapped = tuple(
        replace(t, ops=(*before, *prepare, *combine_map), sink=map_sink) for t in map_tasks
    )
    task_ops, limit, driver_ops = split_for_tasks([*combine_reduce, *after])
    final_sink = _sink_before_gather(sink, limit, driver_ops)
    source = ShuffleSource(shuffle_dir, len(mapped), keys, sizes.data_room)
    reduced = _reduce_tasks(source, task_ops, limit, final_sink, sizes)
    keys_text = ", ".join(keys) if keys else "all columns"
    sampling: list[Stage] = []
    if isinstance(shuffle, Sort):
        # Range boundaries come from a sample of the keys, taken in a first pass over the input.
        sample = SampleKeys(shuffle, shuffle.by, SAMPLE_ROWS_PER_BATCH)
        sampled = tuple(replace(t, ops=(*before, sample), sink=CollectSink()) for t in map_tasks)
        sampling.append(Stage("sample sort keys", sampled, reads_input=False, samples=True))
    return [
        *sampling,
        Stage(f"map {scan.source.format} -> shuffle on {keys_text}", mapped),
        Stage(f"reduce: {describe_shuffle(shuffle)}", reduced, tuple(driver_ops), limit, False),
    ]


def _join_stages(
    scan: Scan,
    left_tasks: tuple[Task, ...],
    before: list,
    join: Join,
    after: list,
    sink: Sink,
    sizes: Sizes,
    shuffle_dir: str,
) -> list[Stage]:
    """Shuffle both sides on their keys into the same partitions; join partition by partition.

    A small right side of a join that keeps left rows (inner, left, semi, anti) is instead
    collected once and joined with every batch of the left side: no shuffle, and no skew.
    """
    right_scan, right_ops = lineage(join.other)
    if any(isinstance(op, Shuffle | Head | TopK) for op in right_ops):
        raise TerabatchError("the right side of a join must be a narrow pipeline (no shuffle)")
    right_bytes = sum(f.size for f in right_scan.source.files)
    if join.how in BROADCAST_KINDS and right_bytes <= _broadcast_limit(sizes):
        return _broadcast_stages(scan, left_tasks, before, join, after, sink, sizes)
    left_dir, right_dir = posixpath.join(shuffle_dir, "left"), posixpath.join(shuffle_dir, "right")
    left_sink = ShuffleSink(left_dir, join.left_on, sizes.partitions)
    right_sink = ShuffleSink(right_dir, join.right_on, sizes.partitions)
    left = tuple(replace(t, ops=tuple(before), sink=left_sink) for t in left_tasks)
    right = tuple(
        replace(t, ops=tuple(right_ops), sink=right_sink) for t in _scan_tasks(right_scan, sizes)
    )
    left_schema = output_schema(join.child)
    right_schema = output_schema(join.other)
    if left_schema is None or right_schema is None:
        raise TerabatchError("join needs both sides' columns: declare map_batches(schema=...)")
    source = JoinSource(
        ShuffleSource(left_dir, len(left), join.left_on, sizes.data_room),
        ShuffleSource(right_dir, len(right), join.right_on, sizes.data_room),
        left_schema,
        right_schema,
        join.left_on,
        join.right_on,
        join.how,
        join.suffix,
    )
    task_ops, limit, driver_ops = split_for_tasks(list(after))
    final_sink = _sink_before_gather(sink, limit, driver_ops)
    reduced = _reduce_tasks(source, task_ops, limit, final_sink, sizes)
    keys = ", ".join(join.left_on)
    return [
        Stage(f"map {scan.source.format} (left) -> shuffle on {keys}", left),
        Stage(
            f"map {right_scan.source.format} (right) -> shuffle on {', '.join(join.right_on)}",
            right,
        ),
        Stage(f"reduce: {join.how} join on {keys}", reduced, tuple(driver_ops), limit, False),
    ]


def _broadcast_limit(sizes: Sizes) -> int:
    # Every task holds the whole right side next to its own batches.
    return (
        BROADCAST_BYTES if sizes.data_room is None else min(BROADCAST_BYTES, sizes.data_room // 8)
    )


def _broadcast_stages(
    scan: Scan,
    left_tasks: tuple[Task, ...],
    before: list,
    join: Join,
    after: list,
    sink: Sink,
    sizes: Sizes,
) -> list[Stage]:
    right_scan, right_ops = lineage(join.other)
    collect = tuple(
        replace(t, ops=tuple(right_ops), sink=CollectSink()) for t in _scan_tasks(right_scan, sizes)
    )
    right_schema = output_schema(join.other)
    if right_schema is None:
        raise TerabatchError("join needs both sides' columns: declare map_batches(schema=...)")
    # Until the driver has collected the right side, the probe holds an empty frame of it.
    empty = pl.DataFrame(schema=right_schema)
    probe = BroadcastJoin(join, empty, join.left_on, join.right_on, join.how, join.suffix)
    task_ops, limit, driver_ops = split_for_tasks([*before, probe, *after])
    final_sink = _sink_before_gather(sink, limit, driver_ops)
    tasks = tuple(replace(t, ops=tuple(task_ops), limit=limit, sink=final_sink) for t in left_tasks)
    return [
        Stage(
            f"collect {right_scan.source.format} (small right side)",
            collect,
            reads_input=False,
            broadcasts=True,
        ),
        Stage(
            f"read {scan.source.format}, {join.how} join with it", tasks, tuple(driver_ops), limit
        ),
    ]


def with_broadcast(stage: Stage, frames: list[pl.DataFrame]) -> Stage:
    """The probe stage of a broadcast join, given the collected right side."""
    if not frames:
        return stage
    right = pl.concat(frames, how="vertical_relaxed")

    def fill(op: Narrow) -> Narrow:
        return replace(op, right=right) if isinstance(op, BroadcastJoin) else op

    return replace(stage, tasks=tuple(replace(t, ops=tuple(map(fill, t.ops))) for t in stage.tasks))


def _reduce_tasks(
    source: ShuffleSource | JoinSource, ops: list, limit: int | None, sink: Sink, sizes: Sizes
) -> tuple[Task, ...]:
    """One task per shuffle partition, each running ``ops`` on its whole partition."""
    return tuple(
        Task(
            i,
            source,
            ShufflePartition(i),
            None,
            tuple(ops),
            limit,
            sink,
            sizes.chunk_bytes,
            sizes.memory_limit,
        )
        for i in range(sizes.partitions)
    )


def _sink_before_gather(sink: Sink, limit: int | None, driver_ops: list) -> Sink:
    # Rows before a head or top_k come back to the driver, which finishes them in task order.
    gathers = limit is not None or bool(driver_ops)
    return CollectSink() if gathers and not isinstance(sink, CollectSink) else sink


def with_boundaries(stage: Stage, samples: list[pl.DataFrame]) -> Stage:
    """The range-partitioning map stage of a sort, given the key samples of the first pass."""
    sink = stage.tasks[0].sink if stage.tasks else None
    if not isinstance(sink, ShuffleSink) or sink.ranges is None:
        return stage
    sample = pl.concat(samples, how="vertical_relaxed") if samples else pl.DataFrame()
    if sample.width == 0:
        return stage
    cuts = boundaries_from_sample(sample, sink.ranges, sink.partitions)
    ranged = replace(sink, ranges=replace(sink.ranges, boundaries=cuts))
    return replace(stage, tasks=tuple(replace(t, sink=ranged) for t in stage.tasks))


def describe_shuffle(op: Shuffle) -> str:
    if isinstance(op, Aggregate):
        return "group_by " + ", ".join(str(k) for k in op.keys)
    if isinstance(op, Window):
        return f"with_columns {', '.join(str(e) for e in op.exprs)}"
    if isinstance(op, Sort):
        return f"sort by {', '.join(op.by)}"
    if isinstance(op, Join):
        return f"{op.how} join on {', '.join(op.left_on)} = {', '.join(op.right_on)}"
    subset = ", ".join(op.subset) if op.subset is not None else "all columns"
    return f"unique on {subset} (keep={op.keep})"


def _shuffle_keys(
    op: Shuffle,
) -> tuple[tuple[str, ...], tuple[Narrow, ...]]:
    """Key column names to hash, and operators the map side runs to compute computed keys.

    A computed key gets an internal name, so that ``group_by(pl.col("v") % 4)`` does not
    overwrite the ``v`` its aggregations read; the reduce side renames it back.
    """
    if isinstance(op, Unique):
        return (op.subset or ()), ()
    if isinstance(op, Window):
        return op.keys, ()
    if isinstance(op, Sort):
        return op.by, ()
    if all(k.meta.is_column() for k in op.keys):
        return tuple(output_name(k) for k in op.keys), ()
    names = tuple(f"__terabatch_key{i}" for i in range(len(op.keys)))
    computed = tuple(k.alias(n) for k, n in zip(op.keys, names, strict=True))
    return names, (WithColumns(op.child, computed),)


def _precombine(op: Aggregate | Unique | Window, keys: tuple[str, ...]) -> tuple[tuple, tuple]:
    """Operators for the map side (per batch) and the reduce side (per partition).

    Decomposable aggregations and ``unique(keep != "none")`` shrink each batch before the
    shuffle; everything else ships rows and is computed whole on the reduce side.
    """
    if isinstance(op, Window | Sort):
        return (), (op,)
    if isinstance(op, Unique):
        per_batch = (op,) if op.keep != "none" else ()
        return per_batch, (op,)
    key_columns = tuple(pl.col(n) for n in keys)
    named_keys = tuple(
        pl.col(n).alias(output_name(k) or n) for n, k in zip(keys, op.keys, strict=True)
    )
    split = split_aggregations(op.aggs)
    if split is None:
        finals = tuple(pl.col(output_name(a)) for a in op.aggs)
        return (), (replace(op, keys=key_columns), Select(op, (*named_keys, *finals)))
    direct = output_schema(op)
    final = tuple(f.cast(direct[output_name(f)]) if direct is not None else f for f in split.final)
    return (
        (replace(op, keys=key_columns, aggs=split.partial),),
        (
            replace(op, keys=key_columns, aggs=split.combine),
            Select(op, (*named_keys, *final)),
        ),
    )


def _scan_tasks(scan: Scan, sizes: Sizes) -> tuple[Task, ...]:
    """One task per split of the input; operators and sink are filled in by the caller."""
    splits = scan.source.splits(sizes.split_bytes, scan.predicate)
    bare = _without_file_list(scan.source)
    return tuple(
        Task(
            i,
            bare,
            split,
            scan.columns,
            (),
            None,
            CollectSink(),
            sizes.chunk_bytes,
            sizes.memory_limit,
        )
        for i, split in enumerate(splits)
    )


def _without_file_list(source: Source) -> Source:
    # Each task names its own file in its split; shipping the whole list to every task would
    # make task descriptions grow with the number of input files.
    fields = {"files": (), "layouts": ()}
    if hasattr(source, "data_starts"):
        fields["data_starts"] = ()
    return replace(source, **fields)
