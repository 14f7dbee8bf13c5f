"""Cut an optimized plan into stages of tasks, each task a frozen description.

A narrow plan is one stage, one task per input split. Each shuffle (group_by, unique, window,
sort, join) cuts the plan: the stage before it runs the operators up to it and writes every row
to the partition its keys hash to (or, for a sort, the key range it falls in); one task per
partition then runs the shuffle's operation on its whole partition. With several shuffles the
reduce tasks of one are the map tasks of the next: they run the reduce operation, the narrow
operators after it, and write the next shuffle's files. The right side of a join is planned the
same way, its stages running before the join's map stages.

Some stages are first passes whose rows the driver collects to fill in later stages (a ``Slot``):
a sort's key sample sets its range boundaries, a small right side of a join is broadcast to
every task, and the rows a ``head`` or ``top_k`` kept feed one task of the stages after it. A
sort's sample pass re-runs the stage that feeds the sort (re-reading the input, or re-reducing
the previous shuffle's partitions) rather than writing its rows once more.

``head(n)`` at the end of a pipeline stops every task after ``n`` rows; the driver keeps the
first ``n`` in task order and runs what follows ``head`` itself.
"""

from __future__ import annotations

import posixpath
import sys
from dataclasses import dataclass, field, replace

import polars as pl

from terabatch.errors import TerabatchError
from terabatch.io.gathered import GatheredSource, GatheredSplit
from terabatch.io.shuffle import RangeSpec, ShuffleSink
from terabatch.io.shuffle_read import JoinSource, ShufflePartition, ShuffleSource
from terabatch.io.sinks import CollectSink, Sink
from terabatch.io.sources import Source, Split
from terabatch.plan.nodes import (
    Aggregate,
    BroadcastJoin,
    Head,
    Join,
    Narrow,
    Node,
    SampleKeys,
    Scan,
    Shuffle,
    Sort,
    TopK,
    lineage,
    scans,
)
from terabatch.plan.schema import output_schema
from terabatch.plan.shuffles import (
    describe_shuffle,
    map_and_reduce_ops,
    precombine_note,
    shuffle_keys,
)
from terabatch.run.memory import format_size


@dataclass(frozen=True, eq=False)
class Task:
    """Everything a worker needs to run one task, and nothing else."""

    task_id: int
    source: Source | ShuffleSource | JoinSource | GatheredSource
    split: Split | ShufflePartition | GatheredSplit
    columns: tuple[str, ...] | None
    ops: tuple[Narrow, ...]
    limit: int | None
    sink: Sink | ShuffleSink
    chunk_bytes: int
    memory_limit: int | None
    quarantine_dir: str | None = None  # set by the driver: where bad rows go
    # What reaches the quarantine (the run directory's storage options); never shown.
    quarantine_options: dict | None = field(default=None, repr=False)

    def describe(self) -> str:
        return self.split.describe()


@dataclass(frozen=True)
class Slot:
    """A value later stages wait for, filled from the rows the driver collects from one stage.

    ``kind`` is ``boundaries`` (a sort's key sample), ``broadcast`` (the small right side of a
    join) or ``gathered`` (the rows a head or top_k kept); ``key`` names the placeholder.
    """

    kind: str
    key: str


@dataclass(frozen=True, eq=False)
class Stage:
    """The tasks of one stage, and the operators the driver runs on their combined rows.

    ``feeds`` marks a first pass: the driver collects its rows and fills them into later
    stages. ``detail`` is the stage's line in ``explain()``. ``reads`` and ``writes`` are the
    numbers of the shuffles its tasks read and write: stages that read nothing the others
    write may run at the same time.
    """

    name: str
    tasks: tuple[Task, ...]
    driver_ops: tuple[Narrow, ...] = ()
    limit: int | None = None
    reads_input: bool = True
    feeds: Slot | None = None
    detail: str = ""
    reads: frozenset[int] = frozenset()
    writes: frozenset[int] = frozenset()

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


def plan_stages(
    plan: Node,
    sink: Sink,
    sizes: Sizes,
    shuffle_dir: str | None,
    storage_options: dict | None = None,
) -> list[Stage]:
    """Cut a plan into stages, in the order they run; the last one writes to ``sink``.

    Shuffle files go under ``shuffle_dir``, which ``storage_options`` reach.
    """
    return _Planner(sizes, shuffle_dir, storage_options).plan(plan, sink)


def outline_stages(plan: Node, sizes: Sizes) -> tuple[list[Stage], dict[int, str]]:
    """The stages of a plan without reading any input (no tasks for input splits), and a
    note per shuffle or join node (by ``id``) saying where it runs: what ``explain()`` shows."""
    planner = _Planner(sizes, "<shuffle files>", read_splits=False)
    return planner.plan(plan, CollectSink()), planner.notes


@dataclass(frozen=True, eq=False)
class _Feed:
    """Tasks that produce rows: a scan's splits, a shuffle's partitions, or the gathered rows.

    Operators run after ``tasks``' own operators; ``single`` feeds are one task over all rows,
    where a head or top_k is exact without the driver.
    """

    tasks: tuple[Task, ...]
    name: str
    text: str
    reads_input: bool
    single: bool = False
    ends_sorted: bool = False
    reads: frozenset[int] = frozenset()  # the shuffles its tasks read

    def run(
        self, ops: list, sink: Sink | ShuffleSink, limit: int | None = None
    ) -> tuple[Task, ...]:
        return tuple(replace(t, ops=(*t.ops, *ops), sink=sink, limit=limit) for t in self.tasks)


@dataclass
class _Planner:
    sizes: Sizes
    root: str | None
    storage_options: dict | None = field(default=None, repr=False)
    read_splits: bool = True
    stages: list[Stage] = field(default_factory=list)
    notes: dict[int, str] = field(default_factory=dict)
    shuffles: int = 0
    slots: int = 0

    def plan(self, plan: Node, sink: Sink) -> list[Stage]:
        feed, ops = self._walk(plan)
        task_ops, limit, driver_ops = split_for_tasks(ops)
        if feed.single:
            # One task sees every row: it applies heads and top_ks itself.
            task_ops, limit, driver_ops = ops, None, []
        final_sink = _sink_before_gather(sink, limit, driver_ops)
        if not self.stages and not feed.single:
            text = "streaming, no shuffle; operators fused into each task"
        else:
            text = feed.text + (", then the operators after it" if ops else "")
            text += "; partitions come out in key order" if feed.ends_sorted else ""
        text += _probe_note(ops) + _keep_note(ops if not feed.single else [])
        self.stages.append(
            Stage(
                feed.name,
                feed.run(task_ops, final_sink, limit),
                tuple(driver_ops),
                limit,
                feed.reads_input,
                detail=text,
                reads=feed.reads,
            )
        )
        return self.stages

    def _walk(self, plan: Node) -> tuple[_Feed, list]:
        """Append the stages of a linear plan up to its last shuffle; return the feed of rows
        after that shuffle and the operators still to run on them."""
        scan, ops = lineage(plan)
        feed = self._scan_feed(scan)
        pending: list = []
        for op in ops:
            if isinstance(op, Join):
                feed, pending = self._join(feed, pending, op)
            elif isinstance(op, Shuffle):
                feed = self._shuffle(feed, pending, op)
                pending = []
            else:
                pending.append(op)
        return feed, pending

    def _scan_feed(self, scan: Scan) -> _Feed:
        tasks = _scan_tasks(scan, self.sizes) if self.read_splits else ()
        fmt = scan.source.format
        return _Feed(tasks, f"read {fmt}", f"read {fmt}", reads_input=True)

    def _hold_bytes(self) -> int:
        """Rows a map task pre-combines in one go: an eighth of a worker's room for data. For
        keys that are all distinct, Polars' hash table over them takes 4.5 times their size
        (db-benchmark q10, six keys: 3 M rows, 154 MiB, grew the process by 700 MiB)."""
        room = self.sizes.data_room
        return max(2 * self.sizes.chunk_bytes, (room if room is not None else 1 << 30) // 8)

    def _buffer_bytes(self) -> int:
        """Rows a map task holds before writing them to its shuffle file: half of what it
        pre-combines in one go, as the sort that partitions them copies them once."""
        return self._hold_bytes() // 2

    def _memory_cap(self) -> int:
        """The worker size up to which one pre-combining query keeps taking rows past
        ``_hold_bytes``: the worker's budget less a third of its room for data, which the
        query's result and the shuffle writer take next. Without a budget, no limit."""
        if self.sizes.memory_limit is None or self.sizes.data_room is None:
            return sys.maxsize
        return self.sizes.memory_limit - self.sizes.data_room // 3

    def _directory(self, *parts: str) -> str:
        if self.root is None:
            raise ValueError("a plan with a shuffle needs a shuffle directory")
        return posixpath.join(self.root, *parts)

    def _slot(self, kind: str) -> Slot:
        self.slots += 1
        return Slot(kind, f"{kind}-{self.slots}")

    def _settle(self, feed: _Feed, ops: list) -> tuple[_Feed, list]:
        """Gather on the driver the rows of a head or top_k that more stages follow."""
        if feed.single or not any(isinstance(op, Head | TopK) for op in ops):
            return feed, ops
        task_ops, limit, rest = split_for_tasks(ops)
        slot = self._slot("gathered")
        self.stages.append(
            Stage(
                f"{feed.name}, keep {'head' if limit is not None else 'top_k'}",
                feed.run(task_ops, CollectSink(), limit),
                limit=limit,
                reads_input=feed.reads_input,
                feeds=slot,
                detail=feed.text + _probe_note(task_ops) + _keep_note(ops),
                reads=feed.reads,
            )
        )
        task = Task(
            0,
            GatheredSource(slot.key),
            GatheredSplit(),
            None,
            (),
            None,
            CollectSink(),
            self.sizes.chunk_bytes,
            self.sizes.memory_limit,
        )
        text = "one task over the rows the driver kept"
        return _Feed((task,), "rows kept by head", text, reads_input=False, single=True), rest

    def _shuffle(self, feed: _Feed, before: list, op: Shuffle) -> _Feed:
        feed, before = self._settle(feed, before)
        self.shuffles += 1
        number = self.shuffles
        directory = self._directory(f"shuffle-{number}")
        keys, prepare = shuffle_keys(op)
        map_ops, reduce_ops = map_and_reduce_ops(
            op, keys, self._hold_bytes(), self._memory_cap(), self.sizes.partitions
        )
        ranges = RangeSpec(op.by, op.descending, op.nulls_last) if isinstance(op, Sort) else None
        sink = ShuffleSink(
            directory,
            keys,
            self.sizes.partitions,
            ranges,
            self.storage_options,
            self._buffer_bytes(),
        )
        if isinstance(op, Aggregate):
            shown_keys = ", ".join(str(k) for k in op.keys)
        else:
            shown_keys = ", ".join(keys) if keys else "all columns"
        probe = _probe_note(before)
        if ranges is not None:
            # A sort's first pass: a sample of the keys, for the range boundaries.
            sample = SampleKeys(op, op.by, SAMPLE_ROWS_PER_BATCH)
            self.stages.append(
                Stage(
                    f"{feed.name}, sample sort keys",
                    feed.run([*before, sample], CollectSink()),
                    reads_input=False,
                    feeds=Slot("boundaries", directory),
                    detail=f"{feed.text}{probe}; keep a sample of the sort keys {shown_keys} "
                    f"(first pass, for the ranges of shuffle {number})",
                    reads=feed.reads,
                )
            )
            sampled = len(self.stages)
            written = (
                f"range shuffle {number} on {shown_keys} (boundaries from stage {sampled}'s sample)"
            )
        else:
            written = f"hash shuffle {number} on {shown_keys}"
        mapped = feed.run([*before, *prepare, *map_ops], sink)
        combine = precombine_note(op)
        self.stages.append(
            Stage(
                f"{feed.name} -> shuffle on {shown_keys}",
                mapped,
                reads_input=feed.reads_input,
                detail=f"{feed.text}{probe}; {combine + '; ' if combine else ''}{written}",
                reads=feed.reads,
                writes=frozenset({number}),
            )
        )
        self.notes[id(op)] = f"shuffle {number}"
        source = ShuffleSource(
            directory,
            keys,
            self.sizes.data_room,
            ranges,
            storage_options=self.storage_options,
        )
        what = describe_shuffle(op)
        return _Feed(
            self._reduce_tasks(source, reduce_ops, number),
            f"reduce {what}",
            f"reduce shuffle {number}: {what} on each whole partition",
            reads_input=False,
            ends_sorted=ranges is not None,
            reads=frozenset({number}),
        )

    def _join(self, feed: _Feed, before: list, join: Join) -> tuple[_Feed, list]:
        """Shuffle both sides on their keys into the same partitions; join partition by
        partition. A small right side of a join that keeps left rows (inner, left, semi,
        anti) is instead collected once and joined with every batch of the left side."""
        feed, before = self._settle(feed, before)
        right_feed, right_ops = self._settle(*self._walk(join.other))
        right_bytes = sum(f.size for s in scans(join.other) for f in s.source.files)
        if join.how in BROADCAST_KINDS and right_bytes <= _broadcast_limit(self.sizes):
            return feed, [*before, self._broadcast(join, right_feed, right_ops, right_bytes)]
        self.shuffles += 1
        number = self.shuffles
        left_dir = self._directory(f"shuffle-{number}", "left")
        right_dir = self._directory(f"shuffle-{number}", "right")
        partitions = self.sizes.partitions
        opts, buffer = self.storage_options, self._buffer_bytes()
        left = feed.run(before, ShuffleSink(left_dir, join.left_on, partitions, None, opts, buffer))
        right = right_feed.run(
            right_ops, ShuffleSink(right_dir, join.right_on, partitions, None, opts, buffer)
        )
        for side, side_feed, tasks, keys, ops in (
            ("left", feed, left, join.left_on, before),
            ("right", right_feed, right, join.right_on, right_ops),
        ):
            self.stages.append(
                Stage(
                    f"{side_feed.name} ({side}) -> shuffle on {', '.join(keys)}",
                    tasks,
                    reads_input=side_feed.reads_input,
                    detail=f"{side_feed.text}{_probe_note(ops)}; hash shuffle {number} on "
                    f"{', '.join(keys)} ({side} side of the join)",
                    reads=side_feed.reads,
                    writes=frozenset({number}),
                )
            )
        left_schema = output_schema(join.child)
        right_schema = output_schema(join.other)
        if left_schema is None or right_schema is None:
            raise TerabatchError("join needs both sides' columns: declare map_batches(schema=...)")
        room = self.sizes.data_room
        source = JoinSource(
            ShuffleSource(left_dir, join.left_on, room, storage_options=opts),
            ShuffleSource(right_dir, join.right_on, room, storage_options=opts),
            left_schema,
            right_schema,
            join.left_on,
            join.right_on,
            join.how,
            join.suffix,
        )
        self.notes[id(join)] = f"shuffle {number}"
        what = describe_shuffle(join)
        reduced = _Feed(
            self._reduce_tasks(source, (), number),
            f"reduce {what}",
            f"reduce shuffle {number}: {what} on each pair of partitions",
            reads_input=False,
            reads=frozenset({number}),
        )
        return reduced, []

    def _broadcast(
        self, join: Join, right_feed: _Feed, right_ops: list, right_bytes: int
    ) -> BroadcastJoin:
        """Stage the right side's collection; return the probe the left side's tasks run."""
        right_schema = output_schema(join.other)
        if right_schema is None:
            raise TerabatchError("join needs both sides' columns: declare map_batches(schema=...)")
        slot = self._slot("broadcast")
        self.stages.append(
            Stage(
                f"{right_feed.name} (small right side)",
                right_feed.run(right_ops, CollectSink()),
                reads_input=right_feed.reads_input,
                feeds=slot,
                detail=f"{right_feed.text}{_probe_note(right_ops)}; the driver collects the "
                f"right side of the {join.how} join ({format_size(right_bytes)} of input, "
                f"under the {format_size(_broadcast_limit(self.sizes))} broadcast limit)",
                reads=right_feed.reads,
            )
        )
        self.notes[id(join)] = "broadcast join, no shuffle"
        # Until the driver has collected the right side, the probe holds an empty frame of it.
        empty = pl.DataFrame(schema=right_schema)
        return BroadcastJoin(
            join, empty, join.left_on, join.right_on, join.how, join.suffix, slot.key
        )

    def _reduce_tasks(
        self, source: ShuffleSource | JoinSource, ops: tuple, shuffle: int
    ) -> tuple[Task, ...]:
        """One task per shuffle partition, each running ``ops`` on its whole partition."""
        return tuple(
            Task(
                i,
                source,
                ShufflePartition(i, shuffle=shuffle),
                None,
                tuple(ops),
                None,
                CollectSink(),
                self.sizes.chunk_bytes,
                self.sizes.memory_limit,
            )
            for i in range(self.sizes.partitions)
        )


def _probe_note(ops: list) -> str:
    joins = [op for op in ops if isinstance(op, BroadcastJoin)]
    return "".join(
        f", {op.how} join of every batch with the collected right side (broadcast join, no shuffle)"
        for op in joins
    )


def _keep_note(ops: list) -> str:
    first = next((op for op in ops if isinstance(op, Head | TopK)), None)
    if isinstance(first, Head):
        return f"; the driver keeps the first {first.n} rows in input order"
    if isinstance(first, TopK):
        return f"; each task keeps its top {first.k}, the driver the top {first.k} of those"
    return ""


def _broadcast_limit(sizes: Sizes) -> int:
    # Every task holds the whole right side next to its own batches.
    return (
        BROADCAST_BYTES if sizes.data_room is None else min(BROADCAST_BYTES, sizes.data_room // 8)
    )


def _sink_before_gather(sink: Sink, limit: int | None, driver_ops: list) -> Sink:
    # Rows before a head or top_k come back to the driver, which finishes them in task order.
    gathers = limit is not None or bool(driver_ops)
    return CollectSink() if gathers and not isinstance(sink, CollectSink) else sink


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
