"""Split aggregations into a map-side partial and a reduce-side combine.

A map task that pre-combines ships one row per group instead of every row. An aggregation
splits when it is made of aggregations of a column that can be computed over part of the rows
and combined later:

- ``sum``, ``min``, ``max`` (and ``nan_min``, ``nan_max``), ``count``, ``len``, ``first`` and
  ``last`` (with or without ``ignore_nulls``): the same aggregation again over the partials.
  ``first`` and ``last`` stay exact because a reduce task reads map outputs in input order;
- ``mean`` as a sum and a count; ``std``, ``var``, ``pl.corr`` (Pearson) and ``pl.cov`` as
  moments (``precombine_moments``). These need columns known to be numeric (int, float,
  boolean): Polars' mean of a date, say, is no sum divided by a count;
- element-wise expressions over those: arithmetic, comparisons, ``pow``, ``sqrt``, ``abs``,
  ``cast``, ``when/then/otherwise``, literals, such as ``pl.col("a").max() -
  pl.col("b").min()`` or ``pl.corr("a", "b").pow(2)``. Each aggregation inside is split; the
  expression is rebuilt around the combined values by editing Polars' JSON form of it. Each
  combined value is cast to the type the aggregation has in Polars, so the arithmetic around it
  (an ``Int8`` maximum minus a minimum, say) runs in the same types.

``top_k`` and ``bottom_k`` are not split. Polars returns the ``k`` values in the order its
selection algorithm leaves them after a pass over the whole group in input order, which
combining per-task partials cannot reproduce. If any aggregation of a ``group_by`` does not
split, none is: the shuffle then carries the rows and the reduce side computes everything
exactly.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, replace

import polars as pl

from terabatch.plan import precombine_moments as moments
from terabatch.plan.expressions import output_name
from terabatch.plan.precombine_moments import Parts

# The aggregation applied to a task's rows is applied again to the partials of a group.
_REAPPLIED: dict[str, Callable[[pl.Expr], pl.Expr]] = {
    "Sum": pl.Expr.sum,
    "First": pl.Expr.first,
    "Last": pl.Expr.last,
    "FirstNonNull": lambda e: e.first(ignore_nulls=True),
    "LastNonNull": lambda e: e.last(ignore_nulls=True),
    "Min": pl.Expr.min,
    "Max": pl.Expr.max,
    "NanMin": pl.Expr.nan_min,
    "NanMax": pl.Expr.nan_max,
}

# Functions whose value for a row depends on that row only; names as ``_function_name`` gives.
_ELEMENTWISE = {
    "Abs",
    "Negate",
    "Pow",
    "Sqrt",
    "Cbrt",
    "Exp",
    "Log",
    "Log1p",
    "Sign",
    "Floor",
    "Ceil",
    "Round",
    "FillNull",
    "IsNull",
    "IsNotNull",
    "Not",
    "IsNan",
    "IsNotNan",
    "IsFinite",
    "IsInfinite",
}

_SYMBOLS = {
    "Plus": "+",
    "Minus": "-",
    "Multiply": "*",
    "TrueDivide": "/",
    "FloorDivide": "//",
    "Modulus": "%",
    "Eq": "==",
    "NotEq": "!=",
    "Lt": "<",
    "LtEq": "<=",
    "Gt": ">",
    "GtEq": ">=",
    "And": "&",
    "Or": "|",
    "Xor": "^",
}


@dataclass(frozen=True)
class Split:
    """Columns a map task adds to its rows, the aggregations it runs over them, group
    aggregates the reduce side adds to the partial rows (to compute with ``over(keys)``), the
    aggregations it runs over the partial rows, the final column expressions, and a short
    description of each aggregation (for ``explain()``)."""

    prepare: tuple[pl.Expr, ...]
    partial: tuple[pl.Expr, ...]
    pooled: tuple[pl.Expr, ...]
    combine: tuple[pl.Expr, ...]
    final: tuple[pl.Expr, ...]
    kinds: tuple[str, ...]
    # ``partial`` for a group of one row, computed row by row (no hash table): what a map task
    # ships when its keys hardly repeat. None when some aggregation has no such form.
    per_row: tuple[pl.Expr, ...] | None = None


def _column(node: object) -> str | None:
    column = node.get("Column") if isinstance(node, dict) else None
    return column if isinstance(column, str) else None


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _function_name(function: object) -> str:
    """``"Abs"``, ``{"Pow": "Sqrt"}`` -> ``"Sqrt"``, ``{"Boolean": "IsNull"}`` -> ``"IsNull"``."""
    if isinstance(function, str):
        return function
    if isinstance(function, dict) and len(function) == 1:
        ((family, member),) = function.items()
        if family in ("Pow", "Boolean") and isinstance(member, str):
            return "Pow" if member == "Generic" else member
        return family
    return "?"


def _as_json(expr: pl.Expr) -> object:
    return json.loads(expr.meta.serialize(format="json"))


def _from_json(tree: object) -> pl.Expr:
    return pl.Expr.deserialize(io.StringIO(json.dumps(tree)), format="json")


class _Splitter:
    """Walks aggregation expressions, splitting each aggregation found in them once."""

    def __init__(self, schema: pl.Schema | None) -> None:
        self.schema = schema
        self.parts: dict[str, Parts] = {}
        self.kinds: dict[str, str] = {}
        self.found = 0

    def _numeric(self, *columns: str) -> bool:
        if self.schema is None:
            return False
        dtypes = [self.schema.get(c) for c in columns]
        return all(
            d is not None and (d.is_integer() or d.is_float() or d == pl.Boolean) for d in dtypes
        )

    def _parts(self, node: object, p: str) -> tuple[Parts, str] | None:
        """Partials of a splittable aggregation, or None."""
        if node == "Len":
            one = (pl.lit(1).alias(p),)
            return Parts((), (pl.len().alias(p),), (), (pl.col(p).sum(),), pl.col(p), one), "len"
        if not isinstance(node, dict):
            return None
        if "Function" in node:
            return self._pair_parts(node["Function"], p)
        agg = node.get("Agg")
        if not isinstance(agg, dict) or len(agg) != 1:
            return None
        ((kind, body),) = agg.items()
        if kind in ("Std", "Var"):
            column, ddof = _column(body[0]), body[1]
            if column is None or not isinstance(ddof, int) or not self._numeric(column):
                return None
            return moments.variance(column, ddof, kind == "Std", p), kind.lower()
        inner = body.get("input", body) if isinstance(body, dict) else None
        column = _column(inner)
        if column is None:
            return None
        if kind in ("Min", "Max") and body.get("propagate_nans"):
            kind = "Nan" + kind
        if kind in _REAPPLIED:
            again = _REAPPLIED[kind]
            partial, combine = again(pl.col(column)).alias(p), again(pl.col(p))
            one = _sum_of_one(pl.col(column)) if kind == "Sum" else pl.col(column)
            parts = Parts((), (partial,), (), (combine,), pl.col(p), (one.alias(p),))
            return parts, _snake(kind)
        if kind == "Count":
            nulls_too = body.get("include_nulls")
            counted = pl.col(column).len() if nulls_too else pl.col(column).count()
            one = pl.lit(1) if nulls_too else pl.col(column).is_not_null()
            combine = (pl.col(p).sum(),)
            parts = Parts((), (counted.alias(p),), (), combine, pl.col(p), (one.alias(p),))
            return parts, "count"
        if kind == "Mean" and self._numeric(column):
            total, count = pl.col(p), pl.col(p + "n")
            # Float32 sums in Float32; Polars' own mean of it does not.
            summed = (
                pl.col(column).cast(pl.Float64)
                if self.schema[column].is_float()
                else pl.col(column)
            )
            partial = (summed.sum().alias(p), pl.col(column).count().alias(p + "n"))
            value = pl.when(count > 0).then(total / count)
            one = (_sum_of_one(summed).alias(p), pl.col(column).is_not_null().alias(p + "n"))
            return Parts((), partial, (), (total.sum(), count.sum()), value, one), "mean"
        return None

    def _pair_parts(self, function: object, p: str) -> tuple[Parts, str] | None:
        """``pl.corr(a, b)`` (Pearson) or ``pl.cov(a, b, ddof)`` of two numeric columns."""
        if not isinstance(function, dict):
            return None
        inputs = [_column(i) for i in function.get("input", [])]
        method = function["function"]["Correlation"]["method"]
        if len(inputs) != 2 or None in inputs or not self._numeric(*inputs):
            return None
        a, b = inputs
        if method == "Pearson":
            return moments.pair(a, b, "pearson", 1, p), "corr"
        ddof = method.get("Covariance") if isinstance(method, dict) else None
        if isinstance(ddof, int):
            return moments.pair(a, b, "covariance", ddof, p), "cov"
        return None

    def _dtype(self, node: object) -> pl.DataType | None:
        """The type Polars gives the aggregation in a ``group_by``."""
        if self.schema is None:
            return None
        probe = _from_json(node).alias("__terabatch_atom")
        rows = pl.LazyFrame(schema=self.schema).group_by(pl.lit(0).alias("__terabatch_group"))
        return rows.agg(probe).collect_schema()["__terabatch_atom"]

    def aggregation(self, node: object) -> tuple[object, str] | None:
        """The combined value standing for one aggregation, and its name."""
        key = json.dumps(node, sort_keys=True)
        if key not in self.parts:
            split = self._parts(node, f"__p{len(self.parts)}")
            if split is None:
                return None
            parts, kind = split
            dtype = self._dtype(node)
            value = parts.value.cast(dtype) if dtype is not None else parts.value
            self.parts[key] = replace(parts, value=value)
            self.kinds[key] = kind
        self.found += 1
        return _as_json(self.parts[key].value), self.kinds[key]

    def walk(self, node: object) -> tuple[object, str] | None:
        """``node`` with its aggregations replaced by their combined values, and a
        description; None if some part of it is neither splittable nor element-wise."""
        if node == "Len" or (isinstance(node, dict) and ("Agg" in node or _is_pair(node))):
            return self.aggregation(node)
        if not isinstance(node, dict) or len(node) != 1:
            return None
        ((tag, body),) = node.items()
        if tag == "Literal":
            return (
                (node, _literal_text(body))
                if isinstance(body, dict) and ("Dyn" in body or "Scalar" in body)
                else None
            )
        if tag == "Alias":
            inner = self.walk(body[0])
            return ({tag: [inner[0], body[1]]}, inner[1]) if inner else None
        if tag == "Cast":
            inner = self.walk(body["expr"])
            return ({tag: {**body, "expr": inner[0]}}, inner[1]) if inner else None
        if tag == "BinaryExpr":
            left, right = self.walk(body["left"]), self.walk(body["right"])
            if left is None or right is None:
                return None
            symbol = _SYMBOLS.get(body["op"], _snake(body["op"]))
            text = f"{_grouped(body['left'], left[1])} {symbol} {_grouped(body['right'], right[1])}"
            return {tag: {**body, "left": left[0], "right": right[0]}}, text
        if tag == "Ternary":
            parts = {k: self.walk(body[k]) for k in ("predicate", "truthy", "falsy")}
            if None in parts.values():
                return None
            texts = ", ".join(p[1] for p in parts.values())
            return {tag: {k: p[0] for k, p in parts.items()}}, f"when({texts})"
        if tag == "Function" and _function_name(body.get("function")) in _ELEMENTWISE:
            inputs = [self.walk(i) for i in body.get("input", [])]
            if None in inputs:
                return None
            name = _snake(_function_name(body["function"]))
            text = f"{name}({', '.join(i[1] for i in inputs)})"
            return {tag: {**body, "input": [i[0] for i in inputs]}}, text
        return None


def _is_pair(node: dict) -> bool:
    function = node.get("Function")
    return isinstance(function, dict) and _function_name(function.get("function")) == "Correlation"


def _grouped(node: object, text: str) -> str:
    return f"({text})" if isinstance(node, dict) and "BinaryExpr" in node else text


def _literal_text(body: dict) -> str:
    value = body.get("Dyn") or body.get("Scalar")
    if isinstance(value, dict) and len(value) == 1:
        ((_, inner),) = value.items()
        return "null" if inner == "Null" else str(inner)
    return "lit"


def split_aggregations(aggs: tuple[pl.Expr, ...], schema: pl.Schema | None = None) -> Split | None:
    """Map-side partials and reduce-side combines, or None if some aggregation is holistic.

    ``schema`` is the schema of the rows aggregated; without it, only aggregations whose
    partials keep the column's type (sum, min, max, count, len, first, last) are split.

    >>> s = split_aggregations((pl.col("v").sum().alias("t"), pl.len()))
    >>> s.kinds
    ('sum', 'len')
    >>> rows = pl.Schema({"a": pl.Int64, "b": pl.Float64})
    >>> split_aggregations((pl.corr("a", "b").pow(2), pl.col("a").std()), rows).kinds
    ('pow(corr, 2)', 'std')
    >>> split_aggregations((pl.col("a").median(),), rows) is None
    True
    """
    splitter = _Splitter(schema)
    final: list[pl.Expr] = []
    kinds: list[str] = []
    for agg in aggs:
        name = output_name(agg)
        found = splitter.found
        try:
            walked = splitter.walk(_as_json(agg))
        except (KeyError, IndexError, TypeError, AttributeError, pl.exceptions.PolarsError):
            # A JSON shape this module does not know (another Polars version), or a type
            # Polars refuses: not splitting is always exact.
            return None
        if walked is None or name is None or splitter.found == found:
            return None
        final.append(_from_json(walked[0]).alias(name))
        kinds.append(walked[1])
    parts = splitter.parts.values()
    one_row = None if any(p.per_row is None for p in parts) else parts
    return Split(
        tuple(e for p in parts for e in p.prepare),
        tuple(e for p in parts for e in p.partial),
        tuple(e for p in parts for e in p.pooled),
        tuple(e for p in parts for e in p.combine),
        tuple(final),
        tuple(kinds),
        None if one_row is None else tuple(e for p in one_row for e in p.per_row),
    )


def _sum_of_one(value: pl.Expr) -> pl.Expr:
    """The sum of a group holding one value: the value, or 0 for a null (as Polars sums)."""
    return value.fill_null(0)
