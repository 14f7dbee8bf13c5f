"""Operators that run inside a task, batch by batch."""
