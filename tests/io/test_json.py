"""read_json against polars.read_ndjson: path forms, compression, schemas, bad lines."""

from __future__ import annotations

import bz2
import gzip
from pathlib import Path

import polars as pl
import pytest
import zstandard
from helpers import make_frame, one_line_error
from polars.testing import assert_frame_equal

import terabatch as tb
from terabatch.errors import BadRowError, InputReadError

RUN = {"progress": False}

COMPRESSORS = {
    "gz": gzip.compress,
    "bz2": bz2.compress,
    "zst": lambda data: zstandard.ZstdCompressor().compress(data),
}


def test_single_file_on_many_splits_equals_polars(jsonl_file: Path, tiny_splits) -> None:
    tiny_splits(3000, 1000)
    ds = tb.read_json(jsonl_file)
    expected = pl.read_ndjson(jsonl_file)
    assert ds.schema == expected.schema
    assert_frame_equal(ds.collect(**RUN), expected)


@pytest.fixture
def jsonl_dir(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "jsons"
    folder.mkdir()
    paths = []
    for i, suffix in enumerate(["jsonl", "ndjson", "json"]):
        path = folder / f"part-{i}.{suffix}"
        make_frame(150, seed=20 + i, start=150 * i).write_ndjson(path)
        paths.append(path)
    (folder / "_SUCCESS").write_text("{}")
    (folder / "readme.txt").write_text("not json")
    return paths


@pytest.mark.parametrize("form", ["directory", "glob", "list"])
def test_path_forms(jsonl_dir: list[Path], form: str) -> None:
    folder = jsonl_dir[0].parent
    source = {
        "directory": folder,
        "glob": str(folder / "part-*"),
        "list": [jsonl_dir[2], jsonl_dir[0], jsonl_dir[1]],
    }[form]
    order = [jsonl_dir[2], jsonl_dir[0], jsonl_dir[1]] if form == "list" else jsonl_dir
    expected = pl.concat([pl.read_ndjson(p) for p in order])
    assert_frame_equal(tb.read_json(source).collect(**RUN), expected)


@pytest.mark.parametrize("suffix", sorted(COMPRESSORS))
def test_compressed_jsonl(tmp_path: Path, jsonl_file: Path, suffix: str, tiny_splits) -> None:
    tiny_splits(4000, 500)
    packed = tmp_path / f"data.jsonl.{suffix}"
    packed.write_bytes(COMPRESSORS[suffix](jsonl_file.read_bytes()))
    assert_frame_equal(tb.read_json(packed).collect(**RUN), pl.read_ndjson(jsonl_file))


def test_explicit_schema(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text('{"a": 1, "b": "x", "c": 1.5}\n{"a": 2, "c": null}\n{"b": "z", "a": 3}\n')
    schema = {"a": pl.Int32, "b": pl.String, "c": pl.Float64}
    ds = tb.read_json(path, schema=schema)
    assert ds.schema == pl.Schema(schema)
    assert_frame_equal(ds.collect(**RUN), pl.read_ndjson(path, schema=schema))
    # A schema naming some of the fields reads only those.
    partial = tb.read_json(path, schema={"b": pl.String}).collect(**RUN)
    assert_frame_equal(partial, pl.read_ndjson(path, schema={"b": pl.String}))


def test_inferred_nested_types_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "n.jsonl"
    text = '{"a": 1, "tags": ["x", "y"], "m": {"k": 1}}\n{"a": 2, "tags": [], "m": {"k": 2}}\n'
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    plain = tmp_path / "plain.jsonl"
    plain.write_text(text)
    ds = tb.read_json(path)
    expected = pl.read_ndjson(plain)
    assert ds.schema == expected.schema
    assert_frame_equal(ds.collect(**RUN), expected)


def test_blank_lines_and_missing_final_newline(tmp_path: Path) -> None:
    path = tmp_path / "b.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\r\n{"a": 3}')
    assert ds_values(tb.read_json(path)) == [1, 2, 3]


def ds_values(ds: tb.Dataset) -> list:
    return ds.collect(**RUN)["a"].to_list()


def _records(n: int, start: int = 0) -> str:
    return "".join(f'{{"a": {i}, "b": "v{i}"}}\n' for i in range(start, start + n))


def test_invalid_json_line_in_a_later_split(tmp_path: Path, tiny_splits) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(_records(300) + '{"a": 1,, "b": "x"}\n' + _records(50))
    tiny_splits(500, 200)
    with pytest.raises(BadRowError) as info:
        tb.read_json(path).collect(**RUN)
    message = one_line_error(info.value)
    assert message.startswith(f"{path}: line 301: invalid JSON"), message


def test_invalid_json_line_in_a_gzip_file(tmp_path: Path, tiny_splits) -> None:
    path = tmp_path / "bad.jsonl.gz"
    path.write_bytes(gzip.compress((_records(400) + "{not json}\n" + _records(5)).encode()))
    tiny_splits(500, 300)
    with pytest.raises(BadRowError) as info:
        tb.read_json(path).collect(**RUN)
    assert one_line_error(info.value).startswith(f"{path}: line 401: invalid JSON")


def test_invalid_json_in_the_inference_sample(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(_records(3) + '{"a": 1\n')
    with pytest.raises(BadRowError) as info:
        tb.read_json(path)
    assert one_line_error(info.value).startswith(f"{path}: line 4: invalid JSON")


def test_wrong_type_names_field_and_line(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(_records(20) + '{"a": "twenty", "b": "x"}\n')
    with pytest.raises(BadRowError) as info:
        tb.read_json(path, schema={"a": pl.Int64, "b": pl.String}).collect(**RUN)
    message = one_line_error(info.value)
    assert message.startswith(f"{path}: line 21: field 'a'"), message


def test_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(_records(2) + "[1, 2]\n")
    with pytest.raises(BadRowError) as info:
        tb.read_json(path, schema={"a": pl.Int64, "b": pl.String}).collect(**RUN)
    assert one_line_error(info.value).startswith(f"{path}: line 3: expected a JSON object")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_text("\n")
    with pytest.raises(InputReadError) as info:
        tb.read_json(path)
    assert "empty" in one_line_error(info.value)
