"""Reduce several small shuffle partitions in one task, once their sizes are known.

The number of partitions is chosen before the map stage, from the input's size; pre-combined
aggregations (db-benchmark q1: 100 groups out of 1e8 rows) then leave most partitions nearly
empty. Once the map stage has finished, consecutive partitions are grouped into tasks of about
a reduce task's planned size: fewer tasks, and fewer, larger output files. Consecutive ranges keep
a sort's global order; the grouping depends only on the committed files, so a resumed run groups
the same way.
"""

from __future__ import annotations

from dataclasses import replace

from terabatch.io.shuffle import EXPANSION
from terabatch.io.shuffle_read import JoinSource, ShufflePartition, ShuffleSource
from terabatch.plan.stages import Stage

# Below this much in memory, a reduce task's work is mostly its start-up: group further.
MIN_TASK_MEMORY = 16 << 20


def group_partitions(
    sizes: dict[int, int], partitions: int, target: int
) -> list[tuple[int, int, int]]:
    """Runs of consecutive partitions holding about ``target`` bytes each, as (first
    partition, number of partitions, bytes). Empty partitions get no run of their own.

    >>> group_partitions({0: 5, 1: 5, 3: 20, 4: 1}, 6, 10)
    [(0, 3, 10), (3, 1, 20), (4, 2, 1)]
    """
    runs: list[tuple[int, int, int]] = []
    first, held = None, 0
    for p in range(partitions):
        size = sizes.get(p, 0)
        if first is not None and held > 0 and held + size > target:
            runs.append((first, p - first, held))
            first, held = None, 0
        if first is None:
            first = p
        held += size
    if first is not None and (held > 0 or not runs):
        runs.append((first, partitions - first, held))
    elif runs and first is not None:
        start, _, nbytes = runs[-1]
        runs[-1] = (start, partitions - start, nbytes)  # trailing empty partitions
    return runs


def coalesce_stage(stage: Stage, workers: int, data_room: int | None) -> Stage:
    """``stage`` with its reduce tasks grouped by the bytes its shuffle files hold, each told
    where its rows are.

    A group holds at most what one partition was planned to hold, and at most half of a
    worker's share of the whole shuffle, so every worker still gets work.
    """
    tasks = stage.tasks
    if not tasks or not all(
        isinstance(t.split, ShufflePartition) and t.split.count == 1 for t in tasks
    ):
        return stage
    source = tasks[0].source
    if isinstance(source, JoinSource):
        layouts = (source.left.layout(), source.right.layout())
    elif isinstance(source, ShuffleSource):
        layouts = (source.layout(),)
    else:
        return stage
    sizes: dict[int, int] = {}
    for layout in layouts:
        for p, nbytes in layout.partition_bytes().items():
            sizes[p] = sizes.get(p, 0) + nbytes
    planned = (data_room // 10 if data_room is not None else 256 << 20) // EXPANSION
    share = sum(sizes.values()) // (2 * max(1, workers))
    target = max(1, min(planned, max(MIN_TASK_MEMORY // EXPANSION, share)))
    by_index = {t.split.index: t for t in tasks}
    grouped = []
    for first, count, nbytes in group_partitions(sizes, len(tasks), target):
        template = by_index[first]
        pieces = tuple(layout.piece(first, count) for layout in layouts)
        split = replace(template.split, nbytes=nbytes, count=count, pieces=pieces)
        grouped.append(replace(template, split=split))
    return replace(stage, tasks=tuple(grouped))
