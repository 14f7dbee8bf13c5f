"""terabatch: process CSV, JSON Lines and Parquet far larger than memory, on every core.

>>> import terabatch as tb
>>> callable(tb.read_csv) and callable(tb.read_parquet)
True
"""

from __future__ import annotations

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
