"""Split decomposable aggregations into a map-side partial and a reduce-side combine.

``sum``, ``min``, ``max``, ``count``, ``len``, ``mean`` (as sum and count), ``first`` and
``last`` of a column can be computed over part of the rows and combined later, so a map task
ships one row per group instead of every row. ``first`` and ``last`` stay exact because a reduce
task reads map outputs in input order. If any aggregation of a ``group_by`` is not of this kind,
none is split: the shuffle then carries the rows and the reduce side computes everything
exactly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import polars as pl

from terabatch.plan.expressions import output_name

_SIMPLE = ("Sum", "Min", "Max", "Mean", "Count", "First", "Last")


@dataclass(frozen=True)
class Split:
    """Aggregations for the map side, the reduce side, and the final column expressions."""

    partial: tuple[pl.Expr, ...]
    combine: tuple[pl.Expr, ...]
    final: tuple[pl.Expr, ...]
    kinds: tuple[str, ...]
    # The partial columns of a group of one row, computed row by row (no hash table): what a
    # map task ships when its keys are nearly all distinct. Cast to the partials' types.
    per_row: tuple[pl.Expr, ...]


def _kind_and_column(expr: pl.Expr) -> tuple[str, str | None] | None:
    """Recognise ``pl.col(c).<agg>()`` and ``pl.len()``, possibly aliased."""
    try:
        tree = json.loads(expr.meta.serialize(format="json"))
    except Exception:
        return None
    if isinstance(tree, dict) and "Alias" in tree:
        tree = tree["Alias"][0]
    if tree == "Len":
        return "Len", None
    agg = tree.get("Agg") if isinstance(tree, dict) else None
    if not isinstance(agg, dict) or len(agg) != 1:
        return None
    ((kind, body),) = agg.items()
    if kind not in _SIMPLE or not isinstance(body, dict):
        return None
    inner = body.get("input", body)
    if kind == "Count" and body.get("include_nulls"):
        return None
    column = inner.get("Column") if isinstance(inner, dict) else None
    return (kind, column) if isinstance(column, str) else None


def split_aggregations(aggs: tuple[pl.Expr, ...]) -> Split | None:
    """Map-side partials and reduce-side combines, or None if some aggregation is holistic.

    >>> s = split_aggregations((pl.col("v").mean().alias("m"), pl.len()))
    >>> s.kinds
    ('Mean', 'Len')
    >>> split_aggregations((pl.col("v").median(),)) is None
    True
    """
    partial: list[pl.Expr] = []
    combine: list[pl.Expr] = []
    final: list[pl.Expr] = []
    kinds: list[str] = []
    per_row: list[pl.Expr] = []
    for i, agg in enumerate(aggs):
        found = _kind_and_column(agg)
        name = output_name(agg)
        if found is None or name is None:
            return None
        kind, column = found
        kinds.append(kind)
        p = f"__p{i}"
        if kind == "Len":
            partial.append(pl.len().alias(p))
            combine.append(pl.col(p).sum())
            per_row.append(pl.lit(1).alias(p))
        elif kind == "Count":
            partial.append(pl.col(column).count().alias(p))
            combine.append(pl.col(p).sum())
            per_row.append(pl.col(column).is_not_null().alias(p))
        elif kind == "Mean":
            partial += [pl.col(column).sum().alias(p), pl.col(column).count().alias(p + "n")]
            combine += [pl.col(p).sum(), pl.col(p + "n").sum()]
            per_row += [_sum_of_one(column).alias(p), pl.col(column).is_not_null().alias(p + "n")]
        else:
            method = kind.lower()
            partial.append(getattr(pl.col(column), method)().alias(p))
            combine.append(getattr(pl.col(p), method)())
            one = _sum_of_one(column) if kind == "Sum" else pl.col(column)
            per_row.append(one.alias(p))
        if kind == "Mean":
            total, count = pl.col(p), pl.col(p + "n")
            final.append(pl.when(count > 0).then(total / count).alias(name))
        else:
            final.append(pl.col(p).alias(name))
    return Split(tuple(partial), tuple(combine), tuple(final), tuple(kinds), tuple(per_row))


def _sum_of_one(column: str) -> pl.Expr:
    """The sum of a group holding one value: the value, or 0 for a null (as Polars sums)."""
    return pl.col(column).fill_null(0)
