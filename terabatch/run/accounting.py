"""Where every input row went: written, filtered, or quarantined (or skipped) as bad.

The driver feeds each task result of the stages that count (not the sampling or broadcast
first passes, which read rows a second time) to one ``RowAccount``. It keeps the totals per
input file, the quarantine files the tasks wrote, and stops the job once bad rows pass
``max_bad_rows``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from terabatch.errors import TerabatchError
from terabatch.exec.runtime import TaskResult

FRACTION_MIN_ROWS = 1000  # a share of bad rows is judged once this many rows were read


class TooManyBadRowsError(TerabatchError):
    """More bad rows than ``max_bad_rows`` allows: the input is mostly garbage."""


@dataclass
class FileAccount:
    read: int = 0
    written: int = 0
    bad: int = 0


@dataclass
class RowAccount:
    """Rows read, written and bad, per input file and in total."""

    max_bad_rows: int | float | None = None
    files: dict[str, FileAccount] = field(default_factory=dict)
    bad: int = 0
    read: int = 0
    first_bad: str | None = None
    quarantine_files: list[str] = field(default_factory=list)

    def add(self, result: TaskResult, reads_input: bool, writes_output: bool) -> None:
        """Count one task's rows; raise ``TooManyBadRowsError`` past the limit."""
        account = None
        if result.source_file is not None and reads_input:
            account = self.files.setdefault(result.source_file, FileAccount())
            account.read += result.rows_in
        if reads_input:
            self.read += result.rows_in
        if account is not None and writes_output:
            account.written += result.rows_out
        if result.rows_bad:
            self.bad += result.rows_bad
            self.first_bad = self.first_bad or result.first_bad
            if account is not None:
                account.bad += result.rows_bad
        if result.quarantine_file is not None:
            self.quarantine_files.append(result.quarantine_file)
        self.check(final=False)

    def check(self, final: bool) -> None:
        limit = self.max_bad_rows
        if limit is None or not self.bad:
            return
        if isinstance(limit, int):
            if self.bad > limit:
                self._stop(f"{self.bad:,} bad rows, more than max_bad_rows={limit:,}")
            return
        if (final or self.read >= FRACTION_MIN_ROWS) and self.bad > limit * max(self.read, 1):
            share = self.bad / max(self.read, 1)
            self._stop(
                f"{self.bad:,} of {self.read:,} rows read were bad ({share:.1%}), more than "
                f"max_bad_rows={limit}"
            )

    def _stop(self, what: str) -> None:
        raise TooManyBadRowsError(
            f"stopped: {what}; the first was {self.first_bad}. Fix the input or raise "
            "max_bad_rows= (CLI --max-bad-rows)"
        )

    def per_file(self, with_written: bool) -> list[dict]:
        """The manifest's per-file lines; rows written per file only when rows keep to files."""
        lines = []
        for name in sorted(self.files):
            account = self.files[name]
            line = {"file": name, "rows_read": account.read, "rows_bad": account.bad}
            if with_written:
                line["rows_written"] = account.written
                line["rows_filtered"] = account.read - account.written - account.bad
            lines.append(line)
        return lines
