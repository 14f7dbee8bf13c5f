"""Run one Polars streaming query over a Python stream of batches.

Polars' streaming engine keeps one hash table across all the batches it is fed, which is what a
map task wants for pre-combining: each key leaves the task once, and no partial is hashed twice.
The engine pulls the batches itself, from one of its own threads, so three things are carried
over by hand: the caller's context variables (the bad-row collector), the exceptions raised while
producing a batch (re-raised unchanged in the caller, instead of as a Polars error), and a bound
on how much one query is fed.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator

import polars as pl
from polars.io.plugins import register_io_source

from terabatch.io.sources import Batch
from terabatch.ops.buckets import bucketed_query
from terabatch.run.memory import process_rss

# A result with more: the keys hardly repeat, and the hash table costs more than it saves.
NO_GAIN = 0.9
# A probe that found more keys than this: the task's hash table would outgrow the caches.
MANY_KEYS = 200_000
# The engine is fed slices of at most this many rows: each is hashed while its rows are still
# in the caches (db-benchmark, 5 M rows of a CSV read in 24 MiB chunks, one thread: q2 0.50
# against 0.56-0.62 s fed whole chunks, q5 0.84 against 0.88-0.92 s, q1 no slower).
SLICE_ROWS = 100_000


class _Feed:
    """Batches for one query: until ``limit_bytes`` are fed and the process holds
    ``memory_cap`` bytes, the stream ends or its schema changes (the next query starts with the
    batch that changed it)."""

    def __init__(
        self,
        first: Batch,
        rest: Iterator[Batch],
        limit_bytes: int,
        memory_cap: int | None = None,
    ) -> None:
        self.pending: Batch | None = first
        self.rest, self.limit_bytes, self.memory_cap = rest, limit_bytes, memory_cap
        self.schema = first.frame.schema
        self.origin = first.origin
        self.context = contextvars.copy_context()
        self.error: BaseException | None = None
        self.fed = 0
        self.taken = 0

    def _next(self) -> Batch | None:
        return next(self.rest, None)

    def _room(self) -> bool:
        if self.fed < self.limit_bytes or self.taken == 0:  # each query takes one batch at least
            return True
        return self.memory_cap is not None and process_rss() < self.memory_cap

    def frames(
        self,
        with_columns: list[str] | None,
        predicate: pl.Expr | None,
        n_rows: int | None,
        batch_size: int | None,
    ) -> Iterator[pl.DataFrame]:
        while self.pending is not None and self._room():
            frame = self.pending.frame
            if frame.schema != self.schema:
                return
            self.fed += frame.estimated_size()
            self.taken += 1
            if predicate is not None:
                frame = frame.filter(predicate)
            if with_columns is not None:
                frame = frame.select(with_columns)
            yield from frame.iter_slices(SLICE_ROWS)
            try:
                self.pending = self.context.run(self._next)
            except BaseException as exc:  # re-raised by ``_run`` in the caller
                self.error, self.pending = exc, None
                return


def _run(query: Callable[[pl.LazyFrame], pl.LazyFrame], feed: _Feed) -> pl.DataFrame:
    source = register_io_source(feed.frames, schema=feed.schema, validate_schema=False)
    try:
        result = query(source).collect(engine="streaming")
    except pl.exceptions.PolarsError:
        if feed.error is not None:
            raise feed.error from None
        raise
    if feed.error is not None:
        raise feed.error
    return result


def _replay(kept: list[Batch], rest: Iterator[Batch]) -> Iterator[Batch]:
    """The probe's batches, then the rest of the stream; each kept batch let go once fed."""
    kept.reverse()
    while kept:
        yield kept.pop()
    yield from rest


def _distinct(frames: list[pl.DataFrame], keys: list[pl.Expr] | None) -> int:
    """About how many distinct ``keys`` (all columns if None) the frames hold: a HyperLogLog
    count of their hashes, ten times cheaper than grouping them (db-benchmark q3, 485 k rows
    of 384 k string keys: 4 against 50 ms), and within a few percent."""
    hashes = []
    for frame in frames:
        exprs = keys if keys is not None else [pl.col(c) for c in frame.columns]
        key = exprs[0] if len(exprs) == 1 else pl.struct(exprs)
        hashes.append(frame.select(key.hash(seed=0)).to_series())
    return int(pl.concat(hashes).approx_n_unique()) if hashes else 0


def stream_query(
    batches: Iterator[Batch],
    query: Callable[[pl.LazyFrame], pl.LazyFrame],
    limit_bytes: int,
    probe_bytes: int | None = None,
    per_row: Callable[[pl.DataFrame], pl.DataFrame] | None = None,
    memory_cap: int | None = None,
    bucket_of: Callable[[pl.DataFrame], pl.Series] | None = None,
    keys: list[pl.Expr] | None = None,
) -> Iterator[Batch]:
    """``query``, grouping on ``keys`` (all columns if None), over the stream, as few
    streaming queries as memory allows.

    Each query's result is one batch. The first ``probe_bytes`` of batches (at least one) tell
    whether the keys repeat: how many distinct keys they hold. If they hardly do (nine in ten
    rows a key of its own), the stream goes to ``per_row`` if given (each batch mapped on its
    own to the columns and types of the query's result), else to queries of half
    ``limit_bytes`` each: Polars' hash table over distinct keys takes 4.5 times their size.
    If they do repeat, each query is fed ``limit_bytes`` and then more while the process holds
    less than ``memory_cap`` bytes: the fewer queries, the fewer times a key leaves the task
    (db-benchmark q3, 5 M rows of 1 M keys: 2.3 M rows out of three queries, 1 M out of one,
    in 40 % less time). With ``bucket_of``, a probe that found ``MANY_KEYS`` hands the rows to
    ``bucketed_query`` instead, one query per bucket.
    """
    rest = iter(batches)
    first = next(rest, None)
    if first is None:
        return
    probe, fed = [first], first.frame.estimated_size()
    while fed < (probe_bytes or limit_bytes):
        batch = next(rest, None)
        if batch is None:
            break
        probe.append(batch)
        fed += batch.frame.estimated_size()
    rows = sum(b.frame.height for b in probe)
    distinct = _distinct([b.frame for b in probe], keys)
    stream = _replay(probe, rest)
    if distinct >= NO_GAIN * rows:
        if per_row is not None:
            schema = query(first.frame.lazy().clear()).collect_schema()
            try:
                mapped = per_row(first.frame).cast(schema)
            except pl.exceptions.PolarsError:
                pass  # a type the row-by-row form does not take: query instead
            else:
                next(stream)
                yield Batch(mapped, first.origin)
                del first, mapped
                for batch in stream:
                    yield Batch(per_row(batch.frame).cast(schema), batch.origin)
                return
        limit, cap = limit_bytes // 2, None
    elif bucket_of is not None and distinct >= MANY_KEYS:
        yield from bucketed_query(stream, query, bucket_of, limit_bytes, memory_cap)
        return
    else:
        limit, cap = limit_bytes, memory_cap
    del first
    pending = next(stream, None)
    while pending is not None:
        feed = _Feed(pending, stream, limit, cap)
        result = _run(query, feed)
        yield Batch(result, feed.origin)
        pending = feed.pending
