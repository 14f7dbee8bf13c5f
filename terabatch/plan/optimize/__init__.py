"""Optimizer rules: pure functions ``plan -> plan``, applied in the order of ``RULES``."""

from __future__ import annotations

from collections.abc import Callable

from terabatch.plan.nodes import Node
from terabatch.plan.optimize.prune_columns import prune_columns
from terabatch.plan.optimize.pushdown_predicates import pushdown_predicates

Rule = Callable[[Node], Node]

RULES: tuple[Rule, ...] = (pushdown_predicates, prune_columns)


def optimize(plan: Node, rules: tuple[Rule, ...] = RULES) -> Node:
    """Apply each rule once, in order."""
    for rule in rules:
        plan = rule(plan)
    return plan
