"""Bad input files: empty, truncated, corrupt, changed during the run, unreadable, drifting.

Each case runs through the public API into ``write_parquet``: a bad file is a one-line
``TerabatchError`` naming it and nothing is left in the output directory, or, with
``on_bad_files="skip"`` (planning-time problems only), a warning and an entry in the source's
``skipped_files``. Results are checked against Polars reading the same files one by one.
"""

from __future__ import annotations

import gzip
import logging
import os
import re
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import fsspec
import polars as pl
import pytest
import zstandard
from helpers import make_frame, one_line_error, visible_files
from polars.testing import assert_frame_equal

import terabatch as tb
import terabatch.run.job as job_module
from terabatch.errors import InputChangedError, InputReadError, SchemaError, TerabatchError
from terabatch.exec.inline import InlineExecutor
from terabatch.io import sources

RUN = {"workers": 1, "progress": False}


class _InlineWorkers(InlineExecutor):
    """Stands in for the worker pool: tasks run in this process, in order (much faster here)."""

    def __init__(self, workers: int) -> None:
        del workers

    def start(self) -> None:
        """Nothing to start."""


@pytest.fixture(autouse=True)
def inline_tasks(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run tasks inline unless a test asks for ``worker_processes``."""
    if "worker_processes" not in request.fixturenames:
        monkeypatch.setattr(job_module, "LocalExecutor", _InlineWorkers)


@pytest.fixture
def worker_processes() -> None:
    """Run this test's tasks in real worker processes: errors must cross the process boundary."""


# name: (file suffix, writer, terabatch reader, polars reader)
FORMATS: dict[str, tuple[str, Callable, Callable, Callable]] = {
    "csv": ("csv", pl.DataFrame.write_csv, tb.read_csv, pl.read_csv),
    "json": ("jsonl", pl.DataFrame.write_ndjson, tb.read_json, pl.read_ndjson),
    "parquet": ("parquet", pl.DataFrame.write_parquet, tb.read_parquet, pl.read_parquet),
}


def write(fmt: str, frame: pl.DataFrame, path: Path) -> Path:
    FORMATS[fmt][1](frame, path)
    return path


def two_files(tmp_path: Path, fmt: str) -> tuple[Path, Path]:
    """``a`` and ``b`` of the same columns in ``tmp_path/in``."""
    folder = tmp_path / "in"
    folder.mkdir()
    ext = FORMATS[fmt][0]
    a = write(fmt, make_frame(50, seed=1), folder / f"a.{ext}")
    b = write(fmt, make_frame(50, seed=2, start=50), folder / f"b.{ext}")
    return a, b


def reference(fmt: str, paths: list[Path]) -> pl.DataFrame:
    """Polars reading each file and concatenating them as a schema union would."""
    return pl.concat([FORMATS[fmt][3](p) for p in paths], how="diagonal_relaxed")


def write_fails(read: Callable[[], tb.Dataset], out: Path) -> TerabatchError:
    """Read and write to ``out``; return the error, checking it and that nothing was written."""
    with pytest.raises(TerabatchError) as info:
        read().write_parquet(out, **RUN)
    one_line_error(info.value)
    assert visible_files(out) == {}, "a failed run left files in the output directory"
    return info.value


def skip_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "terabatch"]


# Empty and header-only files -------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_zero_byte_file_is_an_error_naming_it(tmp_path: Path, fmt: str) -> None:
    _, b = two_files(tmp_path, fmt)
    b.write_bytes(b"")
    error = write_fails(lambda: FORMATS[fmt][2](tmp_path / "in"), tmp_path / "out")
    assert isinstance(error, InputReadError)
    message = str(error)
    assert message.startswith(f"{b}: file is empty (0 bytes); remove or fix it"), message
    assert "on_bad_files='skip'" in message


@pytest.mark.parametrize("fmt", FORMATS)
def test_zero_byte_file_is_skipped_with_a_warning(
    tmp_path: Path, fmt: str, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = two_files(tmp_path, fmt)
    b.write_bytes(b"")
    ds = FORMATS[fmt][2](tmp_path / "in", on_bad_files="skip")
    assert ds._plan.source.skipped_files == ((str(b), "file is empty (0 bytes)"),)
    assert skip_warnings(caplog) == [f"terabatch: warning: skipping {b}: file is empty (0 bytes)"]
    assert_frame_equal(ds.collect(**RUN), reference(fmt, [a]))


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_compressed_file_empty_once_decompressed(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"e.{FORMATS[fmt][0]}.gz"
    path.write_bytes(gzip.compress(b""))
    with pytest.raises(InputReadError) as info:
        FORMATS[fmt][2](path)
    message = one_line_error(info.value)
    assert message.startswith(f"{path}: file is empty"), message


def test_header_only_csv_is_a_file_of_zero_rows(tmp_path: Path) -> None:
    a, b = two_files(tmp_path, "csv")
    b.write_text(a.read_text().splitlines()[0] + "\n")
    ds = tb.read_csv(tmp_path / "in")
    # The header-only file holds no value to infer from: the types come from the other file.
    assert ds.schema == pl.read_csv(a).schema
    assert_frame_equal(ds.collect(**RUN), pl.read_csv(a))


def test_header_only_csv_must_agree_with_the_others(tmp_path: Path) -> None:
    a, b = two_files(tmp_path, "csv")
    b.write_text("id,group,value,score,text\n")
    error = write_fails(lambda: tb.read_csv(tmp_path / "in"), tmp_path / "out")
    assert isinstance(error, SchemaError)
    assert str(error).startswith(f"{b}: column 'flag' is missing (present in {a})"), error


# Truncated compressed streams ------------------------------------------------------------------

LINES = 60_000


def _compress(codec: str, data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=1) if codec == "gzip" else zstandard.compress(data)


def _readable_lines(codec: str, cut: bytes) -> int:
    """How many whole lines can be decompressed from a truncated stream."""
    if codec == "gzip":
        partial = zlib.decompressobj(31).decompress(cut)
    else:
        partial = zstandard.ZstdDecompressor().decompressobj().decompress(cut)
    return partial.count(b"\n")


@pytest.mark.parametrize("on_bad_files", ["fail", "skip"])
@pytest.mark.parametrize(("codec", "suffix"), [("gzip", "gz"), ("zstd", "zst")])
def test_truncated_stream_fails_the_run_naming_file_and_line(
    tmp_path: Path,
    tiny_splits,
    monkeypatch: pytest.MonkeyPatch,
    worker_processes: None,
    codec: str,
    suffix: str,
    on_bad_files: str,
) -> None:
    data = b"a,b\n" + b"".join(b"%d,%d\n" % (i, i * 7) for i in range(LINES))
    whole = _compress(codec, data)
    cut = whole[: len(whole) // 2]
    path = tmp_path / f"t.csv.{suffix}"
    path.write_bytes(cut)
    tiny_splits(1 << 20, 16 << 10)  # 16 KiB chunks: the line reached is close to the break
    # Planning samples the first 64 KiB, which decompress fine; the task reading finds the cut.
    monkeypatch.setattr(sources, "SAMPLE_BYTES", 64 << 10)
    error = write_fails(lambda: tb.read_csv(path, on_bad_files=on_bad_files), tmp_path / "out")
    assert isinstance(error, InputReadError)
    message = str(error)
    found = re.match(
        rf"{re.escape(str(path))}: corrupt or truncated {codec} stream somewhere after line "
        r"([\d,]+) \(",
        message,
    )
    assert found, message
    line = int(found.group(1).replace(",", ""))
    readable = _readable_lines(codec, cut)
    assert readable - 5_000 < line <= readable, (line, readable)


@pytest.mark.parametrize("on_bad_files", ["fail", "skip"])
def test_stream_broken_in_its_first_bytes_is_found_when_reading(
    tmp_path: Path, on_bad_files: str, caplog: pytest.LogCaptureFixture
) -> None:
    two_files(tmp_path, "csv")
    whole = gzip.compress(b"a,b\n1,2\n" * 100)
    bad = tmp_path / "in" / "c.csv.gz"
    bad.write_bytes(whole[: len(whole) // 2])
    if on_bad_files == "fail":
        error = write_fails(lambda: tb.read_csv(tmp_path / "in"), tmp_path / "out")
        assert str(error).startswith(f"{bad}: cannot read (corrupt or truncated gzip stream")
        return
    ds = tb.read_csv(tmp_path / "in", on_bad_files="skip")
    assert [p for p, _ in ds._plan.source.skipped_files] == [str(bad)]
    assert len(skip_warnings(caplog)) == 1
    assert ds.count(**RUN) == 100


# Parquet that is not Parquet -------------------------------------------------------------------


def _corrupt_footer(good: bytes) -> bytes:
    footer = struct.unpack("<i", good[-8:-4])[0]
    start = len(good) - 8 - footer
    body = bytearray(good)
    body[start : start + footer] = bytes((i * 37 + 11) % 256 for i in range(footer))
    return bytes(body)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (_corrupt_footer, "not a valid Parquet file (Couldn't deserialize thrift"),
        (lambda good: good[: len(good) // 2], "not a valid Parquet file"),
        (lambda good: b"id,name\n1,x\n", "not a valid Parquet file"),
    ],
    ids=["corrupt footer", "cut in half", "csv text"],
)
def test_bad_parquet_is_found_when_reading_the_footers(
    tmp_path: Path, damage: Callable[[bytes], bytes], reason: str
) -> None:
    a, b = two_files(tmp_path, "parquet")
    b.write_bytes(damage(b.read_bytes()))
    with pytest.raises(InputReadError) as info:
        tb.read_parquet(tmp_path / "in")  # at planning: before anything runs
    message = one_line_error(info.value)
    assert message.startswith(f"{b}: {reason}"), message
    assert "on_bad_files='skip'" in message
    ds = tb.read_parquet(tmp_path / "in", on_bad_files="skip")
    assert ds._plan.source.skipped_files[0][0] == str(b)
    assert_frame_equal(ds.collect(**RUN), pl.read_parquet(a))


# Files that change during the run --------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_file_deleted_after_planning(tmp_path: Path, fmt: str) -> None:
    _, b = two_files(tmp_path, fmt)
    ds = FORMATS[fmt][2](tmp_path / "in", on_bad_files="skip")
    b.unlink()
    error = write_fails(lambda: ds, tmp_path / "out")
    assert isinstance(error, InputChangedError)
    assert str(error) == (
        f"{b}: file disappeared during the run (it was listed when the job was planned); rerun"
    )


def _touch_later(path: str, fmt: str) -> Callable[[pl.DataFrame], pl.DataFrame]:
    """A batch function that changes ``path`` while the run is on its first file."""

    def change(frame: pl.DataFrame) -> pl.DataFrame:
        if fmt == "parquet":
            make_frame(80, seed=3).write_parquet(path)
        else:
            with open(path, "ab") as f:  # a gzip file may hold several members
                f.write(gzip.compress(b"") if path.endswith(".gz") else b"\n")
        return frame

    return change


@pytest.mark.parametrize(
    ("fmt", "gz", "on_bad_files"),
    [
        ("csv", False, "fail"),
        ("csv", True, "skip"),
        ("json", False, "fail"),
        ("parquet", False, "skip"),
    ],
)
def test_file_changed_while_the_run_reads(
    tmp_path: Path, worker_processes: None, fmt: str, gz: bool, on_bad_files: str
) -> None:
    _, b = two_files(tmp_path, fmt)
    if gz:
        b = b.rename(b.with_name(b.name + ".gz"))
        b.write_bytes(gzip.compress(b.read_bytes()))
    size = b.stat().st_size
    ds = FORMATS[fmt][2](tmp_path / "in", on_bad_files=on_bad_files)
    # One worker runs the tasks in order: a's task changes b before b's task opens it.
    changed = ds.map_batches(_touch_later(str(b), fmt))
    error = write_fails(lambda: changed, tmp_path / "out")
    assert isinstance(error, InputChangedError)
    message = str(error)
    assert message.startswith(f"{b}: file changed during the run (size {size:,} -> "), message
    assert message.endswith("; rerun")


def test_change_is_found_on_an_fsspec_filesystem() -> None:
    fs = fsspec.filesystem("memory")
    root = "memory://terabatch-bad-files"
    try:
        fs.pipe({f"{root}/a.csv": b"x,y\n1,2\n", f"{root}/b.csv": b"x,y\n3,4\n"})
        ds = tb.read_csv(f"{root}/")
        assert ds.count(**RUN) == 2
        fs.pipe(f"{root}/b.csv", b"x,y\n3,4\n5,6\n")
        with pytest.raises(InputChangedError) as info:
            ds.count(**RUN)
        assert one_line_error(info.value) == (
            "memory:///terabatch-bad-files/b.csv: file changed during the run "
            "(size 8 -> 12 bytes); rerun"
        )
    finally:
        fs.rm(root, recursive=True)


# Permissions -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_permission_denied(tmp_path: Path, fmt: str, caplog: pytest.LogCaptureFixture) -> None:
    a, b = two_files(tmp_path, fmt)
    b.chmod(0)
    try:
        if os.access(b, os.R_OK):
            pytest.skip("running as a user that ignores file permissions (root)")
        error = write_fails(lambda: FORMATS[fmt][2](tmp_path / "in"), tmp_path / "out")
        assert isinstance(error, InputReadError)
        assert str(error).startswith(f"{b}: permission denied; remove or fix it"), error
        ds = FORMATS[fmt][2](tmp_path / "in", on_bad_files="skip")
        assert ds._plan.source.skipped_files == ((str(b), "permission denied"),)
        assert_frame_equal(ds.collect(**RUN), reference(fmt, [a]))
    finally:
        b.chmod(0o644)


# Schema drift ----------------------------------------------------------------------------------

BASE = pl.DataFrame({"id": [1, 2, 3], "v": [10, 20, 30], "s": ["x", "y", "z"]})
DRIFT = {
    "removed": (BASE.drop("v"), "column 'v' is missing (present in {a})"),
    "added": (BASE.with_columns(w=pl.lit(True)), "has an extra column 'w' (not in {a})"),
    "retyped": (
        BASE.with_columns(v=pl.Series(["ten", "twenty", "thirty"])),
        "column 'v' is String, not Int64 as in {a}",
    ),
}


@pytest.mark.parametrize("change", DRIFT)
@pytest.mark.parametrize("fmt", FORMATS)
def test_strict_schema_mode_names_file_and_column(tmp_path: Path, fmt: str, change: str) -> None:
    ext = FORMATS[fmt][0]
    a = write(fmt, BASE, tmp_path / f"a.{ext}")
    other, reason = DRIFT[change]
    b = write(fmt, other, tmp_path / f"b.{ext}")
    error = write_fails(lambda: FORMATS[fmt][2]([a, b]), tmp_path / "out")
    assert isinstance(error, SchemaError)
    message = str(error)
    assert message.startswith(f"{b}: {reason.format(a=a)}; "), message
    assert "schema_mode='union'" in message


@pytest.mark.parametrize("fmt", FORMATS)
def test_strict_skip_leaves_the_drifting_file_out(
    tmp_path: Path, fmt: str, caplog: pytest.LogCaptureFixture
) -> None:
    ext = FORMATS[fmt][0]
    a = write(fmt, BASE, tmp_path / f"a.{ext}")
    b = write(fmt, DRIFT["retyped"][0], tmp_path / f"b.{ext}")
    c = write(fmt, BASE.with_columns(id=pl.col("id") + 3), tmp_path / f"c.{ext}")
    ds = FORMATS[fmt][2]([a, b, c], on_bad_files="skip")
    reason = DRIFT["retyped"][1].format(a=a)
    assert ds._plan.source.skipped_files == ((str(b), reason),)
    assert skip_warnings(caplog) == [f"terabatch: warning: skipping {b}: {reason}"]
    assert_frame_equal(ds.collect(**RUN), reference(fmt, [a, c]))


def _drifting_files(tmp_path: Path, fmt: str) -> list[Path]:
    """Files that add, remove, reorder, retype and widen columns."""
    ext = FORMATS[fmt][0]
    frames = [
        pl.DataFrame({"id": [1, 2], "v": [10, 20], "s": ["x", None]}),
        pl.DataFrame({"id": [3, 4, 5], "v": [1.5, 2.0, None], "t": [True, False, True]}),
        pl.DataFrame({"s": ["q", "r"], "id": [6, 7], "v": ["ten", "7"], "w": [100, 200]}),
        pl.DataFrame({"id": [8], "t": [False]}),
    ]
    return [write(fmt, f, tmp_path / f"{i}.{ext}") for i, f in enumerate(frames)]


@pytest.mark.parametrize("fmt", FORMATS)
def test_union_schema_mode_is_polars_diagonal_relaxed_concat(
    tmp_path: Path, fmt: str, tiny_splits
) -> None:
    paths = _drifting_files(tmp_path, fmt)
    expected = reference(fmt, paths)
    assert expected.columns == ["id", "v", "s", "t", "w"]  # the reference really is a union
    tiny_splits(16)  # a few rows per split: every file is cut
    ds = FORMATS[fmt][2](paths, schema_mode="union")
    assert ds.schema == expected.schema
    assert_frame_equal(ds.collect(**RUN), expected)
    query = ds.filter(pl.col("id") > 2).select("t", "id")
    assert_frame_equal(query.collect(**RUN), expected.filter(pl.col("id") > 2).select("t", "id"))
    # A column that one file alone has still counts every file's rows.
    assert ds.select("w").count(**RUN) == expected.height


def test_union_of_incompatible_parquet_types(tmp_path: Path) -> None:
    a = write("parquet", pl.DataFrame({"v": [1]}), tmp_path / "a.parquet")
    b = write("parquet", pl.DataFrame({"v": [[1, 2]]}), tmp_path / "b.parquet")
    with pytest.raises(SchemaError) as info:
        tb.read_parquet([a, b], schema_mode="union")
    message = one_line_error(info.value)
    assert message.startswith(
        f"{b}: column 'v' is List(Int64), which does not combine with Int64 (in {a})"
    ), message


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_strict_takes_inferred_types_that_fit(tmp_path: Path, fmt: str) -> None:
    # Integers where the first file has floats, and a column the first file has no value for.
    ext = FORMATS[fmt][0]
    a = write(
        fmt,
        pl.DataFrame({"x": [1.5, 2.5], "y": [None, None]}, schema_overrides={"y": pl.Int64}),
        tmp_path / f"a.{ext}",
    )
    b = write(fmt, pl.DataFrame({"x": [3, 4], "y": [5, 6]}), tmp_path / f"b.{ext}")
    ds = FORMATS[fmt][2]([a, b])
    assert ds.schema == pl.Schema({"x": pl.Float64, "y": pl.Int64})
    expected = pl.DataFrame({"x": [1.5, 2.5, 3.0, 4.0], "y": [None, None, 5, 6]})
    assert_frame_equal(ds.collect(**RUN), expected)


# Skipping, altogether --------------------------------------------------------------------------


def test_skip_records_each_bad_file_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    a, _ = two_files(tmp_path, "csv")
    folder = tmp_path / "in"
    (folder / "b.csv").write_bytes(b"")
    (folder / "c.csv").write_text("id,other\n1,2\n")
    (folder / "d.csv").write_bytes(b"\x00\x01binary\n")
    ds = tb.read_csv(folder, on_bad_files="skip")
    skipped = ds._plan.source.skipped_files
    assert [Path(p).name for p, _ in skipped] == ["b.csv", "c.csv", "d.csv"]
    assert skipped[0][1] == "file is empty (0 bytes)"
    assert skipped[1][1].startswith("column 'group' is missing")
    assert skipped[2][1] == "does not look like a CSV file (binary content)"
    # One warning per file, in the files' order, whenever the problem was found.
    assert skip_warnings(caplog) == [
        f"terabatch: warning: skipping {p}: {reason}" for p, reason in skipped
    ]
    assert all(r.levelno == logging.WARNING for r in caplog.records if r.name == "terabatch")
    assert "(3 bad file(s) skipped)" in ds.explain()
    assert_frame_equal(ds.collect(**RUN), pl.read_csv(a))


def test_skip_with_every_file_bad(tmp_path: Path) -> None:
    for name in ("a.jsonl", "b.jsonl"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(InputReadError) as info:
        tb.read_json(tmp_path, on_bad_files="skip")
    assert one_line_error(info.value) == (
        "no input file is left to read: all 2 were skipped as bad "
        f"(the first: {tmp_path / 'a.jsonl'}: file is empty (0 bytes))"
    )


@pytest.mark.parametrize(
    ("option", "value"), [("schema_mode", "loose"), ("on_bad_files", "ignore")]
)
def test_unknown_option_values(tmp_path: Path, option: str, value: str) -> None:
    path = write("csv", BASE, tmp_path / "a.csv")
    with pytest.raises(TerabatchError) as info:
        tb.read_csv(path, **{option: value})
    assert f"{option} must be" in one_line_error(info.value)
