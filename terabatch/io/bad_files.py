"""Files found bad while a read is planned: fail with a clear message, or leave them out.

``on_bad_files="fail"`` (the default) raises at the first bad file. ``"skip"`` leaves each bad
file out, logs one warning line for it on the ``terabatch`` logger (printed on stderr unless
logging is configured otherwise) and records ``(path, reason)`` in the source's
``skipped_files``. Only what planning sees can be skipped: a file that is empty, cannot be
opened, does not start as its format should (a corrupt Parquet footer, a broken header or
compressed stream in its first bytes) or whose columns disagree with the first file's. A file
that changed during the run, and problems found later by the task reading a file (a stream
truncated further on), always fail the job.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from terabatch.errors import InputChangedError, InputReadError, SchemaError, TerabatchError
from terabatch.io.files import FileInfo

ON_BAD_FILES = ("fail", "skip")
SKIP_HINT = (
    "remove or fix it, or pass on_bad_files='skip' (CLI: --on-bad-files skip) to leave it out"
)

log = logging.getLogger("terabatch")

T = TypeVar("T")


class BadFiles:
    """Applies ``on_bad_files`` to the files of one read; ``skipped`` lists what was left out.

    >>> bad = BadFiles("skip")
    >>> ok = bad.probe_each([FileInfo("a.csv", 0, 0.0, None), FileInfo("b.csv", 4, 0.0, None)],
    ...                     lambda f: f.size)
    >>> [(f.path, n) for f, n in ok], bad.skipped
    ([('b.csv', 4)], [('a.csv', 'file is empty (0 bytes)')])
    >>> bad.report([FileInfo("a.csv", 0, 0.0, None)])
    (('a.csv', 'file is empty (0 bytes)'),)
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.skipped: list[tuple[str, str]] = []

    def probe_each(
        self, files: tuple[FileInfo, ...] | list[FileInfo], probe: Callable[[FileInfo], T]
    ) -> list[tuple[FileInfo, T]]:
        """Run ``probe`` on every file that is not empty; keep the files it succeeds on."""
        found = []
        for file in files:
            if file.size == 0:
                self.reject(file, "file is empty (0 bytes)", InputReadError)
                continue
            try:
                found.append((file, probe(file)))
            except InputChangedError:
                raise
            except InputReadError as exc:
                self.reject(file, str(exc).removeprefix(f"{file.path}: "), InputReadError)
        if not found:
            path, reason = self.skipped[0]
            raise InputReadError(
                f"no input file is left to read: all {len(self.skipped)} were skipped as bad "
                f"(the first: {path}: {reason})"
            )
        return found

    def reject(
        self,
        file: FileInfo,
        reason: str,
        error: type[TerabatchError] = SchemaError,
        hint: str = SKIP_HINT,
    ) -> None:
        """Fail with ``error`` naming the file and the reason, or record the skip."""
        if self.mode == "fail":
            raise error(f"{file.path}: {reason}; {hint}")
        self.skipped.append((file.path, reason))

    def report(self, files: tuple[FileInfo, ...] | list[FileInfo]) -> tuple[tuple[str, str], ...]:
        """Log one warning per skipped file, in the files' order; return ``(path, reason)``s."""
        order = {f.path: i for i, f in enumerate(files)}
        skipped = tuple(sorted(self.skipped, key=lambda entry: order[entry[0]]))
        for path, reason in skipped:
            log.warning("terabatch: warning: skipping %s: %s", path, reason)
        return skipped
