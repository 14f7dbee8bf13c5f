"""The end-of-job summary: rows in, out and filtered, bytes, time, peak memory."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from terabatch.run.memory import format_size


@dataclass
class JobSummary:
    """What a job did. ``rows_read == rows_written + rows_filtered + rows_bad`` always holds.

    Bad rows are the rows quarantined (then ``quarantine`` says where) or skipped.
    """

    rows_read: int = 0
    rows_written: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    files_written: int = 0
    tasks: int = 0
    resumed_tasks: int = 0
    row_groups_read: int = 0
    seconds: float = 0.0
    peak_memory: int = 0
    workers: int = 0
    output: str | None = None
    rows_bad: int = 0
    quarantine: str | None = None
    files: list[str] = field(default_factory=list)

    @property
    def rows_filtered(self) -> int:
        return self.rows_read - self.rows_written - self.rows_bad

    def to_dict(self) -> dict:
        data = asdict(self)
        data["rows_filtered"] = self.rows_filtered
        data.pop("files")
        return data

    def render(self) -> str:
        rate = self.bytes_read / self.seconds if self.seconds > 0 else 0.0
        resumed = f" ({self.resumed_tasks} done before, resumed)" if self.resumed_tasks else ""
        lines = [
            f"rows read {self.rows_read:,} = written {self.rows_written:,} + filtered "
            f"{self.rows_filtered:,}" + (f" + bad {self.rows_bad:,}" if self.rows_bad else ""),
            f"read {format_size(self.bytes_read)} in {_count(self.tasks, 'task')}{resumed} on "
            f"{_count(self.workers, 'worker')}, "
            f"{self.seconds:.1f} s ({format_size(rate)}/s), "
            f"peak memory {format_size(self.peak_memory)}",
        ]
        if self.output is not None:
            lines.append(
                f"wrote {_count(self.files_written, 'file')}, {format_size(self.bytes_written)} "
                f"to {self.output}"
            )
        if self.rows_bad:
            where = f"quarantined in {self.quarantine}" if self.quarantine else "skipped"
            lines.append(f"{self.rows_bad:,} bad rows {where}")
        return "\n".join(lines)


def _count(n: int, noun: str) -> str:
    """``n`` and the noun, plural unless one.

    >>> _count(1, "file"), _count(2, "file")
    ('1 file', '2 files')
    """
    return f"{n:,} {noun}{'' if n == 1 else 's'}"
