"""Logical plan nodes: frozen descriptions of what to compute, built by ``Dataset`` methods.

Nodes hold Polars expressions, which overload ``==``; ``eq=False`` keeps dataclass equality from
building expressions. Plans are compared through ``explain()`` text instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from terabatch.io.sources import Source


@dataclass(frozen=True, eq=False)
class Scan:
    """Read a source; ``columns`` and ``predicate`` are filled in by pushdown rules."""

    source: Source
    columns: tuple[str, ...] | None = None
    predicate: pl.Expr | None = None


@dataclass(frozen=True, eq=False)
class Filter:
    child: Node
    predicate: pl.Expr


@dataclass(frozen=True, eq=False)
class WithColumns:
    child: Node
    exprs: tuple[pl.Expr, ...]


@dataclass(frozen=True, eq=False)
class Select:
    child: Node
    exprs: tuple[pl.Expr, ...]


@dataclass(frozen=True, eq=False)
class Drop:
    child: Node
    columns: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class Rename:
    child: Node
    mapping: tuple[tuple[str, str], ...]


@dataclass(frozen=True, eq=False)
class MapBatches:
    """Run a user function ``DataFrame -> DataFrame`` on every batch."""

    child: Node
    fn: Callable[[pl.DataFrame], pl.DataFrame]
    batch_size: int | None
    schema: pl.Schema | None
    on_error: str = "fail"

    @property
    def name(self) -> str:
        return getattr(self.fn, "__qualname__", None) or repr(self.fn)


@dataclass(frozen=True, eq=False)
class Head:
    """The first ``n`` rows, in input order."""

    child: Node
    n: int


@dataclass(frozen=True, eq=False)
class TopK:
    """The ``k`` rows with the largest (or, with ``largest=False``, smallest) ``by`` values."""

    child: Node
    k: int
    by: tuple[pl.Expr, ...]
    largest: bool


@dataclass(frozen=True, eq=False)
class Sort:
    """A global order on key columns: range partitions from a sample, each sorted."""

    child: Node
    by: tuple[str, ...]
    descending: tuple[bool, ...]
    nulls_last: bool


@dataclass(frozen=True, eq=False)
class SampleKeys:
    """Physical: keep at most ``rows`` evenly spaced rows of the ``by`` columns per batch."""

    child: Node
    by: tuple[str, ...]
    rows: int


@dataclass(frozen=True, eq=False)
class Precombine:
    """Physical, the map side of a shuffle: ``shrink`` (a partial ``Aggregate``, or a ``Unique``)
    over all of a task's batches at once, up to ``hold_bytes`` of rows at a time (half as many
    until its keys are seen to repeat).

    ``per_row`` selects, from every row, the columns ``shrink`` would give a group of that row
    alone: what the task ships instead, row by row, once its keys prove nearly all distinct.
    Once keys are seen to repeat, one query takes more than ``hold_bytes`` while its worker
    holds less than ``memory_cap`` bytes (``None``: no more). ``buckets`` names the shuffle's
    key columns (all columns if empty) and partitions: many string keys are grouped partition
    by partition.
    """

    child: Node
    shrink: Aggregate | Unique
    hold_bytes: int
    per_row: tuple[pl.Expr, ...] | None = None
    memory_cap: int | None = None
    buckets: tuple[tuple[str, ...], int] | None = None


@dataclass(frozen=True, eq=False)
class Join:
    """Join ``child`` (left) with ``other`` (right) on key columns, after a shuffle of both."""

    child: Node
    other: Node
    left_on: tuple[str, ...]
    right_on: tuple[str, ...]
    how: str
    suffix: str


@dataclass(frozen=True, eq=False)
class BroadcastJoin:
    """Physical: join every batch with a small right side, shipped whole to each task.

    ``slot`` names the stage whose collected rows become ``right``.
    """

    child: Node
    right: pl.DataFrame
    left_on: tuple[str, ...]
    right_on: tuple[str, ...]
    how: str
    suffix: str
    slot: str = ""


@dataclass(frozen=True, eq=False)
class Aggregate:
    """``group_by(keys).agg(aggs)``: needs every row of a key together, so a hash shuffle."""

    child: Node
    keys: tuple[pl.Expr, ...]
    aggs: tuple[pl.Expr, ...]


@dataclass(frozen=True, eq=False)
class Unique:
    """Keep one row per distinct ``subset`` (all columns when None), by ``keep``."""

    child: Node
    subset: tuple[str, ...] | None
    keep: str


@dataclass(frozen=True, eq=False)
class Window:
    """``with_columns`` holding ``over(keys)`` windows: computed per key after a shuffle."""

    child: Node
    exprs: tuple[pl.Expr, ...]
    keys: tuple[str, ...]


Node = (
    Scan
    | Filter
    | WithColumns
    | Select
    | Drop
    | Rename
    | MapBatches
    | Head
    | TopK
    | Aggregate
    | Unique
    | Window
    | Sort
    | SampleKeys
    | Precombine
    | Join
    | BroadcastJoin
)

Narrow = Filter | WithColumns | Select | Drop | Rename | MapBatches | Head | TopK

Shuffle = Aggregate | Unique | Window | Sort | Join


def lineage(node: Node) -> tuple[Scan, list[Narrow | Shuffle]]:
    """Split a plan into its left-most scan and the operators above it, bottom first.

    A plan is linear except for the right side of a ``Join`` (``Join.other``), itself a plan.
    """
    ops: list[Narrow] = []
    while not isinstance(node, Scan):
        ops.append(node)
        node = node.child
    ops.reverse()
    return node, ops


def scans(node: Node) -> list[Scan]:
    """Every scan a plan reads: the left-most one first, then those of joined plans."""
    scan, ops = lineage(node)
    found = [scan]
    for op in ops:
        if isinstance(op, Join):
            found += scans(op.other)
    return found


def rebuild(scan: Scan, ops: list[Narrow | Shuffle]) -> Node:
    """Stack operators (bottom first) back onto a scan."""
    from dataclasses import replace

    node: Node = scan
    for op in ops:
        node = replace(op, child=node)
    return node
