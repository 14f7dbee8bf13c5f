"""Executors run tasks; the task runtime turns one task into a result."""
