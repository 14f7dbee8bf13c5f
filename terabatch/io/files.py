"""Find the input files of a read: paths, directories, globs and lists, local or any fsspec URL."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

import fsspec
from fsspec.implementations.local import LocalFileSystem

from terabatch.errors import InputChangedError, InputNotFoundError, InputReadError
from terabatch.io.storage import (
    check_bucket,
    filesystem,
    full_url,
    open_for_reading,
    storage_errors,
)

COMPRESSION_BY_SUFFIX = {
    ".gz": "gzip",
    ".gzip": "gzip",
    ".zst": "zstd",
    ".zstd": "zstd",
    ".bz2": "bz2",
}

FORMAT_SUFFIXES = {
    "csv": (".csv", ".tsv", ".txt"),
    "json": (".jsonl", ".ndjson", ".json"),
    "parquet": (".parquet", ".pq"),
}

GLOB_CHARS = "*?["


@dataclass(frozen=True)
class FileInfo:
    """One input file: where it is, how big it is, when it changed, how it is compressed."""

    path: str
    size: int
    mtime: float
    compression: str | None
    # The path below the directory or glob the user named: where hive keys may be read from.
    relative: str = ""

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]


def compression_of(path: str) -> str | None:
    """Return the compression a file name's suffix declares, or None.

    >>> compression_of("logs/day.csv.gz"), compression_of("a.jsonl")
    ('gzip', None)
    """
    lower = path.lower()
    for suffix, codec in COMPRESSION_BY_SUFFIX.items():
        if lower.endswith(suffix):
            return codec
    return None


def _is_hidden(relative: str) -> bool:
    # Files under "_" or "." names are bookkeeping (_SUCCESS, _quarantine, .terabatch): never data.
    return any(part.startswith(("_", ".")) for part in relative.split("/") if part)


def _matches_format(path: str, fmt: str) -> bool:
    name = path.lower()
    codec = compression_of(name)
    if codec:
        name = name[: name.rfind(".")]
    return name.endswith(FORMAT_SUFFIXES[fmt])


def _size_and_mtime(detail: dict) -> tuple[int, float]:
    mtime = detail.get("mtime") or detail.get("LastModified") or detail.get("created") or 0
    if hasattr(mtime, "timestamp"):
        mtime = mtime.timestamp()
    return int(detail.get("size") or 0), float(mtime)


def _info(
    fs: fsspec.AbstractFileSystem, path: str, detail: dict | None = None, base: str | None = None
) -> FileInfo:
    detail = detail or fs.info(path)
    size, mtime = _size_and_mtime(detail)
    if isinstance(fs, LocalFileSystem):
        # The target's stat, as open_input sees it: a listing describes a symbolic link itself.
        try:
            st = os.stat(path)
            size, mtime = st.st_size, st.st_mtime
        except OSError:
            pass  # a dangling link: opening it reports the problem
    full = full_url(fs, path)
    relative = path[len(base) :].lstrip("/") if base is not None else path.rsplit("/", 1)[-1]
    return FileInfo(full, size, mtime, compression_of(path), relative)


def _expand_one(spec: str, fmt: str, storage_options: dict) -> list[FileInfo]:
    spec = os.fspath(spec)
    fs, root = filesystem(spec, storage_options)
    with storage_errors(spec):
        return _expand(fs, root, spec, fmt)


def _expand(fs: fsspec.AbstractFileSystem, root: str, spec: str, fmt: str) -> list[FileInfo]:
    if any(ch in spec for ch in GLOB_CHARS):
        found = fs.glob(root, detail=True)
        # Hidden parts are looked for below the pattern's fixed directory, as for a directory
        # read: "out/**/*.parquet" must not pick up "out/_temporary/..." files.
        fixed = root[: min((root.index(ch) for ch in GLOB_CHARS if ch in root), default=0)]
        base = fixed.rsplit("/", 1)[0] if "/" in fixed else ""
        files = [
            _info(fs, p, d, base)
            for p, d in sorted(found.items())
            if d.get("type") != "directory" and not _is_hidden(p[len(base) :])
        ]
        if not files:
            check_bucket(fs, root, spec)
            raise InputNotFoundError(f"no file matches {spec!r}: check the pattern and the path")
        return files
    if not fs.exists(root):
        check_bucket(fs, root, spec)
        raise InputNotFoundError(f"path not found: {spec!r}")
    if fs.isdir(root):
        found = fs.find(root, detail=True)
        base = root.rstrip("/")
        files = [
            _info(fs, p, d, base)
            for p, d in sorted(found.items())
            if not _is_hidden(p[len(base) :]) and _matches_format(p, fmt)
        ]
        if not files:
            raise InputNotFoundError(
                f"directory {spec!r} holds no {fmt} file "
                f"(looked for {', '.join(FORMAT_SUFFIXES[fmt])}, optionally compressed)"
            )
        return files
    return [_info(fs, root)]


def discover(
    paths: str | os.PathLike | Sequence[str | os.PathLike], fmt: str, storage_options: dict
) -> tuple[FileInfo, ...]:
    """Expand paths, directories and globs into a sorted, de-duplicated tuple of files.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "b.csv").write_text("x\\n1\\n"); _ = (d / "a.csv").write_text("x\\n2\\n")
    >>> [f.name for f in discover(str(d / "*.csv"), "csv", {})]
    ['a.csv', 'b.csv']
    """
    specs = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    if not specs:
        raise InputNotFoundError("no input path given")
    seen: dict[str, FileInfo] = {}
    for spec in specs:
        for info in _expand_one(os.fspath(spec), fmt, storage_options):
            seen.setdefault(info.path, info)
    return tuple(seen.values())


def is_local(path: str) -> bool:
    """Whether a path names a file on this machine's filesystem."""
    return "://" not in path or path.startswith("file://")


def open_input(file: FileInfo, storage_options: dict, sequential: bool = False) -> BinaryIO:
    """Open an input file for binary reading, checking it is still the file that was planned.

    A file that disappeared, or whose size or modification time differs from what ``discover``
    recorded, raises ``InputChangedError``: reading it would mix two versions of the data.
    ``sequential`` asks for a read-ahead buffer, for readers that take small pieces in order.
    """
    try:
        if is_local(file.path):
            handle: BinaryIO = open(file.path.removeprefix("file://"), "rb")  # noqa: SIM115
            st = os.fstat(handle.fileno())
            now = (st.st_size, st.st_mtime)
        else:
            fs, inner = filesystem(file.path, storage_options)
            with storage_errors(file.path):
                handle = open_for_reading(fs, inner, sequential)
                detail = getattr(handle, "details", None) or fs.info(inner)
            now = _size_and_mtime(detail)
    except FileNotFoundError:
        raise InputChangedError(
            f"{file.path}: file disappeared during the run (it was listed when the job was "
            "planned); rerun"
        ) from None
    except PermissionError:
        raise InputReadError(f"{file.path}: permission denied") from None
    except IsADirectoryError:
        raise InputReadError(f"{file.path}: is a directory, not a file") from None
    if now != (file.size, file.mtime):
        handle.close()
        what = (
            f"size {file.size:,} -> {now[0]:,} bytes"
            if now[0] != file.size
            else "modification time changed"
        )
        raise InputChangedError(f"{file.path}: file changed during the run ({what}); rerun")
    return handle
