"""A Dask job whose inputs, output and run directory are all on S3 (a real moto server).

The cluster's workers have no AWS credentials or endpoint in their environment: whatever they
reach on S3 (inputs, shuffle files, the staged output) they reach with the ``storage_options``
that travel inside the tasks, as for a user who points terabatch at a cluster of their own.
A join and a group_by make every row pass through shuffle files in the run directory, which
must be on S3 too: map_batches steps running on the workers list them there while the job runs
(a local shuffle directory would leave those listings empty).
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from s3_server import S3Bucket

import terabatch as tb
import terabatch.plan.stages as stages_module
import terabatch.run.sizing as sizing_module
from terabatch.errors import UserFunctionError

pytest.importorskip("distributed")

KEYS = 40
REGIONS = ("east", "north", "south", "west")
SHUFFLE_FILE = re.compile(
    r"runs/[0-9a-f]{16}/shuffle/shuffle-(1/left|1/right|2)/map-\d{5}/(data\.arrow|index\.json)$"
)
# The pieces of a join partition too large for a worker's room, split again beside it.
PIECE_FILE = re.compile(
    r"runs/[0-9a-f]{16}/shuffle/shuffle-1/left/split-\d{5}-[0-9a-f]{8}/p-(left|right)\.arrow$"
)


@pytest.fixture
def shuffled(monkeypatch: pytest.MonkeyPatch, tiny_splits) -> None:
    """About eight map tasks, four shuffle partitions, and a join that shuffles both sides."""
    tiny_splits(6_000)
    monkeypatch.setattr(sizing_module, "MAX_PARTITION", 12_000)
    monkeypatch.setattr(stages_module, "BROADCAST_BYTES", 0)


@pytest.fixture
def tables(s3: S3Bucket, tmp_path: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Facts (3000 rows over 40 keys) and a dimension table, uploaded to the bucket as CSV."""
    n = 3_000
    facts = pl.DataFrame(
        {
            "id": list(range(n)),
            "k": [(i * 7) % KEYS for i in range(n)],
            "value": [(i * 7919) % 2_001 - 1_000 for i in range(n)],
        }
    )
    dims = pl.DataFrame(
        {
            "k": list(range(KEYS)),
            "name": [f"name-{k:02d}" for k in range(KEYS)],
            "region": [REGIONS[k % 4] for k in range(KEYS)],
        }
    )
    facts.write_csv(tmp_path / "facts.csv")
    dims.write_csv(tmp_path / "dims.csv")
    s3.upload(tmp_path / "facts.csv", "in/facts.csv")
    s3.upload(tmp_path / "dims.csv", "in/dims.csv")
    return facts, dims


def polars_answer(facts: pl.DataFrame, dims: pl.DataFrame) -> pl.DataFrame:
    return (
        facts.join(dims, on="k")
        .group_by("region", "name")
        .agg(total=pl.col("value").sum(), n=pl.len(), top=pl.col("value").max())
        .sort("name")
    )


def listing_run_dir(
    options: dict, bucket: str, records: Path
) -> Callable[[pl.DataFrame], pl.DataFrame]:
    """A map_batches function that lists the run directory on S3 into a file of ``records``,
    with the process id of the worker it ran in."""
    records.mkdir(parents=True, exist_ok=True)

    def listing(frame: pl.DataFrame) -> pl.DataFrame:
        import s3fs

        fs = s3fs.S3FileSystem(**options, skip_instance_cache=True, use_listings_cache=False)
        seen = {"pid": os.getpid(), "keys": fs.find(f"{bucket}/runs")}
        (records / f"{uuid.uuid4().hex}.json").write_text(json.dumps(seen))
        return frame

    return listing


def failing_until(flag: Path, name: str) -> Callable[[pl.DataFrame], pl.DataFrame]:
    """A map_batches function that raises on the batch holding ``name`` until ``flag`` exists."""

    def flaky(frame: pl.DataFrame) -> pl.DataFrame:
        if (frame["name"] == name).any() and not flag.exists():
            raise RuntimeError("flaky service")
        return frame

    return flaky


def counting(calls: Path) -> Callable[[pl.DataFrame], pl.DataFrame]:
    """A map_batches function that leaves one file in ``calls`` per batch it sees."""
    calls.mkdir(parents=True, exist_ok=True)

    def count(frame: pl.DataFrame) -> pl.DataFrame:
        (calls / uuid.uuid4().hex).touch()
        return frame

    return count


def read_output(s3: S3Bucket, prefix: str, local: Path) -> pl.DataFrame:
    s3.fs.get(f"{s3.name}/{prefix}", str(local), recursive=True)
    frame = pl.read_parquet(str(local / "**" / "*.parquet"), hive_partitioning=True)
    return frame.select("region", "name", "total", "n", "top").sort("name")


def object_bytes(s3: S3Bucket, prefix: str) -> dict[str, bytes]:
    return {key: s3.fs.cat(f"{s3.name}/{prefix}/{key}") for key in s3.keys(prefix)}


def worker_environment_has_no_aws(cluster) -> None:
    """The workers could not reach the server with their own environment."""
    with cluster.client() as client:
        names = client.run(lambda: sorted(n for n in os.environ if n.startswith("AWS_")))
    for found in names.values():
        assert not {"AWS_ACCESS_KEY_ID", "AWS_ENDPOINT_URL", "AWS_PROFILE"} & set(found)


def assert_no_secret(s3: S3Bucket, cluster, *texts: str) -> None:
    logs = [p.read_text(errors="replace") for p in cluster.logs.glob("*.log")]
    for text in [*texts, *logs]:
        assert s3.server.secret not in text


def test_a_dask_job_keeps_its_shuffle_files_in_a_run_directory_on_s3(
    dask_cluster, s3: S3Bucket, tables, shuffled, tiny_room, tmp_path: Path
) -> None:
    worker_environment_has_no_aws(dask_cluster)
    tiny_room(20_000)  # join partitions do not fit: they are split into pieces, on S3 too
    opts, records = s3.storage_options, tmp_path / "listings"
    facts = tb.read_csv(s3.url("in/facts.csv"), storage_options=opts)
    dims = tb.read_csv(s3.url("in/dims.csv"), storage_options=opts)
    ds = (
        facts.join(dims, on="k")
        .map_batches(listing_run_dir(opts, s3.name, records / "join"))
        .group_by("region", "name")
        .agg(total=pl.col("value").sum(), n=pl.len(), top=pl.col("value").max())
        .map_batches(listing_run_dir(opts, s3.name, records / "last"))
    )
    with dask_cluster.client() as client:
        summary = ds.write_parquet(
            s3.url("out"),
            partition_by="region",
            storage_options=opts,
            run_dir=s3.url("runs"),
            executor=client,
            progress=False,
        )

    assert_frame_equal(read_output(s3, "out", tmp_path / "out"), polars_answer(*tables))
    # While the job ran, its workers found the shuffle files, and the pieces of the join
    # partitions split again, on S3.
    seen = {
        stage: [json.loads(p.read_text()) for p in (records / stage).iterdir()]
        for stage in ("join", "last")
    }
    pids = {s["pid"] for listings in seen.values() for s in listings}
    assert pids <= set(dask_cluster.worker_pids().values())
    keys = {stage: [k for s in listings for k in s["keys"]] for stage, listings in seen.items()}
    assert {m.group(1) for k in keys["last"] if (m := SHUFFLE_FILE.search(k))} == {
        "1/left",
        "1/right",
        "2",
    }
    assert {m.group(1) for k in keys["join"] if (m := PIECE_FILE.search(k))} == {"left", "right"}
    assert not (tmp_path / ".terabatch").exists()
    # After success the run directory is gone and _SUCCESS lists exactly the files written.
    assert s3.keys("runs") == []
    manifest = json.loads(s3.fs.cat(f"{s3.name}/out/_SUCCESS"))
    written = [k for k in s3.keys("out") if k != "_SUCCESS"]
    assert [f["path"] for f in manifest["files"]] == written
    assert {k.split("/")[0] for k in written} == {f"region={r}" for r in REGIONS}
    assert manifest["rows"] == summary.rows_written == KEYS
    assert summary.rows_read == 3_000 + KEYS
    assert_no_secret(s3, dask_cluster, str(summary), summary.render(), json.dumps(manifest))


def test_a_failed_dask_job_resumes_from_its_run_directory_on_s3(
    dask_cluster, s3: S3Bucket, tables, shuffled, tmp_path: Path
) -> None:
    worker_environment_has_no_aws(dask_cluster)
    flag, calls = tmp_path / "service-is-back", tmp_path / "calls"
    opts = s3.storage_options
    facts = tb.read_csv(s3.url("in/facts.csv"), storage_options=opts).map_batches(
        counting(calls), schema={"id": pl.Int64, "k": pl.Int64, "value": pl.Int64}
    )
    dims = tb.read_csv(s3.url("in/dims.csv"), storage_options=opts)
    ds = (
        facts.join(dims, on="k")
        .group_by("region", "name")
        .agg(total=pl.col("value").sum(), n=pl.len(), top=pl.col("value").max())
        .map_batches(failing_until(flag, "name-07"))
    )

    def write(out: str) -> tb.JobSummary:
        return ds.write_parquet(
            s3.url(out),
            partition_by="region",
            storage_options=opts,
            run_dir=s3.url("runs"),
            executor=dask_cluster.url,
            progress=False,
            max_retries=0,
        )

    with pytest.raises(UserFunctionError, match="flaky service") as failed:
        write("out")
    notes = "\n".join(failed.value.__notes__)
    assert re.search(rf"kept in s3://{s3.name}/runs/[0-9a-f]{{16}}; run the same job again", notes)
    kept = [k for k in s3.keys("") if k.startswith("runs/")]
    assert any("/done/" in k for k in kept) and any(SHUFFLE_FILE.search(k) for k in kept)
    assert not [k for k in s3.keys("out") if not k.startswith("_temporary/")]
    assert any(calls.iterdir())

    flag.touch()  # the function sees it at run time; the job's key is unchanged
    for p in calls.iterdir():
        p.unlink()
    resumed = write("out")
    assert resumed.resumed_tasks > 0
    # Every map task of the first shuffle was committed: its files on S3 were read again, and
    # no batch of the input went through the function a second time.
    assert list(calls.iterdir()) == []
    assert s3.keys("runs") == []

    clean = write("clean")
    assert clean.resumed_tasks == 0
    assert object_bytes(s3, "out") == object_bytes(s3, "clean")
    assert_frame_equal(read_output(s3, "out", tmp_path / "out"), polars_answer(*tables))
    assert_no_secret(s3, dask_cluster, str(failed.value), notes, resumed.render())


def test_bad_rows_go_to_a_quarantine_on_s3_and_join_a_local_output(
    dask_cluster, s3: S3Bucket, tables, shuffled, tmp_path: Path
) -> None:
    # One set of storage_options serves the output and the run directory: here the output is
    # local (it ignores them) and the run directory, with the quarantine, is on S3.
    facts, dims = tables
    lines = (tmp_path / "facts.csv").read_text().splitlines(keepends=True)
    bad_lines = [2, 500, 2_999]  # numbered from 1, the header being line 1
    for n in bad_lines:
        row_id, k, value = lines[n - 1].rstrip("\n").split(",")
        lines[n - 1] = f"{row_id},{k},oops{value}\n"
    (tmp_path / "bad.csv").write_text("".join(lines))
    opts = s3.storage_options
    source = tb.read_csv(
        s3.upload(tmp_path / "bad.csv", "in/bad.csv"),
        schema={"id": pl.Int64, "k": pl.Int64, "value": pl.Int64},
        on_bad_rows="quarantine",
        storage_options=opts,
    )
    dims_ds = tb.read_csv(s3.url("in/dims.csv"), storage_options=opts)
    ds = (
        source.join(dims_ds, on="k")
        .group_by("region", "name")
        .agg(total=pl.col("value").sum(), n=pl.len(), top=pl.col("value").max())
    )
    out = tmp_path / "out"
    summary = ds.write_parquet(
        out,
        storage_options=opts,
        run_dir=s3.url("runs"),
        executor=dask_cluster.url,
        progress=False,
    )

    good = facts.filter(~pl.col("id").is_in([n - 2 for n in bad_lines]))
    got = pl.read_parquet(out / "*.parquet").select("region", "name", "total", "n", "top")
    assert_frame_equal(got.sort("name"), polars_answer(good, dims))
    # Rows of later splits are placed by byte offset: counting lines would read the file twice.
    quarantined = pl.read_parquet(out / "_quarantine" / "*.parquet").sort("offset")
    assert quarantined["raw"].to_list() == [lines[n - 1].rstrip("\n") for n in bad_lines]
    assert quarantined["offset"].to_list() == [len("".join(lines[: n - 1])) for n in bad_lines]
    assert set(quarantined["file"]) == {s3.url("in/bad.csv")}
    assert summary.rows_bad == len(bad_lines)
    assert s3.keys("runs") == []
    assert not (tmp_path / ".terabatch").exists()
