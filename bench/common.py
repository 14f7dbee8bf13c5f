"""Pieces shared by the benchmark runners (``run_core.py``, ``run_groupby.py``).

Paths, input data, measured contender subprocesses, the machine description, report
formatting and the command-line options every runner has.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import TypeVar

import psutil
from gen_groupby import default_path, generate, is_complete, parse_rows
from peak_rss import Measurement, measure

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
DATA_DIR = BENCH_DIR / "data"
RESULTS_DIR = BENCH_DIR / "results"
TMP_DIR = RESULTS_DIR / "tmp"
REFERENCE = "terabatch"
# Contenders that take the --memory budget; the others have no such setting.
BUDGETED = ("terabatch", "dask")
PEER_PACKAGES = ("polars", "duckdb", "pandas", "pyarrow", "dask")
STDERR_TAIL_CHARS = 2000
TABLE_STATUS_CHARS = 120

T = TypeVar("T")


# inputs and outputs ----------------------------------------------------------------------------


def ensure_data(rows: int, seed: int, data_dir: Path = DATA_DIR, fmt: str = "csv") -> Path:
    """Path of the G1 input for ``rows`` rows in ``data_dir`` (a CSV file, or for ``fmt``
    ``"parquet"`` a directory of Parquet files), generating it first if needed."""
    path = default_path(rows, data_dir, fmt)
    if not is_complete(path, rows, seed):
        print(f"generating {path} ...", flush=True)
        start = time.perf_counter()
        generate(rows, path, seed=seed, force=True)
        print(f"generated {path} in {time.perf_counter() - start:.1f} s", flush=True)
    return path


def warm_page_cache(path: Path, block: int = 1 << 24) -> None:
    """Read ``path`` (a file, or every file below a directory) once so that no contender pays
    for the cold read alone."""
    files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
    for file in files:
        with file.open("rb") as fh:
            while fh.read(block):
                pass


def remove_output(path: Path) -> None:
    """Delete an output file or directory if present."""
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def parquet_source(path: Path) -> Path:
    """What to scan for a Parquet output: the file, or every ``.parquet`` below a directory
    (so that marker files such as ``_SUCCESS`` are ignored)."""
    return path / "**" / "*.parquet" if path.is_dir() else path


# contender subprocesses ------------------------------------------------------------------------


def contender_env() -> dict[str, str]:
    """Environment for contender subprocesses: the repo root first on PYTHONPATH.

    The peers' wheels were byte-compiled when pip installed them; terabatch, installed in
    editable mode, is compiled here, or each contender process would compile every changed
    module again when ``PYTHONDONTWRITEBYTECODE`` is set (20 ms for ``io/csv.py`` alone).
    """
    compileall.compile_dir(REPO_ROOT / "terabatch", quiet=1)
    compileall.compile_dir(BENCH_DIR, maxlevels=0, quiet=1)
    env = dict(os.environ)
    paths = [str(REPO_ROOT), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return env


def run_measured(cmd: list[str], timeout: float) -> tuple[Measurement, str]:
    """Run a contender command under ``peak_rss.measure``; return the measurement and stderr."""
    with tempfile.TemporaryFile() as err:
        result = measure(
            cmd, timeout=timeout, env=contender_env(), stdout=subprocess.DEVNULL, stderr=err
        )
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    return result, stderr


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


def rotated(items: Sequence[T], rep: int) -> list[T]:
    """``items`` rotated by ``rep`` places, so that each repetition starts with another item."""
    shift = rep % len(items)
    return [*items[shift:], *items[:shift]]


# machine description ---------------------------------------------------------------------------


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


def package_version(name: str) -> str:
    """Installed version of a distribution, or 'not installed'."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def git_revision() -> str:
    """Current commit of the repository (with '-dirty' if modified), or 'none'."""
    proc = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
    )
    return proc.stdout.strip() if proc.returncode == 0 else "none"


def machine_info(packages: Iterable[str] = PEER_PACKAGES) -> dict[str, object]:
    """CPU, cores, RAM, OS and library versions."""
    versions = {name: package_version(name) for name in packages}
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


# reports ---------------------------------------------------------------------------------------


def fmt(value: float | None, spec: str) -> str:
    """``value`` formatted with ``spec``, or an em dash for a missing value."""
    return "—" if value is None else format(value, spec)


def shorten(text: str, limit: int = TABLE_STATUS_CHARS) -> str:
    """``text`` cut to ``limit`` characters (with an ellipsis), safe inside a Markdown table."""
    text = text.replace("|", "/")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table from a header and rows of already formatted cells."""
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def report_header(title: str, info: dict[str, object], args: argparse.Namespace) -> list[str]:
    """First lines of a Markdown report: title, command, budget, machine and versions."""
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    return [
        f"# {title}, {time.strftime('%Y-%m-%d %H:%M:%S')}",
        "",
        f"- command: `python {' '.join(sys.argv)}`",
        f"- memory budget: {args.memory or 'none'} (given to "
        f"{', '.join(c for c in args.contenders if c in BUDGETED) or 'no contender'}); "
        f"repetitions: {args.repeat}",
        f"- CPU: {info['cpu_model']}; cores: {info['logical_cores']} logical, "
        f"{info['physical_cores']} physical; RAM: {info['ram_gib']} GiB",
        f"- OS: {info['os']}; Python {info['python']}; git: {info['git_revision']}",
        f"- versions: {versions}",
    ]


def write_results(
    prefix: str,
    report: str,
    info: dict[str, object],
    args: argparse.Namespace,
    **sections: object,
) -> Path:
    """Write ``<prefix>_<timestamp>.md`` (the report) and ``.json`` (command, options, machine
    and ``sections``) to the results directory; return the path of the ``.md``."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stem = RESULTS_DIR / f"{prefix}_{time.strftime('%Y%m%d-%H%M%S')}"
    payload = {"command": sys.argv, "args": vars(args), "machine": info, **sections}
    stem.with_suffix(".json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    path = stem.with_suffix(".md")
    path.write_text(report)
    return path


# command line ----------------------------------------------------------------------------------


def add_run_options(
    parser: argparse.ArgumentParser, contenders: Sequence[str], memory: str | None
) -> None:
    """The options every runner has: sizes, contenders, budget, repetitions, timeout, seed and
    where the input data is."""
    parser.add_argument("--rows", type=parse_rows, nargs="+", default=[10**7], help="e.g. 1e7 1e8")
    parser.add_argument("--contenders", nargs="+", choices=contenders, default=list(contenders))
    parser.add_argument(
        "--memory",
        default=memory,
        help=f"memory budget of {', '.join(c for c in BUDGETED if c in contenders)}, e.g. 1GB "
        f"(default: {memory})",
    )
    parser.add_argument("--repeat", type=int, default=1, help="rounds over all contenders")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per run")
    parser.add_argument("--seed", type=int, default=0, help="seed for generated data")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DATA_DIR,
        help="where input data is found or generated (default: bench/data)",
    )
