"""Read only the columns the plan uses: walk from the top, collecting each operator's inputs."""

from __future__ import annotations

from dataclasses import replace

from terabatch.plan.expressions import input_columns, output_name
from terabatch.plan.nodes import (
    Aggregate,
    Drop,
    Filter,
    Head,
    Join,
    MapBatches,
    Node,
    Rename,
    Select,
    Sort,
    TopK,
    Unique,
    Window,
    WithColumns,
    lineage,
    rebuild,
)


def _union_inputs(exprs, needed: set[str]) -> set[str] | None:
    for expr in exprs:
        reads = input_columns(expr)
        if reads is None:
            return None
        needed |= reads
    return needed


def _needed_below(op: Node, needed: set[str] | None) -> set[str] | None:
    """Columns the input of ``op`` must provide, given what its output must provide."""
    if isinstance(op, MapBatches):
        return None
    if isinstance(op, Select):
        return _union_inputs(op.exprs, set())
    if isinstance(op, Aggregate):
        return _union_inputs((*op.keys, *op.aggs), set())
    if isinstance(op, Unique):
        return None if needed is None or op.subset is None else set(needed) | set(op.subset)
    if needed is None:
        return None
    if isinstance(op, Window):
        produced = {output_name(e) for e in op.exprs}
        kept = {n for n in needed if n not in produced} | set(op.keys)
        return _union_inputs(op.exprs, kept)
    if isinstance(op, WithColumns):
        produced = {output_name(e) for e in op.exprs}
        return _union_inputs(op.exprs, {n for n in needed if n not in produced})
    if isinstance(op, Filter):
        return _union_inputs([op.predicate], set(needed))
    if isinstance(op, Rename):
        back = {new: old for old, new in op.mapping}
        return {back.get(n, n) for n in needed}
    if isinstance(op, Drop | Head):
        return set(needed)
    if isinstance(op, TopK):
        return _union_inputs(op.by, set(needed))
    if isinstance(op, Sort):
        return set(needed) | set(op.by)
    if isinstance(op, Join):
        return None
    raise TypeError(f"unknown operator {type(op).__name__}")


def prune_columns(plan: Node) -> Node:
    scan, ops = lineage(plan)
    needed: set[str] | None = None
    for op in reversed(ops):
        needed = _needed_below(op, needed)
    if needed is None:
        return plan
    columns = tuple(n for n in scan.source.schema.names() if n in needed)
    if scan.columns is not None:
        columns = tuple(n for n in columns if n in scan.columns)
    return rebuild(replace(scan, columns=columns), ops)
