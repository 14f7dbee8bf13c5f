"""Narrow operators, fused: consecutive Polars operators run as one lazy query per batch.

``map_batches`` functions run between those queries, on batches re-cut to ``batch_size`` rows
when the user asked for a size. A function that raises is reported with its name, the file and
line of the batch's first row, and the user's own traceback.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator

import polars as pl
import pyarrow as pa

from terabatch.errors import UserFunctionError
from terabatch.io.bad_rows import current, row_as_text
from terabatch.io.sources import Batch
from terabatch.ops import shuffle as shuffle_ops
from terabatch.plan.nodes import (
    Aggregate,
    BroadcastJoin,
    Drop,
    Filter,
    Head,
    MapBatches,
    Narrow,
    Precombine,
    Rename,
    SampleKeys,
    Select,
    Shuffle,
    Sort,
    TopK,
    Unique,
    Window,
    WithColumns,
)

Step = Callable[[Iterator[Batch]], Iterator[Batch]]


def _polars_step(ops: list[Narrow]) -> Step:
    def apply(frame: pl.DataFrame) -> pl.DataFrame:
        lazy = frame.lazy()
        for op in ops:
            if isinstance(op, Filter):
                lazy = lazy.filter(op.predicate)
            elif isinstance(op, WithColumns):
                lazy = lazy.with_columns(*op.exprs)
            elif isinstance(op, Select):
                lazy = lazy.select(*op.exprs)
            # Names were checked when the plan was built; a column that column pruning chose
            # not to read is legitimately absent here.
            elif isinstance(op, Drop):
                lazy = lazy.drop(*op.columns, strict=False)
            elif isinstance(op, Rename):
                lazy = lazy.rename(dict(op.mapping), strict=False)
        return lazy.collect()

    def step(batches: Iterator[Batch]) -> Iterator[Batch]:
        for batch in batches:
            yield Batch(apply(batch.frame), batch.origin)

    return step


def _as_frame(result: object, name: str) -> pl.DataFrame:
    if isinstance(result, pl.DataFrame):
        return result
    if isinstance(result, pa.Table | pa.RecordBatch):
        return pl.from_arrow(result)
    if type(result).__module__.startswith("pandas"):
        return pl.from_pandas(result)
    raise UserFunctionError(
        f"map_batches({name}) must return a polars DataFrame, got {type(result).__name__}"
    )


def rebatch(batches: Iterator[Batch], size: int) -> Iterator[Batch]:
    """Re-cut a stream of batches into batches of exactly ``size`` rows (the last may be short)."""
    pending: list[pl.DataFrame] = []
    pending_rows = 0
    origin = None
    for batch in batches:
        frame = batch.frame
        while frame.height:
            if not pending:
                origin = batch.origin
            take = min(size - pending_rows, frame.height)
            pending.append(frame.slice(0, take))
            pending_rows += take
            frame = frame.slice(take)
            if pending_rows == size:
                yield Batch(pl.concat(pending), origin)
                pending, pending_rows = [], 0
    if pending:
        yield Batch(pl.concat(pending), origin)


def _map_step(op: MapBatches) -> Step:
    def step(batches: Iterator[Batch]) -> Iterator[Batch]:
        source = rebatch(batches, op.batch_size) if op.batch_size else batches
        for batch in source:
            try:
                result = op.fn(batch.frame)
            except Exception as exc:
                if op.on_error == "fail":
                    tb = traceback.format_exc()
                    raise UserFunctionError(
                        f"map_batches({op.name}) raised {type(exc).__name__}: {exc} "
                        f"(batch starting at {batch.origin()})",
                        tb,
                    ) from None
                parts = _isolate_bad_rows(op, batch.origin(), batch.frame)
                result = pl.concat(parts, how="vertical_relaxed") if parts else None
                if result is None:
                    continue
            yield Batch(_as_frame(result, op.name), batch.origin)

    return step


def _isolate_bad_rows(op: MapBatches, origin: str, frame: pl.DataFrame) -> list[pl.DataFrame]:
    """The function's outputs on the parts of ``frame`` it accepts, in order.

    Bisecting finds each row that makes the function raise in about log2(rows) calls per bad
    row; those rows go to the task's bad-row collector.
    """
    try:
        return [_as_frame(op.fn(frame), op.name)]
    except UserFunctionError:
        raise
    except Exception as exc:
        if frame.height <= 1:
            if frame.height == 1:
                reason = f"map_batches({op.name}) raised {type(exc).__name__}: {exc}"
                bad = current()
                bad.add(
                    op.on_error,
                    bad.file or origin,
                    None,
                    None,
                    row_as_text(frame, 0),
                    f"{reason} (in the batch starting at {origin})",
                    step=f"map_batches({op.name})",
                )
            return []
        half = frame.height // 2
        return _isolate_bad_rows(op, origin, frame.slice(0, half)) + _isolate_bad_rows(
            op, origin, frame.slice(half)
        )


_REDUCE = {
    Head: shuffle_ops.head,
    Precombine: shuffle_ops.precombine,
    Aggregate: shuffle_ops.reduce,
    Unique: shuffle_ops.reduce,
    Window: shuffle_ops.window,
    TopK: shuffle_ops.top_k,
    Sort: shuffle_ops.sort,
    SampleKeys: shuffle_ops.sample_keys,
    BroadcastJoin: shuffle_ops.broadcast_join,
}


def compile_ops(ops: list[Narrow | Shuffle]) -> Step:
    """Fuse a list of operators (bottom first) into one streaming step.

    A shuffle operator here is the reduce side of its shuffle: its input is one whole partition.
    """
    steps: list[Step] = []
    run: list[Narrow] = []
    for op in ops:
        if isinstance(op, (MapBatches, *_REDUCE)):
            if run:
                steps.append(_polars_step(run))
                run = []
            if isinstance(op, MapBatches):
                steps.append(_map_step(op))
            else:
                steps.append(lambda batches, op=op: _REDUCE[type(op)](op, batches))
        else:
            run.append(op)
    if run:
        steps.append(_polars_step(run))

    def pipeline(batches: Iterator[Batch]) -> Iterator[Batch]:
        for step in steps:
            batches = step(batches)
        return batches

    return pipeline
