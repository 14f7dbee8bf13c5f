"""Core benchmark: terabatch against polars, duckdb and pandas + multiprocessing.

For every input size and task, the contenders are run round-robin within each repetition
(the starting contender rotates between repetitions), each as a separate subprocess of
``contenders.py`` so that wall time and peak RSS of its whole process tree are measured in
isolation (see ``peak_rss.py``). The input CSV is read once before timing so that every
contender starts with it in the page cache. Outputs go to ``bench/results/tmp`` and are
deleted after each run, once their row count has been read back; counts that disagree with
the other contenders' are flagged.

A table is printed and written to ``bench/results/core_<timestamp>.md``; the raw runs,
summary and machine info go to ``core_<timestamp>.json``.

Usage:
    python bench/run_core.py --rows 1e7 --memory 1GB
    python bench/run_core.py --rows 1e7 1e8 --tasks convert --contenders terabatch polars
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import polars as pl
from common import (
    REFERENCE,
    STDERR_TAIL_CHARS,
    TMP_DIR,
    add_run_options,
    ensure_data,
    failure_status,
    fmt,
    machine_info,
    markdown_table,
    parquet_source,
    remove_output,
    report_header,
    rotated,
    run_measured,
    shorten,
    warm_page_cache,
    write_results,
)
from contenders import CONTENDERS, TASKS
from gen_groupby import rows_label

CONTENDER_SCRIPT = Path(__file__).resolve().parent / "contenders.py"


@dataclass
class Run:
    """One measured run of one contender on one task and input size.

    ``rows_out`` is set when the run exited 0 and its output could be read back; such a run
    is timed even if ``status`` later flags a row-count mismatch.
    """

    rows: int
    task: str
    contender: str
    rep: int
    input_bytes: int
    wall_s: float
    peak_rss_bytes: int
    returncode: int | None
    status: str
    rows_out: int | None
    stderr_tail: str


@dataclass
class Summary:
    """All repetitions of one (size, task, contender) combined."""

    rows: int
    task: str
    contender: str
    runs: int
    wall_s: float | None
    input_mb_s: float | None
    peak_rss_mib: float
    rows_out: int | None
    status: str
    vs_terabatch: float | None


def count_rows(path: Path) -> int:
    """Number of rows in a Parquet file or a directory of Parquet files (markers ignored)."""
    return pl.scan_parquet(parquet_source(path)).select(pl.len()).collect().item()


def contender_command(
    contender: str, task: str, src: Path, out: Path, memory: str | None
) -> list[str]:
    """Command line that runs one contender on one task."""
    cmd = [sys.executable, str(CONTENDER_SCRIPT), contender, task, str(src), str(out)]
    if contender == REFERENCE and memory is not None:
        cmd += ["--memory", memory]
    return cmd


def run_once(
    contender: str,
    task: str,
    src: Path,
    rows: int,
    rep: int,
    memory: str | None,
    timeout: float,
) -> Run:
    """Measure one contender on one task, read back the output row count, clean up."""
    out = TMP_DIR / f"{contender}-{task}"
    remove_output(out)
    cmd = contender_command(contender, task, src, out, memory)
    result, stderr = run_measured(cmd, timeout)
    status, rows_out = "ok", None
    if result.returncode == 0:
        try:
            rows_out = count_rows(out)
        except Exception as exc:  # any unreadable output makes the run a failure
            status = f"error: unreadable output: {exc}".splitlines()[0]
    else:
        status = failure_status(result.returncode, stderr)
    remove_output(out)
    return Run(
        rows=rows,
        task=task,
        contender=contender,
        rep=rep,
        input_bytes=src.stat().st_size,
        wall_s=result.wall_s,
        peak_rss_bytes=result.peak_rss_bytes,
        returncode=result.returncode,
        status=status,
        rows_out=rows_out,
        stderr_tail=stderr[-STDERR_TAIL_CHARS:],
    )


def flag_row_mismatches(runs: list[Run]) -> None:
    """Flag completed runs whose output row count differs from the majority for their task."""
    groups: dict[tuple[int, str], list[Run]] = {}
    for run in runs:
        if run.rows_out is not None:
            groups.setdefault((run.rows, run.task), []).append(run)
    for group in groups.values():
        counts = Counter(run.rows_out for run in group).most_common()
        tie = len(counts) > 1 and counts[0][1] == counts[1][1]
        expected = None if tie else counts[0][0]
        for run in group:
            if run.rows_out != expected:
                expected_text = "no majority" if expected is None else f"majority {expected:,}"
                run.status = f"rows mismatch: {run.rows_out:,} ({expected_text})"


def summarize(runs: list[Run]) -> list[Summary]:
    """Median wall time and max peak RSS per (size, task, contender) over completed runs."""
    groups: dict[tuple[int, str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.rows, run.task, run.contender), []).append(run)
    summaries = [_summarize_group(group) for group in groups.values()]
    reference = {(s.rows, s.task): s.wall_s for s in summaries if s.contender == REFERENCE}
    for summary in summaries:
        ref_wall = reference.get((summary.rows, summary.task))
        if ref_wall and summary.wall_s is not None:
            summary.vs_terabatch = summary.wall_s / ref_wall
    return summaries


def _summarize_group(group: list[Run]) -> Summary:
    done = [run for run in group if run.rows_out is not None]
    failed = [run for run in group if run.status != "ok"]
    wall = statistics.median(run.wall_s for run in done) if done else None
    first = group[0]
    if not failed:
        status = "ok"
    elif len(group) == 1:
        status = failed[0].status
    else:
        status = f"{len(group) - len(failed)}/{len(group)} ok; {failed[0].status}"
    return Summary(
        rows=first.rows,
        task=first.task,
        contender=first.contender,
        runs=len(group),
        wall_s=wall,
        input_mb_s=first.input_bytes / 1e6 / wall if wall else None,
        peak_rss_mib=max(run.peak_rss_bytes for run in done or group) / 2**20,
        rows_out=done[0].rows_out if done else None,
        status=status,
        vs_terabatch=None,
    )


def format_table(summaries: list[Summary]) -> str:
    """Markdown table of the summaries; ``peer/terabatch > 1`` means terabatch is faster."""
    header = [
        "size",
        "task",
        "contender",
        "wall s",
        "input MB/s",
        "peak tree RSS MiB",
        "rows out",
        "status",
        "peer/terabatch time",
    ]
    rows = [
        [
            rows_label(s.rows),
            s.task,
            s.contender,
            fmt(s.wall_s, ".2f"),
            fmt(s.input_mb_s, ".1f"),
            fmt(s.peak_rss_mib, ".0f"),
            fmt(s.rows_out, ","),
            shorten(s.status),
            fmt(s.vs_terabatch, ".2f"),
        ]
        for s in summaries
    ]
    return markdown_table(header, rows)


def format_report(info: dict[str, object], args: argparse.Namespace, table: str) -> str:
    """Markdown report: command, machine and the results table."""
    return "\n".join(
        [
            *report_header("terabatch core benchmark", info, args),
            "",
            "wall s is the median over completed repetitions; peak tree RSS is the max.",
            "peer/terabatch time > 1 means terabatch is faster.",
            "",
            table,
            "",
        ]
    )


def run_benchmark(args: argparse.Namespace) -> list[Run]:
    """All runs: per size and task, ``repeat`` rounds over the contenders (rotated per round)."""
    runs: list[Run] = []
    TMP_DIR.mkdir(parents=True, exist_ok=True)
    for rows in args.rows:
        src = ensure_data(rows, args.seed, args.data_dir)
        warm_page_cache(src)
        for task in args.tasks:
            for rep in range(args.repeat):
                for contender in rotated(args.contenders, rep):
                    run = run_once(contender, task, src, rows, rep, args.memory, args.timeout)
                    print(
                        f"{rows_label(rows)} {task} {contender} rep {rep}: "
                        f"{run.wall_s:.2f} s, {run.peak_rss_bytes / 2**20:.0f} MiB, {run.status}",
                        flush=True,
                    )
                    runs.append(run)
    shutil.rmtree(TMP_DIR, ignore_errors=True)
    return runs


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    add_run_options(parser, list(CONTENDERS), memory=None)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    info = machine_info()
    runs = run_benchmark(args)
    flag_row_mismatches(runs)
    summaries = summarize(runs)
    table = format_table(summaries)
    print()
    print(table)
    report = write_results(
        "core",
        format_report(info, args, table),
        info,
        args,
        summary=[asdict(s) for s in summaries],
        runs=[asdict(r) for r in runs],
    )
    print(f"\nwritten: {report} (and .json)")


if __name__ == "__main__":
    main()
