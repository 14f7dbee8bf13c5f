"""The group-by benchmark contenders; each invocation answers one question, then exits.

``run_groupby.py`` starts this script once per measured run, so every (question, contender)
gets a fresh interpreter and its memory is measured in isolation. Imports happen inside the
contender functions, so a run only loads the library it measures. The input is the G1 table
as one CSV file, or as Parquet: a directory of ``*.parquet`` files (what ``gen_groupby.py
--format parquet`` writes) or one ``.parquet`` file; ``is_parquet_source`` tells them apart by
the path. Every contender writes its answer as Parquet (a file, or a directory of files) for
the runner to check.

The questions are the ten db-benchmark group-by questions on the G1 table; ``QUESTIONS``
holds their keys, the columns they read, their result columns and DuckDB's SQL, and
``polars_aggs`` the Polars aggregations that terabatch and polars share. To add a contender,
write ``run_<name>(question, src, out, memory)`` and register it in ``CONTENDERS``.

Usage:
    python bench/groupby_contenders.py CONTENDER QUESTION SRC OUT [--memory 2GB]
    (SRC: G1_<rows>.csv, or the directory G1_<rows>.parquet)
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
    import dask.dataframe as dd
    import pandas as pd
    import polars as pl
    from pandas.api.typing import DataFrameGroupBy


@dataclass(frozen=True)
class Question:
    """One group-by question: ``SELECT keys, sql FROM G1 GROUP BY keys``."""

    title: str
    keys: tuple[str, ...]
    values: tuple[str, ...]
    outputs: tuple[str, ...]
    sql: str
    top2: bool = False

    @property
    def columns(self) -> list[str]:
        """The columns of the answer: keys, then results."""
        return [*self.keys, *self.outputs]


ID_ALL = ("id1", "id2", "id3", "id4", "id5", "id6")
QUESTIONS: dict[str, Question] = {
    "q1": Question("sum v1 by id1", ("id1",), ("v1",), ("v1",), "sum(v1) AS v1"),
    "q2": Question("sum v1 by id1, id2", ("id1", "id2"), ("v1",), ("v1",), "sum(v1) AS v1"),
    "q3": Question(
        "sum v1, mean v3 by id3",
        ("id3",),
        ("v1", "v3"),
        ("v1", "v3"),
        "sum(v1) AS v1, avg(v3) AS v3",
    ),
    "q4": Question(
        "mean v1, v2, v3 by id4",
        ("id4",),
        ("v1", "v2", "v3"),
        ("v1", "v2", "v3"),
        "avg(v1) AS v1, avg(v2) AS v2, avg(v3) AS v3",
    ),
    "q5": Question(
        "sum v1, v2, v3 by id6",
        ("id6",),
        ("v1", "v2", "v3"),
        ("v1", "v2", "v3"),
        "sum(v1) AS v1, sum(v2) AS v2, sum(v3) AS v3",
    ),
    "q6": Question(
        "median, sd v3 by id4, id5",
        ("id4", "id5"),
        ("v3",),
        ("median_v3", "sd_v3"),
        "median(v3) AS median_v3, stddev_samp(v3) AS sd_v3",
    ),
    "q7": Question(
        "max v1 - min v2 by id3",
        ("id3",),
        ("v1", "v2"),
        ("range_v1_v2",),
        "max(v1) - min(v2) AS range_v1_v2",
    ),
    "q8": Question(
        "largest two v3 by id6",
        ("id6",),
        ("v3",),
        ("largest2_v3",),
        "unnest(max(v3, 2)) AS largest2_v3",
        top2=True,
    ),
    "q9": Question(
        "regression v1, v2 by id2, id4",
        ("id2", "id4"),
        ("v1", "v2"),
        ("r2",),
        "pow(corr(v1, v2), 2) AS r2",
    ),
    "q10": Question(
        "sum v3, count by id1..id6",
        ID_ALL,
        ("v3",),
        ("v3", "count"),
        "sum(v3) AS v3, count(*) AS count",
    ),
}


def polars_aggs(question: str) -> list[pl.Expr]:
    """The aggregations of ``question`` as Polars expressions (terabatch and polars)."""
    import polars as pl

    v1, v2, v3 = pl.col("v1"), pl.col("v2"), pl.col("v3")
    aggs = {
        "q1": [v1.sum()],
        "q2": [v1.sum()],
        "q3": [v1.sum(), v3.mean()],
        "q4": [v1.mean(), v2.mean(), v3.mean()],
        "q5": [v1.sum(), v2.sum(), v3.sum()],
        "q6": [v3.median().alias("median_v3"), v3.std().alias("sd_v3")],
        "q7": [(v1.max() - v2.min()).alias("range_v1_v2")],
        "q8": [v3.top_k(2).alias("largest2_v3")],
        "q9": [pl.corr(v1, v2).pow(2).alias("r2")],
        "q10": [v3.sum(), pl.len().alias("count")],
    }
    return aggs[question]


# input -----------------------------------------------------------------------------------------


def is_parquet_source(src: Path) -> bool:
    """Whether ``src`` is Parquet (a directory of ``*.parquet`` files, or a ``.parquet`` file)
    rather than a CSV file.

    >>> is_parquet_source(Path("G1_1e7.csv")), is_parquet_source(Path("G1_1e7.parquet"))
    (False, True)
    """
    return src.is_dir() or src.suffix == ".parquet"


def parquet_glob(src: Path) -> Path:
    """The Parquet files of ``src`` as a path or glob for the readers: ``src/*.parquet`` for a
    directory, else ``src`` itself."""
    return src / "*.parquet" if src.is_dir() else src


def parquet_file_list(src: Path) -> list[Path]:
    """The Parquet files of ``src``, in name order."""
    return sorted(src.glob("*.parquet")) if src.is_dir() else [src]


# terabatch, polars, duckdb ---------------------------------------------------------------------


def run_terabatch(question: str, src: Path, out: Path, memory: str | None) -> None:
    """``tb.read_csv(src)`` (or ``tb.read_parquet(src)``) ``.group_by(keys).agg(aggs)
    .write_parquet(out, memory=...)``.

    Writes a directory. q8's answer stays one list of (up to) two values per key: terabatch
    has no explode, and refuses it inside a narrow operation after the shuffle.
    """
    import terabatch as tb

    q = QUESTIONS[question]
    dataset = tb.read_parquet(src) if is_parquet_source(src) else tb.read_csv(src)
    (
        dataset.group_by(*q.keys)
        .agg(*polars_aggs(question))
        .write_parquet(out, compression="zstd", memory=memory, progress=False)
    )


def run_polars(question: str, src: Path, out: Path, memory: str | None) -> None:
    """``pl.scan_csv(src)`` (or ``pl.scan_parquet(src/*.parquet)``) ``.group_by(keys)
    .agg(aggs)`` on the streaming engine, sunk to one file.

    ``sink_parquet`` runs the streaming engine, as ``collect(engine="streaming")`` does, but
    writes the answer instead of materialising it. q8 is exploded to one row per value.
    """
    import polars as pl

    q = QUESTIONS[question]
    scan = pl.scan_parquet(parquet_glob(src)) if is_parquet_source(src) else pl.scan_csv(src)
    frame = scan.group_by(q.keys).agg(polars_aggs(question))
    if q.top2:
        frame = frame.explode("largest2_v3")
    frame.sink_parquet(out, compression="zstd")


def _sql_string(value: Path) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def duckdb_query(question: str, src: Path) -> str:
    """DuckDB's SQL for ``question`` over ``read_csv(src)``, or ``read_parquet(src/*.parquet)``
    for a Parquet source."""
    q = QUESTIONS[question]
    keys = ", ".join(q.keys)
    if is_parquet_source(src):
        table = f"read_parquet({_sql_string(parquet_glob(src))})"
    else:
        table = f"read_csv({_sql_string(src)})"
    return f"SELECT {keys}, {q.sql} FROM {table} GROUP BY {keys}"


def run_duckdb(question: str, src: Path, out: Path, memory: str | None) -> None:
    """``COPY (SELECT ... GROUP BY ...) TO out`` on an in-memory connection, default settings."""
    import duckdb

    query = duckdb_query(question, src)
    with duckdb.connect() as con:
        con.execute(f"COPY ({query}) TO {_sql_string(out)} (FORMAT parquet, COMPRESSION zstd)")


# pandas + multiprocessing ----------------------------------------------------------------------
#
# Two phases, both on a pool of PANDAS_WORKERS processes:
#   map     the parent reads the input in chunks; a worker reduces each chunk to partial
#           aggregates (decomposable questions), to its top two v3 per id6 (q8), or keeps its
#           rows (q6, q9), hash-partitions the result on the keys into buckets and writes one
#           Arrow IPC file per bucket to a spill directory;
#   reduce  a worker reads all files of one bucket, combines them into the final answer for
#           the keys in that bucket and writes ``part-<bucket>.parquet``.
# A bucket holds about PANDAS_BUCKET_BYTES of input CSV (for Parquet input: of the same rows as
# CSV), so memory does not grow with the input.

PANDAS_CHUNK_ROWS = 1_000_000
PANDAS_WORKERS = 2
PANDAS_BUCKET_BYTES = 256 * 2**20
# Bytes of a G1 row as CSV (509,179,625 bytes at 1e7 rows), to size buckets for Parquet input.
G1_CSV_BYTES_PER_ROW = 51

# Map-side partial aggregates (pandas named aggregation) of the decomposable questions.
PANDAS_PARTIALS: dict[str, dict[str, tuple[str, str]]] = {
    "q1": {"v1": ("v1", "sum")},
    "q2": {"v1": ("v1", "sum")},
    "q3": {"v1": ("v1", "sum"), "v3_sum": ("v3", "sum"), "v3_n": ("v3", "count")},
    "q4": {
        f"{c}_{f}": (c, g) for c in ("v1", "v2", "v3") for f, g in (("sum", "sum"), ("n", "count"))
    },
    "q5": {"v1": ("v1", "sum"), "v2": ("v2", "sum"), "v3": ("v3", "sum")},
    "q7": {"v1_max": ("v1", "max"), "v2_min": ("v2", "min")},
    "q10": {"v3": ("v3", "sum"), "count": ("v3", "size")},
}
# How partial aggregates of each kind are combined on the reduce side.
PANDAS_COMBINE = {"sum": "sum", "count": "sum", "size": "sum", "max": "max", "min": "min"}


def _group(frame: pd.DataFrame, keys: tuple[str, ...]) -> DataFrameGroupBy:
    return frame.groupby(list(keys), sort=False, as_index=False)


def _top2(frame: pd.DataFrame) -> pd.DataFrame:
    """The two largest v3 of every id6 (top-k is mergeable, so it also runs map-side)."""
    return frame.sort_values("v3", ascending=False).groupby("id6", sort=False).head(2)


def _means(frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    """Turn ``<c>_sum`` and ``<c>_n`` partials into a mean column ``c``."""
    return frame.assign(**{c: frame[f"{c}_sum"] / frame[f"{c}_n"] for c in columns})


def _r2(frame: pd.DataFrame, keys: tuple[str, ...]) -> pd.DataFrame:
    """Squared Pearson correlation of v1 and v2 per group, with centred (two-pass) moments."""
    means = frame.groupby(list(keys), sort=False)[["v1", "v2"]].transform("mean")
    dx, dy = frame["v1"] - means["v1"], frame["v2"] - means["v2"]
    moments = frame[list(keys)].assign(xy=dx * dy, xx=dx * dx, yy=dy * dy)
    sums = _group(moments, keys)[["xy", "xx", "yy"]].sum()
    return sums.assign(r2=sums["xy"] ** 2 / (sums["xx"] * sums["yy"]))


def pandas_map(question: str, chunk: pd.DataFrame) -> pd.DataFrame:
    """Map side: what a chunk contributes to the answer."""
    q = QUESTIONS[question]
    if question in PANDAS_PARTIALS:
        return _group(chunk, q.keys).agg(**PANDAS_PARTIALS[question])
    if q.top2:
        return _top2(chunk)
    return chunk  # q6, q9: holistic, the rows themselves go to the reduce side


def pandas_reduce(question: str, frame: pd.DataFrame) -> pd.DataFrame:
    """Reduce side: the answer for the keys in ``frame``, which holds all of their data."""
    q = QUESTIONS[question]
    if question in PANDAS_PARTIALS:
        combine = {
            name: (name, PANDAS_COMBINE[func])
            for name, (_, func) in PANDAS_PARTIALS[question].items()
        }
        frame = _group(frame, q.keys).agg(**combine)
        if question == "q3":
            frame = _means(frame, ("v3",))
        elif question == "q4":
            frame = _means(frame, ("v1", "v2", "v3"))
        elif question == "q7":
            frame = frame.assign(range_v1_v2=frame["v1_max"] - frame["v2_min"])
    elif q.top2:
        frame = _top2(frame).rename(columns={"v3": "largest2_v3"})
    elif question == "q6":
        frame = _group(frame, q.keys).agg(median_v3=("v3", "median"), sd_v3=("v3", "std"))
    elif question == "q9":
        frame = _r2(frame, q.keys)
    return frame[q.columns]


def _bucket_file(spill: Path, bucket: int, chunk: int) -> Path:
    return spill / f"b{bucket:05d}-c{chunk:06d}.arrow"


def _pandas_map_chunk(job: tuple[str, int, pd.DataFrame, Path, int]) -> None:
    """Worker: map one chunk, hash-partition it on the keys, write one file per bucket."""
    import pandas as pd

    question, index, chunk, spill, n_buckets = job
    part = pandas_map(question, chunk)
    keys = list(QUESTIONS[question].keys)
    buckets = pd.util.hash_pandas_object(part[keys], index=False).to_numpy() % n_buckets
    for bucket, piece in part.groupby(buckets, sort=False):
        piece.reset_index(drop=True).to_feather(_bucket_file(spill, int(bucket), index))


def _pandas_reduce_bucket(job: tuple[str, int, Path, Path]) -> None:
    """Worker: combine every file of one bucket into the answer for its keys."""
    import pandas as pd

    question, bucket, spill, out = job
    files = sorted(spill.glob(f"b{bucket:05d}-*.arrow"))
    if not files:
        return
    frame = pd.concat((pd.read_feather(f) for f in files), ignore_index=True)
    result = pandas_reduce(question, frame)
    result.to_parquet(out / f"part-{bucket:05d}.parquet", compression="zstd", index=False)


def _map_jobs(
    question: str, chunks: Iterator[pd.DataFrame], spill: Path, n_buckets: int
) -> Iterator[tuple[str, int, pd.DataFrame, Path, int]]:
    for index, chunk in enumerate(chunks):
        yield question, index, chunk, spill, n_buckets


def _pandas_chunks(src: Path, columns: list[str]) -> Iterator[pd.DataFrame]:
    """``columns`` of the input, PANDAS_CHUNK_ROWS rows at a time: ``pd.read_csv(chunksize=)``,
    or for Parquet pyarrow's ``iter_batches`` over every file (row groups stream, so a file
    is never read whole)."""
    import pandas as pd

    if not is_parquet_source(src):
        with pd.read_csv(src, usecols=columns, chunksize=PANDAS_CHUNK_ROWS) as reader:
            yield from reader
        return
    import pyarrow.parquet as pq

    for file in parquet_file_list(src):
        with pq.ParquetFile(file) as reader:
            for batch in reader.iter_batches(batch_size=PANDAS_CHUNK_ROWS, columns=columns):
                yield batch.to_pandas()


def _pandas_bucket_count(src: Path) -> int:
    """Enough buckets for each to hold about PANDAS_BUCKET_BYTES of input as CSV."""
    if is_parquet_source(src):
        import pyarrow.parquet as pq

        rows = sum(pq.read_metadata(f).num_rows for f in parquet_file_list(src))
        csv_bytes = rows * G1_CSV_BYTES_PER_ROW
    else:
        csv_bytes = src.stat().st_size
    return max(2 * PANDAS_WORKERS, math.ceil(csv_bytes / PANDAS_BUCKET_BYTES))


def run_pandas_mp(question: str, src: Path, out: Path, memory: str | None) -> None:
    """Hand-written pandas: chunked ``read_csv`` (or pyarrow's Parquet batches) in the parent,
    a 2-process pool that pre-aggregates and hash-partitions chunks to spill files, then
    reduces bucket by bucket.

    Writes a directory of ``part-<bucket>.parquet`` files.
    """
    import multiprocessing

    q = QUESTIONS[question]
    n_buckets = _pandas_bucket_count(src)
    spill = out.with_name(out.name + ".spill")
    out.mkdir(parents=True)
    spill.mkdir()
    try:
        chunks = _pandas_chunks(src, [*q.keys, *q.values])
        with multiprocessing.Pool(PANDAS_WORKERS) as pool:
            for _ in pool.imap_unordered(
                _pandas_map_chunk, _map_jobs(question, chunks, spill, n_buckets)
            ):
                pass
            reduce_jobs = [(question, bucket, spill, out) for bucket in range(n_buckets)]
            pool.map(_pandas_reduce_bucket, reduce_jobs, chunksize=1)
    finally:
        shutil.rmtree(spill, ignore_errors=True)


# dask ------------------------------------------------------------------------------------------
#
# dask.dataframe on a LocalCluster of two single-threaded worker processes whose memory_limit
# splits --memory (``dask_cluster.py``). Dask's defaults elsewhere: CSV blocks of at most
# 64 MB (Parquet: row groups gathered into partitions by Dask's ``split_row_groups="infer"``),
# tree reductions whose number of output partitions Dask derives from the number of blocks (so
# large answers such as q10's end in several files), and peer-to-peer shuffles for q6's median
# and q8.

DASK_CSV_DTYPES = {
    **dict.fromkeys(("id1", "id2", "id3"), "string[pyarrow]"),
    **dict.fromkeys(("id4", "id5", "id6", "v1", "v2"), "int64"),
    "v3": "float64",
}
# Named aggregations of the questions that Dask's groupby().agg() answers directly.
DASK_AGGS: dict[str, dict[str, tuple[str, str]]] = {
    "q1": {"v1": ("v1", "sum")},
    "q2": {"v1": ("v1", "sum")},
    "q3": {"v1": ("v1", "sum"), "v3": ("v3", "mean")},
    "q4": {"v1": ("v1", "mean"), "v2": ("v2", "mean"), "v3": ("v3", "mean")},
    "q5": {"v1": ("v1", "sum"), "v2": ("v2", "sum"), "v3": ("v3", "sum")},
    "q6": {"median_v3": ("v3", "median"), "sd_v3": ("v3", "std")},
    "q7": {"v1_max": ("v1", "max"), "v2_min": ("v2", "min")},
    "q10": {"v3": ("v3", "sum"), "count": ("v3", "size")},
}


def _dask_r2(sums: pd.DataFrame) -> pd.DataFrame:
    """corr(v1, v2)^2 from the per-group sums of ``dask_answer``'s q9.

    v1 and v2 are ints, so the sums and ``n * sum(xy) - sum(x) * sum(y)`` are exact in int64;
    only the final ratio is rounded. Dask's own ``groupby().corr()`` combines the groups in a
    Python loop and returns a matrix per group.
    """
    n = sums["n"]
    cov = (n * sums["xy"] - sums["x"] * sums["y"]).astype("float64")
    var_x = (n * sums["xx"] - sums["x"] ** 2).astype("float64")
    var_y = (n * sums["yy"] - sums["y"] ** 2).astype("float64")
    return sums.assign(r2=cov**2 / (var_x * var_y))


def dask_answer(question: str, frame: dd.DataFrame) -> dd.DataFrame:
    """The answer to ``question`` over ``frame`` as a lazy Dask frame of ``q.columns``."""
    q = QUESTIONS[question]
    keys = list(q.keys)
    if q.top2:
        # top-k merges, so each partition is cut to its top two per id6 before the shuffle
        top = frame.map_partitions(_top2).shuffle(on="id6").map_partitions(_top2)
        return top.rename(columns={"v3": "largest2_v3"})[q.columns]
    if question == "q9":
        v1, v2 = frame["v1"], frame["v2"]
        moments = frame.assign(xy=v1 * v2, xx=v1 * v1, yy=v2 * v2)
        sums = (
            moments.groupby(keys, sort=False)
            .agg(
                n=("v1", "count"),
                x=("v1", "sum"),
                y=("v2", "sum"),
                xy=("xy", "sum"),
                xx=("xx", "sum"),
                yy=("yy", "sum"),
            )
            .reset_index()
        )
        return sums.map_partitions(_dask_r2)[q.columns]
    answer = frame.groupby(keys, sort=False).agg(**DASK_AGGS[question]).reset_index()
    if question == "q7":
        answer = answer.assign(range_v1_v2=answer["v1_max"] - answer["v2_min"])
    return answer[q.columns]


def run_dask(question: str, src: Path, out: Path, memory: str | None) -> None:
    """``dd.read_csv(src)`` (or ``dd.read_parquet(src)``) ``.groupby(keys).agg(...)`` on a
    memory-limited LocalCluster, written with ``to_parquet`` by the workers. Writes a directory
    of ``part.<i>.parquet`` files."""
    import dask.dataframe as dd
    from dask_cluster import dask_cluster

    q = QUESTIONS[question]
    columns = [*q.keys, *q.values]
    with dask_cluster(out.with_name(out.name + ".dask"), memory) as cluster:
        if is_parquet_source(src):
            frame = dd.read_parquet(src, columns=columns)
        else:
            dtypes = {c: DASK_CSV_DTYPES[c] for c in columns}
            frame = dd.read_csv(src, usecols=columns, dtype=dtypes)
        answer = dask_answer(question, frame)
        write = answer.to_parquet(out, compression="zstd", write_index=False, compute=False)
        cluster.compute(write)


CONTENDERS: dict[str, Callable[[str, Path, Path, str | None], None]] = {
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
    parser.add_argument("src", type=Path, help="input: CSV file, or Parquet directory or file")
    parser.add_argument("out", type=Path, help="output file or directory (must not exist)")
    parser.add_argument("--memory", default=None, help="memory budget (terabatch, dask)")
    args = parser.parse_args()
    CONTENDERS[args.contender](args.question, args.src, args.out, args.memory)


if __name__ == "__main__":
    main()
