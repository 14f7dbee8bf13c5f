"""``std``, ``var``, ``corr`` and ``cov`` as per-task moments combined on the reduce side.

A map task keeps, per group, the count ``n`` of the values it saw, their mean and their
population variance (``M2 / n``, Polars' own numerically stable kernels), and for a pair of
columns their population covariance. The reduce side merges the partials of a group with the
parallel formula of Chan, Golub and LeVeque (Schubert and Gertz, 2018, for the co-moment)::

    N = sum(n_i)    M = sum(n_i * mean_i) / N
    M2 = sum(M2_i) + sum(n_i * (mean_i - M) ** 2)
    C = sum(C_i) + sum(n_i * (mean_a_i - M_a) * (mean_b_i - M_b))

It never subtracts a sum of squares from a squared sum, which loses every digit on values
around 1e9 with a small spread. The pooled means ``M`` come first, added to every partial row
as windows over the group keys (``Parts.pooled``): an aggregation that refers to another
aggregation of its own group makes Polars' ``group_by`` evaluate it group by group, five times
slower with a million groups. A partial of no values (all nulls) has a null mean and variance,
so it drops out of every sum. A partial's minimum is kept too: when every partial of a group
has a variance of exactly 0 (Polars' kernels give exactly 0 for equal values, in both engines)
and the same minimum, the column is constant in the group and its moment is exactly 0, as
Polars gives, not the 1e-30 left by partial means a few ulp apart (a mean is a sum over a
count). One minimum instead of a minimum and a maximum: db-benchmark q9, 10 M rows, one core,
0.25-0.27 against 0.29-0.30 s for the partial query. Polars' rules finish the value: ``var``
and ``cov`` are null unless ``N > ddof``; ``corr`` is NaN unless both moments are positive. NaN
and infinity propagate as in Polars (a NaN moment stays NaN, also for a constant column:
``NaN * 0``).
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

F64 = pl.Float64


@dataclass(frozen=True)
class Parts:
    """One aggregation cut in two: columns a map task adds to its rows first, the partial
    aggregations over a task's rows, group aggregates the reduce side adds to each partial row
    (as windows over the group keys), the aggregations combining the partial rows of a group,
    and the aggregation's value computed from the combined columns."""

    prepare: tuple[pl.Expr, ...]
    partial: tuple[pl.Expr, ...]
    pooled: tuple[pl.Expr, ...]
    combine: tuple[pl.Expr, ...]
    value: pl.Expr
    # ``partial`` for a group of one row, computed row by row (no hash table), when known.
    per_row: tuple[pl.Expr, ...] | None = None


def _partial_moments(x: pl.Expr, p: str) -> list[pl.Expr]:
    return [
        x.mean().alias(p + "mean"),
        x.var(ddof=0).alias(p + "var"),
        x.min().alias(p + "lo"),
    ]


def _pooled_mean(n: pl.Expr, p: str) -> pl.Expr:
    return ((n * pl.col(p + "mean")).sum() / n.sum()).alias(p + "pooled")


def _deviation(p: str) -> pl.Expr:
    """A partial's mean minus the pooled mean of its group."""
    return pl.col(p + "mean") - pl.col(p + "pooled")


def _combined_m2(n: pl.Expr, p: str) -> pl.Expr:
    """M2 of a group from its partials; the null row of an all-null partial adds nothing."""
    return (pl.col(p + "var") * n + n * _deviation(p) ** 2).sum().alias(p + "m2")


def _constant_span(p: str) -> list[pl.Expr]:
    """Whether every partial of a group is flat, and the spread of their minimums."""
    return [
        (pl.col(p + "var") == 0).all().alias(p + "flat"),
        pl.col(p + "lo").min(),
        pl.col(p + "lo").max().alias(p + "hi"),
    ]


def _constant(p: str) -> pl.Expr:
    return pl.col(p + "flat") & (pl.col(p + "lo") == pl.col(p + "hi"))


def _exact(moment: pl.Expr, constant: pl.Expr) -> pl.Expr:
    return pl.when(constant).then(moment * 0.0).otherwise(moment)


def variance(column: str, ddof: int, root: bool, p: str) -> Parts:
    """``var(ddof)`` (or ``std`` when ``root``) of a numeric column, split into moments.

    >>> parts = variance("v", 1, True, "__p0")
    >>> frame = pl.DataFrame({"k": [1, 1, 1, 2], "v": [1.0, 2.0, 4.0, None]})
    >>> first = frame.head(2).group_by("k").agg(*parts.partial)
    >>> second = frame.tail(2).group_by("k").agg(*parts.partial)
    >>> both = pl.concat([first, second]).with_columns(e.over("k") for e in parts.pooled)
    >>> both = both.group_by("k").agg(*parts.combine).sort("k")
    >>> both.select(parts.value.round(6).alias("std"))["std"].to_list()
    [1.527525, None]
    """
    x = pl.col(column).cast(F64)
    n = pl.col(p + "n")
    partial = (pl.col(column).count().alias(p + "n"), *_partial_moments(x, p))
    combine = (n.sum(), _combined_m2(n, p), *_constant_span(p))
    count = n.cast(F64)
    var = pl.when(count > ddof).then(_exact(pl.col(p + "m2"), _constant(p)) / (count - ddof))
    return Parts((), partial, (_pooled_mean(n, p),), combine, var.sqrt() if root else var)


def pair(a: str, b: str, method: str, ddof: int, p: str) -> Parts:
    """``pl.corr(a, b)`` (``method="pearson"``) or ``pl.cov(a, b, ddof)``, split into moments.

    Like Polars, both use only the rows where neither column is null: a map task first nulls
    each column where the other is null.

    >>> parts = pair("a", "b", "pearson", 1, "__p0")
    >>> frame = pl.DataFrame({"k": [1] * 4, "a": [1.0, 2.0, None, 4.0], "b": [1, 3, 9, 8]})
    >>> def partial(rows):
    ...     return rows.with_columns(*parts.prepare).group_by("k").agg(*parts.partial)
    >>> both = pl.concat([partial(frame.head(2)), partial(frame.tail(2))])
    >>> both = both.with_columns(e.over("k") for e in parts.pooled)
    >>> got = both.group_by("k").agg(*parts.combine).select(parts.value).item()
    >>> abs(got - frame.select(pl.corr("a", "b")).item()) < 1e-12
    True
    """
    both = pl.col(a).is_not_null() & pl.col(b).is_not_null()
    xa, xb = (pl.when(both).then(pl.col(c).cast(F64)).alias(f"{p}_{c}") for c in (a, b))
    pa, pb, n = p + "a", p + "b", pl.col(p + "n")
    ca, cb = pl.col(f"{p}_{a}"), pl.col(f"{p}_{b}")
    partial = (
        ca.count().alias(p + "n"),
        *_partial_moments(ca, pa),
        *_partial_moments(cb, pb),
        pl.cov(ca, cb, ddof=0).alias(p + "cov"),
    )
    co_moment = pl.col(p + "cov") * n + n * _deviation(pa) * _deviation(pb)
    combine = (
        n.sum(),
        co_moment.sum().alias(p + "c"),
        _combined_m2(n, pa),
        _combined_m2(n, pb),
        *_constant_span(pa),
        *_constant_span(pb),
    )
    m2a, m2b = _exact(pl.col(pa + "m2"), _constant(pa)), _exact(pl.col(pb + "m2"), _constant(pb))
    # A constant column has no co-moment either (and the NaN of a NaN input stays).
    c = _exact(pl.col(p + "c"), _constant(pa) | _constant(pb))
    if method == "pearson":
        # NaN as 0 / 0: a NaN literal does not survive Polars' JSON form of an expression.
        nan = pl.lit(0.0) / 0.0
        value = pl.when(m2a * m2b > 0).then(c / (m2a * m2b).sqrt()).otherwise(nan)
    else:
        count = n.cast(F64)
        value = pl.when(count > ddof).then(c / (count - ddof))
    pooled = (_pooled_mean(n, pa), _pooled_mean(n, pb))
    return Parts((xa, xb), partial, pooled, combine, value)
