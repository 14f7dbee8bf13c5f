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
    batch that changed it). With ``keep``, the frames fed are kept for a second query."""

    def __init__(
        self,
        first: Batch,
        rest: Iterator[Batch],
        limit_bytes: int,
        memory_cap: int | None = None,
        keep: bool = False,
    ) -> None:
        self.pending: Batch | None = first
        self.rest, self.limit_bytes, self.memory_cap = rest, limit_bytes, memory_cap
        self.schema = first.frame.schema
        self.origin = first.origin
        self.context = contextvars.copy_context()
        self.error: BaseException | None = None
        self.fed = 0
        self.rows = 0
        self.kept: list[Batch] | None = [] if keep else None

    def _next(self) -> Batch | None:
        return next(self.rest, None)

    def _room(self) -> bool:
        if self.fed < self.limit_bytes:
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
            if self.kept is not None:
                self.kept.append(self.pending)
            self.fed += frame.estimated_size()
            self.rows += frame.height
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


def _replay(kept: list[Batch], pending: Batch | None, rest: Iterator[Batch]) -> Iterator[Batch]:
    """The batches a first query saw, then the stream from where it stopped; each kept batch
    is let go once fed again."""
    kept.reverse()
    while kept:
        yield kept.pop()
    if pending is not None:
        yield pending
    yield from rest


def stream_query(
    batches: Iterator[Batch],
    query: Callable[[pl.LazyFrame], pl.LazyFrame],
    limit_bytes: int,
    probe_bytes: int | None = None,
    per_row: Callable[[pl.DataFrame], pl.DataFrame] | None = None,
    memory_cap: int | None = None,
    bucket_of: Callable[[pl.DataFrame], pl.Series] | None = None,
) -> Iterator[Batch]:
    """``query`` over the stream, as few streaming queries as memory allows.

    Each query's result is one batch. The first query, a probe, takes ``probe_bytes`` of
    batches (at least one) and tells whether the keys repeat. If they hardly do (the result
    keeps nine rows in ten of its input), its result is kept and the rest of the stream goes
    on to ``per_row`` if given (each remaining batch mapped on its own to the columns and
    types of the query's result), else to queries of half ``limit_bytes`` each: Polars' hash
    table over distinct keys takes 4.5 times their size. If they do repeat, the probe's result
    is dropped and its batches are queried again with the batches that follow, each query fed
    ``limit_bytes`` and then more while the process holds less than ``memory_cap`` bytes: the
    fewer queries, the fewer times a key leaves the task (db-benchmark q3, 5 M rows of 1 M
    keys: 2.3 M rows out of three queries, 1 M out of one, in 40 % less time). With
    ``bucket_of``, a probe that found ``MANY_KEYS`` hands the rows to ``bucketed_query``
    instead, one query per bucket.
    """
    rest = iter(batches)
    pending = next(rest, None)
    if pending is None:
        return
    probe = _Feed(pending, rest, probe_bytes or limit_bytes, keep=True)
    result = _run(query, probe)
    kept, probe.kept = probe.kept or [], None
    if probe.pending is None or result.height >= NO_GAIN * probe.rows:
        kept.clear()
        yield Batch(result, probe.origin)
        pending, limit, cap = probe.pending, limit_bytes // 2, None
        if per_row is not None and pending is not None:
            try:
                first = per_row(pending.frame).cast(result.schema)
            except pl.exceptions.PolarsError:
                pass  # a type the row-by-row form does not take: keep querying
            else:
                yield Batch(first, pending.origin)
                for batch in rest:
                    yield Batch(per_row(batch.frame).cast(result.schema), batch.origin)
                return
    else:
        rest = _replay(kept, probe.pending, rest)
        if bucket_of is not None and result.height >= MANY_KEYS:
            del result
            yield from bucketed_query(rest, query, bucket_of, limit_bytes, memory_cap)
            return
        pending, limit, cap = next(rest), limit_bytes, memory_cap
    del result
    while pending is not None:
        feed = _Feed(pending, rest, limit, cap)
        result = _run(query, feed)
        yield Batch(result, feed.origin)
        pending = feed.pending
