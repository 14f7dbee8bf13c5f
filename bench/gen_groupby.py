"""Generate the db-benchmark group-by table (G1) as CSV or Parquet with bounded memory.

The layout follows the h2oai/duckdb db-benchmark ``groupby-datagen.R`` script with K = 100:

    id1, id2  "id%03d" drawn uniformly from 1..K
    id3       "id%010d" drawn uniformly from 1..N/K
    id4, id5  int drawn uniformly from 1..K
    id6       int drawn uniformly from 1..N/K
    v1        int drawn uniformly from 1..5
    v2        int drawn uniformly from 1..15
    v3        float uniform on [0, 100), rounded to 6 decimals

Rows are generated in chunks with numpy, so memory stays bounded at any N. As CSV (the
default) they are appended to one open file with polars ``write_csv`` (header written once).
As Parquet (``--format parquet``) they go to a directory of files of ``--file-rows`` rows each
(``part-0000.parquet``, ...; zstd, row groups of ``--row-group-rows``), so that readers can
work on several files at once; the columns have the types reading the CSV gives (id1..id3
strings, id4..id6, v1, v2 int64, v3 float64) and, for the same seed and chunk size, the same
values. At 1e9 rows that is about 50 GB as CSV, about 20 GB as Parquet.

The output is written under a temporary name (``<out>.partial``) and renamed when complete; a
JSON sidecar (``<out>.meta.json``, next to the file or directory) records rows, seed and size,
so an existing complete output is reused unless ``--force`` is given. Progress (rows written,
elapsed time, projected end) goes to stderr after every chunk.

Usage:
    python bench/gen_groupby.py --rows 1e7 --out bench/data/G1_1e7.csv [--seed 0] [--force]
    python bench/gen_groupby.py --rows 1e9 --format parquet   # bench/data/G1_1e9.parquet/
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

K = 100
DEFAULT_CHUNK_ROWS = 5_000_000
DEFAULT_FILE_ROWS = 50_000_000
DEFAULT_ROW_GROUP_ROWS = 1_000_000
DATA_DIR = Path(__file__).resolve().parent / "data"
FORMATS = ("csv", "parquet")
# The types reading the CSV gives (polars: String -> large_string); fixed so every file agrees.
PARQUET_SCHEMA = pa.schema(
    [
        *((name, pa.large_string()) for name in ("id1", "id2", "id3")),
        *((name, pa.int64()) for name in ("id4", "id5", "id6", "v1", "v2")),
        ("v3", pa.float64()),
    ]
)


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


def default_path(rows: int, data_dir: Path, fmt: str = "csv") -> Path:
    """Conventional name of a table of ``rows`` rows: ``G1_1e7.csv``, or the directory
    ``G1_1e7.parquet`` for Parquet."""
    return data_dir / f"G1_{rows_label(rows)}.{fmt}"


def path_format(path: Path) -> str:
    """The format of a G1 output by its name: ``parquet`` for a ``.parquet`` name (the
    directory ``generate`` writes), else ``csv``."""
    return "parquet" if path.suffix == ".parquet" else "csv"


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


def _parquet_files(out: Path) -> list[Path]:
    return sorted(out.glob("part-*.parquet"))


def _meta(out: Path, rows: int, seed: int) -> dict[str, object]:
    """What the sidecar of a complete ``out`` records (CSV: as before formats were added, so
    that existing files are still recognised)."""
    if path_format(out) == "csv":
        return {"rows": rows, "seed": seed, "bytes": out.stat().st_size}
    files = len(_parquet_files(out))
    return {
        "rows": rows,
        "seed": seed,
        "format": "parquet",
        "files": files,
        "bytes": output_bytes(out),
    }


def is_complete(out: Path, rows: int, seed: int) -> bool:
    """True if ``out`` was fully generated earlier with the same rows and seed."""
    meta_path = _meta_path(out)
    if not out.exists() or not meta_path.exists():
        return False
    return json.loads(meta_path.read_text()) == _meta(out, rows, seed)


def output_bytes(out: Path) -> int:
    """Size of a generated table: the CSV file, or all files of the Parquet directory."""
    return (
        sum(f.stat().st_size for f in _parquet_files(out)) if out.is_dir() else out.stat().st_size
    )


def _chunks(rng: np.random.Generator, rows: int, chunk_rows: int) -> Iterator[pl.DataFrame]:
    """The table's rows, ``chunk_rows`` at a time, with progress on stderr after each chunk."""
    start_time = time.perf_counter()
    for start in range(0, rows, chunk_rows):
        yield make_chunk(rng, min(chunk_rows, rows - start), rows)
        done = min(start + chunk_rows, rows)
        elapsed = time.perf_counter() - start_time
        left = elapsed / done * (rows - done)
        print(
            f"  {done:,}/{rows:,} rows ({100 * done / rows:.0f} %), {elapsed:.0f} s, "
            f"{done / elapsed / 1e6:.2f} M rows/s, about {left:.0f} s left",
            file=sys.stderr,
            flush=True,
        )


def _write_csv(chunks: Iterator[pl.DataFrame], tmp: Path) -> None:
    with tmp.open("wb") as fh:
        for index, chunk in enumerate(chunks):
            chunk.write_csv(fh, include_header=index == 0)


def _write_parquet(
    chunks: Iterator[pl.DataFrame], tmp: Path, file_rows: int, row_group_rows: int
) -> None:
    """Chunks into ``tmp/part-NNNN.parquet`` files of ``file_rows`` rows (the last may have
    fewer); a chunk that crosses a file boundary is split there."""
    tmp.mkdir()
    writer: pq.ParquetWriter | None = None
    in_file = files = 0
    try:
        for chunk in chunks:
            table = chunk.to_arrow().cast(PARQUET_SCHEMA)
            offset = 0
            while offset < table.num_rows:
                if writer is None:
                    path = tmp / f"part-{files:04d}.parquet"
                    writer = pq.ParquetWriter(path, PARQUET_SCHEMA, compression="zstd")
                    files += 1
                piece = table.slice(offset, file_rows - in_file)
                writer.write_table(piece, row_group_size=row_group_rows)
                offset += piece.num_rows
                in_file += piece.num_rows
                if in_file == file_rows:
                    writer.close()
                    writer, in_file = None, 0
    finally:
        if writer is not None:
            writer.close()


def generate(
    rows: int,
    out: Path,
    seed: int = 0,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    force: bool = False,
    file_rows: int = DEFAULT_FILE_ROWS,
    row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
) -> bool:
    """Write the G1 table to ``out`` (CSV, or a Parquet directory if ``out`` ends in
    ``.parquet``); return False if an existing complete output was kept.

    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp()) / "G1_1e3.parquet"
    >>> generate(1000, out, file_rows=600, row_group_rows=100)
    True
    >>> sorted(f.name for f in out.iterdir()), pl.scan_parquet(out / "*.parquet").collect().shape
    (['part-0000.parquet', 'part-0001.parquet'], (1000, 9))
    """
    if not force and is_complete(out, rows, seed):
        return False
    out.parent.mkdir(parents=True, exist_ok=True)
    _meta_path(out).unlink(missing_ok=True)
    tmp = out.with_name(out.name + ".partial")
    remove(tmp)
    chunks = _chunks(np.random.default_rng(seed), rows, chunk_rows)
    if path_format(out) == "csv":
        _write_csv(chunks, tmp)
    else:
        _write_parquet(chunks, tmp, file_rows, row_group_rows)
    remove(out)
    tmp.rename(out)
    _meta_path(out).write_text(json.dumps(_meta(out, rows, seed)))
    return True


def remove(path: Path) -> None:
    """Delete a file or directory if present."""
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=parse_rows, required=True, help="row count, e.g. 1e7")
    parser.add_argument("--format", choices=FORMATS, default="csv", help="default: csv")
    parser.add_argument(
        "--out",
        type=Path,
        help="CSV file, or Parquet directory (name ending in .parquet), to write "
        "(default: bench/data/G1_<rows>.<format>)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS)
    parser.add_argument(
        "--file-rows", type=int, default=DEFAULT_FILE_ROWS, help="rows per Parquet file"
    )
    parser.add_argument(
        "--row-group-rows", type=int, default=DEFAULT_ROW_GROUP_ROWS, help="rows per row group"
    )
    parser.add_argument("--force", action="store_true", help="regenerate even if complete")
    args = parser.parse_args()
    out = args.out or default_path(args.rows, DATA_DIR, args.format)
    if path_format(out) != args.format:
        parser.error(f"--out {out}: a {args.format} output must be named *.{args.format}")

    start = time.perf_counter()
    written = generate(
        args.rows,
        out,
        args.seed,
        args.chunk_rows,
        args.force,
        file_rows=args.file_rows,
        row_group_rows=args.row_group_rows,
    )
    elapsed = time.perf_counter() - start
    size_mb = output_bytes(out) / 1e6
    action = "generated" if written else "kept existing (use --force to regenerate)"
    print(f"{out}: {action}; rows={args.rows:,} size={size_mb:,.1f} MB time={elapsed:.1f} s")


if __name__ == "__main__":
    main()
