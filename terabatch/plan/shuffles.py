"""What each shuffle kind (group_by, unique, window, sort, join) hashes on and runs on each side.

The stage planner asks this module three things about a shuffle operator: the key columns the map
side partitions on, the operators the map side runs over its rows before writing (computed keys and
pre-combined aggregations), and the operators the reduce side runs on each whole partition.
"""

from __future__ import annotations

from dataclasses import replace

import polars as pl

from terabatch.plan.expressions import output_name
from terabatch.plan.nodes import (
    Aggregate,
    Join,
    Narrow,
    Precombine,
    Select,
    Shuffle,
    Sort,
    Unique,
    Window,
    WithColumns,
)
from terabatch.plan.precombine import split_aggregations
from terabatch.plan.schema import output_schema


def shuffle_keys(op: Aggregate | Unique | Window | Sort) -> tuple[tuple[str, ...], tuple]:
    """Key column names to partition on, and operators the map side runs to compute them.

    A computed key gets an internal name, so that ``group_by(pl.col("v") % 4)`` does not
    overwrite the ``v`` its aggregations read; the reduce side renames it back.

    >>> import polars as pl
    >>> from terabatch.plan.nodes import Unique
    >>> shuffle_keys(Unique(None, ("a", "b"), "first"))
    (('a', 'b'), ())
    """
    if isinstance(op, Unique):
        return (op.subset or ()), ()
    if isinstance(op, Window):
        return op.keys, ()
    if isinstance(op, Sort):
        return op.by, ()
    if all(k.meta.is_column() for k in op.keys):
        return tuple(output_name(k) for k in op.keys), ()
    names = tuple(f"__terabatch_key{i}" for i in range(len(op.keys)))
    computed = tuple(k.alias(n) for k, n in zip(op.keys, names, strict=True))
    return names, (WithColumns(op.child, computed),)


def map_and_reduce_ops(
    op: Aggregate | Unique | Window | Sort,
    keys: tuple[str, ...],
    hold_bytes: int,
    memory_cap: int | None = None,
    partitions: int | None = None,
) -> tuple[tuple[Narrow | Shuffle | Precombine, ...], tuple[Narrow | Shuffle, ...]]:
    """Operators for the map side (over a task's batches) and the reduce side (per whole
    partition).

    Decomposable aggregations and ``unique(keep != "none")`` shrink a task's rows (up to
    ``hold_bytes`` of them at a time, more while the worker holds less than ``memory_cap``;
    many string keys partition by partition) before the shuffle; everything else ships rows
    and is computed whole on the reduce side.
    """
    if isinstance(op, Window | Sort):
        return (), (op,)
    buckets = (keys, partitions) if partitions else None
    if isinstance(op, Unique):
        shrink = Precombine(op.child, op, hold_bytes, (pl.all(),), memory_cap, buckets)
        per_batch = (shrink,) if op.keep != "none" else ()
        return per_batch, (op,)
    key_columns = tuple(pl.col(n) for n in keys)
    named_keys = tuple(
        pl.col(n).alias(output_name(k) or n) for n, k in zip(keys, op.keys, strict=True)
    )
    split = split_aggregations(op.aggs, output_schema(op.child))
    direct = output_schema(op)
    if split is None:
        # One expression may give several columns (pl.col("x", "y").median()): take the names
        # from the schema, where the keys come first.
        names = direct.names()[len(keys) :] if direct is not None else []
        finals = tuple(pl.col(n) for n in names) or tuple(pl.col(output_name(a)) for a in op.aggs)
        return (), (replace(op, keys=key_columns), Select(op, (*named_keys, *finals)))
    final = tuple(f.cast(direct[output_name(f)]) if direct is not None else f for f in split.final)
    combine = replace(op, keys=key_columns, aggs=split.combine)
    partial = replace(op, keys=key_columns, aggs=split.partial)
    # Columns the partials read (a pair of columns nulled where either is null) are added to
    # the rows first, so that the partials stay Polars' fast streaming aggregations.
    prepare = (WithColumns(op.child, split.prepare),) if split.prepare else ()
    one_row = (*key_columns, *split.per_row) if split.per_row is not None else None
    # A group's pooled means, which the combining aggregations read, as windows over each whole
    # partition: Polars' group_by evaluates an aggregation that refers to another aggregation
    # of its group group by group.
    windows = tuple(e.over(*key_columns) for e in split.pooled)
    pooled = (Window(op, windows, keys),) if windows else ()
    return (
        (*prepare, Precombine(op.child, partial, hold_bytes, one_row, memory_cap, buckets)),
        (*pooled, combine, Select(op, (*named_keys, *final))),
    )


def describe_shuffle(op: Shuffle) -> str:
    """The reduce side's operation, in a few words.

    >>> from terabatch.plan.nodes import Sort
    >>> describe_shuffle(Sort(None, ("n",), (True,), False))
    'sort by n'
    """
    if isinstance(op, Aggregate):
        return "group_by " + ", ".join(str(k) for k in op.keys)
    if isinstance(op, Window):
        return f"windows over {', '.join(op.keys)}"
    if isinstance(op, Sort):
        return f"sort by {', '.join(op.by)}"
    if isinstance(op, Join):
        return f"{op.how} join on {', '.join(op.left_on)} = {', '.join(op.right_on)}"
    subset = ", ".join(op.subset) if op.subset is not None else "all columns"
    return f"unique on {subset} (keep={op.keep})"


def precombine_note(op: Aggregate | Unique | Window | Sort) -> str:
    """Which work the map tasks do before shuffling, for ``explain()``.

    >>> from terabatch.plan.nodes import Aggregate, MapBatches
    >>> rows = MapBatches(None, None, None, pl.Schema({"k": pl.String, "v": pl.Float64}))
    >>> spread = (pl.col("v").max() - pl.col("v").min()).alias("spread")
    >>> precombine_note(Aggregate(rows, (pl.col("k"),), (pl.col("v").std(), spread, pl.len())))
    'pre-combined per task: std, max - min, len'
    >>> precombine_note(Aggregate(rows, (pl.col("k"),), (pl.col("v").median(),)))
    'no pre-combining (an aggregation needs all rows of a group)'
    """
    if isinstance(op, Unique):
        return "unique per task (pre-combined)" if op.keep != "none" else ""
    if isinstance(op, Window | Sort):
        return ""
    split = split_aggregations(op.aggs, output_schema(op.child))
    if split is None:
        return "no pre-combining (an aggregation needs all rows of a group)"
    return f"pre-combined per task: {', '.join(split.kinds)}"
