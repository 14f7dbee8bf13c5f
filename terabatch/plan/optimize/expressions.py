"""What the optimizer needs to know about a Polars expression: the columns it reads."""

from __future__ import annotations

import polars as pl


def input_columns(expr: pl.Expr) -> set[str] | None:
    """Columns an expression reads, or None if it may read any column (wildcards, regexes).

    >>> sorted(input_columns((pl.col("a") + pl.col("b")).alias("c")))
    ['a', 'b']
    >>> input_columns(pl.all()) is None
    True
    """
    meta = expr.meta
    if meta.has_multiple_outputs() or meta.is_regex_projection():
        return None
    return set(meta.root_names())


def output_name(expr: pl.Expr) -> str | None:
    """The name of the single column an expression produces, if it can be known statically."""
    try:
        return expr.meta.output_name()
    except Exception:
        return None
