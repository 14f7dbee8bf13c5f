"""Generate the db-benchmark group-by table (G1) as CSV with bounded memory.

The layout follows the h2oai/duckdb db-benchmark ``groupby-datagen.R`` script with K = 100:

    id1, id2  "id%03d" drawn uniformly from 1..K
    id3       "id%010d" drawn uniformly from 1..N/K
    id4, id5  int drawn uniformly from 1..K
    id6       int drawn uniformly from 1..N/K
    v1        int drawn uniformly from 1..5
    v2        int drawn uniformly from 1..15
    v3        float uniform on [0, 100), rounded to 6 decimals

Rows are generated in chunks with numpy and appended to one open file with polars
``write_csv`` (header written once), so memory stays bounded even for N = 1e8 (~5 GB).
The file is written under a temporary name and renamed when complete; a JSON sidecar
(``<out>.meta.json``) records rows, seed and size, so an existing complete file is reused
unless ``--force`` is given.

Usage:
    python bench/gen_groupby.py --rows 1e7 --out bench/data/G1_1e7.csv [--seed 0] [--force]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import polars as pl

K = 100
DEFAULT_CHUNK_ROWS = 5_000_000


def parse_rows(text: str) -> int:
    """Parse a row count such as ``1e7`` or ``10000000`` into an int."""
    value = float(text)
    if value < K or value != int(value):
        raise argparse.ArgumentTypeError(f"rows must be an integer >= {K}, got {text!r}")
    return int(value)


def rows_label(rows: int) -> str:
    """Short label for a row count: ``10_000_000 -> '1e7'``, other counts verbatim."""
    text = f"{rows:.0e}"  # e.g. "1e+07"
    if float(text) != rows:
        return str(rows)
    mantissa, exponent = text.split("e")
    return f"{mantissa}e{int(exponent)}"


def default_path(rows: int, data_dir: Path) -> Path:
    """Conventional file name for a table of ``rows`` rows, e.g. ``G1_1e7.csv``."""
    return data_dir / f"G1_{rows_label(rows)}.csv"


def make_chunk(rng: np.random.Generator, size: int, n_rows: int) -> pl.DataFrame:
    """Draw ``size`` rows of the G1 table for a table of ``n_rows`` rows in total."""
    n_groups = max(n_rows // K, 1)
    return pl.DataFrame(
        {
            "id1": rng.integers(1, K + 1, size),
            "id2": rng.integers(1, K + 1, size),
            "id3": rng.integers(1, n_groups + 1, size),
            "id4": rng.integers(1, K + 1, size),
            "id5": rng.integers(1, K + 1, size),
            "id6": rng.integers(1, n_groups + 1, size),
            "v1": rng.integers(1, 6, size),
            "v2": rng.integers(1, 16, size),
            "v3": np.round(rng.uniform(0, 100, size), 6),
        }
    ).with_columns(
        pl.format("id{}", pl.col("id1").cast(pl.String).str.zfill(3)),
        pl.format("id{}", pl.col("id2").cast(pl.String).str.zfill(3)),
        pl.format("id{}", pl.col("id3").cast(pl.String).str.zfill(10)),
    )


def _meta_path(out: Path) -> Path:
    return out.with_name(out.name + ".meta.json")


def is_complete(out: Path, rows: int, seed: int) -> bool:
    """True if ``out`` was fully generated earlier with the same rows and seed."""
    meta_path = _meta_path(out)
    if not out.exists() or not meta_path.exists():
        return False
    meta = json.loads(meta_path.read_text())
    return meta == {"rows": rows, "seed": seed, "bytes": out.stat().st_size}


def generate(
    rows: int,
    out: Path,
    seed: int = 0,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    force: bool = False,
) -> bool:
    """Write the G1 table to ``out``; return False if an existing complete file was kept."""
    if not force and is_complete(out, rows, seed):
        return False
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    rng = np.random.default_rng(seed)
    with tmp.open("wb") as fh:
        for start in range(0, rows, chunk_rows):
            chunk = make_chunk(rng, min(chunk_rows, rows - start), rows)
            chunk.write_csv(fh, include_header=start == 0)
    tmp.replace(out)
    meta = {"rows": rows, "seed": seed, "bytes": out.stat().st_size}
    _meta_path(out).write_text(json.dumps(meta))
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=parse_rows, required=True, help="row count, e.g. 1e7")
    parser.add_argument("--out", type=Path, required=True, help="CSV file to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS)
    parser.add_argument("--force", action="store_true", help="regenerate even if complete")
    args = parser.parse_args()

    start = time.perf_counter()
    written = generate(args.rows, args.out, args.seed, args.chunk_rows, args.force)
    elapsed = time.perf_counter() - start
    size_mb = args.out.stat().st_size / 1e6
    action = "generated" if written else "kept existing (use --force to regenerate)"
    print(f"{args.out}: {action}; rows={args.rows:,} size={size_mb:,.1f} MB time={elapsed:.1f} s")


if __name__ == "__main__":
    main()
