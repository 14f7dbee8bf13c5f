"""How a job is cut into workers, chunks, splits and partitions."""

from __future__ import annotations

from terabatch.run import sizing
from terabatch.run.memory import parse_size
from terabatch.run.options import RunOptions
from terabatch.run.sizing import size_job


def test_size_job_within_a_budget() -> None:
    options = RunOptions(workers=16, memory=parse_size("1GB"))
    sized = size_job(options, input_bytes=100 << 30)
    assert 1 <= sized.workers < 16
    assert sized.worker_memory is not None
    assert sized.workers * sized.worker_memory <= options.memory
    assert sizing.MIN_CHUNK <= sized.chunk_bytes <= sizing.MAX_CHUNK
    assert sizing.MIN_SPLIT <= sized.split_bytes <= sizing.MAX_SPLIT
    unbounded = size_job(RunOptions(workers=4), input_bytes=100 << 30)
    assert unbounded.workers == 4 and unbounded.worker_memory is None


def test_each_worker_gets_a_few_tasks_until_splits_reach_their_maximum() -> None:
    per_worker = sizing.TASKS_PER_WORKER
    medium = 2 * per_worker * (100 << 20)
    assert size_job(RunOptions(workers=2), input_bytes=medium).split_bytes == 100 << 20
    huge = size_job(RunOptions(workers=2), input_bytes=100 << 30)
    assert huge.split_bytes == sizing.MAX_SPLIT
    tiny = size_job(RunOptions(workers=2), input_bytes=1 << 20)
    assert tiny.split_bytes == sizing.MIN_SPLIT


def test_partitions_follow_the_input_and_the_room() -> None:
    budget = RunOptions(workers=2, memory=parse_size("2GB"))
    small, large = size_job(budget, 1 << 30), size_job(budget, 64 << 30)
    assert budget.workers <= small.partitions < large.partitions <= sizing.MAX_PARTITIONS
    assert size_job(budget, 1 << 50).partitions == sizing.MAX_PARTITIONS
