"""``read_csv``, ``read_json`` and ``read_parquet``: find the files, settle the schema, return a
lazy ``Dataset``. Reading the data waits for a terminal method."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import replace

import polars as pl

from terabatch.dataset import Dataset
from terabatch.errors import TerabatchError
from terabatch.io import sources
from terabatch.io.bad_rows import check_mode
from terabatch.io.files import discover
from terabatch.plan.nodes import Scan

Paths = str | os.PathLike | Sequence[str | os.PathLike]


def read_csv(
    source: Paths,
    *,
    schema: Mapping[str, pl.DataType] | None = None,
    separator: str = ",",
    quote_char: str = '"',
    newlines_in_values: bool | None = None,
    on_bad_rows: str = "fail",
    storage_options: dict | None = None,
) -> Dataset:
    """Read CSV files: a path, a directory, a glob or a list; local or any fsspec URL.

    ``.gz``, ``.zst`` and ``.bz2`` files are decompressed. Types come from ``schema`` (all or
    some columns) or are inferred from the first megabyte. Large uncompressed files are split so
    that every worker reads a part; ``newlines_in_values=True`` makes splitting respect quoted
    fields that hold line breaks (detected from the sample when left as None).

    A bad row (wrong number of fields, a value that does not parse as its column's type,
    invalid UTF-8) fails the job with its file, line and reason (``on_bad_rows="fail"``), or
    goes to ``<output>/_quarantine/`` with its file, line, byte offset, raw text and reason
    (``"quarantine"``), or is dropped and counted (``"skip"``).

    >>> import tempfile, pathlib, terabatch as tb
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "t.csv"
    >>> _ = path.write_text("user,bytes\\na,10\\n")
    >>> tb.read_csv(path).schema
    Schema([('user', String), ('bytes', Int64)])
    """
    if len(separator) != 1 or len(quote_char) != 1:
        raise TerabatchError("separator and quote_char must be single characters")
    opts = dict(storage_options or {})
    files = discover(source, "csv", opts)
    mode = check_mode("on_bad_rows", on_bad_rows)
    src = sources.open_csv(
        files, opts, dict(schema) if schema else None, separator, quote_char, newlines_in_values
    )
    return Dataset(Scan(replace(src, on_bad_rows=mode)))


def read_json(
    source: Paths,
    *,
    schema: Mapping[str, pl.DataType] | None = None,
    on_bad_rows: str = "fail",
    storage_options: dict | None = None,
) -> Dataset:
    """Read JSON Lines files (one JSON object per line), optionally compressed.

    ``on_bad_rows`` is as for ``read_csv``: a line that is not a JSON object, or holds a value
    of the wrong type, fails the job, goes to the quarantine, or is skipped.

    >>> import tempfile, pathlib, terabatch as tb
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "t.jsonl"
    >>> _ = path.write_text('{"user": "a", "bytes": 10}\\n')
    >>> tb.read_json(path).collect()["bytes"].to_list()
    [10]
    """
    opts = dict(storage_options or {})
    mode = check_mode("on_bad_rows", on_bad_rows)
    files = discover(source, "json", opts)
    return Dataset(Scan(sources.open_json(files, opts, dict(schema) if schema else None, mode)))


def read_parquet(source: Paths, *, storage_options: dict | None = None) -> Dataset:
    """Read Parquet files or a (hive-partitioned) directory of them.

    >>> import tempfile, pathlib, polars as pl, terabatch as tb
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "t.parquet"
    >>> pl.DataFrame({"x": [1, 2, 3]}).write_parquet(path)
    >>> tb.read_parquet(path).count()
    3
    """
    opts = dict(storage_options or {})
    files = discover(source, "parquet", opts)
    return Dataset(Scan(sources.open_parquet(files, opts)))
