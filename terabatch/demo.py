"""``terabatch demo``: make a web-server log, run a pipeline over it, show what came out.

The data is deterministic for a given number of rows and is written as a mix of gzip'ed and
plain CSV files, so that the demo exercises both whole-file and split reading.
"""

from __future__ import annotations

import gzip
import os
import shlex
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from rich.console import Console
from rich.table import Table

import terabatch as tb
from terabatch.run.memory import format_size
from terabatch.run.summary import JobSummary

FILES = 4
DAYS = 7
START = "2026-03-01 00:00:00"
PATHS = (
    "/",
    "/index.html",
    "/search",
    "/api/v1/items",
    "/api/v1/orders",
    "/api/v1/login",
    "/static/app.js",
    "/static/style.css",
    "/images/logo.png",
    "/downloads/report.pdf",
)


def make_logs(rows: int, seed: int = 0) -> pl.DataFrame:
    """A web-server log of ``rows`` requests spread over a week, in time order.

    >>> logs = make_logs(1000)
    >>> logs.columns, logs.height
    (['ts', 'status', 'user', 'bytes', 'path'], 1000)
    >>> sorted(logs["status"].unique().to_list())
    [200, 404, 500]
    """
    rng = np.random.default_rng(seed)
    seconds = np.sort(rng.integers(0, DAYS * 86_400, rows))
    start = pl.lit(START).str.to_datetime("%Y-%m-%d %H:%M:%S")
    return pl.DataFrame(
        {
            "seconds": seconds,
            "status": rng.choice([200, 404, 500], rows, p=[0.9, 0.07, 0.03]),
            "user": rng.integers(0, 5_000, rows),
            # Log-normal sizes: mostly a few KiB, a long tail of large downloads.
            "bytes": rng.lognormal(8.0, 2.0, rows).astype(np.int64),
            "path": pl.Series(PATHS).gather(rng.integers(0, len(PATHS), rows)),
        }
    ).select(
        ts=(start + pl.duration(seconds=pl.col("seconds"))).dt.strftime("%Y-%m-%dT%H:%M:%S"),
        status=pl.col("status"),
        user=pl.format("user{}", pl.col("user").cast(pl.String).str.zfill(4)),
        bytes=pl.col("bytes"),
        path=pl.col("path"),
    )


def write_logs(logs: pl.DataFrame, directory: Path) -> list[Path]:
    """Write the log as ``FILES`` CSV files, the first half gzip'ed, and return their paths.

    >>> import tempfile, pathlib
    >>> [p.name for p in write_logs(make_logs(10), pathlib.Path(tempfile.mkdtemp()))]
    ['access-0.csv.gz', 'access-1.csv.gz', 'access-2.csv', 'access-3.csv']
    """
    directory.mkdir(parents=True, exist_ok=True)
    step = -(-logs.height // FILES)
    paths = []
    for i in range(FILES):
        part = logs.slice(i * step, step)
        if i < FILES // 2:
            path = directory / f"access-{i}.csv.gz"
            # Level 1: the demo is about reading, and writing at the default level takes seconds.
            with gzip.open(path, "wb", compresslevel=1) as handle:
                part.write_csv(handle)
        else:
            path = directory / f"access-{i}.csv"
            part.write_csv(path)
        paths.append(path)
    return paths


def add_size_class(batch: pl.DataFrame) -> pl.DataFrame:
    """Label each response small, medium or large; the workers run it through ``map_batches``.

    >>> add_size_class(pl.DataFrame({"bytes": [10, 50_000, 5_000_000]}))["size_class"].to_list()
    ['small', 'medium', 'large']
    """
    size = pl.col("bytes")
    label = (
        pl.when(size < 1024)
        .then(pl.lit("small"))
        .when(size < 1024 * 1024)
        .then(pl.lit("medium"))
        .otherwise(pl.lit("large"))
    )
    return batch.with_columns(size_class=label)


def build_pipeline(source: str) -> tb.Dataset:
    """Successful requests with their day and size class, from the CSV files ``source`` names.

    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = write_logs(make_logs(100), folder)
    >>> build_pipeline(str(folder / "*.csv*")).columns
    ['day', 'ts', 'user', 'path', 'bytes', 'size_class']
    """
    ok = (
        tb.read_csv(source)
        .filter(pl.col("status") == 200)
        .with_columns(day=pl.col("ts").str.slice(0, 10))
    )
    # Declaring what the function returns lets the select below be checked before the run.
    declared = {**ok.schema, "size_class": pl.String}
    return ok.map_batches(add_size_class, schema=declared).select(
        "day", "ts", "user", "path", "bytes", "size_class"
    )


def requests_per_day(output: str | os.PathLike, workers: int | None = None) -> pl.DataFrame:
    """Requests and bytes per day of a demo output, read back with terabatch.

    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "part.parquet"
    >>> pl.DataFrame({"day": ["d1", "d1", "d2"], "bytes": [1, 2, 3]}).write_parquet(out)
    >>> requests_per_day(out).rows()
    [('d1', 2, 3), ('d2', 1, 3)]
    """
    # Two columns of the output fit in memory comfortably; terabatch prunes the other columns
    # and reads the files on every core.
    frame = tb.read_parquet(output).select("day", "bytes").collect(workers=workers)
    return (
        frame.group_by("day")
        .agg(requests=pl.len().cast(pl.Int64), bytes=pl.col("bytes").sum())
        .sort("day")
    )


def plain_console(stderr: bool = False) -> Console:
    """A console that prints text as given: no markup (``[...]`` in plans), no wrapping."""
    return Console(stderr=stderr, markup=False, highlight=False, soft_wrap=True)


@dataclass
class DemoRun:
    """Where the demo put its data, what the pipeline did, and the per-day result."""

    input_dir: Path
    output_dir: Path
    input_files: list[Path]
    summary: JobSummary
    per_day: pl.DataFrame


def run_demo(
    rows: int = 2_000_000,
    keep: str | os.PathLike | None = None,
    *,
    workers: int | None = None,
    progress: bool = True,
    console: Console | None = None,
) -> DemoRun:
    """Generate the log, run the pipeline into Parquet partitioned by day, aggregate the output.

    Data goes under ``keep`` (its ``logs`` and ``requests_by_day`` are replaced) or a new
    temporary directory, which is left in place so that it can be inspected afterwards.
    """
    console = console or plain_console()
    base = Path(keep) if keep is not None else Path(tempfile.mkdtemp(prefix="terabatch-demo-"))
    input_dir, output_dir = base / "logs", base / "requests_by_day"
    console.print(f"Generating {rows:,} web-server log rows in {input_dir} ...")
    started = time.monotonic()
    files = write_logs(make_logs(rows), input_dir)
    size = sum(f.stat().st_size for f in files)
    console.print(
        f"  {len(files)} CSV files ({FILES // 2} gzip'ed), {format_size(size)}, "
        f"in {time.monotonic() - started:.1f} s"
    )
    pipeline = build_pipeline(str(input_dir / "*.csv*"))
    console.print("\nPipeline, as Dataset.explain() shows it:", style="bold")
    console.print(pipeline.explain())
    console.print()
    summary = pipeline.write_parquet(
        output_dir, partition_by="day", mode="overwrite", workers=workers, progress=progress
    )
    per_day = requests_per_day(output_dir, workers=workers)
    return DemoRun(input_dir, output_dir, files, summary, per_day)


def _per_day_table(per_day: pl.DataFrame) -> Table:
    table = Table(title="Successful requests per day", caption="read back from the Parquet output")
    table.add_column("day")
    table.add_column("requests", justify="right")
    table.add_column("bytes", justify="right")
    for day, requests, nbytes in per_day.iter_rows():
        table.add_row(day, f"{requests:,}", format_size(nbytes))
    total_requests, total_bytes = per_day["requests"].sum(), per_day["bytes"].sum()
    table.add_row("total", f"{total_requests:,}", format_size(total_bytes), style="bold")
    return table


def render_result(run: DemoRun, console: Console) -> None:
    """Print the per-day table, where the data is, and what to try next."""
    console.print()
    console.print(_per_day_table(run.per_day))
    out = run.output_dir
    console.print(f"\ninput:  {run.input_dir}  ({len(run.input_files)} CSV files)")
    console.print(f"output: {out}  ({run.summary.files_written} Parquet files, partitioned by day)")
    console.print("\nTry next:", style="bold")
    console.print(f"  terabatch inspect {shlex.quote(str(out))}")
    large = shlex.quote(str(out.parent / "large_responses"))
    console.print(
        f"  terabatch convert {shlex.quote(str(out))} {large} --to csv "
        "--filter \"size_class = 'large'\" --select day,path,bytes"
    )
