"""Operators that need more than one row at a time: shuffle reduce sides, head and top_k.

Every row of a key is in the same partition, so running Polars' own ``group_by`` or ``unique``
on the partition gives the exact answer for any aggregation. They run without
``maintain_order`` (twice as fast; ``first``, ``last`` and ``keep`` still follow the input
order), and a reduce task then orders its groups by a fixed hash of their keys: Polars seeds its
hash tables at random, and reruns must write the same bytes.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import polars as pl

from terabatch.io.shuffle import partition_of
from terabatch.io.sources import Batch
from terabatch.ops.stream import stream_query
from terabatch.plan.nodes import (
    Aggregate,
    BroadcastJoin,
    Head,
    Precombine,
    SampleKeys,
    Sort,
    TopK,
    Unique,
    Window,
)


def _shrink(op: Aggregate | Unique, rows: pl.LazyFrame) -> pl.LazyFrame:
    """Group or deduplicate, in an order that may change from process to process."""
    if isinstance(op, Aggregate):
        return rows.group_by(*op.keys).agg(*op.aggs)
    subset = list(op.subset) if op.subset is not None else None
    return rows.unique(subset=subset, keep=op.keep)


_SORTABLE_KEYS = (pl.String, pl.Boolean, pl.Categorical, pl.Enum, pl.Binary)


def in_fixed_order(frame: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """``frame``'s rows (one per distinct ``keys``) ordered by a fixed hash of the keys.

    The keys themselves break ties between hashes where they can be compared.

    >>> frame = pl.DataFrame({"k": ["b", "a", "c"], "n": [1, 2, 3]})
    >>> in_fixed_order(frame, ["k"]).equals(in_fixed_order(frame.reverse(), ["k"]))
    True
    """
    if frame.height < 2:
        return frame
    hashed = pl.struct(keys).hash(seed=0) if len(keys) != 1 else pl.col(keys[0]).hash(seed=0)
    plain = [
        k
        for k in keys
        if frame.schema[k].is_numeric()
        or frame.schema[k].is_temporal()
        or isinstance(frame.schema[k], _SORTABLE_KEYS)
    ]
    return frame.sort([hashed, *plain], maintain_order=True)


def _key_names(op: Aggregate | Unique, frame: pl.DataFrame) -> list[str]:
    if isinstance(op, Unique):
        return list(op.subset) if op.subset is not None else frame.columns
    return frame.lazy().select(*op.keys).collect_schema().names()


def _key_exprs(op: Aggregate | Unique) -> list[pl.Expr] | None:
    """What ``op`` groups on; None for a ``unique`` over all columns."""
    if isinstance(op, Aggregate):
        return list(op.keys)
    return [pl.col(c) for c in op.subset] if op.subset is not None else None


def reduce(op: Aggregate | Unique, batches: Iterator[Batch]) -> Iterator[Batch]:
    """A reduce side's ``group_by`` or ``unique`` over each whole partition (or piece)."""
    for batch in batches:
        keys = _key_names(op, batch.frame)
        # The streaming engine, though the partition is in memory: 2-7x faster than the
        # in-memory engine on group_by (multi-column keys above all), in no more memory.
        shrunk = _shrink(op, batch.frame.lazy()).collect(engine="streaming")
        yield Batch(in_fixed_order(shrunk, keys), batch.origin)


_NUMBERS = (pl.Boolean, pl.Null)


def _bucket_function(
    op: Precombine, schema: pl.Schema
) -> Callable[[pl.DataFrame], pl.Series] | None:
    """Each row's shuffle partition, for grouping bucket by bucket: only worth it for keys
    that are strings (or other variable-size values), whose hash table waits on memory most
    (5 M rows, 1 M keys: 0.43 against 0.61 s as strings, 0.33 against 0.28 s as integers)."""
    if op.buckets is None:
        return None
    keys, partitions = op.buckets
    dtypes = [schema[k] for k in keys if k in schema] if keys else list(schema.values())
    if all(d.is_numeric() or d.is_temporal() or isinstance(d, _NUMBERS) for d in dtypes):
        return None
    return lambda frame: partition_of(frame, keys, partitions)


# The rows of a map task whose keys are counted, to tell whether they repeat: an eighth of what
# one query takes (one batch, mostly).
PROBE_SHARE = 8


def precombine(op: Precombine, batches: Iterator[Batch]) -> Iterator[Batch]:
    """Shrink a task's rows with one streaming query, so each key leaves the task once.

    db-benchmark q3 at 1e8 rows: 3.4 M rows per task leave as 0.97 M groups, against 2.7 M when
    every batch was shrunk alone (and the query is cheaper than shrinking batch by batch). Keys
    that hardly repeat within a task (q10: every row its own group) leave row by row instead,
    as groups of one row: hashing them would only add work before the shuffle.
    """

    def query(rows: pl.LazyFrame) -> pl.LazyFrame:
        return _shrink(op.shrink, rows)

    per_row = None
    if op.per_row is not None:
        exprs = op.per_row

        def per_row(frame: pl.DataFrame) -> pl.DataFrame:
            return frame.select(*exprs)

    batches = iter(batches)
    first = next(batches, None)
    if first is None:
        return
    bucket_of = _bucket_function(op, first.frame.schema)
    for batch in stream_query(
        itertools.chain([first], batches),
        query,
        op.hold_bytes,
        op.hold_bytes // PROBE_SHARE,
        per_row,
        op.memory_cap,
        bucket_of,
        _key_exprs(op.shrink),
    ):
        if batch.frame.height:
            yield batch


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
