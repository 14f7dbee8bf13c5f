"""Join benchmark: the five db-benchmark join questions, terabatch against its peers.

For every input size and question, the contenders are run round-robin within each repetition
(the starting contender rotates between repetitions), each as a separate subprocess of
``join_contenders.py`` so that wall time and peak RSS of its whole process tree are measured
for that question alone (see ``peak_rss.py``). The inputs are read once before timing so that
every contender starts with them in the page cache.

Every answer is checked against DuckDB's with a checksum: row count, and the sums of v1 and
v2, within a relative tolerance. DuckDB's checksum is taken from its first answer for that
size and question; if duckdb is not among the contenders (or failed), it is computed once,
unmeasured. Answers go to ``bench/results/tmp`` and are deleted after the check.

A table is printed and written to ``bench/results/join_<timestamp>.md``; the raw runs,
summary and machine info go to ``join_<timestamp>.json``.

Usage:
    python bench/run_join.py --rows 1e7
    python bench/run_join.py --rows 1e7 --questions q1 q5 --contenders terabatch polars
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import polars as pl
from common import (
    BUDGETED,
    DATA_DIR,
    STDERR_TAIL_CHARS,
    TMP_DIR,
    add_run_options,
    contender_env,
    failure_status,
    machine_info,
    parquet_source,
    remove_output,
    report_header,
    rotated,
    run_measured,
    warm_page_cache,
    write_results,
)
from gen_join import generate, is_complete, rows_label, table_paths
from join_contenders import CONTENDERS, QUESTIONS
from question_runs import Run, format_table, summarize

TITLES = {name: q.title for name, q in QUESTIONS.items()}
CONTENDER_SCRIPT = Path(__file__).resolve().parent / "join_contenders.py"
ANSWER_KEY = "duckdb"
RTOL = 1e-9
DEFAULT_MEMORY = "2GB"

Checksum = tuple[int, float, float]


# data and answers ------------------------------------------------------------------------------


def ensure_join_data(rows: int, seed: int, data_dir: Path = DATA_DIR) -> dict[str, Path]:
    """Paths of the J1 tables for ``rows`` rows in ``data_dir``, generating them if needed."""
    if not is_complete(rows, seed, data_dir):
        print(f"generating J1 tables for {rows_label(rows)} rows ...", flush=True)
        start = time.perf_counter()
        generate(rows, seed=seed, data_dir=data_dir, force=True)
        print(f"generated in {time.perf_counter() - start:.1f} s", flush=True)
    return table_paths(rows, data_dir)


def checksum(path: Path) -> Checksum:
    """Row count and sums of v1 and v2 of an answer (nulls ignored)."""
    frame = pl.scan_parquet(parquet_source(path)).select(
        pl.len(), pl.col("v1").sum(), pl.col("v2").sum()
    )
    n, v1, v2 = frame.collect().row(0)
    return int(n), float(v1 or 0.0), float(v2 or 0.0)


def compare(got: Checksum, want: Checksum) -> str | None:
    """None if the checksums agree, else what differs."""
    if got[0] != want[0]:
        return f"{got[0]:,} rows, expected {want[0]:,}"
    for name, g, w in (("sum(v1)", got[1], want[1]), ("sum(v2)", got[2], want[2])):
        if abs(g - w) > RTOL * max(abs(w), 1.0):
            return f"{name} = {g!r}, expected {w!r}"
    return None


class ReferenceChecksums:
    """DuckDB's checksum per size and question."""

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._sums: dict[tuple[int, str], Checksum | str] = {}

    def adopt(self, rows: int, question: str, out: Path) -> None:
        if not isinstance(self._sums.get((rows, question)), tuple):
            self._sums[(rows, question)] = checksum(out)

    def get(self, rows: int, question: str, tables: dict[str, Path]) -> Checksum | str:
        if (rows, question) not in self._sums:
            self._sums[(rows, question)] = self._compute(question, tables)
        return self._sums[(rows, question)]

    def _compute(self, question: str, tables: dict[str, Path]) -> Checksum | str:
        print(f"computing the reference answer for {question} with {ANSWER_KEY} ...", flush=True)
        out = TMP_DIR / f"reference-{question}.parquet"
        remove_output(out)
        cmd = contender_command(ANSWER_KEY, question, tables, out, None)
        try:
            proc = subprocess.run(
                cmd, env=contender_env(), capture_output=True, text=True, timeout=self._timeout
            )
        except subprocess.TimeoutExpired:
            return "timeout"
        try:
            if proc.returncode != 0:
                return failure_status(proc.returncode, proc.stderr)
            return checksum(out)
        finally:
            remove_output(out)


# runs ------------------------------------------------------------------------------------------


def contender_command(
    contender: str, question: str, tables: dict[str, Path], out: Path, memory: str | None
) -> list[str]:
    """Command line that runs one contender on one question."""
    y = tables[QUESTIONS[question].table]
    cmd = [sys.executable, str(CONTENDER_SCRIPT), contender, question]
    cmd += [str(tables["x"]), str(y), str(out)]
    if contender in BUDGETED and memory is not None:
        cmd += ["--memory", memory]
    return cmd


def output_path(contender: str, question: str) -> Path:
    return TMP_DIR / f"{contender}-{question}"


def run_once(
    contender: str,
    question: str,
    tables: dict[str, Path],
    rows: int,
    rep: int,
    args: argparse.Namespace,
) -> Run:
    """Measure one contender on one question; its answer is left for ``check_round``."""
    out = output_path(contender, question)
    remove_output(out)
    cmd = contender_command(contender, question, tables, out, args.memory)
    result, stderr = run_measured(cmd, args.timeout)
    ok = result.returncode == 0
    return Run(
        rows=rows,
        question=question,
        contender=contender,
        rep=rep,
        wall_s=result.wall_s,
        peak_rss_bytes=result.peak_rss_bytes,
        returncode=result.returncode,
        status="ok" if ok else failure_status(result.returncode, stderr),
        rows_out=None,
        stderr_tail=stderr[-STDERR_TAIL_CHARS:],
    )


def check_round(
    round_runs: list[Run], tables: dict[str, Path], references: ReferenceChecksums
) -> None:
    """Check the answers of one round against DuckDB's checksum, then delete them."""
    for run in round_runs:
        if run.contender == ANSWER_KEY and run.returncode == 0:
            with contextlib.suppress(Exception):  # unreadable: recomputed on demand
                references.adopt(run.rows, run.question, output_path(ANSWER_KEY, run.question))
    for run in round_runs:
        out = output_path(run.contender, run.question)
        if run.returncode == 0:
            reference = references.get(run.rows, run.question, tables)
            try:
                got = checksum(out)
            except Exception as exc:  # any unreadable answer makes the run a failure
                run.status = f"error: unreadable answer: {exc}".splitlines()[0]
            else:
                run.rows_out = got[0]
                if isinstance(reference, tuple):
                    difference = compare(got, reference)
                    run.status = "ok" if difference is None else f"wrong answer: {difference}"
                else:
                    run.status = f"unchecked: no {ANSWER_KEY} answer ({reference})"
        remove_output(out)
        print(
            f"{rows_label(run.rows)} {run.question} {run.contender} rep {run.rep}: "
            f"{run.wall_s:.2f} s, {run.peak_rss_bytes / 2**20:.0f} MiB, {run.status}",
            flush=True,
        )


def run_benchmark(args: argparse.Namespace) -> list[Run]:
    """All runs: per size and question, ``repeat`` rounds over the contenders (rotated)."""
    runs: list[Run] = []
    TMP_DIR.mkdir(parents=True, exist_ok=True)
    references = ReferenceChecksums(args.timeout)
    try:
        for rows in args.rows:
            tables = ensure_join_data(rows, args.seed, args.data_dir)
            for path in tables.values():
                warm_page_cache(path)
            for question in args.questions:
                for rep in range(args.repeat):
                    round_runs = [
                        run_once(contender, question, tables, rows, rep, args)
                        for contender in rotated(args.contenders, rep)
                    ]
                    check_round(round_runs, tables, references)
                    runs += round_runs
    finally:
        shutil.rmtree(TMP_DIR, ignore_errors=True)
    return runs


# summary and report ----------------------------------------------------------------------------


def format_report(info: dict[str, object], args: argparse.Namespace, table: str) -> str:
    return "\n".join(
        [
            *report_header("terabatch join benchmark", info, args),
            "",
            "wall s is the median over completed repetitions; peak tree RSS is the max.",
            f"Answers are checked against {ANSWER_KEY}'s: row count, sum(v1), sum(v2).",
            "peer/terabatch time > 1 means terabatch is faster; it is only given when both",
            "answers are correct.",
            "",
            table,
            "",
        ]
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", nargs="+", choices=QUESTIONS, default=list(QUESTIONS))
    add_run_options(parser, list(CONTENDERS), memory=DEFAULT_MEMORY)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    info = machine_info()
    runs = run_benchmark(args)
    summaries = summarize(runs)
    table = format_table(summaries, TITLES, rows_label)
    print()
    print(table)
    report = write_results(
        "join",
        format_report(info, args, table),
        info,
        args,
        summary=[asdict(s) for s in summaries],
        runs=[asdict(r) for r in runs],
    )
    print(f"\nwritten: {report} (and .json)")


if __name__ == "__main__":
    main()
