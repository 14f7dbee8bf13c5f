"""Errors a user can meet, each rendered as one clear line.

Every error that comes from the user's input (paths, data, expressions, functions) is a
``TerabatchError``. The CLI prints ``str(error)`` and exits with code 2; the Python API raises it.
"""

from __future__ import annotations

import difflib
import errno


class TerabatchError(Exception):
    """Base class of the errors caused by input: bad paths, bad data, bad arguments."""


class InputNotFoundError(TerabatchError, FileNotFoundError):
    """A path, directory or glob that matches no file."""


class InputReadError(TerabatchError):
    """A file that cannot be read: permission denied, corrupt, not of its declared format."""


class InputChangedError(InputReadError):
    """A file that disappeared or changed (size or modification time) after the job was planned."""


class StorageError(TerabatchError):
    """A storage location that cannot be used: missing bucket, access denied, no credentials,
    unreachable endpoint, or the package of its protocol (s3fs) not installed."""


class SchemaError(TerabatchError):
    """Files that disagree on their schema, or an expression naming a column that does not exist."""


class BadRowError(TerabatchError):
    """A row that does not parse as the schema says (file, line and reason)."""


class UserFunctionError(TerabatchError):
    """A user function passed to ``map_batches`` raised.

    ``traceback_text`` holds the user's traceback, formatted in the worker process.
    """

    def __init__(self, message: str, traceback_text: str = "") -> None:
        super().__init__(message)
        self.traceback_text = traceback_text

    def __reduce__(self):
        return (type(self), (str(self), self.traceback_text))


class OutputExistsError(TerabatchError, FileExistsError):
    """The output directory already holds files and ``mode="overwrite"`` was not given."""


class SpillLimitError(TerabatchError):
    """Shuffle files would pass the disk budget (``spill_limit``)."""


class PartitionTooLargeError(TerabatchError):
    """A shuffle partition cannot fit a worker's memory budget (usually one huge key)."""


class MemoryBudgetError(TerabatchError):
    """The plan cannot run within the memory budget."""


class DiskFullError(TerabatchError):
    """The disk filled up while writing output, shuffle files or run state."""


def is_disk_full(exc: BaseException) -> bool:
    """True for "no space left on device" (or a quota exceeded), however the library said it.

    >>> import errno
    >>> is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    True
    """
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(exc, OSError) and "No space left on device" in str(exc)


class TaskLoadError(TerabatchError):
    """A worker cannot unpickle a task: a module it refers to is missing or different there."""


class ClusterError(TerabatchError):
    """A Dask cluster that cannot be reached, was lost mid-job, or cannot run terabatch's tasks."""


def suggest(name: str, candidates: list[str]) -> str:
    """Return a "did you mean" hint for a misspelt name, or an empty string.

    >>> suggest("stauts", ["status", "user", "bytes"])
    " (did you mean 'status'?)"
    """
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.5)
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(c) for c in close) + "?)"
