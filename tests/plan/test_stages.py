"""Stages of a plan with shuffles: the run directory's storage options reach every task that
opens shuffle files, and are never shown nor part of the job's key."""

from __future__ import annotations

from pathlib import Path

import polars as pl

import terabatch as tb
import terabatch.plan.stages as stages_module
from terabatch.io.shuffle import ShuffleSink
from terabatch.io.shuffle_read import JoinSource, ShuffleSource
from terabatch.io.sinks import CollectSink
from terabatch.plan.optimize import optimize
from terabatch.plan.stages import Sizes, plan_stages
from terabatch.run.job_key import job_key

SECRET = {"key": "AKIA-visible-0f3e", "secret": "s3cr3t-never-shown-9b2d"}


def test_storage_options_reach_every_shuffle_and_are_never_shown(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(stages_module, "BROADCAST_BYTES", 0)  # a shuffled join
    path = tmp_path / "in.csv"
    pl.DataFrame({"k": [1, 2, 3, 1], "v": [4, 5, 6, 7]}).write_csv(path)
    left, right = tb.read_csv(path), tb.read_csv(path).rename({"v": "w"})
    ds = left.join(right, on="k").group_by("k").agg(pl.col("v").sum()).sort("k")
    plan = optimize(ds._plan)
    sizes = Sizes(1 << 20, 1 << 20, 3, None)

    stages = plan_stages(plan, CollectSink(), sizes, "s3://bucket/runs/x/shuffle", SECRET)

    sinks = [t.sink for s in stages for t in s.tasks if isinstance(t.sink, ShuffleSink)]
    sources = []
    for task in (t for s in stages for t in s.tasks):
        if isinstance(task.source, JoinSource):
            sources += [task.source.left, task.source.right]
        elif isinstance(task.source, ShuffleSource):
            sources.append(task.source)
    # join sides, group_by, sort: four shuffle directories written and read
    assert len({s.directory for s in sinks}) == len({s.directory for s in sources}) == 4
    assert all(s.storage_options == SECRET for s in [*sinks, *sources])
    shown = repr(stages) + "".join(repr(t) for s in stages for t in s.tasks)
    assert "ShuffleSink(" in shown and "ShuffleSource(" in shown
    assert SECRET["secret"] not in shown and SECRET["key"] not in shown
    without = plan_stages(plan, CollectSink(), sizes, "s3://bucket/runs/x/shuffle")
    bare = [t.sink for s in without for t in s.tasks if isinstance(t.sink, ShuffleSink)]
    assert [s.storage_options for s in bare] == [None] * len(sinks)
    assert [job_key(s) for s in bare] == [job_key(s) for s in sinks]
