"""Run one Polars streaming query over a Python stream of batches.

Polars' streaming engine keeps one hash table across all the batches it is fed, which is what a
map task wants for pre-combining: each key leaves the task once, and no partial is hashed twice.
The engine pulls the batches itself, from one of its own threads, so three things are carried
over by hand: the caller's context variables (the bad-row collector), the exceptions raised while
producing a batch (re-raised unchanged in the caller, instead of as a Polars error), and a bound
on how many bytes one query is fed.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator

import polars as pl
from polars.io.plugins import register_io_source

from terabatch.io.sources import Batch

# A result with fewer rows than this share of its input's: the keys repeat enough to hold more.
SHRANK = 0.75
# A result with more: the keys hardly repeat, and the hash table costs more than it saves.
NO_GAIN = 0.9


class _Feed:
    """Batches for one query: until ``limit_bytes`` are fed, the stream ends or its schema
    changes (the next query starts with the batch that changed it)."""

    def __init__(self, first: Batch, rest: Iterator[Batch], limit_bytes: int) -> None:
        self.pending: Batch | None = first
        self.rest, self.limit_bytes = rest, limit_bytes
        self.schema = first.frame.schema
        self.origin = first.origin
        self.context = contextvars.copy_context()
        self.error: BaseException | None = None
        self.fed = 0
        self.rows = 0

    def _next(self) -> Batch | None:
        return next(self.rest, None)

    def frames(
        self,
        with_columns: list[str] | None,
        predicate: pl.Expr | None,
        n_rows: int | None,
        batch_size: int | None,
    ) -> Iterator[pl.DataFrame]:
        while self.pending is not None and self.fed < self.limit_bytes:
            frame = self.pending.frame
            if frame.schema != self.schema:
                return
            self.fed += frame.estimated_size()
            self.rows += frame.height
            if predicate is not None:
                frame = frame.filter(predicate)
            yield frame.select(with_columns) if with_columns is not None else frame
            try:
                self.pending = self.context.run(self._next)
            except BaseException as exc:  # re-raised by ``stream_query`` in the caller
                self.error, self.pending = exc, None
                return


def stream_query(
    batches: Iterator[Batch],
    query: Callable[[pl.LazyFrame], pl.LazyFrame],
    limit_bytes: int,
    first_limit_bytes: int | None = None,
    per_row: Callable[[pl.DataFrame], pl.DataFrame] | None = None,
) -> Iterator[Batch]:
    """``query`` over the stream, as one streaming query per ``limit_bytes`` of batches.

    Each query's result is one batch. The bound keeps the engine's state within a worker's
    memory. A query whose result has nearly as many rows as its input (keys nearly all
    distinct: Polars' hash table then takes 4.5 times the input) keeps the smaller
    ``first_limit_bytes`` for the next query; one that shrank its input well lets the next
    take ``limit_bytes``. With ``per_row``, a query that shrank its input by less than a tenth
    ends the querying: ``per_row`` then maps each remaining batch on its own, to the columns
    and types of the query's result.
    """
    rest = iter(batches)
    pending = next(rest, None)
    limit = first_limit_bytes or limit_bytes
    while pending is not None:
        feed = _Feed(pending, rest, limit)
        source = register_io_source(feed.frames, schema=feed.schema, validate_schema=False)
        try:
            result = query(source).collect(engine="streaming")
        except pl.exceptions.PolarsError:
            if feed.error is not None:
                raise feed.error from None
            raise
        if feed.error is not None:
            raise feed.error
        if result.height < SHRANK * feed.rows:
            limit = limit_bytes
        yield Batch(result, feed.origin)
        pending = feed.pending
        if per_row is not None and pending is not None and result.height >= NO_GAIN * feed.rows:
            try:
                first = per_row(pending.frame).cast(result.schema)
            except pl.exceptions.PolarsError:
                continue  # a type the row-by-row form does not take: keep querying
            yield Batch(first, pending.origin)
            for batch in rest:
                yield Batch(per_row(batch.frame).cast(result.schema), batch.origin)
            return
