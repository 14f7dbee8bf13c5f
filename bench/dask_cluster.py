"""The Dask cluster that the Dask contenders (group-by and join) run on.

A ``LocalCluster`` of worker processes. Dask's distributed scheduler, which its documentation
offers for single machines too, is the only Dask scheduler that enforces a memory limit, and
only on worker processes: each spills to disk at 60 % of its limit, pauses at 80 % and is
restarted by its nanny at 95 %. It also shuffles peer to peer through disk. The threaded
scheduler would have no limit at all. On this benchmark's 2-core machine the cluster has
Dask's default layout for 2 cores, two workers of one thread each, and the ``--memory`` budget
is split evenly between them as their ``memory_limit``. The scheduler and client (in the
contender process) and the two nanny processes are outside that limit, as in any
LocalCluster; the runner measures the whole tree.

Running out of memory is turned into a one-line ``DaskOutOfMemory`` so that the runner's
status names the cause. Dask fails on its own when the nannies have killed the workers running
one task too often (``KilledWorker``), but it waits forever when no worker can run: all of them
paused by memory they cannot spill (unmanaged memory above the pause threshold), or none left
because each was killed right after starting. ``DaskCluster.compute`` gives up after
``STUCK_GIVE_UP_S`` of that.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dask.distributed import Client

DASK_WORKERS = min(2, os.cpu_count() or 1)
POLL_S = 2.0
# A worker pauses while spilling catches up; no worker running for this long means it cannot.
STUCK_GIVE_UP_S = 60.0


class DaskOutOfMemory(RuntimeError):
    """Dask cannot finish within the workers' memory limit."""


@dataclass(frozen=True)
class DaskCluster:
    """A client of the running LocalCluster and its workers' memory limit (for messages)."""

    client: Client
    memory_limit: str

    def compute(self, lazy: object) -> None:
        """Compute ``lazy`` (e.g. ``to_parquet(..., compute=False)``) on the cluster.

        Raises ``DaskOutOfMemory`` if Dask gives up on a task whose workers were killed, or if
        no worker can run for ``STUCK_GIVE_UP_S``.
        """
        from dask.distributed import KilledWorker

        future = self.client.compute(lazy)
        stuck_since: float | None = None
        while True:
            try:
                future.result(timeout=POLL_S)
                return
            except TimeoutError:
                pass
            except KilledWorker as exc:
                raise DaskOutOfMemory(
                    f"out of memory: workers (memory_limit {self.memory_limit} each) killed "
                    f"{exc.allowed_failures + 1} times running task {exc.task!r}; see the "
                    "worker log above"
                ) from None
            workers = self.client.scheduler_info()["workers"].values()
            if any(w.get("status") != "paused" for w in workers):
                stuck_since = None
                continue
            stuck_since = stuck_since or time.monotonic()
            if time.monotonic() - stuck_since >= STUCK_GIVE_UP_S:
                future.cancel()
                state = "every worker paused" if workers else "no worker left alive"
                raise DaskOutOfMemory(
                    f"out of memory: {state} for {STUCK_GIVE_UP_S:.0f} s (memory_limit "
                    f"{self.memory_limit} each); see the worker log above"
                )


@contextmanager
def dask_cluster(scratch: Path, memory: str | None) -> Iterator[DaskCluster]:
    """A LocalCluster whose workers together may use ``memory``.

    Build the Dask collections inside the block, so that Dask sees the cluster and chooses its
    peer-to-peer shuffle. ``scratch`` (created, then removed) holds the workers' spill and
    shuffle files. Without ``memory`` the workers get Dask's default, the RAM split between
    them.
    """
    from dask.distributed import Client, LocalCluster
    from dask.utils import format_bytes, parse_bytes

    limit: int | str = parse_bytes(memory) // DASK_WORKERS if memory else "auto"
    scratch.mkdir(parents=True)
    try:
        with (
            LocalCluster(
                n_workers=DASK_WORKERS,
                threads_per_worker=1,
                processes=True,
                memory_limit=limit,
                local_directory=str(scratch),
                dashboard_address=":0",  # any free port: never clash with another cluster
            ) as cluster,
            Client(cluster) as client,
        ):
            yield DaskCluster(client, format_bytes(limit) if isinstance(limit, int) else limit)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
