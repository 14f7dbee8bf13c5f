"""What the optimizer needs to know about a Polars expression: the columns it reads."""

from __future__ import annotations

import json

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


# Operations whose result for a row depends on other rows. terabatch evaluates narrow operators
# batch by batch, so these would silently give per-batch answers; the API refuses them.
_ACROSS_ROWS = {
    "Agg": "an aggregation",
    "Over": "a window (over)",
    "Sort": "sorting",
    "SortBy": "sorting",
    "Slice": "slicing",
    "Filter": "an expression-level filter",
    "Explode": "explode",
    "Gather": "gather",
    "Len": "len()",
    "CumSum": "a cumulative function",
    "CumProd": "a cumulative function",
    "CumMin": "a cumulative function",
    "CumMax": "a cumulative function",
    "CumCount": "a cumulative function",
    "Shift": "shift",
    "ShiftAndFill": "shift",
    "Diff": "diff",
    "PctChange": "pct_change",
    "Rank": "rank",
    "Unique": "unique",
    "Reverse": "reverse",
    "FillNullWithStrategy": "fill_null with a strategy",
    "RollingExpr": "a rolling function",
    "RollingExprBy": "a rolling function",
    "IsDuplicated": "is_duplicated",
    "IsUnique": "is_unique",
    "IsFirstDistinct": "is_first_distinct",
    "IsLastDistinct": "is_last_distinct",
    "TopK": "top_k",
    "BottomK": "bottom_k",
    "Quantile": "an aggregation",
    "Interpolate": "interpolate",
    "Mode": "mode",
    "ArgUnique": "arg_unique",
    "ArgSort": "arg_sort",
    "ValueCounts": "value_counts",
    "UniqueCounts": "unique_counts",
    "EwmMean": "an exponentially weighted function",
    "EwmStd": "an exponentially weighted function",
    "EwmVar": "an exponentially weighted function",
    "GatherEvery": "gather_every",
}
# Function families that work inside one value (a list, a string, a struct): never across rows.
_WITHIN_ROW = {"ListExpr", "StringExpr", "ArrayExpr", "StructExpr", "TemporalExpr"}


def _across_rows(node: object, names_a_function: bool, windows: bool = False) -> str | None:
    """Search a serialized expression; bare strings only count where they name a function,
    so that a column called "Rank" is not mistaken for ``rank()``."""
    if isinstance(node, list):
        return next(
            (f for item in node if (f := _across_rows(item, names_a_function, windows))), None
        )
    if isinstance(node, str):
        return _ACROSS_ROWS.get(node) if names_a_function else None
    if not isinstance(node, dict):
        return None
    if "AnonymousFunction" in node and "ROW_SEPARABLE" not in json.dumps(node["AnonymousFunction"]):
        return "a function over whole batches (map_batches)"
    for key, value in node.items():
        if key == "Over" and windows:
            continue
        if key in _ACROSS_ROWS:
            return _ACROSS_ROWS[key]
        if key in _WITHIN_ROW or key in ("Column", "Columns", "Literal"):
            continue
        found = _across_rows(value, names_a_function or key == "function", windows)
        if found:
            return found
    return None


def across_rows(expr: pl.Expr, windows: bool = False) -> str | None:
    """What in an expression looks at other rows (an aggregation, a window, ...), or None.

    With ``windows=True``, ``over()`` windows are allowed (they run after a shuffle on their
    keys) and only what looks across rows outside them is reported.

    >>> across_rows(pl.col("a").str.to_uppercase() + "x") is None
    True
    >>> across_rows(pl.col("a").sum()), across_rows(pl.col("a").cum_sum().over("b"))
    ('an aggregation', 'a window (over)')
    >>> across_rows(pl.col("a").sum().over("b") - pl.col("a"), windows=True) is None
    True
    """
    try:
        tree = json.loads(expr.meta.serialize(format="json"))
    except Exception:
        return None
    # A whole expression can be a bare name, as pl.len() is.
    return _across_rows(tree, names_a_function=isinstance(tree, str), windows=windows)


def window_keys(expr: pl.Expr) -> set[tuple[str, ...]]:
    """The ``partition_by`` column lists of every ``over()`` in an expression.

    >>> window_keys(pl.col("a").sum().over("b", "c") / pl.col("a").count().over("b", "c"))
    {('b', 'c')}
    """
    found: set[tuple[str, ...]] = set()

    def walk(node: object) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            over = node.get("Over")
            if isinstance(over, dict):
                parts = over.get("partition_by") or []
                names = tuple(p.get("Column") if isinstance(p, dict) else None for p in parts)
                found.add(names if all(isinstance(n, str) for n in names) else ("?",))
            for value in node.values():
                walk(value)

    try:
        walk(json.loads(expr.meta.serialize(format="json")))
    except Exception:
        return set()
    return found


# Functions whose answer depends on the order of the rows they see (in a window: the rows of
# each group). A window's rows come out grouped by its keys, so these would read another order.
_IN_ORDER = {
    "First": "first()",
    "Last": "last()",
    "Implode": "implode()",
    "Slice": "head(), tail() or slice()",
    "Gather": "gather() or get()",
    "GatherEvery": "gather_every()",
    "ArgMax": "arg_max()",
    "ArgMin": "arg_min()",
    "CumSum": "a cumulative function",
    "CumProd": "a cumulative function",
    "CumMin": "a cumulative function",
    "CumMax": "a cumulative function",
    "CumCount": "a cumulative function",
    "Shift": "shift()",
    "ShiftAndFill": "shift()",
    "Diff": "diff()",
    "PctChange": "pct_change()",
    "Reverse": "reverse()",
    "FillNullWithStrategy": "fill_null() with a strategy",
    "RollingExpr": "a rolling function",
    "RollingExprBy": "a rolling function",
    "Interpolate": "interpolate()",
    "EwmMean": "an exponentially weighted function",
    "EwmStd": "an exponentially weighted function",
    "EwmVar": "an exponentially weighted function",
    "IsFirstDistinct": "is_first_distinct()",
    "IsLastDistinct": "is_last_distinct()",
    "ArgUnique": "arg_unique()",
    "Range": "int_range() or a row index",
}
# Ranks that break ties by position.
_RANKS_IN_ORDER = {"Ordinal", "Random"}
_SORTS = ("Sort", "SortBy")


def _named(node: object) -> str | None:
    """The name of a function node: ``"CumSum"`` or ``{"CumSum": {...}}``."""
    if isinstance(node, str):
        return node
    if isinstance(node, dict) and len(node) == 1:
        return next(iter(node))
    return None


def _positional(key: str, value: object) -> tuple[str | None, object]:
    """What order-dependent function one ``key: value`` node of an expression applies, and
    its input."""
    if key == "Function" and isinstance(value, dict):
        inputs = value.get("input") or [None]
        function = value.get("function")
        name = _named(function)
        if name == "Rank" and isinstance(function, dict):
            method = (function["Rank"].get("options") or {}).get("method")
            return (
                f"rank(method='{str(method).lower()}')" if method in _RANKS_IN_ORDER else None
            ), inputs[0]
        return _IN_ORDER.get(name or ""), inputs[0]
    if key == "Agg":
        name = _named(value)
        inner = value[name] if isinstance(value, dict) and name else None
        if isinstance(inner, dict) and "input" in inner:
            inner = inner["input"]
        return _IN_ORDER.get(name or ""), inner
    if key in _IN_ORDER and isinstance(value, dict):
        return _IN_ORDER[key], value.get("input", value.get("expr"))
    return None, None


def _in_order(node: object) -> str | None:
    if isinstance(node, list):
        return next((f for item in node if (f := _in_order(item))), None)
    if not isinstance(node, dict):
        return None
    for key, value in node.items():
        if key in ("Column", "Columns", "Literal"):
            continue
        what, source = _positional(key, value)
        # After a sort the order is the sort's, whatever the rows' order was.
        if what is not None and _named(source) not in _SORTS:
            return what
        # A function's name is not an input: search what it reads only.
        found = _in_order(source if key in ("Function", "Agg") else value)
        if found:
            return found
    return None


def depends_on_order(expr: pl.Expr) -> str | None:
    """What in an expression depends on the order of the rows, or None.

    >>> depends_on_order(pl.col("a").cum_sum().over("k"))
    'a cumulative function'
    >>> depends_on_order((pl.col("a") - pl.col("a").mean()).over("k")) is None
    True
    >>> depends_on_order(pl.col("a").sort_by("b").head(2)) is None
    True
    """
    try:
        tree = json.loads(expr.meta.serialize(format="json"))
    except Exception:
        return None
    return _in_order(tree)
