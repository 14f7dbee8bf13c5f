"""OutputCommit on its own: staging, the final move, _SUCCESS written last, abort."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from helpers import files_under, one_line_error

from terabatch.errors import OutputExistsError, TerabatchError
from terabatch.io.commit import STAGING, SUCCESS, OutputCommit
from terabatch.io.sinks import FileSink, FileWriter


def _stage_task(commit: OutputCommit, task_id: int, frame: pl.DataFrame, sink: FileSink):
    """What a worker does: write into a task directory of the staging area."""
    writer = FileWriter(sink, commit.task_dir(task_id), task_id)
    writer.write(frame)
    return [(task_id, w) for w in writer.close()]


def test_commit_moves_files_and_writes_the_manifest(tmp_path: Path) -> None:
    out = tmp_path / "out"
    commit = OutputCommit(str(out), "error", {}, "job0001")
    commit.prepare()
    assert (out / STAGING).is_dir()
    sink = FileSink("parquet", partition_by=("k",))
    frame = pl.DataFrame({"k": [1, 2, 1, None], "v": ["a", "b", "c", "d"]})
    staged = _stage_task(commit, 1, frame, sink) + _stage_task(commit, 0, frame.head(1), sink)
    assert not (out / SUCCESS).exists()
    written = commit.commit(staged, {"format": "parquet"})
    assert [w.path for w in written] == sorted(w.path for _, w in staged)
    manifest = json.loads((out / SUCCESS).read_text())
    assert manifest["format"] == "parquet"
    assert manifest["rows"] == 5 and len(manifest["files"]) == 4
    on_disk = files_under(out)
    assert sorted(on_disk) == sorted([SUCCESS, *(f["path"] for f in manifest["files"])])
    assert "k=__HIVE_DEFAULT_PARTITION__/part-00001-000.parquet" in on_disk
    for entry in manifest["files"]:
        assert entry["bytes"] == len(on_disk[entry["path"]])


def test_abort_removes_the_staging_area_only(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    commit = OutputCommit(str(out), "overwrite", {}, "job0001")
    commit.prepare()
    _stage_task(commit, 0, pl.DataFrame({"a": [1]}), FileSink("csv"))
    commit.abort()
    assert files_under(out) == {"keep.txt": b"mine"}


def test_attempt_directories_are_unique(tmp_path: Path) -> None:
    commit = OutputCommit(str(tmp_path / "o"), "error", {}, "job")
    assert commit.attempt_dir(3) != commit.attempt_dir(3)
    assert commit.task_dir(3).endswith("/_temporary/job/task-00003")


def test_prepare_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "x").write_text("x")
    with pytest.raises(OutputExistsError) as info:
        OutputCommit(str(out), "error", {}, "job0001").prepare()
    assert "mode='overwrite'" in one_line_error(info.value)
    # An empty directory, or one holding only a stale staging area, is fine.
    (out / "x").unlink()
    (out / STAGING / "old-job").mkdir(parents=True)
    OutputCommit(str(out), "error", {}, "job0001").prepare()


def test_unknown_mode() -> None:
    with pytest.raises(TerabatchError, match="mode must be"):
        OutputCommit("/tmp/x", "append", {}, "job")


def test_abort_keeps_an_output_directory_that_existed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    commit = OutputCommit(str(out), "error", {}, "job1")
    commit.prepare()
    commit.abort()
    assert out.is_dir() and list(out.iterdir()) == []
