"""One query per bucket of rows: a map task's pre-combining when its keys are many.

A hash table over a million keys no longer fits the processor's caches, and Polars' group_by
then spends its time waiting on memory. Cutting the rows first into buckets by a hash of their
keys (the shuffle's own partitions) and grouping each bucket alone keeps every table small:
db-benchmark q3 (5 M rows, 1 M string keys) took 0.45 s this way against 0.74 s for one
streaming query, and each bucket's result is then one partition for the shuffle writer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import polars as pl

from terabatch.io.sources import Batch
from terabatch.run.memory import process_rss

BUCKET_COLUMN = "__terabatch_bucket"


class _Held:
    """Rows cut into buckets, in input order within each bucket."""

    def __init__(self, bucket_of: Callable[[pl.DataFrame], pl.Series]) -> None:
        self.bucket_of = bucket_of
        self.parts: dict[int, list[pl.DataFrame]] = {}
        self.bytes = 0

    def add(self, frame: pl.DataFrame) -> None:
        self.bytes += frame.estimated_size()
        numbered = frame.with_columns(self.bucket_of(frame).alias(BUCKET_COLUMN))
        cut = numbered.partition_by(
            BUCKET_COLUMN, as_dict=True, include_key=False, maintain_order=True
        )
        for (number,), part in cut.items():
            self.parts.setdefault(int(number), []).append(part)

    def results(
        self, query: Callable[[pl.LazyFrame], pl.LazyFrame], origin: Callable[[], str]
    ) -> Iterator[Batch]:
        """``query`` over each bucket, letting each bucket's rows go once queried."""
        for number in sorted(self.parts):
            rows = pl.concat(self.parts.pop(number), how="vertical")
            yield Batch(query(rows.lazy()).collect(engine="streaming"), origin)
        self.bytes = 0


def bucketed_query(
    batches: Iterator[Batch],
    query: Callable[[pl.LazyFrame], pl.LazyFrame],
    bucket_of: Callable[[pl.DataFrame], pl.Series],
    limit_bytes: int,
    memory_cap: int | None = None,
) -> Iterator[Batch]:
    """``query`` over each bucket of the stream's rows, one result batch per bucket.

    Rows are held until ``limit_bytes`` of them and then while the process holds less than
    ``memory_cap`` bytes; each bucket is then queried alone, and holding starts again. A change
    of schema also ends a round: a bucket's rows are concatenated.

    >>> frame = pl.DataFrame({"k": [1, 2, 1, 3], "v": [1, 2, 3, 4]})
    >>> out = bucketed_query(
    ...     iter([Batch(frame, lambda: "x")]),
    ...     lambda rows: rows.group_by("k").agg(pl.col("v").sum()),
    ...     lambda f: f["k"] % 2,
    ...     1 << 20,
    ... )
    >>> pl.concat([b.frame for b in out]).sort("k").rows()
    [(1, 4), (2, 2), (3, 4)]
    """
    held = _Held(bucket_of)
    schema, origin = None, None
    for batch in batches:
        full = held.bytes >= limit_bytes and (memory_cap is None or process_rss() >= memory_cap)
        if held.parts and (full or batch.frame.schema != schema):
            yield from held.results(query, origin or batch.origin)
            origin = None
        schema, origin = batch.frame.schema, origin or batch.origin
        held.add(batch.frame)
    if held.parts and origin is not None:
        yield from held.results(query, origin)
