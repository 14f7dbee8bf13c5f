"""Byte-range splitting and record chunking: every record read exactly once, in order.

Property tests call ``plan_ranges`` and ``iter_record_chunks`` directly on random CSV text (no
worker processes); a few end-to-end cases then run the same kinds of files through
``tb.read_csv`` with splits of a few dozen bytes.
"""

from __future__ import annotations

import codecs
import io
import itertools
import random

import polars as pl
import pytest
from helpers import one_line_error
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

import terabatch as tb
from terabatch.io.sinks import CollectSink
from terabatch.io.splits import iter_record_chunks, last_record_end, plan_ranges
from terabatch.plan.optimize import optimize
from terabatch.plan.stages import Sizes, plan_stages

RUN = {"progress": False}

# Characters that stress a CSV splitter: separators, quotes, both line endings, multi-byte text.
QUOTED_ALPHABET = st.sampled_from(["a", "b", "7", " ", ",", '"', "\n", "\r\n", "é", "€"])
PLAIN_ALPHABET = st.sampled_from(["a", "b", "7", " ", "-", "é", "€"])


def _quote(field: str) -> str:
    """RFC 4180: quote a field that holds a separator, quote or line break; double its quotes."""
    if any(ch in field for ch in ',"\r\n'):
        return '"' + field.replace('"', '""') + '"'
    return field


@st.composite
def csv_documents(draw, quoted: bool) -> dict:
    """A CSV file as bytes, with what is needed to read it: header names and data start."""
    ncols = draw(st.integers(1, 4))
    names = [f"c{i}" for i in range(ncols)]
    alphabet = QUOTED_ALPHABET if quoted else PLAIN_ALPHABET
    field = st.lists(alphabet, max_size=6).map("".join)
    rows = draw(st.lists(st.lists(field, min_size=ncols, max_size=ncols), max_size=25))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    final_newline = draw(st.booleans())
    bom = draw(st.booleans())
    lines = []
    for row in rows:
        cells = [_quote(f) if quoted else f for f in row]
        if ncols == 1 and cells[0] == "":
            # A lone empty field would be a blank line, which CSV readers skip.
            cells[0] = '""' if quoted else "-"
        lines.append(",".join(cells))
    header = ",".join(names) + newline
    body = newline.join(lines) + (newline if lines and final_newline else "")
    prefix = codecs.BOM_UTF8 if bom else b""
    data = prefix + header.encode() + body.encode()
    return {
        "data": data,
        "names": names,
        "data_start": len(prefix) + len(header.encode()),
        "rows": len(rows),
    }


def _parse(data: bytes, names: list[str]) -> pl.DataFrame:
    """Polars' reading of header-less CSV records, every column as text."""
    if not data.strip(b"\r\n"):
        return pl.DataFrame(schema=dict.fromkeys(names, pl.String))
    return pl.read_csv(
        data, has_header=False, new_columns=names, infer_schema=False, raise_if_empty=False
    )


def _reference(doc: dict) -> pl.DataFrame:
    expected = pl.read_csv(doc["data"], infer_schema=False, raise_if_empty=False)
    assert expected.columns == doc["names"]
    return expected


class _Unseekable(io.RawIOBase):
    """A forward-only stream, like a decompressor: chunking must carry partial records over.

    Like pyarrow's ``CompressedInputStream`` it fills every read until the end of the data.
    """

    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def read(self, size: int = -1) -> bytes:
        return self._inner.read(size)


def _read_through_splits(doc: dict, target: int, chunk: int, quoted: bool) -> list[bytes]:
    data = doc["data"]
    f = io.BytesIO(data)
    ranges = plan_ranges(f, len(data), doc["data_start"], target, quoted)
    # The ranges tile [data_start, size) without gap or overlap.
    if len(data) > doc["data_start"]:
        assert ranges[0][0] == doc["data_start"]
        assert ranges[-1][1] == len(data)
        assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    else:
        assert ranges == []
    chunks: list[bytes] = []
    for start, end in ranges:
        f.seek(start)
        got = list(iter_record_chunks(f, end - start, chunk, quoted))
        assert b"".join(got) == data[start:end]
        assert all(got), "an empty chunk was yielded"
        chunks += got
    return chunks


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    doc=csv_documents(quoted=True),
    target=st.integers(1, 60),
    chunk=st.integers(1, 40),
)
def test_quoted_splits_and_chunks_read_every_row_once(doc: dict, target: int, chunk: int) -> None:
    chunks = _read_through_splits(doc, target, chunk, quoted=True)
    assert b"".join(chunks) == doc["data"][doc["data_start"] :]
    # Every chunk holds whole records: parsed alone, the chunks give the file's rows.
    parts = [_parse(c, doc["names"]) for c in chunks]
    got = pl.concat(parts) if parts else _parse(b"", doc["names"])
    expected = _reference(doc)
    assert got.height == doc["rows"]
    assert_frame_equal(got, expected)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    doc=csv_documents(quoted=False),
    target=st.integers(1, 60),
    chunk=st.integers(1, 40),
)
def test_unquoted_splits_and_chunks_read_every_row_once(doc: dict, target: int, chunk: int) -> None:
    chunks = _read_through_splits(doc, target, chunk, quoted=False)
    assert b"".join(chunks) == doc["data"][doc["data_start"] :]
    parts = [_parse(c, doc["names"]) for c in chunks]
    got = pl.concat(parts) if parts else _parse(b"", doc["names"])
    assert_frame_equal(got, _reference(doc))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=csv_documents(quoted=True), chunk=st.integers(1, 40))
def test_chunks_from_an_unseekable_stream(doc: dict, chunk: int) -> None:
    """A compressed file is read forward only: partial records are carried to the next chunk."""
    body = doc["data"][doc["data_start"] :]
    chunks = list(iter_record_chunks(_Unseekable(body), None, chunk, quoted=True))
    assert b"".join(chunks) == body
    parts = [_parse(c, doc["names"]) for c in chunks]
    got = pl.concat(parts) if parts else _parse(b"", doc["names"])
    assert_frame_equal(got, _reference(doc))


def test_last_record_end_respects_quotes() -> None:
    assert last_record_end(b'1,"a\nb"\n2,"c', quoted=True) == 8
    assert last_record_end(b'1,"a\nb', quoted=True) == -1
    assert last_record_end(b'1,"a\nb', quoted=False) == 5
    assert last_record_end(b'1,"x""\ny"\n', quoted=True) == 10
    assert last_record_end(b"no newline", quoted=False) == -1


def test_plan_ranges_never_cuts_inside_a_quoted_field() -> None:
    data = b"h\n" + b'1,"' + b"\n" * 50 + b'"\n' + b"2,x\n" * 5
    ranges = plan_ranges(io.BytesIO(data), len(data), 2, 10, quoted=True)
    cuts = [start for start, _ in ranges[1:]]
    assert all(c >= 2 + 3 + 50 + 2 for c in cuts), cuts
    assert ranges[0] == (2, 57) and ranges[-1][1] == len(data)


# End to end: the same kinds of files through tb.read_csv, on splits of a few dozen bytes ---------


def _random_document(seed: int, newline: str, bom: bool, final_newline: bool) -> bytes:
    rng = random.Random(seed)
    pieces = ["a", "b", "7", " ", ",", '"', "\n", "\r\n", "é", ""]
    rows = []
    for i in range(120):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 8)))
        empty = "" if rng.random() < 0.3 else "z"
        rows.append(",".join([str(i), _quote(text), empty]))
    body = newline.join(rows) + (newline if final_newline else "")
    return (codecs.BOM_UTF8 if bom else b"") + f"id,text,other{newline}".encode() + body.encode()


VARIANTS = [
    pytest.param("\n", False, True, id="lf"),
    pytest.param("\r\n", True, False, id="crlf-bom-no-final-newline"),
    pytest.param("\n", True, False, id="lf-bom-no-final-newline"),
    pytest.param("\r\n", False, True, id="crlf"),
]


@pytest.mark.parametrize(("newline", "bom", "final_newline"), VARIANTS)
def test_read_csv_with_newlines_in_values_equals_polars(
    tmp_path, tiny_splits, newline: str, bom: bool, final_newline: bool
) -> None:
    path = tmp_path / "quoted.csv"
    path.write_bytes(_random_document(7, newline, bom, final_newline))
    tiny_splits(97, 41)
    ds = tb.read_csv(path, newlines_in_values=True)
    tasks = plan_stages(optimize(ds._plan), CollectSink(), Sizes(97, 41, 1, None), None)[0].tasks
    assert len(tasks) > 10
    expected = pl.read_csv(path)
    got = ds.collect(**RUN)
    assert got.schema == expected.schema
    assert_frame_equal(got, expected)
    assert ds.count(**RUN) == expected.height == 120


def test_read_csv_detects_multiline_fields_from_the_sample(tmp_path, tiny_splits) -> None:
    path = tmp_path / "quoted.csv"
    path.write_bytes(_random_document(11, "\n", False, True))
    tiny_splits(64)
    ds = tb.read_csv(path)  # newlines_in_values left to detection
    assert ds._plan.source.options.newlines_in_values
    assert_frame_equal(ds.collect(**RUN), pl.read_csv(path))


def test_unquoted_csv_on_tiny_splits_equals_polars(tmp_path, tiny_splits) -> None:
    rng = random.Random(3)
    lines = [f"{i},{rng.randint(0, 9999)},w{rng.random():.4f}" for i in range(500)]
    path = tmp_path / "plain.csv"
    path.write_bytes(("id,n,w\r\n" + "\r\n".join(lines)).encode())
    tiny_splits(53, 29)
    ds = tb.read_csv(path, newlines_in_values=False)
    assert not ds._plan.source.options.newlines_in_values
    assert_frame_equal(ds.collect(**RUN), pl.read_csv(path))


def test_without_newlines_in_values_a_multiline_field_is_reported(tmp_path, tiny_splits) -> None:
    """Splitting on raw newlines cuts a quoted field in two: that must fail loudly, not misread."""
    rows = [f'{i},"line one\nline two"' for i in range(200)]
    path = tmp_path / "multi.csv"
    path.write_text("id,text\n" + "\n".join(rows) + "\n")
    tiny_splits(50)
    with pytest.raises(tb.TerabatchError) as info:
        tb.read_csv(path, newlines_in_values=False).collect(**RUN)
    assert "newlines_in_values=True" in one_line_error(info.value)


@pytest.mark.parametrize("kind", ["csv", "jsonl", "csv.gz", "parquet"])
def test_source_batches_say_how_far_into_the_split_they_read(tmp_path, kind: str) -> None:
    frame = pl.DataFrame({"a": range(5000), "b": [f"v{i % 97}" for i in range(5000)]})
    path = tmp_path / f"in.{kind}"
    if kind == "parquet":
        frame.write_parquet(path, row_group_size=500)
        ds = tb.read_parquet(path)
    elif kind == "jsonl":
        frame.write_ndjson(path)
        ds = tb.read_json(path)
    else:
        frame.write_csv(path, compression="gzip" if kind.endswith("gz") else "uncompressed")
        ds = tb.read_csv(path)
    source = ds._plan.source
    splits = source.splits(path.stat().st_size // 3 + 1, None)
    for split in splits:
        marks = [batch.read_to for batch in source.read(split, None, 4096)]
        if kind == "csv.gz":  # decompressed offsets say nothing of the file's bytes
            assert set(marks) == {0}
        else:
            assert len(marks) > 1 and marks == sorted(marks) and marks[-1] == split.nbytes
