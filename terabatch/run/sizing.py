"""How big the work is cut: workers, chunks, splits and shuffle partitions, from the memory
budget and the input's size.

>>> from terabatch.run.options import RunOptions
>>> sizing = size_job(RunOptions(workers=2), input_bytes=6 << 30)
>>> sizing.workers, sizing.split_bytes == MAX_SPLIT
(2, True)
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from terabatch.errors import MemoryBudgetError
from terabatch.run.memory import format_size, process_rss
from terabatch.run.options import RunOptions

WORKER_BASELINE = 130 << 20
WORKER_FIXED = 80 << 20
CHUNK_FACTOR = 8
HEADROOM = 0.9
# Under glibc's 32 MiB mmap ceiling, so workers reuse freed chunks (exec/runtime.py).
MIN_CHUNK, MAX_CHUNK = 1 << 20, 24 << 20
# A task streams its split, so its memory does not grow with it; larger splits mean fewer tasks
# to dispatch, commit and pre-combine (db-benchmark q1 at 1e9 from Parquet: 10.5-11.2 s with
# 1 GiB splits, 12.3-15.9 s with 256 MiB; CSV convert at 1e8 unchanged, same peak memory).
MIN_SPLIT, MAX_SPLIT = 8 << 20, 1 << 30
# Below ``MAX_SPLIT``, each worker gets this many tasks: enough that the workers finish
# together, few enough that each pre-combines many rows and reduce tasks read few pieces
# (db-benchmark at 1e8, 2 workers, three runs each: q1 6.52 against 6.62 s with 8 per worker,
# q2 7.36 against 7.58, q3 13.0 against 13.2, q5 12.61 against 13.12).
TASKS_PER_WORKER = 3
MAX_PARTITION, MAX_PARTITIONS = 256 << 20, 1024


@dataclass
class Sizing:
    workers: int
    chunk_bytes: int
    split_bytes: int
    worker_memory: int | None
    partitions: int
    data_room: int | None


def size_job(options: RunOptions, input_bytes: int) -> Sizing:
    """Choose workers, chunk and split sizes so that the whole process tree fits the budget.

    A worker's memory is its baseline (interpreter and libraries), a fixed working set, and
    about ``CHUNK_FACTOR`` times its chunk: the raw bytes, the parsed frame, the operators'
    output and the Parquet encoder's buffers (measured on the db-benchmark table).
    """
    workers = max(1, options.workers or os.cpu_count() or 1)
    worker_memory = None
    chunk = MAX_CHUNK
    if options.memory is not None:
        usable = HEADROOM * options.memory - process_rss()
        floor = WORKER_BASELINE + WORKER_FIXED + CHUNK_FACTOR * MIN_CHUNK
        while workers > 1 and usable / workers < floor:
            workers -= 1
        if usable < floor:
            raise MemoryBudgetError(
                f"memory budget {format_size(options.memory)} is too small: the driver uses "
                f"{format_size(process_rss())} and one worker needs at least "
                f"{format_size(floor)}; raise --memory"
            )
        worker_memory = int(usable / workers)
        room = worker_memory - WORKER_BASELINE - WORKER_FIXED
        chunk = max(MIN_CHUNK, min(MAX_CHUNK, int(room // CHUNK_FACTOR)))
    split = min(MAX_SPLIT, max(MIN_SPLIT, input_bytes // (workers * TASKS_PER_WORKER)))
    # A reduce task holds its whole partition and Polars' hash tables over it, which for many
    # keys (db-benchmark q10) take several times the partition: a tenth of the room each.
    data_room = None if worker_memory is None else worker_memory - WORKER_BASELINE - WORKER_FIXED
    room = MAX_PARTITION if data_room is None else max(MIN_CHUNK, data_room // 10)
    partitions = max(workers, min(MAX_PARTITIONS, -(-input_bytes // room)))
    return Sizing(workers, min(chunk, split), split, worker_memory, partitions, data_room)
