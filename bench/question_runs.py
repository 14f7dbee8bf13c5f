"""Runs of one contender on one benchmark question, and their per-question summaries.

Shared by the question-based runners (``run_groupby.py``, ``run_join.py``).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from common import REFERENCE, fmt, markdown_table, shorten


@dataclass
class Run:
    """One measured run of one contender on one question and input size.

    ``rows_out`` is set when the run exited 0 and its answer could be read back; such a run
    is timed even if ``status`` says its answer is wrong.
    """

    rows: int
    question: str
    contender: str
    rep: int
    wall_s: float
    peak_rss_bytes: int
    returncode: int | None
    status: str
    rows_out: int | None
    stderr_tail: str


@dataclass
class Summary:
    """All repetitions of one (size, question, contender) combined."""

    rows: int
    question: str
    contender: str
    runs: int
    wall_s: float | None
    peak_rss_mib: float
    rows_out: int | None
    status: str
    vs_terabatch: float | None


def summarize(runs: list[Run]) -> list[Summary]:
    """Median wall time and max peak RSS per (size, question, contender)."""
    groups: dict[tuple[int, str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.rows, run.question, run.contender), []).append(run)
    summaries = [_summarize_group(group) for group in groups.values()]
    reference = {
        (s.rows, s.question): s.wall_s
        for s in summaries
        if s.contender == REFERENCE and s.status == "ok"
    }
    for s in summaries:
        ref_wall = reference.get((s.rows, s.question))
        if ref_wall and s.wall_s is not None and s.status == "ok":
            s.vs_terabatch = s.wall_s / ref_wall
    return summaries


def _summarize_group(group: list[Run]) -> Summary:
    done = [run for run in group if run.returncode == 0]
    failed = [run for run in group if run.status != "ok"]
    first = group[0]
    if not failed:
        status = "ok"
    elif len(group) == 1:
        status = failed[0].status
    else:
        status = f"{len(group) - len(failed)}/{len(group)} ok; {failed[0].status}"
    return Summary(
        rows=first.rows,
        question=first.question,
        contender=first.contender,
        runs=len(group),
        wall_s=statistics.median(run.wall_s for run in done) if done else None,
        peak_rss_mib=max(run.peak_rss_bytes for run in done or group) / 2**20,
        rows_out=next((run.rows_out for run in done if run.rows_out is not None), None),
        status=status,
        vs_terabatch=None,
    )


def format_table(
    summaries: list[Summary], titles: Mapping[str, str], label: Callable[[int], str]
) -> str:
    """Per-question table; ``peer/terabatch > 1`` means terabatch is faster."""
    header = [
        "size",
        "question",
        "contender",
        "wall s",
        "peak tree RSS MiB",
        "rows out",
        "status",
        "peer/terabatch time",
    ]
    rows = [
        [
            label(s.rows),
            f"{s.question}: {titles[s.question]}",
            s.contender,
            fmt(s.wall_s, ".2f"),
            fmt(s.peak_rss_mib, ".0f"),
            fmt(s.rows_out, ","),
            shorten(s.status),
            fmt(s.vs_terabatch, ".2f"),
        ]
        for s in summaries
    ]
    return markdown_table(header, rows)
