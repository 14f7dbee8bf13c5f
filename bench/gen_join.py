"""Generate the db-benchmark join tables (J1) as Parquet with bounded memory.

The layout follows the h2oai/duckdb db-benchmark ``join-datagen.R`` script. For each key
column a key space of ``1.1 * n`` distinct ints is split into three parts: 90 % of the keys
are shared by both sides, 10 % appear only on the left (x) and 10 % only on the right, so
about 90 % of x's rows find a match. With N rows in x:

    x       N rows    id1, id2, id3 ints drawn with replacement from the left keys (shared +
                      left-only) of spaces of N/1e6, N/1e3 and N keys; id4, id5, id6 the
                      same keys as strings "id%d"; v1 uniform on [0, 100), 6 decimals
    small   N/1e6     id1 (a permutation of the right keys), id4, v2
    medium  N/1e3     id1 (drawn with replacement), id2 (a permutation), id4, id5, v2
    big     N         id1, id2 (drawn with replacement), id3 (a permutation), id4..id6, v2

The R script shuffles the key spaces with ``sample.int``. Here the N-sized space (and the
order of big's id3) uses an affine permutation ``i -> (a*i + b) mod M`` instead, so that x and
big can be written chunk by chunk without holding a permutation of N ints; the smaller
spaces are shuffled with numpy. Files go to ``bench/data/J1_<N>_{x,small,medium,big}.parquet``
(zstd, one row group per chunk), each written under a temporary name and renamed when
complete; ``J1_<N>.meta.json`` records rows and seed, so complete files are reused unless
``--force`` is given.

Usage:
    python bench/gen_join.py --rows 1e7 [--seed 0] [--force]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

DATA_DIR = Path(__file__).resolve().parent / "data"
DEFAULT_CHUNK_ROWS = 5_000_000
TABLES = ("x", "small", "medium", "big")


def parse_rows(text: str) -> int:
    """Parse a row count such as ``1e7`` into an int (at least 1e6, so small has a row)."""
    value = float(text)
    if value < 1e6 or value != int(value):
        raise argparse.ArgumentTypeError(f"rows must be an integer >= 1e6, got {text!r}")
    return int(value)


def rows_label(rows: int) -> str:
    """Short label for a row count: ``10_000_000 -> '1e7'``, other counts verbatim."""
    text = f"{rows:.0e}"
    if float(text) != rows:
        return str(rows)
    mantissa, exponent = text.split("e")
    return f"{mantissa}e{int(exponent)}"


def table_paths(rows: int, data_dir: Path = DATA_DIR) -> dict[str, Path]:
    """The four files of the J1 tables for ``rows`` rows, by table name."""
    return {t: data_dir / f"J1_{rows_label(rows)}_{t}.parquet" for t in TABLES}


def _meta_path(rows: int, data_dir: Path) -> Path:
    return data_dir / f"J1_{rows_label(rows)}.meta.json"


def is_complete(rows: int, seed: int, data_dir: Path = DATA_DIR) -> bool:
    """Whether all four tables exist and were generated for ``rows`` and ``seed``."""
    meta = _meta_path(rows, data_dir)
    if not meta.exists() or not all(p.exists() for p in table_paths(rows, data_dir).values()):
        return False
    recorded = json.loads(meta.read_text())
    return recorded.get("rows") == rows and recorded.get("seed") == seed


@dataclass(frozen=True)
class KeySpace:
    """``1.1 * n`` keys: positions [0, 0.9n) shared, [0.9n, n) left-only, [n, 1.1n) right-only.

    ``key(pos)`` maps a position to its key in 1..1.1n through a pseudo-random bijection.
    """

    n: int
    a: int
    b: int
    shuffled: np.ndarray | None = None  # explicit permutation for small spaces

    @property
    def size(self) -> int:
        return _space_size(self.n)

    @classmethod
    def make(cls, n: int, rng: np.random.Generator, explicit: bool) -> KeySpace:
        size = _space_size(n)
        if explicit:
            return cls(n, 1, 0, rng.permutation(size).astype(np.int64) + 1)
        return cls(n, *_affine(size, rng))

    def key(self, pos: np.ndarray) -> np.ndarray:
        if self.shuffled is not None:
            return self.shuffled[pos]
        return (self.a * pos + self.b) % self.size + 1

    def left(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """``count`` keys drawn with replacement from the shared and left-only keys."""
        return self.key(rng.integers(0, self.n, count))

    def right(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """``count`` keys drawn with replacement from the shared and right-only keys."""
        return self.key(_right_pos(rng.integers(0, self.n, count), self.n))


def _shared(n: int) -> int:
    """Number of keys shared by both sides in a space for ``n`` keys per side."""
    return (n * 9) // 10


def _space_size(n: int) -> int:
    """Keys in a space: shared, left-only and right-only (``1.1 * n`` for n divisible by 10)."""
    return 2 * n - _shared(n)


def _right_pos(index: np.ndarray, n: int) -> np.ndarray:
    """Index in [0, n) of the right keys -> position (skipping the left-only block)."""
    shared = _shared(n)
    return np.where(index < shared, index, index + (n - shared))


def _affine(modulus: int, rng: np.random.Generator) -> tuple[int, int]:
    """``(a, b)`` with ``gcd(a, modulus) == 1``, so ``i -> (a*i + b) % modulus`` is a bijection."""
    while True:
        a = int(rng.integers(modulus // 3, modulus)) | 1
        if math.gcd(a, modulus) == 1:
            return a, int(rng.integers(0, modulus))


def _strings(frame: pl.DataFrame, pairs: dict[str, str]) -> pl.DataFrame:
    return frame.with_columns(
        pl.format("id{}", pl.col(src)).alias(dst) for dst, src in pairs.items()
    )


def _values(rng: np.random.Generator, count: int) -> np.ndarray:
    return np.round(rng.uniform(0, 100, count), 6)


def _chunks(total: int, chunk_rows: int) -> Iterator[tuple[int, int]]:
    for start in range(0, total, chunk_rows):
        yield start, min(chunk_rows, total - start)


def _write(path: Path, frames: Iterator[pl.DataFrame]) -> None:
    """Write ``frames`` to one Parquet file, a row group each, via a temporary name."""
    partial = path.with_name(path.name + ".partial")
    writer = None
    try:
        for frame in frames:
            table = frame.to_arrow()
            if writer is None:
                writer = pq.ParquetWriter(partial, table.schema, compression="zstd")
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
    partial.replace(path)


def generate(
    rows: int,
    seed: int = 0,
    data_dir: Path = DATA_DIR,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    force: bool = False,
) -> dict[str, Path]:
    """Write the four J1 tables for ``rows`` rows (unless complete already); return paths."""
    paths = table_paths(rows, data_dir)
    if not force and is_complete(rows, seed, data_dir):
        return paths
    data_dir.mkdir(parents=True, exist_ok=True)
    _meta_path(rows, data_dir).unlink(missing_ok=True)
    rng = np.random.default_rng(seed)
    n1, n2, n3 = rows // 10**6, rows // 10**3, rows
    k1, k2 = KeySpace.make(n1, rng, True), KeySpace.make(n2, rng, True)
    k3 = KeySpace.make(n3, rng, False)
    order = _affine(n3, rng)  # order of big's id3, a permutation of its right keys

    def x_frames() -> Iterator[pl.DataFrame]:
        for _, size in _chunks(rows, chunk_rows):
            frame = pl.DataFrame(
                {
                    "id1": k1.left(rng, size),
                    "id2": k2.left(rng, size),
                    "id3": k3.left(rng, size),
                }
            )
            frame = _strings(frame, {"id4": "id1", "id5": "id2", "id6": "id3"})
            yield frame.with_columns(pl.Series("v1", _values(rng, size)))

    def small_frames() -> Iterator[pl.DataFrame]:
        ids = k1.key(_right_pos(rng.permutation(n1), n1))
        frame = _strings(pl.DataFrame({"id1": ids}), {"id4": "id1"})
        yield frame.with_columns(pl.Series("v2", _values(rng, n1)))

    def medium_frames() -> Iterator[pl.DataFrame]:
        frame = pl.DataFrame(
            {"id1": k1.right(rng, n2), "id2": k2.key(_right_pos(rng.permutation(n2), n2))}
        )
        frame = _strings(frame, {"id4": "id1", "id5": "id2"})
        yield frame.with_columns(pl.Series("v2", _values(rng, n2)))

    def big_frames() -> Iterator[pl.DataFrame]:
        a, b = order
        for start, size in _chunks(rows, chunk_rows):
            index = (a * np.arange(start, start + size, dtype=np.int64) + b) % n3
            frame = pl.DataFrame(
                {
                    "id1": k1.right(rng, size),
                    "id2": k2.right(rng, size),
                    "id3": k3.key(_right_pos(index, n3)),
                }
            )
            frame = _strings(frame, {"id4": "id1", "id5": "id2", "id6": "id3"})
            yield frame.with_columns(pl.Series("v2", _values(rng, size)))

    for name, frames in (
        ("small", small_frames),
        ("medium", medium_frames),
        ("x", x_frames),
        ("big", big_frames),
    ):
        _write(paths[name], frames())
    meta = {"rows": rows, "seed": seed, "files": {t: p.stat().st_size for t, p in paths.items()}}
    _meta_path(rows, data_dir).write_text(json.dumps(meta, indent=2) + "\n")
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=parse_rows, default=10**7, help="rows of x, e.g. 1e7")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS)
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--force", action="store_true", help="regenerate even if complete")
    args = parser.parse_args()
    if not args.force and is_complete(args.rows, args.seed, args.data_dir):
        print(f"complete already: {table_paths(args.rows, args.data_dir)['x']} (and others)")
        return
    start = time.perf_counter()
    paths = generate(args.rows, args.seed, args.data_dir, args.chunk_rows, force=True)
    for name, path in paths.items():
        print(f"{name}: {path} ({path.stat().st_size / 1e6:.1f} MB)")
    print(f"generated in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
