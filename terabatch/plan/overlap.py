"""Which stages may run at the same time: those that read no shuffle the others write.

The two sides of a join shuffle from their own inputs: run one after the other, the workers
wait at the end of the first side for its last task while the second side's tasks could already
run (db-benchmark join q5 at 1e8: five map tasks a side on two workers, one worker idle for a
fifth of the map time). Stages run together share the workers; a stage that reads a shuffle
starts only after every stage before it has finished.
"""

from __future__ import annotations

from terabatch.plan.stages import Stage


def run_together(stages: list[Stage], first: int, end: int) -> list[int]:
    """``first`` and the stages right after it, before ``end``, that may run with it.

    A stage joins while it reads no shuffle the stages before it in the group write. First
    passes (``feeds``) run alone: the driver fills their rows into the stages after them.

    >>> left = Stage("left", (), writes=frozenset({1}))
    >>> right = Stage("right", (), writes=frozenset({1}))
    >>> reduce = Stage("join", (), reads=frozenset({1}))
    >>> run_together([left, right, reduce], 0, 3)
    [0, 1]
    """
    group = [first]
    if stages[first].feeds is not None:
        return group
    written = set(stages[first].writes)
    for index in range(first + 1, end):
        stage = stages[index]
        if stage.feeds is not None or stage.reads & written:
            break
        group.append(index)
        written |= stage.writes
    return group


def groups(stages: list[Stage]) -> list[list[int]]:
    """All stages, in groups that run together; the last stage always runs alone (its
    results are the job's).

    >>> groups([Stage("a", ()), Stage("b", ()), Stage("c", ())])
    [[0, 1], [2]]
    """
    if not stages:
        return []
    found, index, last = [], 0, len(stages) - 1
    while index < last:
        found.append(run_together(stages, index, last))
        index = found[-1][-1] + 1
    return [*found, [last]]
