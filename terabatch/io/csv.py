"""CSV: header and schema discovery on the driver, chunked parsing inside tasks.

The fast path hands a whole chunk of records to Polars' CSV parser. Polars fills a short row with
nulls instead of failing, so each chunk's field separators are counted against its rows; any
mismatch or parser error sends the chunk to a slow path that parses it with the standard library,
row by row, and names the first bad line.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import polars as pl

from terabatch.errors import BadRowError, InputReadError, SchemaError
from terabatch.io.bad_rows import current
from terabatch.io.files import FileInfo
from terabatch.io.parse_strings import parse_series, unparsable
from terabatch.io.splits import last_record_end
from terabatch.io.text import (
    Chunk,
    TextSplit,
    count_lines,
    iter_chunks,
    line_of,
    read_prefix,
    strip_bom,
)

HEADER_PROBE_BYTES = 1 << 20


@dataclass(frozen=True)
class CsvOptions:
    """How to parse: separator, quote character, whether quoted fields hold line breaks."""

    separator: str = ","
    quote_char: str = '"'
    newlines_in_values: bool = False


def read_header(
    file: FileInfo, storage_options: dict, options: CsvOptions
) -> tuple[list[str], int]:
    """Return the column names and the byte offset where the data starts (after BOM and header)."""
    prefix = read_prefix(file, storage_options, HEADER_PROBE_BYTES)
    if not prefix:
        raise InputReadError(f"{file.path}: file is empty (no header line)")
    data, bom = strip_bom(prefix)
    end = last_record_end(data[: data.find(b"\n") + 1] if b"\n" in data else data, quoted=True)
    header = data if end < 0 else data[:end]
    try:
        text = header.decode("utf-8")
    except UnicodeDecodeError:
        raise InputReadError(f"{file.path}: line 1: header is not valid UTF-8 text") from None
    if "\x00" in text:
        raise InputReadError(f"{file.path}: does not look like a CSV file (binary content)")
    rows = list(csv.reader(io.StringIO(text), delimiter=options.separator))
    names = rows[0] if rows else []
    if not names or any(not n.strip() for n in names):
        raise InputReadError(
            f"{file.path}: line 1: header has an empty column name: {text.strip()!r}"
        )
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise InputReadError(f"{file.path}: line 1: header repeats column {dup!r}")
    return names, bom + len(header)


def sample_records(file: FileInfo, storage_options: dict, data_start: int, nbytes: int) -> bytes:
    """The first whole records of a file's data, about ``nbytes`` of them."""
    prefix = read_prefix(file, storage_options, data_start + nbytes)[data_start:]
    if len(prefix) < nbytes:
        return prefix
    cut = last_record_end(prefix, quoted=True)
    return prefix[:cut] if cut > 0 else prefix


def infer_schema(sample: bytes, names: list[str], options: CsvOptions) -> pl.Schema:
    """Infer column types from sample records; a column with no value in the sample is a string."""
    if not sample.strip():
        return pl.Schema({n: pl.String for n in names})
    # No new_columns: Polars refuses them when a ragged row widens the sample; that row is
    # reported with its line by the task that reads it, so inference only looks at the columns.
    # Invalid UTF-8 in the sample is a bad row that a task reports with its line; read the
    # sample lossily so that it does not stop inference for the other rows.
    frame = pl.read_csv(
        sample,
        has_header=False,
        separator=options.separator,
        quote_char=options.quote_char,
        infer_schema_length=None,
        truncate_ragged_lines=True,
        encoding="utf8-lossy",
    )
    dtypes = frame.dtypes[: len(names)]
    dtypes += [pl.String] * (len(names) - len(dtypes))
    return pl.Schema(
        {n: (pl.String if dt == pl.Null else dt) for n, dt in zip(names, dtypes, strict=True)}
    )


def has_multiline_fields(sample: bytes, options: CsvOptions) -> bool:
    """Whether quoted fields in the sample span lines (then splits must track quotes)."""
    if options.quote_char.encode() not in sample:
        return False
    lines = sum(1 for line in sample.split(b"\n") if line.strip(b"\r"))
    try:
        rows = pl.read_csv(
            sample,
            has_header=False,
            separator=options.separator,
            infer_schema=False,
            truncate_ragged_lines=True,
        ).height
    except pl.exceptions.PolarsError:
        return True
    return rows < lines


def _separators_outside_quotes(data: bytes | memoryview, sep: int, quote: int) -> int:
    arr = np.frombuffer(data, dtype=np.uint8)
    quotes = arr == quote
    if not quotes.any():
        return int(np.count_nonzero(arr == sep))
    inside = np.cumsum(quotes, dtype=np.uint8) & 1
    return int(np.count_nonzero((arr == sep) & (inside == 0)))


def read_split(
    split: TextSplit,
    storage_options: dict,
    schema: pl.Schema,
    columns: list[str] | None,
    options: CsvOptions,
    chunk_bytes: int,
    on_bad_rows: str = "fail",
) -> Iterator[tuple[pl.DataFrame, Chunk]]:
    """Parse a split chunk by chunk.

    A bad row raises ``BadRowError`` naming its file and line, or with ``on_bad_rows`` set to
    "quarantine" or "skip" is reported to the task's bad-row collector and left out.
    """
    names = list(schema.names())
    wanted = names if columns is None else [n for n in names if n in set(columns)]
    indices = [names.index(n) for n in wanted]
    sep, quote = ord(options.separator), ord(options.quote_char)
    # Line numbers for the quarantine, where known for free (see _BadRowReporter).
    line = split.first_line if on_bad_rows != "fail" else None
    for chunk in iter_chunks(split, storage_options, chunk_bytes, options.newlines_in_values):
        try:
            frame = pl.read_csv(
                io.BytesIO(chunk.data),
                has_header=False,
                schema=schema,
                columns=indices,
                separator=options.separator,
                quote_char=options.quote_char,
            )
            expected = frame.height * (len(names) - 1)
            if len(names) > 1 and _separators_outside_quotes(chunk.data, sep, quote) != expected:
                raise ValueError("field count mismatch")
        except (pl.exceptions.PolarsError, ValueError):
            bad = _BadRowReporter(split, storage_options, chunk, on_bad_rows, line)
            frame = _slow_parse(chunk, schema, options, bad).select(wanted)
        yield frame, chunk
        if line is not None:
            line += count_lines(chunk.data)


class _BadRowReporter:
    """Where the slow path sends a bad row: an error, or the task's collector."""

    def __init__(
        self,
        split: TextSplit,
        storage_options: dict,
        chunk: Chunk,
        on_bad_rows: str,
        first_line: int | None,
    ) -> None:
        self.split, self.storage_options, self.chunk = split, storage_options, chunk
        self.mode, self.first_line = on_bad_rows, first_line
        self.data = bytes(chunk.data)

    def __call__(self, line_in_chunk: int, raw: str, reason: str) -> None:
        offset = _offset_of_line(self.data, line_in_chunk)
        if self.mode == "fail":
            line = line_of(self.split, self.storage_options, self.chunk.offset + offset)
            shown = raw if len(raw) <= 80 else raw[:77] + "..."
            raise BadRowError(f"{self.split.file.path}: line {line}: {reason}: {shown!r}")
        # Counting lines means reading the file from its start: only the first split of a
        # file knows its line numbers for free; elsewhere the byte offset says where.
        line = None
        if self.first_line is not None:
            line = self.first_line + self.data.count(b"\n", 0, offset)
        start = self.split.start + self.chunk.offset
        offset_in_file = None if self.split.file.compression else start + offset
        current().add(self.mode, self.split.file.path, line, offset_in_file, raw, reason)


def _slow_parse(
    chunk: Chunk, schema: pl.Schema, options: CsvOptions, bad: _BadRowReporter
) -> pl.DataFrame:
    """Parse a chunk row by row; send each bad row to ``bad``; return the good rows."""
    names = list(schema.names())
    text = bytes(chunk.data).decode("utf-8", errors="surrogateescape")
    lines = text.split("\n")
    reader = csv.reader(
        (line + "\n" for line in lines), delimiter=options.separator, quotechar=options.quote_char
    )
    rows: list[list[str]] = []
    row_lines: list[int] = []
    start_line = 0
    for row in reader:
        first = start_line
        start_line = reader.line_num
        if not row and len(names) > 1:
            continue
        row = row or [""]
        raw = "\n".join(lines[first : reader.line_num])
        if len(row) != len(names):
            hint = (
                ""
                if options.newlines_in_values
                else ("; if quoted fields contain line breaks, pass newlines_in_values=True")
            )
            bad(first, raw, f"expected {len(names)} fields, found {len(row)}{hint}")
            continue
        if any("\udc80" <= ch <= "\udcff" for field in row for ch in field):
            bad(
                first,
                raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace"),
                "invalid UTF-8",
            )
            continue
        rows.append(row)
        row_lines.append(first)
    text_frame = pl.DataFrame(
        [
            pl.Series(n, [r[i] if r[i] != "" else None for r in rows], pl.String)
            for i, n in enumerate(names)
        ]
    )
    typed_columns = []
    rejected = pl.Series([False] * len(rows), dtype=pl.Boolean)
    reasons: dict[int, str] = {}
    for name, dtype in schema.items():
        values = text_frame[name]
        typed = parse_series(values, dtype)
        for i in unparsable(values, typed).arg_true().to_list():
            reasons.setdefault(i, f"column {name!r}: {values[i]!r} is not a valid {dtype}")
        typed_columns.append(typed.alias(name))
    for i in sorted(reasons):
        bad(row_lines[i], options.separator.join(rows[i]), reasons[i])
    if reasons:
        rejected = rejected.scatter(sorted(reasons), True)
    return pl.DataFrame(typed_columns).filter(~rejected)


def _offset_of_line(data: bytes, line: int) -> int:
    offset = 0
    for _ in range(line):
        offset = data.index(b"\n", offset) + 1
    return offset


def check_same_columns(
    first: FileInfo, names: list[str], other: FileInfo, other_names: list[str]
) -> None:
    """Raise ``SchemaError`` naming the file and column where two headers disagree."""
    if names == other_names:
        return
    missing = [n for n in names if n not in other_names]
    extra = [n for n in other_names if n not in names]
    if missing:
        what = f"lacks column {missing[0]!r}"
    elif extra:
        what = f"has an extra column {extra[0]!r}"
    else:
        what = f"orders its columns differently ({', '.join(other_names)})"
    raise SchemaError(f"{other.path}: schema differs from {first.path}: {what}")
