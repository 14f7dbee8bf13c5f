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
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

import polars as pl
import psutil
from contenders import CONTENDERS, TASKS
from gen_groupby import default_path, generate, is_complete, parse_rows, rows_label
from peak_rss import measure

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
DATA_DIR = BENCH_DIR / "data"
RESULTS_DIR = BENCH_DIR / "results"
TMP_DIR = RESULTS_DIR / "tmp"
CONTENDER_SCRIPT = BENCH_DIR / "contenders.py"
REFERENCE = "terabatch"
PEER_PACKAGES = ("polars", "duckdb", "pandas", "pyarrow")
STDERR_TAIL_CHARS = 2000
TABLE_STATUS_CHARS = 120


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


def contender_env() -> dict[str, str]:
    """Environment for contender subprocesses: the repo root first on PYTHONPATH."""
    env = dict(os.environ)
    paths = [str(REPO_ROOT), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return env


def ensure_data(rows: int, seed: int) -> Path:
    """Path of the input CSV for ``rows`` rows, generating it first if needed."""
    path = default_path(rows, DATA_DIR)
    if not is_complete(path, rows, seed):
        print(f"generating {path} ...", flush=True)
        start = time.perf_counter()
        generate(rows, path, seed=seed, force=True)
        print(f"generated {path} in {time.perf_counter() - start:.1f} s", flush=True)
    return path


def warm_page_cache(path: Path, block: int = 1 << 24) -> None:
    """Read ``path`` once so that no contender pays for the cold read alone."""
    with path.open("rb") as fh:
        while fh.read(block):
            pass


def remove_output(path: Path) -> None:
    """Delete an output file or directory if present."""
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def count_rows(path: Path) -> int:
    """Number of rows in a Parquet file or a directory of Parquet files (markers ignored)."""
    source = path / "**" / "*.parquet" if path.is_dir() else path
    return pl.scan_parquet(source).select(pl.len()).collect().item()


def failure_status(returncode: int | None, stderr: str) -> str:
    """Short status for a failed run: the exception line of its stderr, if any."""
    if returncode is None:
        return "timeout"
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    if lines:
        return f"error: {lines[-1]}"
    if returncode < 0:
        return f"error: killed by signal {-returncode}"
    return f"error: exit code {returncode}"


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
    with tempfile.TemporaryFile() as err:
        result = measure(
            cmd, timeout=timeout, env=contender_env(), stdout=subprocess.DEVNULL, stderr=err
        )
        err.seek(0)
        stderr = err.read().decode(errors="replace")
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


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def format_table(summaries: list[Summary]) -> str:
    """Markdown table of the summaries; ``peer/terabatch > 1`` means terabatch is faster."""
    header = (
        "| size | task | contender | wall s | input MB/s | peak tree RSS MiB | rows out "
        "| status | peer/terabatch time |"
    )
    lines = [header, "| --- " * (header.count("|") - 1) + "|"]
    for s in summaries:
        cells = [
            rows_label(s.rows),
            s.task,
            s.contender,
            _fmt(s.wall_s, ".2f"),
            _fmt(s.input_mb_s, ".1f"),
            _fmt(s.peak_rss_mib, ".0f"),
            _fmt(s.rows_out, ","),
            _shorten(s.status.replace("|", "/"), TABLE_STATUS_CHARS),
            _fmt(s.vs_terabatch, ".2f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo, or the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def terabatch_version() -> str:
    """Version of terabatch as the contender subprocesses import it."""
    code = "import terabatch; print(getattr(terabatch, '__version__', 'unknown'))"
    proc = subprocess.run(
        [sys.executable, "-c", code], env=contender_env(), capture_output=True, text=True
    )
    if proc.returncode == 0:
        return proc.stdout.strip()
    return "unavailable: " + failure_status(proc.returncode, proc.stderr)


def git_revision() -> str:
    """Current commit of the repository (with '-dirty' if modified), or 'none'."""
    proc = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
    )
    return proc.stdout.strip() if proc.returncode == 0 else "none"


def machine_info() -> dict[str, object]:
    """CPU, cores, RAM, OS and library versions."""
    versions = {name: metadata.version(name) for name in PEER_PACKAGES}
    versions["terabatch"] = terabatch_version()
    return {
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "git_revision": git_revision(),
        "versions": versions,
    }


def format_report(info: dict[str, object], args: argparse.Namespace, table: str) -> str:
    """Markdown report: command, machine and the results table."""
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    return "\n".join(
        [
            f"# terabatch core benchmark, {time.strftime('%Y-%m-%d %H:%M:%S')}",
            "",
            f"- command: `python {' '.join(sys.argv)}`",
            f"- terabatch memory budget: {args.memory or 'none'}; repetitions: {args.repeat}",
            f"- CPU: {info['cpu_model']}; cores: {info['logical_cores']} logical, "
            f"{info['physical_cores']} physical; RAM: {info['ram_gib']} GiB",
            f"- OS: {info['os']}; Python {info['python']}; git: {info['git_revision']}",
            f"- versions: {versions}",
            "",
            "wall s is the median over completed repetitions; peak tree RSS is the max.",
            "peer/terabatch time > 1 means terabatch is faster.",
            "",
            table,
            "",
        ]
    )


def write_results(
    info: dict[str, object],
    args: argparse.Namespace,
    runs: list[Run],
    summaries: list[Summary],
    table: str,
) -> Path:
    """Write ``core_<timestamp>.md`` and ``.json`` to the results directory; return the .md."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stem = RESULTS_DIR / f"core_{time.strftime('%Y%m%d-%H%M%S')}"
    payload = {
        "command": sys.argv,
        "args": vars(args),
        "machine": info,
        "summary": [asdict(s) for s in summaries],
        "runs": [asdict(r) for r in runs],
    }
    stem.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
    report = stem.with_suffix(".md")
    report.write_text(format_report(info, args, table))
    return report


def run_benchmark(args: argparse.Namespace) -> list[Run]:
    """All runs: per size and task, ``repeat`` rounds over the contenders (rotated per round)."""
    runs: list[Run] = []
    TMP_DIR.mkdir(parents=True, exist_ok=True)
    for rows in args.rows:
        src = ensure_data(rows, args.seed)
        warm_page_cache(src)
        for task in args.tasks:
            for rep in range(args.repeat):
                shift = rep % len(args.contenders)
                for contender in args.contenders[shift:] + args.contenders[:shift]:
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
    parser.add_argument("--rows", type=parse_rows, nargs="+", default=[10**7], help="e.g. 1e7 1e8")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=list(CONTENDERS))
    parser.add_argument("--memory", default=None, help="terabatch memory budget, e.g. 1GB")
    parser.add_argument("--repeat", type=int, default=1, help="rounds over all contenders")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per run")
    parser.add_argument("--seed", type=int, default=0, help="seed for generated data")
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
    print(f"\nwritten: {write_results(info, args, runs, summaries, table)} (and .json)")


if __name__ == "__main__":
    main()
