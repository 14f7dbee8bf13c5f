"""``read_csv``, ``read_json`` and ``read_parquet``: find the files, settle the schema, return a
lazy ``Dataset``. Reading the data waits for a terminal method.

Every reader checks each file when it is called — it is not empty, it opens, its header or
footer is sound, its columns agree with the others' — and ``schema_mode`` and ``on_bad_files``
say what to do about files that disagree or are bad (see ``io/schema_drift.py`` and
``io/bad_files.py``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import replace

import polars as pl

from terabatch.dataset import Dataset
from terabatch.errors import TerabatchError
from terabatch.exec.process import start_spares
from terabatch.io import sources
from terabatch.io.bad_files import ON_BAD_FILES
from terabatch.io.bad_rows import check_mode
from terabatch.io.csv import CsvOptions
from terabatch.io.files import discover
from terabatch.io.schema_drift import SCHEMA_MODES
from terabatch.plan.nodes import Scan

Paths = str | os.PathLike | Sequence[str | os.PathLike]


def _check_modes(schema_mode: str, on_bad_files: str) -> None:
    if schema_mode not in SCHEMA_MODES:
        raise TerabatchError(f"schema_mode must be 'strict' or 'union', not {schema_mode!r}")
    if on_bad_files not in ON_BAD_FILES:
        raise TerabatchError(f"on_bad_files must be 'fail' or 'skip', not {on_bad_files!r}")


def read_csv(
    source: Paths,
    *,
    schema: Mapping[str, pl.DataType] | None = None,
    separator: str = ",",
    quote_char: str = '"',
    newlines_in_values: bool | None = None,
    on_bad_rows: str = "fail",
    schema_mode: str = "strict",
    on_bad_files: str = "fail",
    storage_options: dict | None = None,
) -> Dataset:
    """Read CSV files: a path, a directory, a glob or a list; local or any fsspec URL.

    ``.gz``, ``.zst`` and ``.bz2`` files are decompressed. Types come from ``schema`` (all or
    some columns) or are inferred from the first megabyte of the first file (and the first
    16 KiB of the others). Large uncompressed files are split so that every worker reads a
    part; ``newlines_in_values=True`` makes splitting respect quoted fields that hold line
    breaks (detected from the sample when left as None). A file holding only its header is a
    file of zero rows.

    ``schema_mode="strict"`` (default) makes files that disagree on their columns (one added,
    removed or retyped) an error naming the file and the column; ``"union"`` combines them as
    ``pl.concat(how="diagonal_relaxed")`` would. ``on_bad_files="skip"`` leaves out the files
    found bad here (empty, unreadable, corrupt, drifting under strict) with a warning each,
    recording ``(path, reason)`` in the source's ``skipped_files``. Problems found while the
    data is read (a stream truncated further on, a file changed during the run) always fail.

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
    start_spares()
    if len(separator) != 1 or len(quote_char) != 1:
        raise TerabatchError("separator and quote_char must be single characters")
    _check_modes(schema_mode, on_bad_files)
    opts = dict(storage_options or {})
    files = discover(source, "csv", opts)
    mode = check_mode("on_bad_rows", on_bad_rows)
    options = CsvOptions(separator, quote_char, bool(newlines_in_values))
    src = sources.open_csv(
        files,
        opts,
        dict(schema) if schema else None,
        options,
        newlines_in_values is None,
        schema_mode,
        on_bad_files,
    )
    return Dataset(Scan(replace(src, on_bad_rows=mode)))


def read_json(
    source: Paths,
    *,
    schema: Mapping[str, pl.DataType] | None = None,
    on_bad_rows: str = "fail",
    schema_mode: str = "strict",
    on_bad_files: str = "fail",
    storage_options: dict | None = None,
) -> Dataset:
    """Read JSON Lines files (one JSON object per line), optionally compressed.

    Types come from ``schema`` or are inferred from the first megabyte of the first file (and
    the first 16 KiB of the others). A given schema is the dataset's: fields a file lacks
    read as null, fields it does not name are ignored, and files are not compared.

    ``schema_mode="strict"`` (default) makes files that disagree on their columns (one added,
    removed or retyped) an error naming the file and the column; ``"union"`` combines them as
    ``pl.concat(how="diagonal_relaxed")`` would. ``on_bad_files="skip"`` leaves out the files
    found bad here (empty, unreadable, corrupt, drifting under strict) with a warning each,
    recording ``(path, reason)`` in the source's ``skipped_files``. Problems found while the
    data is read (a stream truncated further on, a file changed during the run) always fail.

    ``on_bad_rows`` is as for ``read_csv``: a line that is not a JSON object, or holds a value
    of the wrong type, fails the job, goes to the quarantine, or is skipped.

    >>> import tempfile, pathlib, terabatch as tb
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "t.jsonl"
    >>> _ = path.write_text('{"user": "a", "bytes": 10}\\n')
    >>> tb.read_json(path).collect()["bytes"].to_list()
    [10]
    """
    start_spares()
    _check_modes(schema_mode, on_bad_files)
    opts = dict(storage_options or {})
    mode = check_mode("on_bad_rows", on_bad_rows)
    files = discover(source, "json", opts)
    src = sources.open_json(
        files, opts, dict(schema) if schema else None, schema_mode, on_bad_files, mode
    )
    return Dataset(Scan(src))


def read_parquet(
    source: Paths,
    *,
    schema_mode: str = "strict",
    on_bad_files: str = "fail",
    storage_options: dict | None = None,
) -> Dataset:
    """Read Parquet files or a (hive-partitioned) directory of them.

    Every footer is read when called: a file that is not Parquet or whose footer is corrupt
    is found then. Under strict, column types must be equal in every file.

    ``schema_mode="strict"`` (default) makes files that disagree on their columns (one added,
    removed or retyped) an error naming the file and the column; ``"union"`` combines them as
    ``pl.concat(how="diagonal_relaxed")`` would. ``on_bad_files="skip"`` leaves out the files
    found bad here (empty, unreadable, corrupt, drifting under strict) with a warning each,
    recording ``(path, reason)`` in the source's ``skipped_files``. Problems found while the
    data is read (a stream truncated further on, a file changed during the run) always fail.

    >>> import tempfile, pathlib, polars as pl, terabatch as tb
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "t.parquet"
    >>> pl.DataFrame({"x": [1, 2, 3]}).write_parquet(path)
    >>> tb.read_parquet(path).count()
    3
    """
    start_spares()
    _check_modes(schema_mode, on_bad_files)
    opts = dict(storage_options or {})
    files = discover(source, "parquet", opts)
    return Dataset(Scan(sources.open_parquet(files, opts, schema_mode, on_bad_files)))
