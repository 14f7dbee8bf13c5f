"""The memory-budget check: a filter -> map_batches -> convert pipeline under ``--memory``.

Run it under ``peak_rss.py`` on an input ten times larger than the budget, e.g. the 5 GB table
with a 512 MB budget, and compare the peak RSS of the whole process tree with the budget:

    python bench/peak_rss.py -- python bench/budget_pipeline.py bench/data/G1_1e8.csv \\
        bench/results/budget_out --memory 512MB
"""

from __future__ import annotations

import argparse
import shutil

import polars as pl

import terabatch as tb


def enrich(frame: pl.DataFrame) -> pl.DataFrame:
    """A user function, run in the workers: its memory counts against the budget too."""
    return frame.with_columns(ratio=pl.col("v3") / pl.col("v2"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("out")
    parser.add_argument("--memory", default="512MB")
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    (
        tb.read_csv(args.source)
        .filter(pl.col("v1") >= 2)
        .map_batches(enrich)
        .write_parquet(args.out, memory=args.memory)
    )


if __name__ == "__main__":
    main()
