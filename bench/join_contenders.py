"""The join benchmark contenders; each invocation answers one question, then exits.

``run_join.py`` starts this script once per measured run, so every (question, contender) gets
a fresh interpreter and its memory is measured in isolation. Imports happen inside the
contender functions, so a run only loads the library it measures. Every contender writes the
joined table as Parquet (a file, or a directory of files) for the runner to check.

The questions are the five db-benchmark join questions on the J1 tables (``gen_join.py``):
x joined with small, medium or big. ``QUESTIONS`` holds the right-hand table, the key and the
kind of join of each. Output columns are x's columns, then the right table's non-key columns,
with ``_right`` appended to names that x has too (Polars' default).

Usage:
    python bench/join_contenders.py CONTENDER QUESTION X Y OUT [--memory 2GB]
"""

from __future__ import annotations

import argparse
import math
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

SUFFIX = "_right"


@dataclass(frozen=True)
class Question:
    """One join question: ``x <how> JOIN <table> USING (<on>)``."""

    title: str
    table: str
    on: str
    how: str


QUESTIONS: dict[str, Question] = {
    "q1": Question("small inner on int", "small", "id1", "inner"),
    "q2": Question("medium inner on int", "medium", "id2", "inner"),
    "q3": Question("medium outer on int", "medium", "id2", "left"),
    "q4": Question("medium inner on factor", "medium", "id5", "inner"),
    "q5": Question("big inner on int", "big", "id3", "inner"),
}

# Columns of the J1 tables (see gen_join.py).
TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "x": ("id1", "id2", "id3", "id4", "id5", "id6", "v1"),
    "small": ("id1", "id4", "v2"),
    "medium": ("id1", "id2", "id4", "id5", "v2"),
    "big": ("id1", "id2", "id3", "id4", "id5", "id6", "v2"),
}


def right_columns(question: str) -> list[tuple[str, str]]:
    """``(column, output name)`` of the right table's non-key columns."""
    q = QUESTIONS[question]
    left = set(TABLE_COLUMNS["x"])
    return [(c, c + SUFFIX if c in left else c) for c in TABLE_COLUMNS[q.table] if c != q.on]


# terabatch, polars, duckdb ---------------------------------------------------------------------


def run_terabatch(question: str, x: Path, y: Path, out: Path, memory: str | None) -> None:
    """``tb.read_parquet(x).join(tb.read_parquet(y), on=..., how=...).write_parquet(out)``."""
    import terabatch as tb

    q = QUESTIONS[question]
    (
        tb.read_parquet(x)
        .join(tb.read_parquet(y), on=q.on, how=q.how, suffix=SUFFIX)
        .write_parquet(out, compression="zstd", memory=memory, progress=False)
    )


def run_polars(question: str, x: Path, y: Path, out: Path, memory: str | None) -> None:
    """``pl.scan_parquet(x).join(pl.scan_parquet(y), ...)`` sunk to one file (streaming)."""
    import polars as pl

    q = QUESTIONS[question]
    frame = pl.scan_parquet(x).join(pl.scan_parquet(y), on=q.on, how=q.how, suffix=SUFFIX)
    frame.sink_parquet(out, compression="zstd")


def _sql_string(value: Path) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def duckdb_query(question: str, x: Path, y: Path) -> str:
    """DuckDB's SQL for ``question``, with the same output columns as Polars."""
    q = QUESTIONS[question]
    right = ", ".join(f'y."{c}" AS "{name}"' for c, name in right_columns(question))
    kind = {"inner": "INNER", "left": "LEFT"}[q.how]
    return (
        f"SELECT x.*, {right} FROM read_parquet({_sql_string(x)}) AS x "
        f"{kind} JOIN read_parquet({_sql_string(y)}) AS y ON x.{q.on} = y.{q.on}"
    )


def run_duckdb(question: str, x: Path, y: Path, out: Path, memory: str | None) -> None:
    """``COPY (SELECT ... JOIN ...) TO out`` on an in-memory connection, default settings."""
    import duckdb

    query = duckdb_query(question, x, y)
    with duckdb.connect() as con:
        con.execute(f"COPY ({query}) TO {_sql_string(out)} (FORMAT parquet, COMPRESSION zstd)")


# pandas + multiprocessing ----------------------------------------------------------------------
#
# A partitioned hash join on a pool of PANDAS_WORKERS processes, in two phases:
#   map     the parent reads x and y in record batches (pyarrow); a worker splits each batch
#           by a hash of the key into buckets and writes one Arrow IPC file per bucket;
#   reduce  a worker reads all files of one bucket of each side, joins them with
#           ``DataFrame.merge`` and writes ``part-<bucket>.parquet``.
# A bucket holds about PANDAS_BUCKET_BYTES of input Parquet, so memory does not grow with N.

PANDAS_BATCH_ROWS = 1_000_000
PANDAS_WORKERS = 2
PANDAS_BUCKET_BYTES = 64 * 2**20


def _spill_file(spill: Path, side: str, bucket: int, batch: int) -> Path:
    return spill / f"{side}-b{bucket:05d}-c{batch:06d}.arrow"


def _pandas_split(job: tuple[str, str, int, pd.DataFrame, Path, int]) -> None:
    """Worker: split one batch of one side by a hash of the key, one file per bucket."""
    import pandas as pd

    side, key, index, frame, spill, n_buckets = job
    buckets = pd.util.hash_pandas_object(frame[key], index=False).to_numpy() % n_buckets
    for bucket, piece in frame.groupby(buckets, sort=False):
        piece.reset_index(drop=True).to_feather(_spill_file(spill, side, int(bucket), index))


def _pandas_join_bucket(job: tuple[str, int, Path, Path]) -> None:
    """Worker: join the two sides of one bucket and write the result."""
    import pandas as pd

    question, bucket, spill, out = job
    q = QUESTIONS[question]

    def side(name: str, columns: tuple[str, ...]) -> pd.DataFrame:
        files = sorted(spill.glob(f"{name}-b{bucket:05d}-*.arrow"))
        if not files:
            return pd.DataFrame({c: [] for c in columns})
        return pd.concat((pd.read_feather(f) for f in files), ignore_index=True)

    left = side("x", TABLE_COLUMNS["x"])
    if left.empty:
        return
    right = side("y", TABLE_COLUMNS[q.table])
    if right.empty:
        right = right.astype({q.on: left[q.on].dtype})
    right = right.rename(columns=dict(right_columns(question)))
    result = left.merge(right, on=q.on, how=q.how, sort=False)
    result.to_parquet(out / f"part-{bucket:05d}.parquet", compression="zstd", index=False)


def _batches(
    side: str, src: Path, key: str, spill: Path, n_buckets: int
) -> Iterator[tuple[str, str, int, pd.DataFrame, Path, int]]:
    import pyarrow.parquet as pq

    for index, batch in enumerate(pq.ParquetFile(src).iter_batches(PANDAS_BATCH_ROWS)):
        yield side, key, index, batch.to_pandas(), spill, n_buckets


def run_pandas_mp(question: str, x: Path, y: Path, out: Path, memory: str | None) -> None:
    """Hand-written pandas: batches of x and y hash-partitioned to spill files by a 2-process
    pool, then ``merge`` bucket by bucket. Writes a directory of ``part-<bucket>.parquet``."""
    import itertools
    import multiprocessing

    q = QUESTIONS[question]
    size = x.stat().st_size + y.stat().st_size
    n_buckets = max(2 * PANDAS_WORKERS, math.ceil(size / PANDAS_BUCKET_BYTES))
    spill = out.with_name(out.name + ".spill")
    out.mkdir(parents=True)
    spill.mkdir()
    try:
        with multiprocessing.Pool(PANDAS_WORKERS) as pool:
            jobs = itertools.chain(
                _batches("x", x, q.on, spill, n_buckets), _batches("y", y, q.on, spill, n_buckets)
            )
            for _ in pool.imap_unordered(_pandas_split, jobs):
                pass
            reduce_jobs = [(question, bucket, spill, out) for bucket in range(n_buckets)]
            pool.map(_pandas_join_bucket, reduce_jobs, chunksize=1)
    finally:
        shutil.rmtree(spill, ignore_errors=True)


# dask ------------------------------------------------------------------------------------------


def run_dask(question: str, x: Path, y: Path, out: Path, memory: str | None) -> None:
    """``dd.read_parquet(x).merge(dd.read_parquet(y), on=..., how=...)`` on a memory-limited
    LocalCluster (``dask_cluster.py``), written with ``to_parquet`` by the workers.

    Dask chooses the join: a one-partition right table (small, medium) is broadcast to every
    partition of x; big is hash-joined after a peer-to-peer shuffle of both sides. Each row
    group (1 M rows, ``gen_join.py``) is a partition: by default Dask puts up to 256 MiB of row
    groups in one, which a worker's share of a 2 GB budget cannot hold as pandas (out of
    memory on every question at 1e7). Writes a directory of ``part.<i>.parquet`` files.
    """
    import dask.dataframe as dd
    from dask_cluster import dask_cluster

    q = QUESTIONS[question]
    with dask_cluster(out.with_name(out.name + ".dask"), memory) as cluster:
        left = dd.read_parquet(x, split_row_groups=True)
        right = dd.read_parquet(y, split_row_groups=True)
        joined = left.merge(right, on=q.on, how=q.how, suffixes=("", SUFFIX))
        write = joined.to_parquet(out, compression="zstd", write_index=False, compute=False)
        cluster.compute(write)


CONTENDERS: dict[str, Callable[[str, Path, Path, Path, str | None], None]] = {
    "terabatch": run_terabatch,
    "polars": run_polars,
    "duckdb": run_duckdb,
    "pandas_mp": run_pandas_mp,
    "dask": run_dask,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("contender", choices=CONTENDERS)
    parser.add_argument("question", choices=QUESTIONS)
    parser.add_argument("x", type=Path, help="left table (Parquet)")
    parser.add_argument("y", type=Path, help="right table (Parquet)")
    parser.add_argument("out", type=Path, help="output file or directory (must not exist)")
    parser.add_argument("--memory", default=None, help="memory budget (terabatch, dask)")
    args = parser.parse_args()
    CONTENDERS[args.contender](args.question, args.x, args.y, args.out, args.memory)


if __name__ == "__main__":
    main()
