"""Reading and writing ``s3://`` against a real S3-compatible server (moto, on 127.0.0.1).

Every result is compared with Polars reading the same data from the local disk.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from helpers import make_frame, one_line_error
from polars.testing import assert_frame_equal
from s3_server import S3Bucket, free_port

import terabatch as tb
from terabatch.errors import InputNotFoundError, OutputExistsError, StorageError
from terabatch.exec.inline import InlineExecutor

RUN = {"progress": False, "workers": 2}
INLINE = {"progress": False, "executor": InlineExecutor()}


def _frames(n_files: int, rows: int) -> list[pl.DataFrame]:
    return [make_frame(rows, seed=20 + i, start=rows * i) for i in range(n_files)]


def _local_output(s3: S3Bucket, prefix: str, local: Path) -> Path:
    """Download an output prefix, to read it with Polars."""
    s3.fs.get(f"{s3.name}/{prefix}", str(local), recursive=True)
    return local


# reading ------------------------------------------------------------------------------------


def test_read_csv_glob_with_byte_range_splits(s3: S3Bucket, tmp_path: Path, tiny_splits) -> None:
    local = tmp_path / "csv"
    local.mkdir()
    frames = _frames(3, 400)
    for i, frame in enumerate(frames[:2]):
        frame.write_csv(local / f"part-{i}.csv")
    with gzip.open(local / "part-2.csv.gz", "wb") as f:
        frames[2].write_csv(f)
    s3.upload(local, "dir")
    tiny_splits(4_000, 1_500)  # ~4 splits per file, each read by seeking into the S3 object

    ds = tb.read_csv(s3.url("dir/*.csv*"), storage_options=s3.storage_options)
    got = ds.collect(**INLINE)

    parts = [local / "part-0.csv", local / "part-1.csv"]
    zipped = gzip.decompress((local / "part-2.csv.gz").read_bytes())
    want = pl.concat([*(pl.read_csv(p) for p in parts), pl.read_csv(zipped)])
    assert_frame_equal(got, want)
    assert ds.count(**INLINE) == want.height


def test_read_json_lines(s3: S3Bucket, tmp_path: Path, tiny_splits) -> None:
    local = tmp_path / "json"
    local.mkdir()
    frames = _frames(2, 300)
    frames[0].write_ndjson(local / "a.jsonl")
    (local / "b.jsonl.gz").write_bytes(gzip.compress(frames[1].write_ndjson().encode()))
    s3.upload(local, "events")
    tiny_splits(3_000)

    got = tb.read_json(s3.url("events/"), storage_options=s3.storage_options).collect(**INLINE)
    want = pl.concat(
        [pl.read_ndjson(local / "a.jsonl"), pl.read_ndjson(frames[1].write_ndjson().encode())]
    )
    assert_frame_equal(got, want)


def test_read_hive_partitioned_parquet_prunes_row_groups(
    s3: S3Bucket, tmp_path: Path, tiny_splits
) -> None:
    local = tmp_path / "table"
    data = make_frame(2_000, seed=3).with_columns(year=pl.col("id") % 2 + 2025)
    for year, part in data.partition_by("year", as_dict=True).items():
        folder = local / f"year={year[0]}"
        folder.mkdir(parents=True)
        part.drop("year").write_parquet(folder / "data.parquet", row_group_size=100)
    s3.upload(local, "table")
    tiny_splits(1)

    ds = tb.read_parquet(s3.url("table"), storage_options=s3.storage_options)
    query = ds.filter(pl.col("id") < 300, pl.col("year") == 2025).select("id", "value", "year")
    summary = query.write_parquet(s3.url("pruned"), storage_options=s3.storage_options, **INLINE)

    # Ids 0..299 are in the first 2 of 10 row groups of each year; year 2026 is pruned whole.
    assert summary.row_groups_read == 2 < 20
    want = (
        pl.scan_parquet(local / "**" / "*.parquet", hive_partitioning=True)
        .filter(pl.col("id") < 300, pl.col("year") == 2025)
        .select("id", "value", "year")
        .collect()
    )
    got = pl.read_parquet(_local_output(s3, "pruned", tmp_path / "pruned") / "*.parquet")
    assert_frame_equal(got.sort("id"), want.sort("id"), check_dtypes=False)


def test_directory_markers_and_modification_times(s3: S3Bucket, tmp_path: Path) -> None:
    # Consoles and Hadoop tools leave empty "dir/" keys; they are not files to read.
    fs = s3.fs
    fs.pipe({f"{s3.name}/logs/": b"", f"{s3.name}/logs/2026/": b""})
    frame = make_frame(50, seed=5)
    fs.pipe(f"{s3.name}/logs/2026/a.csv", frame.write_csv().encode())

    ds = tb.read_csv(s3.url("logs"), storage_options=s3.storage_options)
    assert_frame_equal(ds.collect(**INLINE), frame)
    (file,) = ds._plan.source.files
    modified = fs.info(f"{s3.name}/logs/2026/a.csv")["LastModified"].timestamp()
    assert file.path == s3.url("logs/2026/a.csv") and file.mtime == modified > 0


# writing ------------------------------------------------------------------------------------


def test_write_partitioned_parquet_with_manifest(s3: S3Bucket, tmp_path: Path) -> None:
    frame = make_frame(1_000, seed=6)
    frame.write_csv(tmp_path / "in.csv")
    source = s3.upload(tmp_path / "in.csv", "in/data.csv")

    summary = tb.read_csv(source, storage_options=s3.storage_options).write_parquet(
        s3.url("out"), partition_by="group", storage_options=s3.storage_options, **RUN
    )

    keys = s3.keys("out")
    assert not [k for k in keys if k.startswith("_temporary")]
    manifest = json.loads(s3.fs.cat(f"{s3.name}/out/_SUCCESS"))
    assert sorted(f["path"] for f in manifest["files"]) == sorted(set(keys) - {"_SUCCESS"})
    assert manifest["rows"] == summary.rows_written == frame.height
    assert {k.split("/")[0] for k in keys} == {"_SUCCESS"} | {f"group={g}" for g in "abcd"}
    local = _local_output(s3, "out", tmp_path / "out")
    got = pl.scan_parquet(local / "**" / "*.parquet", hive_partitioning=True).collect()
    assert_frame_equal(got.sort("id"), frame.sort("id"), check_column_order=False)


def test_write_csv_existing_prefix_overwrite(s3: S3Bucket, tmp_path: Path) -> None:
    first, second = make_frame(300, seed=7), make_frame(200, seed=8)
    first.write_parquet(tmp_path / "first.parquet")
    second.write_parquet(tmp_path / "second.parquet")
    opts = s3.storage_options
    out = s3.url("csv-out")

    tb.read_parquet(
        s3.upload(tmp_path / "first.parquet", "a.parquet"), storage_options=opts
    ).write_csv(out, compression="gzip", storage_options=opts, **INLINE)
    again = tb.read_parquet(
        s3.upload(tmp_path / "second.parquet", "b.parquet"), storage_options=opts
    )
    with pytest.raises(OutputExistsError) as info:
        again.write_csv(out, storage_options=opts, **INLINE)
    assert out in one_line_error(info.value)
    before = s3.keys("csv-out")
    assert [k for k in before if k.endswith(".csv.gz")]

    again.write_csv(out, mode="overwrite", storage_options=opts, **INLINE)
    after = s3.keys("csv-out")
    assert not set(before) - {"_SUCCESS"} & set(after)
    local = _local_output(s3, "csv-out", tmp_path / "csv-out")
    got = pl.read_csv(local / "*.csv", schema=second.schema)
    assert_frame_equal(got, second)


def _fail_on_id(limit: int):
    def fail(frame: pl.DataFrame) -> pl.DataFrame:
        if (frame["id"] >= limit).any():
            raise ValueError(f"refusing ids from {limit}")
        return frame

    return fail


def test_failed_job_leaves_no_output_and_keeps_the_old_one(
    s3: S3Bucket, tmp_path: Path, tiny_splits
) -> None:
    frame = make_frame(800, seed=9)
    frame.write_csv(tmp_path / "in.csv")
    opts = s3.storage_options
    ds = tb.read_csv(s3.upload(tmp_path / "in.csv", "in.csv"), storage_options=opts)
    tiny_splits(5_000)  # several tasks: some succeed and stage files before one fails
    failing = ds.map_batches(_fail_on_id(700))

    with pytest.raises(tb.TerabatchError):
        failing.write_parquet(s3.url("new"), storage_options=opts, max_retries=0, workers=1)
    # Nothing a reader sees; the finished tasks stay staged for a resume, with the run state.
    assert [k for k in s3.keys("new") if not k.startswith("_temporary/")] == []
    assert any(k.startswith(".terabatch/") for k in s3.keys(""))

    ds.write_parquet(s3.url("kept"), storage_options=opts, **INLINE)
    kept = s3.keys("kept")
    with pytest.raises(tb.TerabatchError):
        failing.write_parquet(s3.url("kept"), mode="overwrite", storage_options=opts, **INLINE)
    assert [k for k in s3.keys("kept") if not k.startswith("_temporary/")] == kept


# pipelines ----------------------------------------------------------------------------------


def test_group_by_and_join_reading_from_s3(s3: S3Bucket, tmp_path: Path) -> None:
    facts = make_frame(1_500, seed=10)
    groups = pl.DataFrame({"group": ["a", "b", "c"], "label": ["A", "B", "C"]})
    facts.write_csv(tmp_path / "facts.csv")
    groups.write_parquet(tmp_path / "groups.parquet")
    opts = s3.storage_options
    ds = tb.read_csv(s3.upload(tmp_path / "facts.csv", "facts.csv"), storage_options=opts)
    labels = tb.read_parquet(
        s3.upload(tmp_path / "groups.parquet", "groups.parquet"), storage_options=opts
    )

    totals = ds.group_by("group").agg(pl.col("value").sum(), n=pl.len()).collect(**INLINE)
    want = facts.group_by("group").agg(pl.col("value").sum(), n=pl.len())
    assert_frame_equal(totals.sort("group"), want.sort("group"))

    joined = ds.join(labels, on="group").collect(**INLINE)
    assert_frame_equal(joined.sort("id"), facts.join(groups, on="group").sort("id"))


def test_iter_batches_with_its_run_directory_on_s3(
    s3: S3Bucket, tmp_path: Path, aws_env, tiny_splits
) -> None:
    frame = make_frame(900, seed=12)
    frame.write_csv(tmp_path / "in.csv")
    tiny_splits(5_000)
    ds = tb.read_csv(tmp_path / "in.csv").filter(pl.col("value") > 0)
    run_dir = s3.url("stream-runs")
    got = pl.concat(list(ds.iter_batches(run_dir=run_dir, **INLINE)))
    assert_frame_equal(got, frame.filter(pl.col("value") > 0))
    assert s3.keys("stream-runs") == []  # spill files are read from S3, then removed


def test_run_directory_on_s3_beside_a_local_output(
    s3: S3Bucket, tmp_path: Path, tiny_splits
) -> None:
    # write_*'s storage_options reach the run directory too; the local output ignores them.
    # The last stage keeps the top rows for the driver, so its tasks have no sink with options
    # of its own: their quarantine (in the run directory) still gets the run directory's.
    lines = ["id,value"] + [f"{i},{'oops' if i % 250 == 7 else i * 3}" for i in range(1_000)]
    (tmp_path / "in.csv").write_text("\n".join(lines) + "\n")
    opts = s3.storage_options
    ds = tb.read_csv(
        s3.upload(tmp_path / "in.csv", "in.csv"),
        schema={"id": pl.Int64, "value": pl.Int64},
        on_bad_rows="quarantine",
        storage_options=opts,
    )
    tiny_splits(3_000)
    out = tmp_path / "out"
    summary = ds.top_k(5, by="value").write_parquet(
        out, storage_options=opts, run_dir=s3.url("runs"), **INLINE
    )

    good = pl.read_csv(tmp_path / "in.csv", schema_overrides={"value": pl.String}).filter(
        pl.col("value") != "oops"
    )
    want = good.with_columns(pl.col("value").cast(pl.Int64)).top_k(5, by="value")
    assert_frame_equal(pl.read_parquet(out / "*.parquet").sort("value"), want.sort("value"))
    quarantined = pl.read_parquet(out / "_quarantine" / "*.parquet")
    assert sorted(quarantined["raw"]) == sorted(f"{i},oops" for i in range(7, 1_000, 250))
    assert summary.rows_bad == 4
    assert s3.keys("runs") == [] and not (tmp_path / ".terabatch").exists()


# command line -------------------------------------------------------------------------------


def _terabatch(*args: str) -> subprocess.CompletedProcess:
    """Run the console script in a new process: it only has the AWS environment to go by."""
    script = Path(sys.executable).parent / "terabatch"
    return subprocess.run([str(script), *args], capture_output=True, text=True, timeout=120)


def test_cli_inspect_and_convert_with_the_aws_environment(
    s3: S3Bucket, aws_env: dict[str, str], tmp_path: Path
) -> None:
    frame = make_frame(600, seed=11)
    frame.write_csv(tmp_path / "a.csv")
    s3.upload(tmp_path / "a.csv", "raw/a.csv")

    done = _terabatch(
        "convert",
        s3.url("raw/*.csv"),
        s3.url("table"),
        "--to",
        "parquet",
        "--partition-by",
        "group",
        "--workers",
        "1",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{s3.url('table')}\t{frame.height}\n"
    table = _terabatch("inspect", s3.url("table"), "--json")
    assert table.returncode == 0, table.stderr
    facts = json.loads(table.stdout)
    assert facts["complete"]["rows"] == facts["rows"] == frame.height
    assert (facts["format"], facts["partitions"]) == ("parquet", {"group": 4})
    assert {f["path"] for f in facts["files"]} == {
        s3.url(f"table/{k}") for k in s3.keys("table") if k != "_SUCCESS"
    }
    local = _local_output(s3, "table", tmp_path / "table")
    got = pl.scan_parquet(local / "**" / "*.parquet", hive_partitioning=True).collect()
    assert_frame_equal(got.sort("id"), frame.sort("id"), check_column_order=False)
    for output in (done, table):
        assert aws_env["AWS_SECRET_ACCESS_KEY"] not in output.stdout + output.stderr


def test_cli_wrong_credentials_exit_2(
    s3: S3Bucket, aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-0d9e")
    done = _terabatch("inspect", s3.url("raw/a.csv"))
    assert done.returncode == 2
    assert done.stderr.startswith(f"terabatch: error: {s3.url('raw/a.csv')}: access denied")
    assert done.stderr.count("\n") == 1 and "wrong-secret-0d9e" not in done.stderr


# errors and secrets -------------------------------------------------------------------------


def test_credentials_are_never_shown(
    s3: S3Bucket, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    secret, key = s3.server.secret, s3.server.key
    (tmp_path / "bad.csv").write_text("id,value\n1,2\n2,oops\n")
    opts = s3.storage_options
    bad_url = s3.upload(tmp_path / "bad.csv", "bad.csv")
    bad = tb.read_csv(bad_url, schema={"value": pl.Int64}, storage_options=opts)
    good = tb.read_csv(bad_url, storage_options=opts)

    summary = good.write_parquet(
        s3.url("out"), storage_options=opts, progress=True, executor=InlineExecutor()
    )
    shown = [
        str(summary),
        summary.render(),
        s3.fs.cat(f"{s3.name}/out/_SUCCESS").decode(),
        good.explain(),
        repr(good._plan),
    ]
    for failing in (
        lambda: bad.collect(**INLINE),
        lambda: good.write_parquet(s3.url("out"), storage_options=opts, **INLINE),
        lambda: bad.map_batches(_fail_on_id(0)).count(**INLINE),
    ):
        with pytest.raises(tb.TerabatchError) as info:
            failing()
        shown += [str(info.value), *getattr(info.value, "__notes__", [])]
    captured = capfd.readouterr()
    shown += [captured.out, captured.err]
    assert "oops" in shown[5] and "bad.csv" in shown[5]  # the messages are real ones
    for text in shown:
        assert secret not in text and key not in text


def test_wrong_credentials(s3: S3Bucket, tmp_path: Path) -> None:
    s3.fs.pipe(f"{s3.name}/a.csv", b"x\n1\n")
    wrong = {**s3.storage_options, "secret": "wrong-secret-5b1c"}
    with pytest.raises(StorageError) as info:
        tb.read_csv(s3.url("a.csv"), storage_options=wrong)
    message = one_line_error(info.value)
    assert message.startswith(f"{s3.url('a.csv')}: access denied")
    assert "wrong-secret" not in message

    (tmp_path / "a.csv").write_text("x\n1\n")
    with pytest.raises(StorageError) as info:
        tb.read_csv(tmp_path / "a.csv").write_parquet(
            s3.url("out"), storage_options=wrong, **INLINE
        )
    assert one_line_error(info.value).startswith(f"{s3.url('out')}: access denied")


def test_no_credentials_at_all(s3: S3Bucket) -> None:
    # The fixture emptied the AWS environment; only the endpoint is given.
    with pytest.raises(StorageError) as info:
        tb.read_json(s3.url("e/"), storage_options={"endpoint_url": s3.server.endpoint_url})
    assert one_line_error(info.value).startswith(
        f"{s3.url('e/')}: no usable AWS credentials (Unable to locate credentials)"
    )


def test_missing_bucket_and_key(s3: S3Bucket, tmp_path: Path) -> None:
    opts = s3.storage_options
    missing = "s3://tb-no-such-bucket/data/*.csv"
    with pytest.raises(StorageError) as info:
        tb.read_csv(missing, storage_options=opts)
    assert one_line_error(info.value).startswith(
        f"{missing}: bucket 'tb-no-such-bucket' does not exist"
    )

    with pytest.raises(InputNotFoundError) as info:
        tb.read_parquet(s3.url("nothing/here.parquet"), storage_options=opts)
    assert one_line_error(info.value) == f"path not found: {s3.url('nothing/here.parquet')!r}"

    (tmp_path / "a.csv").write_text("x\n1\n")
    with pytest.raises(StorageError) as info:
        tb.read_csv(tmp_path / "a.csv").write_csv(
            "s3://tb-no-such-bucket/out", storage_options=opts, **INLINE
        )
    assert "bucket 'tb-no-such-bucket' does not exist" in one_line_error(info.value)
    assert not s3.fs.exists("tb-no-such-bucket")  # a typo never creates a bucket


def test_missing_s3fs_says_what_to_install(
    s3: S3Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "s3fs", None)  # "import s3fs" now fails
    registry = sys.modules["fsspec.registry"]._registry  # fsspec.registry is a read-only view
    monkeypatch.delitem(registry, "s3", raising=False)
    with pytest.raises(StorageError) as info:
        tb.read_csv(s3.url("a.csv"))
    message = one_line_error(info.value)
    assert message.startswith(s3.url("a.csv")) and 'pip install "terabatch[s3]"' in message

    (tmp_path / "a.csv").write_text("x\n1\n")
    with pytest.raises(StorageError, match=r"pip install \"terabatch\[s3\]\""):
        tb.read_csv(tmp_path / "a.csv").write_parquet(s3.url("out"), **INLINE)


def test_changes_by_other_clients_are_seen(s3: S3Bucket) -> None:
    # Listings are not cached: a second read in the same process sees replaced and new files.
    other = s3.fs
    other.pipe(f"{s3.name}/d/a.csv", b"x\n1\n")
    spec, opts = s3.url("d/"), s3.storage_options
    assert tb.read_csv(spec, storage_options=opts).collect(**INLINE)["x"].to_list() == [1]
    other.pipe({f"{s3.name}/d/a.csv": b"x\n1\n2\n", f"{s3.name}/d/b.csv": b"x\n3\n"})
    assert tb.read_csv(spec, storage_options=opts).collect(**INLINE)["x"].to_list() == [1, 2, 3]


def test_unreachable_endpoint(s3: S3Bucket) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    opts = {
        **s3.storage_options,
        "endpoint_url": closed,
        "config_kwargs": {"retries": {"max_attempts": 1}},  # fail fast
    }
    with pytest.raises(StorageError) as info:
        tb.read_parquet(s3.url("t/"), storage_options=opts)
    message = one_line_error(info.value)
    assert message.startswith(f"{s3.url('t/')}: cannot reach the storage endpoint")
    assert s3.server.secret not in message
