"""File discovery: paths, directories, globs and lists; hidden files; compression by suffix."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import one_line_error

import terabatch as tb
from terabatch.errors import InputNotFoundError, InputReadError
from terabatch.io.files import compression_of, discover


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for name in [
        "b.csv",
        "a.csv",
        "c.csv.gz",
        "d.tsv",
        "e.jsonl",
        "sub/f.csv",
        "sub/g.CSV",
        "_SUCCESS",
        "_temporary/h.csv",
        ".cache/i.csv",
        "sub/.j.csv",
        "k.parquet",
    ]:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x\n1\n")
    return tmp_path


def _names(files, root: Path) -> list[str]:
    return [Path(f.path).relative_to(root).as_posix() for f in files]


def test_directory_finds_format_files_recursively_sorted(tree: Path) -> None:
    files = discover(tree, "csv", {})
    assert _names(files, tree) == ["a.csv", "b.csv", "c.csv.gz", "d.tsv", "sub/f.csv", "sub/g.CSV"]
    assert [f.compression for f in files] == [None, None, "gzip", None, None, None]
    assert all(f.size == 4 and f.mtime > 0 for f in files)
    assert _names(discover(str(tree), "json", {}), tree) == ["e.jsonl"]
    assert _names(discover(tree, "parquet", {}), tree) == ["k.parquet"]


def test_glob_sorted_and_skips_hidden(tree: Path) -> None:
    files = discover(str(tree / "**" / "*.csv"), "csv", {})
    assert _names(files, tree) == ["a.csv", "b.csv", "sub/f.csv"]


def test_list_keeps_order_and_removes_duplicates(tree: Path) -> None:
    files = discover([tree / "b.csv", str(tree / "*.csv"), tree / "sub" / "f.csv"], "csv", {})
    assert _names(files, tree) == ["b.csv", "a.csv", "sub/f.csv"]


def test_single_file_of_any_name_is_taken(tree: Path) -> None:
    # An explicit path is read whatever its suffix: the user named it.
    assert _names(discover(tree / "k.parquet", "csv", {}), tree) == ["k.parquet"]


@pytest.mark.parametrize(
    ("name", "codec"),
    [
        ("a.csv.gz", "gzip"),
        ("a.CSV.GZ", "gzip"),
        ("a.jsonl.zst", "zstd"),
        ("a.csv.zstd", "zstd"),
        ("a.csv.bz2", "bz2"),
        ("a.csv", None),
        ("gz.csv", None),
    ],
)
def test_compression_of(name: str, codec: str | None) -> None:
    assert compression_of(name) == codec


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError) as info:
        tb.read_csv(tmp_path / "nope.csv")
    message = one_line_error(info.value)
    assert "path not found" in message and "nope.csv" in message
    assert isinstance(info.value, FileNotFoundError)


def test_glob_matching_nothing(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError) as info:
        tb.read_json(str(tmp_path / "*.jsonl"))
    message = one_line_error(info.value)
    assert "no file matches" in message and str(tmp_path) in message


def test_directory_without_files_of_the_format(tree: Path) -> None:
    with pytest.raises(InputNotFoundError) as info:
        tb.read_parquet(tree / "sub")
    assert "holds no parquet file" in one_line_error(info.value)


def test_empty_list() -> None:
    with pytest.raises(InputNotFoundError):
        discover([], "csv", {})


def test_permission_denied(tmp_path: Path) -> None:
    path = tmp_path / "secret.csv"
    path.write_text("a,b\n1,2\n")
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running as a user that ignores file permissions (root)")
        with pytest.raises(InputReadError) as info:
            tb.read_csv(path)
        message = one_line_error(info.value)
        assert str(path) in message and "permission denied" in message
    finally:
        path.chmod(0o644)


def test_permission_denied_directory(tmp_path: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    (folder / "a.csv").write_text("a\n1\n")
    folder.chmod(0)
    try:
        if os.access(folder, os.R_OK):
            pytest.skip("running as a user that ignores file permissions (root)")
        with pytest.raises(tb.TerabatchError) as info:
            tb.read_csv(folder)
        assert "locked" in one_line_error(info.value)
    finally:
        folder.chmod(0o755)
