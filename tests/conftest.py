"""Shared fixtures: small data generated in ``tmp_path``, a way to force many tiny splits, and a
real S3-compatible server (moto) with a fresh bucket per test.

The job driver sizes splits and chunks from ``terabatch.run.sizing.MIN_SPLIT`` / ``MAX_SPLIT`` /
``MIN_CHUNK`` / ``MAX_CHUNK``; on kilobyte files that gives one task per file. ``tiny_splits``
pins those constants so that a small file is cut into many splits and chunks, which runs the
same code paths as a file of hundreds of gigabytes.

The S3 fixtures live here, not beside the storage tests, because the Dask tests combine them
with a cluster (tests/exec/test_dask_s3.py).

Hypothesis draws the same examples on every run (a fresh clone has no example database, so a
random draw could fail CI on a bug no change of its own touched); ``HYPOTHESIS_PROFILE=explore``
draws new ones, to look for bugs.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import polars as pl
import pytest
from helpers import make_frame
from hypothesis import settings
from s3_server import S3Bucket, S3Server

import terabatch.plan.coalesce as coalesce_module
import terabatch.run.job as job_module
import terabatch.run.sizing as sizing_module

settings.register_profile("repeatable", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


@pytest.fixture(autouse=True)
def several_reduce_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep a small shuffle's reduce stage in several tasks, as a large one would be.

    A job reduces shuffle partitions holding less than ``MIN_TASK_MEMORY`` together
    (``terabatch.plan.coalesce``): the kilobyte shuffles of tests would all be reduced by one
    task, and the code that meets several reduce tasks (a sort's order across files, a kill
    during the reduce stage) would go untested. Tests of that grouping set it back.
    """
    monkeypatch.setattr(coalesce_module, "MIN_TASK_MEMORY", 0)


@pytest.fixture
def tiny_splits(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Call ``tiny_splits(split_bytes, chunk_bytes=None)`` to pin the job's split and chunk sizes.

    Splits are then exactly ``split_bytes`` (rounded to record boundaries) and every split is
    parsed in chunks of about ``chunk_bytes`` (default: one chunk per split).
    """

    def set_sizes(split_bytes: int, chunk_bytes: int | None = None) -> None:
        chunk = chunk_bytes or split_bytes
        monkeypatch.setattr(sizing_module, "MIN_SPLIT", split_bytes)
        monkeypatch.setattr(sizing_module, "MAX_SPLIT", split_bytes)
        monkeypatch.setattr(sizing_module, "MIN_CHUNK", min(chunk, sizing_module.MIN_CHUNK))
        monkeypatch.setattr(sizing_module, "MAX_CHUNK", chunk)

    return set_sizes


@pytest.fixture
def many_partitions(monkeypatch: pytest.MonkeyPatch, tiny_splits) -> None:
    """Tiny splits and many shuffle partitions: every row travels through shuffle files."""
    tiny_splits(200)
    monkeypatch.setattr(sizing_module, "MAX_PARTITION", 64)


@pytest.fixture
def recorded_splits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The disk bytes of every piece a reduce task re-split (``repartition.split``), in order."""
    from terabatch.io import repartition

    calls: list[int] = []
    split = repartition.split

    def spy(fs, piece, *args, **kwargs):
        calls.append(piece.disk_bytes)
        return split(fs, piece, *args, **kwargs)

    monkeypatch.setattr(repartition, "split", spy)
    return calls


@pytest.fixture
def tiny_room(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """Call ``tiny_room(nbytes)`` to give reduce tasks only ``nbytes`` of memory for data, so
    that their partitions do not fit and are split again (or refused, for one heavy key)."""

    def set_room(nbytes: int) -> None:
        sized = job_module.size_job

        def size_job(options, input_bytes):
            sizing = sized(options, input_bytes)
            sizing.data_room = nbytes
            return sizing

        monkeypatch.setattr(job_module, "size_job", size_job)

    return set_room


@pytest.fixture
def frame() -> pl.DataFrame:
    return make_frame(600, seed=1)


@pytest.fixture
def csv_file(tmp_path: Path, frame: pl.DataFrame) -> Path:
    path = tmp_path / "data.csv"
    frame.write_csv(path)
    return path


@pytest.fixture
def csv_files(tmp_path: Path) -> list[Path]:
    """Three CSV files with the same header and consecutive ids, alone in a directory."""
    folder = tmp_path / "csvs"
    folder.mkdir()
    paths = []
    for i in range(3):
        path = folder / f"part-{i}.csv"
        make_frame(200, seed=10 + i, start=200 * i).write_csv(path)
        paths.append(path)
    return paths


@pytest.fixture
def jsonl_file(tmp_path: Path, frame: pl.DataFrame) -> Path:
    path = tmp_path / "data.jsonl"
    frame.write_ndjson(path)
    return path


@pytest.fixture
def parquet_file(tmp_path: Path) -> Path:
    """A Parquet file of 2000 rows sorted on ``id``, in 20 row groups of 100 rows."""
    path = tmp_path / "data.parquet"
    make_frame(2000, seed=2).write_parquet(path, row_group_size=100, statistics=True)
    return path


# a real S3-compatible server ---------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3Server]:
    """One moto server process for the test module, stopped at its end.

    Not for the whole session: the server is a child of the test process, so while it runs it
    counts in the process-tree memory that terabatch measures (about 80 MiB), which the memory
    budget tests of later modules assert on, as they do on the worker processes left behind.
    """
    with S3Server() as server:
        yield server


@pytest.fixture
def s3(s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Bucket]:
    """A new bucket; the AWS environment is emptied so that only what a test passes is used.

    Afterwards the s3fs filesystems terabatch made (one per set of storage options, each with
    its own botocore client, about 12 MB) are dropped, so that they do not pile up in the test
    process, whose memory later tests measure.
    """
    import s3fs

    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    empty = tmp_path / "aws-config"
    empty.mkdir()
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    yield S3Bucket(s3_server, s3_server.new_bucket())
    s3fs.S3FileSystem.clear_instance_cache()
    gc.collect()


@pytest.fixture
def aws_env(s3: S3Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The standard AWS environment pointing at the test server (what the CLI relies on)."""
    env = s3.server.aws_environment(str(tmp_path / "aws-config"))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env
