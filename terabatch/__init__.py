"""terabatch: process CSV, JSON Lines and Parquet far larger than memory, on every core.

>>> import terabatch as tb
>>> callable(tb.read_csv) and callable(tb.read_parquet)
True
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from terabatch.dataset import Dataset
    from terabatch.errors import TerabatchError
    from terabatch.readers import read_csv, read_json, read_parquet
    from terabatch.run.summary import JobSummary

__version__ = "0.1.0"

__all__ = [
    "Dataset",
    "JobSummary",
    "TerabatchError",
    "__version__",
    "read_csv",
    "read_json",
    "read_parquet",
]

# Imported on first use: worker processes import ``terabatch.exec`` and need none of the user
# API (the planner, explain, progress bars), which would add a third to their start-up.
_HOMES = {
    "Dataset": "terabatch.dataset",
    "JobSummary": "terabatch.run.summary",
    "TerabatchError": "terabatch.errors",
    "read_csv": "terabatch.readers",
    "read_json": "terabatch.readers",
    "read_parquet": "terabatch.readers",
}


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'terabatch' has no attribute {name!r}")
    if home == "terabatch.readers":
        # A reader is the start of a job: start its workers before importing Polars here, so
        # that their start-up overlaps ours (``terabatch/exec/process.py``).
        from terabatch.exec.process import start_spares

        start_spares()
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
