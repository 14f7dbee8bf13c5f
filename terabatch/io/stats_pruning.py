"""Decide from min/max statistics whether a row group can hold rows that match a predicate.

The predicate is read from Polars' JSON serialization of the expression. Only comparisons of a
column with a literal, ``is_in``, ``is_between``, null tests and their ``&`` / ``|`` are
understood; anything else answers "maybe", which keeps the row group (pruning is only ever an
optimisation, the filter itself still runs on every row read).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import polars as pl

MAYBE = None  # three-valued: True (may match), False (cannot match), None (unknown -> keep)


@dataclass(frozen=True)
class ColumnStats:
    """Statistics of one column in one row group; None where the writer did not record them."""

    min: Any
    max: Any
    null_count: int | None
    num_rows: int


def predicate_tree(predicate: pl.Expr) -> dict | None:
    """The JSON tree of a predicate, or None if it cannot be serialized."""
    try:
        return json.loads(predicate.meta.serialize(format="json"))
    except Exception:
        return None


def _literal(node: dict) -> tuple[bool, Any]:
    lit = node.get("Literal") if isinstance(node, dict) else None
    if not isinstance(lit, dict):
        return False, None
    for kind in ("Dyn", "Scalar"):
        inner = lit.get(kind)
        if isinstance(inner, dict) and len(inner) == 1:
            ((tag, value),) = inner.items()
            if tag in ("Int", "Float", "String", "Int64", "Float64", "Int32", "Boolean", "Str"):
                return True, value
    return False, None


def _column(node: dict) -> str | None:
    if isinstance(node, dict) and isinstance(node.get("Column"), str):
        return node["Column"]
    return None


_FLIP = {"Gt": "Lt", "GtEq": "LtEq", "Lt": "Gt", "LtEq": "GtEq", "Eq": "Eq", "NotEq": "NotEq"}


def _compare(op: str, stats: ColumnStats, value: Any) -> bool | None:
    lo, hi = stats.min, stats.max
    if lo is None or hi is None or value is None:
        return MAYBE
    try:
        if op == "Eq":
            return lo <= value <= hi
        if op == "NotEq":
            return not (lo == hi == value)
        if op == "Gt":
            return hi > value
        if op == "GtEq":
            return hi >= value
        if op == "Lt":
            return lo < value
        if op == "LtEq":
            return lo <= value
    except TypeError:
        return MAYBE
    return MAYBE


def _and(a: bool | None, b: bool | None) -> bool | None:
    if a is False or b is False:
        return False
    return MAYBE if a is None or b is None else True


def _or(a: bool | None, b: bool | None) -> bool | None:
    if a is True or b is True:
        return True
    return MAYBE if a is None or b is None else False


def may_match(tree: dict | None, stats: dict[str, ColumnStats]) -> bool:
    """Whether rows described by ``stats`` may satisfy the predicate ``tree``.

    >>> s = {"x": ColumnStats(0, 9, 0, 10)}
    >>> may_match(predicate_tree(pl.col("x") > 20), s)
    False
    >>> may_match(predicate_tree(pl.col("x") < 5), s)
    True
    """
    return _eval(tree, stats) is not False


def _eval(node: Any, stats: dict[str, ColumnStats]) -> bool | None:
    if not isinstance(node, dict):
        return MAYBE
    if "BinaryExpr" in node:
        b = node["BinaryExpr"]
        op = b.get("op")
        if op in ("And", "LogicalAnd"):
            return _and(_eval(b["left"], stats), _eval(b["right"], stats))
        if op in ("Or", "LogicalOr"):
            return _or(_eval(b["left"], stats), _eval(b["right"], stats))
        if op in _FLIP:
            left, right = _column(b["left"]), _column(b["right"])
            if left and left in stats:
                ok, value = _literal(b["right"])
                return _compare(op, stats[left], value) if ok else MAYBE
            if right and right in stats:
                ok, value = _literal(b["left"])
                return _compare(_FLIP[op], stats[right], value) if ok else MAYBE
        return MAYBE
    if "Function" in node:
        return _eval_function(node["Function"], stats)
    return MAYBE


def _eval_function(fn: dict, stats: dict[str, ColumnStats]) -> bool | None:
    inputs, function = fn.get("input", []), fn.get("function", {})
    boolean = function.get("Boolean") if isinstance(function, dict) else None
    if not inputs or boolean is None:
        return MAYBE
    name = _column(inputs[0])
    if name is None or name not in stats:
        return MAYBE
    s = stats[name]
    if boolean == "IsNull":
        return MAYBE if s.null_count is None else s.null_count > 0
    if boolean == "IsNotNull":
        return MAYBE if s.null_count is None else s.null_count < s.num_rows
    if isinstance(boolean, dict) and "IsBetween" in boolean and len(inputs) == 3:
        (ok_lo, lo), (ok_hi, hi) = _literal(inputs[1]), _literal(inputs[2])
        if not (ok_lo and ok_hi):
            return MAYBE
        closed = boolean["IsBetween"].get("closed", "Both")
        low_op = "GtEq" if closed in ("Both", "Left") else "Gt"
        high_op = "LtEq" if closed in ("Both", "Right") else "Lt"
        return _and(_compare(low_op, s, lo), _compare(high_op, s, hi))
    return MAYBE
