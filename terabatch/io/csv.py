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

from terabatch.errors import BadRowError, InputReadError
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


@dataclass(frozen=True)
class CsvProbe:
    """What planning learns from the start of a file."""

    names: list[str]
    data_start: int  # after the byte order mark and the header
    types: pl.Schema  # inferred from the first records; Null where they hold no value
    multiline: bool | None  # quoted fields in the first records span lines (when asked)


def probe(
    file: FileInfo, storage_options: dict, options: CsvOptions, sample_bytes: int, multiline: bool
) -> CsvProbe:
    """Read and check a file's header; infer types from about ``sample_bytes`` of records.

    ``multiline``: also say whether quoted fields in the sample span lines.
    """
    names, data_start, sample = _start_of(file, storage_options, options, sample_bytes)
    types = infer_schema(sample, names, options)
    spans = has_multiline_fields(sample, options) if multiline else None
    return CsvProbe(names, data_start, types, spans)


def sample_fits(
    file: FileInfo,
    storage_options: dict,
    options: CsvOptions,
    sample_bytes: int,
    column: str,
    dtype: pl.DataType,
) -> bool:
    """Whether any of a column's values in a file's first records parses as ``dtype``."""
    names, _, sample = _start_of(file, storage_options, options, sample_bytes)
    try:
        frame = pl.read_csv(
            sample,
            has_header=False,
            separator=options.separator,
            quote_char=options.quote_char,
            infer_schema=False,
            truncate_ragged_lines=True,
        )
    except pl.exceptions.PolarsError:
        return True  # no verdict: the task reading the file names the bad rows
    index = names.index(column)
    if index >= frame.width:
        return True
    values = frame.to_series(index)
    present = values.is_not_null() & (values != "")
    return not present.any() or bool(parse_series(values, dtype).is_not_null().any())


def _start_of(
    file: FileInfo, storage_options: dict, options: CsvOptions, sample_bytes: int
) -> tuple[list[str], int, bytes]:
    prefix = read_prefix(file, storage_options, sample_bytes)
    if b"\n" not in prefix and len(prefix) >= sample_bytes < HEADER_PROBE_BYTES:
        prefix = read_prefix(file, storage_options, HEADER_PROBE_BYTES)  # a very wide header
    names, data_start = _header(file, prefix, options)
    sample = prefix[data_start:]
    if len(prefix) >= sample_bytes:
        cut = last_record_end(sample, quoted=True)
        sample = sample[:cut] if cut > 0 else sample
    return names, data_start, sample


def _header(file: FileInfo, prefix: bytes, options: CsvOptions) -> tuple[list[str], int]:
    data, bom = strip_bom(prefix)
    if not data.strip():
        once = ", once decompressed" if file.compression else ""
        raise InputReadError(f"{file.path}: file is empty (no header line{once})")
    end = last_record_end(data[: data.find(b"\n") + 1] if b"\n" in data else data, quoted=True)
    header = data if end < 0 else data[:end]
    try:
        text = header.decode("utf-8")
    except UnicodeDecodeError:
        raise InputReadError(f"{file.path}: line 1: header is not valid UTF-8 text") from None
    if "\x00" in text:
        raise InputReadError(f"{file.path}: does not look like a CSV file (binary content)")
    try:
        rows = list(
            csv.reader(
                io.StringIO(text, newline=""),
                delimiter=options.separator,
                quotechar=options.quote_char,
            )
        )
    except csv.Error as exc:
        raise InputReadError(f"{file.path}: line 1: header is not valid CSV ({exc})") from None
    names = rows[0] if rows else []
    if not names or any(not n.strip() for n in names):
        raise InputReadError(
            f"{file.path}: line 1: header has an empty column name: {text.strip()!r}"
        )
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise InputReadError(f"{file.path}: line 1: header repeats column {dup!r}")
    return names, bom + len(header)


def infer_schema(sample: bytes, names: list[str], options: CsvOptions) -> pl.Schema:
    """Infer column types from sample records; a column with no value in the sample is Null.

    Rows that make the sample unparsable are the reading task's to report, with their line:
    inference then gives no verdict (Null) rather than an error.
    """
    unknown = pl.Schema(dict.fromkeys(names, pl.Null))
    if not sample.strip():
        return unknown
    # No new_columns: Polars refuses them when a ragged row widens the sample; that row is
    # reported with its line by the task that reads it, so inference only looks at the columns.
    try:
        frame = pl.read_csv(
            sample,
            has_header=False,
            separator=options.separator,
            quote_char=options.quote_char,
            infer_schema_length=None,
            truncate_ragged_lines=True,
            encoding="utf8-lossy",
        )
    except pl.exceptions.PolarsError:
        return unknown
    # Polars calls a column of empty fields String; here it is a column of unknown type.
    dtypes = [
        pl.Null if column.null_count() == frame.height else column.dtype
        for column in frame.iter_columns()
    ][: len(names)]
    dtypes += [pl.Null] * (len(names) - len(dtypes))
    return pl.Schema(dict(zip(names, dtypes, strict=True)))


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


_COUNT_BLOCK = 1 << 20


def _separators_outside_quotes(data: bytes, sep: int, quote: int) -> int:
    """How many separator bytes lie outside quoted fields.

    Without a quote in the chunk (the common case) separators are counted block by block into
    one reused mask, which stays in the CPU cache instead of allocating a mask per chunk.
    """
    arr = np.frombuffer(data, dtype=np.uint8)
    if data.find(bytes([quote])) < 0:
        mask = np.empty(min(arr.size, _COUNT_BLOCK), dtype=bool)
        count = 0
        for begin in range(0, arr.size, _COUNT_BLOCK):
            block = arr[begin : begin + _COUNT_BLOCK]
            np.equal(block, sep, out=mask[: block.size])
            count += int(np.count_nonzero(mask[: block.size]))
        return count
    quotes = arr == quote
    inside = np.cumsum(quotes, dtype=np.uint8) & 1
    return int(np.count_nonzero((arr == sep) & (inside == 0)))


_NEWLINES = (ord("\n"), ord("\r"))


def misplaced_quote(data: bytes, sep: int, quote: int) -> int | None:
    """Offset of the first quote standing where RFC 4180 allows none, or None.

    An opening quote starts a field, a closing one ends it, and a quote inside a quoted field is
    doubled. Where line breaks may sit inside quotes, records are found by counting quotes, but
    Polars reads a quote inside an unquoted field (``12" pizza``) as a letter: the two would cut
    the file differently, so such a file's records depend on where it is split.

    >>> misplaced_quote(b'1,"say ""hi"" now",c\\n2,"x\\ny",z\\n', ord(","), ord('"')) is None
    True
    >>> misplaced_quote(b'1,12" pizza,c\\n', ord(","), ord('"'))
    4
    """
    arr = np.frombuffer(data, dtype=np.uint8)
    quotes = np.flatnonzero(arr == quote)
    if quotes.size == 0:
        return None
    # A chunk starts outside quotes: even-numbered quotes open, odd-numbered ones close (a
    # doubled quote closes and opens again).
    opening, closing = quotes[0::2], quotes[1::2]
    allowed = np.array([sep, quote, *_NEWLINES], dtype=np.uint8)
    before = arr[np.maximum(opening - 1, 0)]
    bad_open = opening[(opening > 0) & ~np.isin(before, allowed)]
    after = arr[np.minimum(closing + 1, arr.size - 1)]
    bad_close = closing[(closing + 1 < arr.size) & ~np.isin(after, allowed)]
    bad = np.concatenate([bad_open, bad_close])
    return int(bad.min()) if bad.size else None


def _whole_rows(frame: pl.DataFrame, names: list[str], data: bytes, sep: int, quote: int) -> bool:
    """Whether every row of ``data`` (parsed into ``frame``) had all the fields ``names``.

    Polars fills the missing fields of a short row with nulls (a long row is an error), so a
    last column read without a null proves every row whole; otherwise the separators are
    counted (3 ms per 24 MiB, a tenth of the parse).
    """
    if names[-1] in frame.columns and frame[names[-1]].null_count() == 0:
        return True
    expected = frame.height * (len(names) - 1)
    return _separators_outside_quotes(data, sep, quote) == expected


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
                chunk.data,
                has_header=False,
                schema=schema,
                columns=indices,
                separator=options.separator,
                quote_char=options.quote_char,
            )
            if len(names) > 1 and not _whole_rows(frame, names, chunk.data, sep, quote):
                raise ValueError("field count mismatch")
            if options.newlines_in_values and misplaced_quote(chunk.data, sep, quote) is not None:
                raise ValueError("a misplaced quote")
        except (pl.exceptions.PolarsError, ValueError):
            bad = _BadRowReporter(split, storage_options, chunk, on_bad_rows, line)
            frame = _slow_parse(schema, options, bad).select(wanted)
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


_MISPLACED_QUOTE = (
    "malformed CSV: a quote inside an unquoted field or after a closing quote; with line breaks "
    'in quoted values, quote the whole field and double its quotes ("12"" pizza")'
)


def _slow_parse(schema: pl.Schema, options: CsvOptions, bad: _BadRowReporter) -> pl.DataFrame:
    """Parse ``bad``'s chunk row by row; send each bad row to ``bad``; return the good rows."""
    names = list(schema.names())
    sep, quote = ord(options.separator), ord(options.quote_char)
    text = bad.data.decode("utf-8", errors="surrogateescape")  # the chunk, copied once
    lines = text.split("\n")
    rows: list[list[str]] = []
    row_lines: list[int] = []
    for first, end, row, error in _records(lines, options):
        raw = "\n".join(lines[first:end])
        if error is not None:
            reason = str(error).split(" - ")[0]  # not the csv module's advice on opening files
            bad(first, raw, f"malformed CSV: {reason}")
            continue
        if options.newlines_in_values:
            record = raw.encode("utf-8", "surrogateescape")
            if misplaced_quote(record, sep, quote) is not None:
                bad(first, raw, _MISPLACED_QUOTE)
                continue
        if not row and len(names) > 1:
            continue
        row = row or [""]
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


def _records(
    lines: list[str], options: CsvOptions
) -> Iterator[tuple[int, int, list[str], csv.Error | None]]:
    """(first line, end line, fields, error) per record; parsing goes on after a bad record.

    The csv module stops for good at a record it refuses (a bare carriage return in an
    unquoted field): a fresh reader takes over at the next line.
    """
    consumed = 0

    def feed() -> Iterator[str]:
        nonlocal consumed
        while consumed < len(lines):
            consumed += 1
            yield lines[consumed - 1] + "\n"

    source = feed()
    while consumed < len(lines):
        reader = csv.reader(source, delimiter=options.separator, quotechar=options.quote_char)
        while True:
            first = consumed
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield first, consumed, [], exc
                break
            yield first, consumed, row, None


def _offset_of_line(data: bytes, line: int) -> int:
    offset = 0
    for _ in range(line):
        offset = data.index(b"\n", offset) + 1
    return offset
