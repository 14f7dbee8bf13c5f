"""Output schemas of plan nodes, computed on empty frames so that mistakes surface before a run.

A misspelt column in an expression fails here, when the ``Dataset`` method is called, with the
closest existing names suggested. After ``map_batches`` without a declared schema the columns are
unknown until the function has run, so later checks wait for the run.
"""

from __future__ import annotations

import re

import polars as pl

from terabatch.errors import SchemaError, suggest
from terabatch.plan.nodes import (
    Aggregate,
    Drop,
    Filter,
    Head,
    Join,
    MapBatches,
    Node,
    Rename,
    Scan,
    Select,
    Sort,
    TopK,
    Unique,
    Window,
    WithColumns,
)

_NOT_FOUND = re.compile(
    r'unable to find column "([^"]+)"|not found: "?([^"\s;]+)"?|"([^"]+)" not found'
)


def output_schema(node: Node) -> pl.Schema | None:
    """The schema a node produces, or None when a ``map_batches`` made it unknown."""
    if isinstance(node, Scan):
        return node.source.schema
    if isinstance(node, MapBatches):
        return node.schema
    inner = output_schema(node.child)
    if inner is None:
        return None
    return apply_to_schema(node, inner)


def apply_to_schema(node: Node, schema: pl.Schema) -> pl.Schema:
    """Apply one narrow node to an empty frame of ``schema``; ``SchemaError`` on a bad name."""
    frame = pl.LazyFrame(schema=schema)
    try:
        if isinstance(node, Filter):
            out = frame.filter(node.predicate)
        elif isinstance(node, WithColumns):
            out = frame.with_columns(*node.exprs)
        elif isinstance(node, Select):
            out = frame.select(*node.exprs)
        elif isinstance(node, Drop):
            out = frame.drop(*node.columns, strict=True)
        elif isinstance(node, Rename):
            out = frame.rename(dict(node.mapping), strict=True)
        elif isinstance(node, Head | TopK):
            out = frame
        elif isinstance(node, Join):
            other = output_schema(node.other)
            if other is None:
                raise SchemaError(
                    "join needs the right side's columns: declare map_batches(schema=)"
                )
            out = frame.join(
                pl.LazyFrame(schema=other),
                left_on=list(node.left_on),
                right_on=list(node.right_on),
                how=node.how,
                suffix=node.suffix,
            )
        elif isinstance(node, Sort):
            out = frame.sort(list(node.by), descending=list(node.descending))
        elif isinstance(node, Aggregate):
            out = frame.group_by(*node.keys).agg(*node.aggs)
        elif isinstance(node, Window):
            out = frame.with_columns(*node.exprs)
        elif isinstance(node, Unique):
            subset = list(node.subset) if node.subset is not None else None
            out = frame.unique(subset=subset, keep=node.keep)
        else:
            raise TypeError(f"not a narrow node: {type(node).__name__}")
        return out.collect_schema()
    except pl.exceptions.ColumnNotFoundError as exc:
        raise SchemaError(_column_message(exc, list(schema.names()))) from None
    except (
        pl.exceptions.InvalidOperationError,
        pl.exceptions.SchemaError,
        pl.exceptions.ComputeError,
        pl.exceptions.DuplicateError,
    ) as exc:
        first = str(exc).strip().splitlines()[0]
        hint = (
            "; give each output its own name with .alias()"
            if isinstance(exc, pl.exceptions.DuplicateError)
            else ""
        )
        raise SchemaError(f"invalid expression: {first}{hint}") from None


def _column_message(exc: Exception, names: list[str]) -> str:
    text = str(exc)
    match = _NOT_FOUND.search(text)
    missing = next((g for g in match.groups() if g), None) if match else None
    if missing is None:
        first = text.strip().splitlines()[0] if text.strip() else "column not found"
        return f"{first}; columns are: {', '.join(names)}"
    return f"column {missing!r} not found{suggest(missing, names)}; columns are: {', '.join(names)}"
