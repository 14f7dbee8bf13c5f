"""Reaching files through fsspec: local disks, shared filesystems and object stores such as S3.

Everything terabatch reads or writes goes through ``filesystem``. Object stores differ from a
disk in ways the rest of the package must not have to know about, so they are handled here:

- the package of a protocol (s3fs for ``s3://``) is an optional extra: a missing one is a
  one-line error saying what to install, not an ``ImportError``;
- a missing bucket, missing or wrong credentials and an unreachable endpoint are one-line errors
  naming the URL (``storage_errors``); they never show ``storage_options`` values, which hold
  secrets;
- "directories" are only key prefixes, so a directory is moved file by file (``replace_tree``) and
  ``makedirs`` on a missing bucket would create the bucket: writers check it first
  (``check_bucket``);
- listings are never cached (see ``UNCACHED_LISTINGS``);
- remote files are opened without s3fs' 50 MiB read-ahead for random access (each read is one
  ranged request of exactly what the reader asked for), and with a modest read-ahead for
  streams that read in small pieces, such as decompression.

Credentials and endpoints come from ``storage_options`` or, when absent, from the standard AWS
environment (``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``, config files, ``AWS_ENDPOINT_URL``), which
s3fs reads by itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import IO
from urllib.parse import urlsplit

import fsspec
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

from terabatch.errors import InputReadError, StorageError, TerabatchError

# The optional extra that provides each protocol's fsspec implementation.
EXTRAS = {"s3": "s3", "s3a": "s3"}
# s3fs caches directory listings (sizes, ETags) in each filesystem instance, and fsspec shares
# instances between calls and jobs: a file that a worker or another job wrote or replaced would
# stay invisible, or fail to open because its cached ETag is gone. A listing is cheap next to
# reading the data, so terabatch always lists afresh.
UNCACHED_LISTINGS = {"use_listings_cache": False}
CACHING_PROTOCOLS = ("s3", "s3a")
SEQUENTIAL_BLOCK = 8 << 20
CREDENTIALS_HINT = (
    "check the credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, "
    "or storage_options) and that they may access this bucket"
)


def protocol_of(url: str) -> str:
    """The protocol of a URL; ``"file"`` for a plain path.

    >>> protocol_of("s3://bucket/key.csv"), protocol_of("data/x.csv")
    ('s3', 'file')
    """
    return url.split("://", 1)[0].lower() if "://" in url else "file"


def filesystem(url: str, storage_options: dict) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem of ``url`` and the path within it.

    >>> fs, path = filesystem("/tmp/x.csv", {})
    >>> type(fs).__name__, path
    ('LocalFileSystem', '/tmp/x.csv')
    """
    protocol = protocol_of(url)
    if protocol in CACHING_PROTOCOLS:
        storage_options = {**UNCACHED_LISTINGS, **storage_options}
    try:
        return url_to_fs(url, **storage_options)
    except ImportError as exc:
        extra = EXTRAS.get(protocol)
        if extra is not None:
            raise StorageError(
                f"{url}: {protocol}:// paths need the s3fs package, which is not installed; "
                f'install it with: pip install "terabatch[{extra}]"'
            ) from None
        raise StorageError(
            f"{url}: {protocol}:// paths need a package that is not installed ({_first_line(exc)})"
        ) from None


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, LocalFileSystem)


def full_url(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """A path from ``fs`` as a URL that reaches the same file again (``s3://`` kept).

    >>> full_url(filesystem("/tmp", {})[0], "/tmp/a.csv")
    '/tmp/a.csv'
    """
    return path if is_local(fs) else fs.unstrip_protocol(path)


def open_for_reading(
    fs: fsspec.AbstractFileSystem, path: str, sequential: bool = False
) -> IO[bytes]:
    """Open a file for binary reading, with a read cache that suits the access pattern.

    Random access (Parquet column chunks, byte-range splits, record chunks) opens remote files
    without read-ahead, so a read is one request for exactly its bytes and a worker holds no
    hidden buffer. ``sequential`` reads in small pieces (decompression) get an 8 MiB read-ahead.
    """
    if is_local(fs):
        return fs.open(path, "rb")
    if sequential:
        return fs.open(path, "rb", block_size=SEQUENTIAL_BLOCK, cache_type="readahead")
    return fs.open(path, "rb", cache_type="none")


def _bucket(fs: fsspec.AbstractFileSystem, path: str) -> str | None:
    """The bucket of a path on an object store with buckets (S3, GCS), else None."""
    split = getattr(fs, "split_path", None)
    return split(path)[0] if callable(split) else None


def check_bucket(fs: fsspec.AbstractFileSystem, path: str, url: str) -> None:
    """Raise ``StorageError`` when ``path`` is on an object store and its bucket does not exist.

    s3fs' ``makedirs`` would create a missing bucket: a misspelt name must be an error instead.
    """
    bucket = _bucket(fs, path)
    if bucket is not None and not fs.exists(bucket):
        raise StorageError(
            f"{url}: bucket {bucket!r} does not exist (or these credentials cannot see it); "
            "check the bucket name and the endpoint (endpoint_url, AWS_ENDPOINT_URL)"
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _botocore_error(exc: BaseException) -> str | None:
    """The kind of a botocore error (by class name: botocore is an optional dependency)."""
    for cls in type(exc).__mro__:
        if cls.__module__.startswith("botocore") and cls.__name__ in (
            "NoCredentialsError",
            "PartialCredentialsError",
            "ProfileNotFound",
            "EndpointConnectionError",
            "ConnectTimeoutError",
        ):
            return cls.__name__
    return None


@contextlib.contextmanager
def storage_errors(url: str) -> Iterator[None]:
    """Turn access problems of a storage location into one-line ``StorageError``s naming ``url``.

    A missing file is left to the caller, which knows whether that is an error.
    """
    try:
        yield
    except TerabatchError:
        raise
    except PermissionError as exc:
        if protocol_of(url) == "file":
            raise InputReadError(f"{url}: permission denied ({exc.strerror or exc})") from None
        raise StorageError(
            f"{url}: access denied ({_first_line(exc)}); {CREDENTIALS_HINT}"
        ) from None
    except FileNotFoundError as exc:
        if "bucket does not exist" in str(exc).lower():
            bucket = urlsplit(url).netloc or url
            raise StorageError(
                f"{url}: bucket {bucket!r} does not exist; check the bucket name and the "
                "endpoint (endpoint_url, AWS_ENDPOINT_URL)"
            ) from None
        raise
    except Exception as exc:
        kind = _botocore_error(exc)
        if kind in ("NoCredentialsError", "PartialCredentialsError", "ProfileNotFound"):
            raise StorageError(
                f"{url}: no usable AWS credentials ({_first_line(exc)}); set AWS_ACCESS_KEY_ID "
                "and AWS_SECRET_ACCESS_KEY or AWS_PROFILE, or pass storage_options"
            ) from None
        if kind is not None:
            raise StorageError(
                f"{url}: cannot reach the storage endpoint ({_first_line(exc)}); check "
                "endpoint_url / AWS_ENDPOINT_URL and the network"
            ) from None
        raise


def replace_tree(fs: fsspec.AbstractFileSystem, source: str, target: str) -> None:
    """Make the directory ``target`` hold exactly the files of ``source``, and remove ``source``.

    A missing ``source`` leaves an empty ``target``. On a disk this is one rename. On an object
    store a directory is a key prefix and a rename is a copy and a delete; fsspec's recursive
    ``mv`` also tries to copy the prefixes themselves, which fails. So the files are listed,
    copied and deleted in three batches, without the existence checks a disk needs.
    """
    if is_local(fs):
        if not fs.exists(source):
            fs.makedirs(target, exist_ok=True)
            return
        if fs.exists(target):
            fs.rm(target, recursive=True)
        fs.mv(source, target, recursive=True)
        return
    source, target = source.rstrip("/"), target.rstrip("/")
    stale = fs.find(target)
    if stale:
        fs.rm(stale)
    files = fs.find(source)
    if files:
        fs.copy(files, [target + f[len(source) :] for f in files])
        fs.rm(files)
