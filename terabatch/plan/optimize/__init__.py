"""Optimizer rules: pure functions ``plan -> plan``, applied in the order of ``RULES``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from terabatch.plan.nodes import Join, Node, lineage, rebuild
from terabatch.plan.optimize.prune_columns import prune_columns
from terabatch.plan.optimize.pushdown_predicates import pushdown_predicates

Rule = Callable[[Node], Node]

RULES: tuple[Rule, ...] = (pushdown_predicates, prune_columns)


def optimize(plan: Node, rules: tuple[Rule, ...] = RULES) -> Node:
    """Apply each rule once, in order, to the plan and to the right side of each join."""
    for rule in rules:
        plan = rule(plan)
    scan, ops = lineage(plan)
    if not any(isinstance(op, Join) for op in ops):
        return plan
    return rebuild(
        scan,
        [
            replace(op, other=optimize(op.other, rules)) if isinstance(op, Join) else op
            for op in ops
        ],
    )
