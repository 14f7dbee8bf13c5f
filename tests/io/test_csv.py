"""read_csv against polars.read_csv: path forms, compression, schemas, inference, bad rows."""

from __future__ import annotations

import bz2
import gzip
from pathlib import Path

import polars as pl
import pytest
import zstandard
from helpers import make_frame, one_line_error, reference_csv
from polars.testing import assert_frame_equal

import terabatch as tb
from terabatch.errors import BadRowError, InputReadError, SchemaError

RUN = {"progress": False}

COMPRESSORS = {
    "gz": gzip.compress,
    "bz2": bz2.compress,
    "zst": lambda data: zstandard.ZstdCompressor().compress(data),
}


def test_single_file_equals_polars(csv_file: Path, tiny_splits) -> None:
    tiny_splits(2000, 700)
    ds = tb.read_csv(csv_file)
    expected = pl.read_csv(csv_file)
    assert ds.schema == expected.schema
    assert_frame_equal(ds.collect(**RUN), expected)


@pytest.mark.parametrize("form", ["directory", "glob", "list", "list-of-str"])
def test_path_forms_read_all_files_in_order(csv_files: list[Path], form: str) -> None:
    folder = csv_files[0].parent
    (folder / "_SUCCESS").write_text("{}")  # bookkeeping files are never data
    (folder / ".hidden.csv").write_text("nonsense\n")
    (folder / "notes.md").write_text("# not csv\n")
    source = {
        "directory": folder,
        "glob": str(folder / "part-*.csv"),
        "list": list(reversed(csv_files)),
        "list-of-str": [str(p) for p in csv_files],
    }[form]
    ordered = list(reversed(csv_files)) if form == "list" else csv_files
    got = tb.read_csv(source).collect(**RUN)
    assert_frame_equal(got, reference_csv(ordered))


@pytest.mark.parametrize("suffix", sorted(COMPRESSORS))
def test_compressed_csv(tmp_path: Path, suffix: str, tiny_splits) -> None:
    # Compressed files cannot be entered midway: one task per file, parsed in many chunks.
    tiny_splits(500, 300)
    plain = tmp_path / "plain.csv"
    make_frame(400, seed=4).write_csv(plain, line_terminator="\r\n")
    packed = tmp_path / f"data.csv.{suffix}"
    packed.write_bytes(COMPRESSORS[suffix](b"\xef\xbb\xbf" + plain.read_bytes()))
    ds = tb.read_csv(packed)
    assert ds._plan.source.files[0].compression is not None
    expected = pl.read_csv(plain)
    assert ds.schema == expected.schema
    assert_frame_equal(ds.collect(**RUN), expected)


def test_compressed_and_plain_files_together(tmp_path: Path, csv_files: list[Path]) -> None:
    packed = csv_files[1].with_suffix(".csv.gz")
    packed.write_bytes(gzip.compress(csv_files[1].read_bytes()))
    csv_files[1].unlink()
    got = tb.read_csv(csv_files[0].parent).collect(**RUN)
    # Sorted by name: part-0.csv, part-1.csv.gz, part-2.csv
    expected = pl.concat(
        [pl.read_csv(csv_files[0]), pl.read_csv(packed), pl.read_csv(csv_files[2])]
    )
    assert_frame_equal(got, expected)


def test_full_and_partial_schema(csv_file: Path) -> None:
    full = {
        "id": pl.Int32,
        "group": pl.String,
        "value": pl.Float64,
        "score": pl.Float32,
        "text": pl.String,
        "flag": pl.Boolean,
    }
    ds = tb.read_csv(csv_file, schema=full)
    assert ds.schema == pl.Schema(full)
    partial = {"value": pl.Float64, "id": pl.String}
    ds_partial = tb.read_csv(csv_file, schema=partial)
    inferred = pl.read_csv(csv_file).schema
    assert ds_partial.schema == pl.Schema({n: partial.get(n, t) for n, t in inferred.items()})

    assert_frame_equal(ds.collect(**RUN), pl.read_csv(csv_file, schema=full))
    assert_frame_equal(ds_partial.collect(**RUN), pl.read_csv(csv_file, schema_overrides=partial))


def test_inference_types(tmp_path: Path) -> None:
    path = tmp_path / "types.csv"
    path.write_text("i,f,s,b,empty,mixed\n1,1.5,x,true,,1\n2,,y,false,,a\n-3,2e3,,true,,2.5\n")
    ds = tb.read_csv(path)
    expected = pl.read_csv(path, infer_schema_length=None)
    assert ds.schema == pl.Schema(
        {
            "i": pl.Int64,
            "f": pl.Float64,
            "s": pl.String,
            "b": pl.Boolean,
            "empty": pl.String,  # no value to infer from: text, never Null
            "mixed": pl.String,
        }
    )
    got = ds.collect(**RUN)
    assert_frame_equal(got, expected.with_columns(pl.col("empty").cast(pl.String)))


def test_separator_and_quote_char(tmp_path: Path) -> None:
    path = tmp_path / "semi.csv"
    path.write_text("a;b\n1;'x;y'\n2;'it''s'\n")
    got = tb.read_csv(path, separator=";", quote_char="'").collect(**RUN)
    assert_frame_equal(got, pl.read_csv(path, separator=";", quote_char="'"))
    assert got["b"].to_list() == ["x;y", "it's"]


def test_tsv_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "data.tsv"
    path.write_bytes(b"\xef\xbb\xbfname\tn\r\nx\t1\r\ny\t2\r\n")
    ds = tb.read_csv(path, separator="\t")
    assert ds.columns == ["name", "n"]  # the BOM is not part of the first name
    assert_frame_equal(ds.collect(**RUN), pl.read_csv(path, separator="\t"))


def test_header_only_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("a,b\n")
    ds = tb.read_csv(path)
    assert ds.columns == ["a", "b"]
    assert ds.count(**RUN) == 0


def test_invalid_arguments() -> None:
    with pytest.raises(tb.TerabatchError):
        tb.read_csv("x.csv", separator=",,")


# Bad input ------------------------------------------------------------------------------------


def test_different_headers_name_file_and_column(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("id,name\n1,x\n")
    (tmp_path / "b.csv").write_text("id,nome\n2,y\n")
    with pytest.raises(SchemaError) as info:
        tb.read_csv(tmp_path)
    message = one_line_error(info.value)
    assert str(tmp_path / "b.csv") in message and "'name'" in message


def test_reordered_headers_are_reported(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("id,name\n1,x\n")
    (tmp_path / "b.csv").write_text("name,id\ny,2\n")
    with pytest.raises(SchemaError) as info:
        tb.read_csv(tmp_path)
    assert "b.csv" in one_line_error(info.value)


def test_schema_naming_an_unknown_column(csv_file: Path) -> None:
    with pytest.raises(SchemaError) as info:
        tb.read_csv(csv_file, schema={"vlaue": pl.Int64})
    assert "did you mean 'value'" in one_line_error(info.value)


@pytest.mark.parametrize(
    ("header", "reason"),
    [("a,,c\n", "empty column name"), ("a,b,a\n", "repeats column 'a'")],
)
def test_bad_headers(tmp_path: Path, header: str, reason: str) -> None:
    path = tmp_path / "h.csv"
    path.write_text(header + "1,2,3\n")
    with pytest.raises(InputReadError) as info:
        tb.read_csv(path)
    message = one_line_error(info.value)
    assert str(path) in message and reason in message


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "nothing.csv"
    path.write_bytes(b"")
    with pytest.raises(InputReadError) as info:
        tb.read_csv(path)
    assert "empty" in one_line_error(info.value)


def test_corrupt_gzip_is_a_read_error(tmp_path: Path) -> None:
    path = tmp_path / "data.csv.gz"
    good = gzip.compress(b"a,b\n" + b"1,2\n" * 50_000)
    path.write_bytes(good[: len(good) // 2])  # truncated stream
    with pytest.raises(InputReadError) as info:
        tb.read_csv(path).collect(**RUN)
    message = one_line_error(info.value)
    assert str(path) in message and "gzip" in message


def _lines(n: int, start: int = 0) -> str:
    return "".join(f"{i},v{i}\n" for i in range(start, start + n))


@pytest.mark.parametrize(
    ("bad_row", "reason"),
    [("7,x,9", "expected 2 fields, found 3"), ("7", "expected 2 fields, found 1")],
)
def test_ragged_row_names_the_line(tmp_path: Path, tiny_splits, bad_row: str, reason: str) -> None:
    path = tmp_path / "ragged.csv"
    path.write_text("a,b\n" + _lines(300) + bad_row + "\n" + _lines(300, 300))
    tiny_splits(400, 150)  # the bad row sits in a later split, deep in a later chunk
    with pytest.raises(BadRowError) as info:
        tb.read_csv(path).collect(**RUN)
    message = one_line_error(info.value)
    assert message.startswith(f"{path}: line 302: {reason}"), message
    assert repr(bad_row) in message


@pytest.mark.parametrize("columns", [None, ["a"], ["b"], ["a", "c"], ["c"]])
def test_short_row_is_found_whichever_columns_are_read(tmp_path: Path, columns) -> None:
    """A short row's missing fields would read as nulls; reading the last column or not, and
    with empty (null) last fields elsewhere, it is still named."""
    path = tmp_path / "short.csv"
    rows = "".join(f"{i},v{i},{'' if i % 7 == 0 else i}\n" for i in range(200))
    path.write_text("a,b,c\n" + rows + "9,x\n" + rows)
    ds = tb.read_csv(path, schema={"a": pl.Int64, "b": pl.String, "c": pl.Int64})
    with pytest.raises(BadRowError) as info:
        (ds.select(columns) if columns else ds).collect(**RUN)
    assert one_line_error(info.value).startswith(f"{path}: line 202: expected 3 fields, found 2")
    whole = tmp_path / "whole.csv"
    whole.write_text("a,b,c\n" + rows)
    got = tb.read_csv(whole, schema={"a": pl.Int64, "b": pl.String, "c": pl.Int64})
    expected = pl.read_csv(whole, schema={"a": pl.Int64, "b": pl.String, "c": pl.Int64})
    assert_frame_equal(got.collect(**RUN), expected)


def test_value_that_does_not_parse_as_the_inferred_type(tmp_path: Path, tiny_splits) -> None:
    # Types are inferred from the first file; the bad value is in a later split of the second.
    (tmp_path / "a.csv").write_text("a,b\n" + _lines(50))
    (tmp_path / "b.csv").write_text("a,b\n" + _lines(200) + "12x,y\n" + _lines(100))
    tiny_splits(300, 100)
    ds = tb.read_csv(tmp_path)
    assert ds.schema["a"] == pl.Int64
    with pytest.raises(BadRowError) as info:
        ds.collect(**RUN)
    message = one_line_error(info.value)
    assert message.startswith(f"{tmp_path / 'b.csv'}: line 202: column 'a': '12x'"), message
    assert "Int64" in message


def test_value_beyond_the_inference_sample(tmp_path: Path, tiny_splits) -> None:
    # The sample is the first MiB: a bad value after it is found by the task reading it.
    path = tmp_path / "big.csv"
    good = _lines(90_000)
    assert len(good) > 1 << 20
    path.write_text("a,b\n" + good + "oops,z\n" + _lines(10))
    tiny_splits(256 << 10)
    with pytest.raises(BadRowError) as info:
        tb.read_csv(path).collect(**RUN)
    assert one_line_error(info.value).startswith(f"{path}: line 90002: column 'a': 'oops'")


def test_bad_value_in_a_gzip_file(tmp_path: Path, tiny_splits) -> None:
    path = tmp_path / "data.csv.gz"
    path.write_bytes(gzip.compress(("a,b\n" + _lines(500) + "1.5,q\n" + _lines(5)).encode()))
    tiny_splits(1000, 200)
    with pytest.raises(BadRowError) as info:
        tb.read_csv(path, schema={"a": pl.Int64}).collect(**RUN)
    assert one_line_error(info.value).startswith(f"{path}: line 502: column 'a': '1.5'")


def test_too_many_fields_in_the_inference_sample(tmp_path: Path) -> None:
    # Inference must not choke on a ragged row: the task reading it reports the line.
    path = tmp_path / "ragged.csv"
    path.write_text("a,b\n" + _lines(10) + "1,2,3\n" + _lines(10))
    with pytest.raises(BadRowError) as info:
        tb.read_csv(path).collect(**RUN)
    assert one_line_error(info.value).startswith(f"{path}: line 12: expected 2 fields, found 3")


def test_multiline_row_error_line_numbers(tmp_path: Path, tiny_splits) -> None:
    # With quoted line breaks, the line reported is the line where the bad record starts.
    rows = [f'{i},"a\nb"' for i in range(100)]
    path = tmp_path / "m.csv"
    path.write_text("a,b\n" + "\n".join(rows) + '\n7,"x\ny",extra\n')
    tiny_splits(200, 90)
    with pytest.raises(BadRowError) as info:
        tb.read_csv(path, newlines_in_values=True).collect(**RUN)
    assert one_line_error(info.value).startswith(f"{path}: line 202: expected 2 fields, found 3")


def test_invalid_utf8_row(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes(b"a,b\n1,ok\n2,caf\xe9\n")
    with pytest.raises(tb.TerabatchError) as info:
        tb.read_csv(path, schema={"a": pl.Int64, "b": pl.String}).collect(**RUN)
    message = one_line_error(info.value)
    assert str(path) in message and "line 3" in message
