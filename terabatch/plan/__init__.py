"""Logical plans: nodes, optimizer rules, and the cut into stages of tasks."""
