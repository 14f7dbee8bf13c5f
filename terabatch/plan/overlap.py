"""Which stages may run at the same time: those that read nothing the others write.

The two sides of a join shuffle into two directories, each from its own input: run one after
the other, the workers wait at the end of the first side for its last task while the second
side's tasks could already run (db-benchmark join q5 at 1e8: five map tasks a side on two
workers, one worker idle for a fifth of the map time). Stages run together share the workers;
every task still runs once, and a reduce stage starts only after all stages before it.
"""

from __future__ import annotations

from terabatch.io.shuffle import ShuffleSink
from terabatch.io.shuffle_read import JoinSource, ShuffleSource
from terabatch.plan.stages import Stage


def shuffles_read(stage: Stage) -> set[str]:
    """The shuffle directories the stage's tasks read."""
    found: set[str] = set()
    for task in stage.tasks:
        source = task.source
        if isinstance(source, JoinSource):
            found |= {source.left.directory, source.right.directory}
        elif isinstance(source, ShuffleSource):
            found.add(source.directory)
    return found


def shuffles_written(stage: Stage) -> set[str]:
    """The shuffle directories the stage's tasks write."""
    return {t.sink.directory for t in stage.tasks if isinstance(t.sink, ShuffleSink)}


def run_together(stages: list[Stage], first: int, end: int) -> list[int]:
    """``first`` and the stages right after it, before ``end``, that may run with it.

    A stage joins while it reads no shuffle the stages before it in the group write. First
    passes (``feeds``) run alone: the driver fills their rows into the stages after them.

    >>> run_together([Stage("a", ()), Stage("b", ())], 0, 2)
    [0, 1]
    """
    group = [first]
    if stages[first].feeds is not None:
        return group
    written = shuffles_written(stages[first])
    for index in range(first + 1, end):
        stage = stages[index]
        if stage.feeds is not None or shuffles_read(stage) & written:
            break
        group.append(index)
        written |= shuffles_written(stage)
    return group
