"""The benchmark contenders; each invocation runs one contender on one task, then exits.

``run_core.py`` starts this script once per measured run so that every contender gets a
fresh interpreter and its memory is measured in isolation. Imports happen inside the
contender functions, so a run only loads the library it measures.

Tasks (on the G1 group-by table):
    convert   CSV -> Parquet (zstd)
    pipeline  filter v1 >= 2, add v4 = v3 * 2 and id1u = upper(id1),
              select id1u, id4, v1, v4, write Parquet (zstd)

Usage:
    python bench/contenders.py CONTENDER TASK SRC OUT [--memory 1GB]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

TASKS = ("convert", "pipeline")
PIPELINE_COLUMNS = ["id1u", "id4", "v1", "v4"]
PANDAS_CHUNK_ROWS = 1_000_000
PANDAS_WORKERS = 2


def run_terabatch(task: str, src: Path, out: Path, memory: str | None) -> None:
    """terabatch API; writes a directory of Parquet files."""
    import polars as pl

    import terabatch as tb

    frame = tb.read_csv(src)
    if task == "pipeline":
        frame = (
            frame.filter(pl.col("v1") >= 2)
            .with_columns(v4=pl.col("v3") * 2, id1u=pl.col("id1").str.to_uppercase())
            .select(*PIPELINE_COLUMNS)
        )
    frame.write_parquet(out, compression="zstd", memory=memory)


def run_polars(task: str, src: Path, out: Path, memory: str | None) -> None:
    """polars lazy scan + ``sink_parquet`` (streaming engine); writes one file."""
    import polars as pl

    frame = pl.scan_csv(src)
    if task == "pipeline":
        frame = (
            frame.filter(pl.col("v1") >= 2)
            .with_columns(v4=pl.col("v3") * 2, id1u=pl.col("id1").str.to_uppercase())
            .select(PIPELINE_COLUMNS)
        )
    frame.sink_parquet(out, compression="zstd")


def _sql_string(value: Path) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def run_duckdb(task: str, src: Path, out: Path, memory: str | None) -> None:
    """duckdb ``COPY (SELECT ...) TO`` with default settings; writes one file."""
    import duckdb

    if task == "convert":
        query = f"SELECT * FROM read_csv({_sql_string(src)})"
    else:
        query = (
            "SELECT upper(id1) AS id1u, id4, v1, v3 * 2 AS v4 "
            f"FROM read_csv({_sql_string(src)}) WHERE v1 >= 2"
        )
    with duckdb.connect() as con:
        con.execute(f"COPY ({query}) TO {_sql_string(out)} (FORMAT parquet, COMPRESSION zstd)")


def _pandas_write_chunk(job: tuple[int, pd.DataFrame, str, Path]) -> int:
    """Worker: transform one chunk for ``task`` and write it as ``part-{i}.parquet``."""
    index, chunk, task, out = job
    if task == "pipeline":
        chunk = chunk[chunk["v1"] >= 2]
        chunk = chunk.assign(v4=chunk["v3"] * 2, id1u=chunk["id1"].str.upper())
        chunk = chunk[PIPELINE_COLUMNS]
    chunk.to_parquet(
        out / f"part-{index:05d}.parquet", engine="pyarrow", compression="zstd", index=False
    )
    return len(chunk)


def _pandas_jobs(
    chunks: Iterable[pd.DataFrame], task: str, out: Path
) -> Iterable[tuple[int, pd.DataFrame, str, Path]]:
    for index, chunk in enumerate(chunks):
        yield index, chunk, task, out


def run_pandas_mp(task: str, src: Path, out: Path, memory: str | None) -> None:
    """Hand-written pandas: chunked ``read_csv`` in the parent, a 2-process pool writing parts.

    ``imap`` hands chunks to the pool lazily, so only a few chunks are in flight at once.
    """
    import multiprocessing

    import pandas as pd

    out.mkdir(parents=True)
    with (
        pd.read_csv(src, chunksize=PANDAS_CHUNK_ROWS) as reader,
        multiprocessing.Pool(PANDAS_WORKERS) as pool,
    ):
        for _ in pool.imap(_pandas_write_chunk, _pandas_jobs(reader, task, out)):
            pass


CONTENDERS: dict[str, Callable[[str, Path, Path, str | None], None]] = {
    "terabatch": run_terabatch,
    "polars": run_polars,
    "duckdb": run_duckdb,
    "pandas_mp": run_pandas_mp,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("contender", choices=CONTENDERS)
    parser.add_argument("task", choices=TASKS)
    parser.add_argument("src", type=Path, help="input CSV")
    parser.add_argument("out", type=Path, help="output file or directory (must not exist)")
    parser.add_argument("--memory", default=None, help="memory budget (terabatch only)")
    args = parser.parse_args()
    CONTENDERS[args.contender](args.task, args.src, args.out, args.memory)


if __name__ == "__main__":
    main()
