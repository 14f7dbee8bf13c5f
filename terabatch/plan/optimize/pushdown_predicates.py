"""Copy filters down to the scan, so that a Parquet read can skip row groups by statistics.

The filter nodes stay where they are: the scan only uses the predicate to decide which row groups
may hold matching rows, and every row read is still filtered exactly. A filter travels down
through ``with_columns`` only if it reads none of the columns that ``with_columns`` defines.
"""

from __future__ import annotations

from dataclasses import replace
from functools import reduce

import polars as pl

from terabatch.plan.expressions import input_columns, output_name
from terabatch.plan.nodes import Filter, Node, WithColumns, lineage, rebuild


def pushdown_predicates(plan: Node) -> Node:
    scan, ops = lineage(plan)
    pushed: list[pl.Expr] = []
    defined: set[str] = set()
    for op in ops:
        if isinstance(op, Filter):
            reads = input_columns(op.predicate)
            if reads is not None and not reads & defined:
                pushed.append(op.predicate)
        elif isinstance(op, WithColumns):
            names = [output_name(e) for e in op.exprs]
            if any(n is None for n in names):
                break
            defined |= set(names)
        else:
            break
    if not pushed:
        return plan
    if scan.predicate is not None:
        pushed.insert(0, scan.predicate)
    predicate = reduce(lambda a, b: a & b, pushed)
    return rebuild(replace(scan, predicate=predicate), ops)
