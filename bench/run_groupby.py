"""Group-by benchmark: the ten db-benchmark questions, terabatch against its peers.

For every input size and question, the contenders are run round-robin within each repetition
(the starting contender rotates between repetitions), each as a separate subprocess of
``groupby_contenders.py`` so that wall time and peak RSS of its whole process tree are
measured for that question alone (see ``peak_rss.py``). The input is the G1 table as CSV, or
with ``--source parquet`` as a directory of Parquet files (generated if missing); it is read
once before timing so that every contender starts with it in the page cache.

After each round the answers are checked against DuckDB's, out of core (``groupby_answers.py``):
same rows, each key once, values equal within a tolerance (q8: the sorted values of every key),
compared by DuckDB under a memory limit, spilling to ``bench/results/tmp``. DuckDB's answer is the
first one its contender produced for that input and question; if duckdb is not among the
contenders (or has not run yet), it is computed once, unmeasured, from the same input. Answers go to
``bench/results/tmp`` and are deleted after the check.

A table is printed and written to ``bench/results/groupby_<timestamp>.md``; the raw runs,
summary and machine info go to ``groupby_<timestamp>.json``.

Usage:
    python bench/run_groupby.py --rows 1e7
    python bench/run_groupby.py --rows 1e7 1e8 --questions q1 q6 --contenders terabatch polars
    python bench/run_groupby.py --rows 1e9 --source parquet --contenders terabatch polars duckdb
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from common import (
    BUDGETED,
    REFERENCE,
    STDERR_TAIL_CHARS,
    TMP_DIR,
    add_run_options,
    contender_env,
    ensure_data,
    failure_status,
    fmt,
    machine_info,
    markdown_table,
    remove_output,
    report_header,
    rotated,
    run_measured,
    warm_page_cache,
    write_results,
)
from gen_groupby import FORMATS, rows_label
from groupby_answers import check_answer
from groupby_contenders import CONTENDERS, QUESTIONS
from question_runs import Run, Summary, format_table, summarize

TITLES = {name: q.title for name, q in QUESTIONS.items()}
CONTENDER_SCRIPT = Path(__file__).resolve().parent / "groupby_contenders.py"
ANSWER_KEY = "duckdb"
REFERENCE_DIR = TMP_DIR / "reference"
CHECK_SPILL_DIR = TMP_DIR / "check-spill"
DEFAULT_MEMORY = "2GB"


@dataclass
class Total:
    """One contender over all questions of one size.

    ``wall_s`` sums the questions it answered correctly; ``vs_terabatch`` compares sums over
    the questions that both it and terabatch answered correctly.
    """

    rows: int
    contender: str
    questions: int
    questions_ok: int
    wall_s: float | None
    peak_rss_mib: float
    vs_terabatch: float | None


# reference answers -----------------------------------------------------------------------------


class ReferenceAnswers:
    """DuckDB's answer per input and question, kept until the end of the benchmark.

    Answers are keyed by the input's name (``G1_1e7.csv``, ``G1_1e7.parquet``), so an answer
    is only ever compared with one computed from the same input.
    """

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._failures: dict[tuple[Path, str], str] = {}
        REFERENCE_DIR.mkdir(parents=True, exist_ok=True)

    def path(self, src: Path, question: str) -> Path:
        return REFERENCE_DIR / f"{src.name}-{question}.parquet"

    def adopt(self, src: Path, question: str, out: Path) -> None:
        """Keep a measured duckdb answer on ``src`` as the reference, if there is none yet."""
        path = self.path(src, question)
        if not path.exists():
            shutil.copyfile(out, path)

    def get(self, src: Path, question: str) -> Path | str:
        """The reference answer on ``src``, computing it if needed; or why there is none."""
        path = self.path(src, question)
        if path.exists():
            return path
        if (src, question) not in self._failures:
            self._failures[(src, question)] = self._compute(question, src, path)
        return path if path.exists() else self._failures[(src, question)]

    def _compute(self, question: str, src: Path, path: Path) -> str:
        print(f"computing the reference answer for {question} with {ANSWER_KEY} ...", flush=True)
        partial = path.with_name(path.name + ".partial")
        remove_output(partial)
        cmd = contender_command(ANSWER_KEY, question, src, partial, None)
        try:
            proc = subprocess.run(
                cmd, env=contender_env(), capture_output=True, text=True, timeout=self._timeout
            )
        except subprocess.TimeoutExpired:
            return "timeout"
        if proc.returncode == 0:
            partial.replace(path)
        return failure_status(proc.returncode, proc.stderr)


# runs ------------------------------------------------------------------------------------------


def contender_command(
    contender: str, question: str, src: Path, out: Path, memory: str | None
) -> list[str]:
    """Command line that runs one contender on one question."""
    cmd = [sys.executable, str(CONTENDER_SCRIPT), contender, question, str(src), str(out)]
    if contender in BUDGETED and memory is not None:
        cmd += ["--memory", memory]
    return cmd


def output_path(contender: str, question: str) -> Path:
    return TMP_DIR / f"{contender}-{question}"


def run_once(
    contender: str, question: str, src: Path, rows: int, rep: int, args: argparse.Namespace
) -> Run:
    """Measure one contender on one question; its answer is left for ``check_round``."""
    out = output_path(contender, question)
    remove_output(out)
    cmd = contender_command(contender, question, src, out, args.memory)
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


def check_round(round_runs: list[Run], src: Path, references: ReferenceAnswers) -> None:
    """Check the answers of one round against DuckDB's, then delete them."""
    for run in round_runs:
        if run.contender == ANSWER_KEY and run.returncode == 0:
            references.adopt(src, run.question, output_path(run.contender, run.question))
    for run in round_runs:
        out = output_path(run.contender, run.question)
        if run.returncode == 0:
            reference = references.get(src, run.question)
            if isinstance(reference, Path):
                run.status, run.rows_out = check_answer(
                    out, reference, run.question, CHECK_SPILL_DIR
                )
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
    references = ReferenceAnswers(args.timeout)
    try:
        for rows in args.rows:
            src = ensure_data(rows, args.seed, args.data_dir, args.source)
            warm_page_cache(src)
            for question in args.questions:
                for rep in range(args.repeat):
                    round_runs = [
                        run_once(contender, question, src, rows, rep, args)
                        for contender in rotated(args.contenders, rep)
                    ]
                    check_round(round_runs, src, references)
                    runs += round_runs
    finally:
        shutil.rmtree(TMP_DIR, ignore_errors=True)
    return runs


# summary and report ----------------------------------------------------------------------------


def totals(summaries: list[Summary]) -> list[Total]:
    """Per size and contender: questions answered correctly, their summed time, peak RSS."""
    result = []
    sizes = dict.fromkeys(s.rows for s in summaries)
    contenders = dict.fromkeys(s.contender for s in summaries)
    for rows in sizes:
        ok_walls = {
            (s.contender, s.question): s.wall_s
            for s in summaries
            if s.rows == rows and s.status == "ok" and s.wall_s is not None
        }
        reference = {q: w for (c, q), w in ok_walls.items() if c == REFERENCE}
        for contender in contenders:
            mine = [s for s in summaries if s.rows == rows and s.contender == contender]
            walls = {q: w for (c, q), w in ok_walls.items() if c == contender}
            common = [q for q in walls if q in reference]
            ref_sum = sum(reference[q] for q in common)
            result.append(
                Total(
                    rows=rows,
                    contender=contender,
                    questions=len(mine),
                    questions_ok=len(walls),
                    wall_s=sum(walls.values()) if walls else None,
                    peak_rss_mib=max(s.peak_rss_mib for s in mine),
                    vs_terabatch=sum(walls[q] for q in common) / ref_sum if ref_sum else None,
                )
            )
    return result


def format_totals(total_rows: list[Total]) -> str:
    """Totals table: one row per size and contender."""
    header = [
        "size",
        "contender",
        "questions ok",
        "total wall s (ok questions)",
        "max peak tree RSS MiB",
        "peer/terabatch time (questions ok for both)",
    ]
    rows = [
        [
            rows_label(t.rows),
            t.contender,
            f"{t.questions_ok}/{t.questions}",
            fmt(t.wall_s, ".2f"),
            fmt(t.peak_rss_mib, ".0f"),
            fmt(t.vs_terabatch, ".2f"),
        ]
        for t in total_rows
    ]
    return markdown_table(header, rows)


def format_report(
    info: dict[str, object], args: argparse.Namespace, table: str, total_table: str
) -> str:
    """Markdown report: command, machine, the per-question table and the totals."""
    return "\n".join(
        [
            *report_header("terabatch group-by benchmark", info, args),
            f"- input: `{args.data_dir}/G1_<rows>.{args.source}`",
            "",
            "wall s is the median over completed repetitions; peak tree RSS is the max.",
            f"Answers are checked against {ANSWER_KEY}'s first answer to the same question.",
            "peer/terabatch time > 1 means terabatch is faster; it is only given when both",
            "answers are correct.",
            "",
            table,
            "",
            total_table,
            "",
        ]
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", nargs="+", choices=QUESTIONS, default=list(QUESTIONS))
    parser.add_argument(
        "--source",
        choices=FORMATS,
        default="csv",
        help="input format: <data dir>/G1_<rows>.csv, or the Parquet directory "
        "<data dir>/G1_<rows>.parquet (default: csv)",
    )
    add_run_options(parser, list(CONTENDERS), memory=DEFAULT_MEMORY)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    info = machine_info()
    runs = run_benchmark(args)
    summaries = summarize(runs)
    total_rows = totals(summaries)
    table, total_table = format_table(summaries, TITLES, rows_label), format_totals(total_rows)
    print()
    print(table)
    print()
    print(total_table)
    report = write_results(
        "groupby",
        format_report(info, args, table, total_table),
        info,
        args,
        summary=[asdict(s) for s in summaries],
        totals=[asdict(t) for t in total_rows],
        runs=[asdict(r) for r in runs],
    )
    print(f"\nwritten: {report} (and .json)")


if __name__ == "__main__":
    main()
