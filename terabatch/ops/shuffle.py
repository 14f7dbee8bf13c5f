"""Operators that need more than one row at a time: shuffle reduce sides, head and top_k.

Every row of a key is in the same partition, so running Polars' own ``group_by`` or ``unique``
on the partition gives the exact answer for any aggregation. ``maintain_order`` keeps the output
order a function of the input order, so reruns write the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterator

import polars as pl

from terabatch.io.sources import Batch
from terabatch.plan.nodes import (
    Aggregate,
    BroadcastJoin,
    Head,
    SampleKeys,
    Sort,
    TopK,
    Unique,
    Window,
)


def aggregate(op: Aggregate, batches: Iterator[Batch]) -> Iterator[Batch]:
    for batch in batches:
        frame = batch.frame.group_by(*op.keys, maintain_order=True).agg(*op.aggs)
        yield Batch(frame, batch.origin)


def unique(op: Unique, batches: Iterator[Batch]) -> Iterator[Batch]:
    subset = list(op.subset) if op.subset is not None else None
    for batch in batches:
        frame = batch.frame.unique(subset=subset, keep=op.keep, maintain_order=True)
        yield Batch(frame, batch.origin)


def window(op: Window, batches: Iterator[Batch]) -> Iterator[Batch]:
    for batch in batches:
        yield Batch(batch.frame.with_columns(*op.exprs), batch.origin)


def head(op: Head, batches: Iterator[Batch]) -> Iterator[Batch]:
    """The first ``n`` rows across batches; only where one task sees every row."""
    left = op.n
    for batch in batches:
        if left <= 0:
            return
        frame = batch.frame.head(left)
        left -= frame.height
        yield Batch(frame, batch.origin)


def top_k(op: TopK, batches: Iterator[Batch]) -> Iterator[Batch]:
    """The top ``k`` over all of a task's batches (k rows held at a time); the driver then
    takes the top ``k`` of what the tasks kept."""
    by = list(op.by)
    kept, origin = None, None
    for batch in batches:
        frame = (
            batch.frame if kept is None else pl.concat([kept, batch.frame], how="vertical_relaxed")
        )
        kept = frame.top_k(op.k, by=by) if op.largest else frame.bottom_k(op.k, by=by)
        origin = origin or batch.origin
    if kept is not None:
        yield Batch(kept, origin)


def sort(op: Sort, batches: Iterator[Batch]) -> Iterator[Batch]:
    for batch in batches:
        frame = batch.frame.sort(
            list(op.by),
            descending=list(op.descending),
            nulls_last=op.nulls_last,
            maintain_order=True,
        )
        yield Batch(frame, batch.origin)


def sample_keys(op: SampleKeys, batches: Iterator[Batch]) -> Iterator[Batch]:
    for batch in batches:
        every = max(1, batch.frame.height // op.rows)
        yield Batch(batch.frame.select(op.by).gather_every(every), batch.origin)


def broadcast_join(op: BroadcastJoin, batches: Iterator[Batch]) -> Iterator[Batch]:
    for batch in batches:
        joined = batch.frame.join(
            op.right,
            left_on=list(op.left_on),
            right_on=list(op.right_on),
            how=op.how,
            suffix=op.suffix,
            maintain_order="left_right",
        )
        yield Batch(joined, batch.origin)
