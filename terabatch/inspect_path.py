"""Facts about a dataset on disk, gathered without reading more than needed.

``inspect_path`` backs ``terabatch inspect``: it returns plain data (JSON-serialisable) and leaves
the display to the CLI. Parquet facts come from the footers alone; CSV and JSON Lines files have
no row count on disk, so those are counted with a terabatch job on every core.
"""

from __future__ import annotations

import json
import os
import posixpath
from typing import Any

from terabatch.errors import InputNotFoundError, TerabatchError
from terabatch.io.commit import SUCCESS
from terabatch.io.files import FORMAT_SUFFIXES, GLOB_CHARS, FileInfo, compression_of, discover
from terabatch.io.parquet import dataset_schema, hive_values, read_metadata
from terabatch.io.storage import filesystem, storage_errors
from terabatch.readers import read_csv, read_json

FORMATS = tuple(FORMAT_SUFFIXES)


def _without_codec(name: str) -> str:
    lower = name.lower()
    return lower[: lower.rfind(".")] if compression_of(lower) else lower


def format_of_name(name: str) -> str | None:
    """The format a file name's suffix declares (a compression suffix is looked through).

    >>> format_of_name("logs/day-1.csv.gz"), format_of_name("a.ndjson"), format_of_name("x.log")
    ('csv', 'json', None)
    """
    lower = _without_codec(name)
    return next((fmt for fmt, ends in FORMAT_SUFFIXES.items() if lower.endswith(ends)), None)


def default_separator(name: str) -> str:
    """Tab for ``.tsv`` files (compressed or not), comma otherwise.

    >>> default_separator("a.tsv.gz"), default_separator("a.csv")
    ('\\t', ',')
    """
    return "\t" if _without_codec(name).endswith(".tsv") else ","


def _is_hidden(relative: str) -> bool:
    # The same rule the readers follow: "_" and "." names are bookkeeping, never data.
    return any(part.startswith(("_", ".")) for part in relative.split("/") if part)


def _has_glob(spec: str) -> bool:
    return any(ch in spec for ch in GLOB_CHARS)


def _base_dir(spec: str, options: dict) -> str:
    """The dataset's root: the directory itself, the one above the glob, or a file's directory.

    Partition keys and hidden names are looked for below it, never in the directories above.
    """
    fs, root = filesystem(spec, options)
    if _has_glob(spec):
        cut = min(root.find(ch) for ch in GLOB_CHARS if ch in root)
        return posixpath.dirname(root[:cut])
    return root.rstrip("/") if fs.isdir(root) else posixpath.dirname(root)


def _candidate_names(spec: str, options: dict) -> list[str]:
    fs, root = filesystem(spec, options)
    glob = _has_glob(spec)
    if not glob and not fs.exists(root):
        raise InputNotFoundError(f"path not found: {spec!r}")
    if not glob and not fs.isdir(root):
        return [root]
    base = _base_dir(spec, options)
    found = fs.glob(root) if glob else fs.find(root)
    names = sorted(p for p in found if not _is_hidden(p[len(base) :]))
    if glob and not names:
        raise InputNotFoundError(f"no file matches {spec!r}: check the pattern and the path")
    return names


def detect_format(spec: str | os.PathLike, storage_options: dict | None = None) -> str:
    """Tell ``"csv"``, ``"json"`` or ``"parquet"`` from the names of the files a path holds.

    A directory written by terabatch says its format in ``_SUCCESS``; otherwise the first file
    with a known suffix decides.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "a.jsonl.gz").write_bytes(b"")
    >>> detect_format(d), detect_format(d / "*.gz"), detect_format("b.tsv")
    ('json', 'json', 'csv')
    """
    spec = os.fspath(spec)
    with storage_errors(spec):
        return _detect_format(spec, storage_options or {})


def _detect_format(spec: str, options: dict) -> str:
    manifest = read_manifest(spec, options)
    if manifest is not None and manifest.get("format") in FORMATS:
        return manifest["format"]
    # A single path names its format even before it exists; discovery reports it missing later.
    named = None if _has_glob(spec) else format_of_name(spec)
    if named is not None:
        return named
    for name in _candidate_names(spec, options):
        fmt = format_of_name(name)
        if fmt is not None:
            return fmt
    known = ", ".join(end for ends in FORMAT_SUFFIXES.values() for end in ends)
    raise TerabatchError(
        f"cannot tell the format of {spec!r} from its file names: expected {known} "
        "(optionally compressed)"
    )


def read_manifest(spec: str | os.PathLike, storage_options: dict | None = None) -> dict | None:
    """The ``_SUCCESS`` manifest of an output directory, or None if there is none."""
    spec = os.fspath(spec)
    if _has_glob(spec):
        return None
    fs, root = filesystem(spec, storage_options or {})
    path = posixpath.join(root.rstrip("/"), SUCCESS)
    if not fs.isfile(path):
        return None
    try:
        with fs.open(path, "r") as f:
            return json.load(f)
    except ValueError:
        raise TerabatchError(f"{path}: the _SUCCESS manifest is not valid JSON") from None


def _partitions(spec: str, files: tuple[FileInfo, ...], options: dict) -> dict[str, int]:
    """Hive keys under the dataset's directory and how many distinct values each has."""
    base = _base_dir(spec, options)
    values: dict[str, set] = {}
    for file in files:
        _, path = filesystem(file.path, options)
        relative = path[len(base) :] if path.startswith(base) else path
        for key, value in hive_values(relative):
            values.setdefault(key, set()).add(value)
    return {key: len(found) for key, found in values.items()}


def _parquet_facts(files: tuple[FileInfo, ...], options: dict) -> dict[str, Any]:
    metas = [read_metadata(f, options) for f in files]
    schema, hive = dataset_schema(files, metas)
    group_rows = [m.row_group(g).num_rows for m in metas for g in range(m.num_row_groups)]
    codecs = {
        m.row_group(g).column(c).compression.lower()
        for m in metas
        for g in range(m.num_row_groups)
        for c in range(m.num_columns)
    }
    return {
        "schema": {name: str(dtype) for name, dtype in {**schema, **hive}.items()},
        "rows": sum(m.num_rows for m in metas),
        "compression": sorted(codecs),
        "row_groups": {
            "count": len(group_rows),
            "min_rows": min(group_rows, default=0),
            "max_rows": max(group_rows, default=0),
        },
    }


def _text_facts(
    spec: str,
    fmt: str,
    files: tuple[FileInfo, ...],
    options: dict,
    workers: int | None,
    progress: bool,
) -> dict[str, Any]:
    if fmt == "csv":
        separator = default_separator(files[0].path)
        dataset = read_csv(spec, separator=separator, storage_options=options)
    else:
        dataset = read_json(spec, storage_options=options)
    return {
        "schema": {name: str(dtype) for name, dtype in dataset.schema.items()},
        "rows": dataset.count(workers=workers, progress=progress),
        "compression": sorted({f.compression or "none" for f in files}),
        "row_groups": None,
    }


def _completion(manifest: dict | None) -> dict[str, Any] | None:
    if manifest is None:
        return None
    return {
        "rows": manifest.get("rows"),
        "files": len(manifest.get("files", [])),
        "bytes": manifest.get("bytes"),
        "partition_by": manifest.get("partition_by", []),
    }


def inspect_path(
    path: str | os.PathLike,
    fmt: str | None = None,
    *,
    workers: int | None = None,
    progress: bool = False,
    storage_options: dict | None = None,
) -> dict[str, Any]:
    """Describe a file, directory or glob of CSV, JSON Lines or Parquet as plain data.

    Keys: ``path``, ``format``, ``files`` (path and bytes of each), ``file_count``,
    ``total_bytes``, ``compression``, ``schema`` (column: type), ``rows``, ``row_groups``
    (Parquet: count, min_rows, max_rows; else None), ``partitions`` (hive key: distinct values)
    and ``complete`` (the ``_SUCCESS`` manifest's rows, files and bytes, or None).
    ``storage_options`` reach remote paths (``s3://``), as for ``read_*``.

    >>> import tempfile, pathlib, polars as pl
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> for day in (1, 2):
    ...     (d / f"day={day}").mkdir()
    ...     pl.DataFrame({"x": [1, 2, 3]}).write_parquet(d / f"day={day}" / "p.parquet")
    >>> facts = inspect_path(d)
    >>> facts["format"], facts["rows"], facts["partitions"], facts["schema"]
    ('parquet', 6, {'day': 2}, {'x': 'Int64', 'day': 'Int64'})
    """
    spec = os.fspath(path)
    if fmt is not None and fmt not in FORMATS:
        raise TerabatchError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    with storage_errors(spec):
        return _inspect(spec, fmt, storage_options or {}, workers, progress)


def _inspect(
    spec: str, fmt: str | None, options: dict, workers: int | None, progress: bool
) -> dict[str, Any]:
    manifest = read_manifest(spec, options)
    fmt = fmt or _detect_format(spec, options)
    if manifest is not None and not manifest.get("files"):
        # A complete output of zero rows holds no data file: nothing to discover or read.
        files: tuple[FileInfo, ...] = ()
        details: dict[str, Any] = {"schema": {}, "rows": 0, "compression": [], "row_groups": None}
    else:
        files = discover(spec, fmt, options)
        if fmt == "parquet":
            details = _parquet_facts(files, options)
        else:
            details = _text_facts(spec, fmt, files, options, workers, progress)
    facts: dict[str, Any] = {
        "path": spec,
        "format": fmt,
        "files": [{"path": f.path, "bytes": f.size} for f in files],
        "file_count": len(files),
        "total_bytes": sum(f.size for f in files),
        **details,
    }
    facts["partitions"] = _partitions(spec, files, options)
    facts["complete"] = _completion(manifest)
    return facts
