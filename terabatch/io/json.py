"""JSON Lines: schema inference on the driver, chunked parsing inside tasks.

A newline inside a JSON string must be escaped, so every raw newline ends a record and splits
never need to track quotes. The fast path parses a whole chunk with Polars; on any error a slow
path parses line by line with the standard library to name the bad line and the reason.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import polars as pl

from terabatch.errors import BadRowError, InputReadError
from terabatch.io.bad_rows import current
from terabatch.io.files import FileInfo
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


def data_start(file: FileInfo, storage_options: dict) -> int:
    """Byte offset of the first record: after a UTF-8 byte order mark, if any."""
    return strip_bom(read_prefix(file, storage_options, 3))[1]


def infer_schema(
    file: FileInfo, storage_options: dict, start: int, nbytes: int, skip_bad: bool = False
) -> pl.Schema:
    """Infer the schema from the first records of a file (its valid ones, with ``skip_bad``)."""
    prefix = read_prefix(file, storage_options, start + nbytes)[start:]
    if not prefix.strip():
        raise InputReadError(f"{file.path}: file is empty (no JSON record)")
    if len(prefix) >= nbytes:
        cut = last_record_end(prefix, quoted=False)
        prefix = prefix[:cut] if cut > 0 else prefix
    if skip_bad:
        bad = {offset for offset, _, _ in _bad_lines(prefix, pl.Schema())}
        lines, offset = [], 0
        for line in prefix.split(b"\n"):
            if offset not in bad:
                lines.append(line)
            offset += len(line) + 1
        prefix = b"\n".join(lines)
        if not prefix.strip():
            raise InputReadError(f"{file.path}: no valid JSON record in the first lines")
    try:
        return pl.read_ndjson(prefix, infer_schema_length=None).schema
    except pl.exceptions.PolarsError:
        _diagnose(
            prefix,
            pl.Schema(),
            lambda offset, reason, raw: _raise_at(file, prefix, offset, reason, raw),
        )
        raise InputReadError(f"{file.path}: does not look like JSON Lines") from None


def sample_fits(
    file: FileInfo, storage_options: dict, start: int, nbytes: int, column: str, dtype: pl.DataType
) -> bool:
    """Whether any of a field's values in a file's first records is a valid ``dtype``."""
    present = False
    for raw_line in read_prefix(file, storage_options, start + nbytes)[start:].split(b"\n"):
        try:
            record = json.loads(raw_line)
        except ValueError:
            continue  # a bad or cut line: the task reading the file names it
        if not isinstance(record, dict) or record.get(column) is None:
            continue
        present = True
        if not _type_problem(record[column], dtype):
            return True
    return not present


def _raise_at(file: FileInfo, data: bytes, offset: int, reason: str, raw: str) -> None:
    line = data.count(b"\n", 0, offset) + 1
    raise BadRowError(f"{file.path}: line {line}: {reason}: {_shorten(raw)!r}")


def _shorten(raw: str) -> str:
    return raw if len(raw) <= 80 else raw[:77] + "..."


_PY_TYPES = {
    pl.Int8: int,
    pl.Int16: int,
    pl.Int32: int,
    pl.Int64: int,
    pl.UInt8: int,
    pl.UInt16: int,
    pl.UInt32: int,
    pl.UInt64: int,
    pl.Float32: (int, float),
    pl.Float64: (int, float),
    pl.String: str,
    pl.Boolean: bool,
}


def _type_problem(value: object, dtype: pl.DataType) -> bool:
    expected = _PY_TYPES.get(dtype.base_type())
    if expected is None or value is None:
        return False
    if isinstance(value, bool) and dtype != pl.Boolean:
        return True
    return not isinstance(value, expected)


def _diagnose(data: bytes, schema: pl.Schema, fail) -> None:
    """Call ``fail(offset, reason, raw)`` for the first line that is not a valid record."""
    for offset, reason, raw in _bad_lines(data, schema):
        fail(offset, reason, raw)


def _bad_lines(data: bytes, schema: pl.Schema) -> Iterator[tuple[int, str, str]]:
    """Every line that is not a valid record: its offset in ``data``, the reason, the text."""
    offset = 0
    for raw_line in data.split(b"\n"):
        here, offset = offset, offset + len(raw_line) + 1
        if not raw_line.strip():
            continue
        try:
            text = raw_line.decode("utf-8")
        except UnicodeDecodeError:
            yield here, "invalid UTF-8", raw_line.decode("utf-8", "replace")
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            yield here, f"invalid JSON ({exc.msg} at column {exc.colno})", text
            continue
        if not isinstance(record, dict):
            yield here, f"expected a JSON object, found {type(record).__name__}", text
            continue
        for name, dtype in schema.items():
            if _type_problem(record.get(name), dtype):
                yield here, f"field {name!r}: {record[name]!r} is not a valid {dtype}", text
                break


def read_split(
    split: TextSplit,
    storage_options: dict,
    schema: pl.Schema,
    columns: list[str] | None,
    chunk_bytes: int,
    on_bad_rows: str = "fail",
) -> Iterator[tuple[pl.DataFrame, Chunk]]:
    """Parse a split chunk by chunk.

    A bad line raises ``BadRowError`` naming its file and line, or with ``on_bad_rows`` set to
    "quarantine" or "skip" is reported to the task's bad-row collector and left out.
    """
    wanted = (
        list(schema.names())
        if columns is None
        else [n for n in schema.names() if n in set(columns)]
    )
    line = split.first_line if on_bad_rows != "fail" else None
    for chunk in iter_chunks(split, storage_options, chunk_bytes, quoted=False):
        try:
            frame = pl.read_ndjson(io.BytesIO(chunk.data), schema=schema)
        except pl.exceptions.PolarsError as exc:
            data = bytes(chunk.data)
            if on_bad_rows == "fail":

                def fail(offset: int, reason: str, raw: str, chunk: Chunk = chunk) -> None:
                    line = line_of(split, storage_options, chunk.offset + offset)
                    raise BadRowError(
                        f"{split.file.path}: line {line}: {reason}: {_shorten(raw)!r}"
                    )

                _diagnose(data, schema, fail)
                first = str(exc).strip().splitlines()[0]
                raise BadRowError(
                    f"{split.describe()}: cannot parse JSON Lines ({first})"
                ) from None
            frame = _without_bad_lines(split, chunk, data, schema, on_bad_rows, line, exc)
        yield frame.select(wanted), chunk
        if line is not None:
            line += count_lines(chunk.data)


def _without_bad_lines(
    split: TextSplit,
    chunk: Chunk,
    data: bytes,
    schema: pl.Schema,
    mode: str,
    first_line: int | None,
    exc: Exception,
) -> pl.DataFrame:
    """Report every bad line of a chunk to the task's collector; parse the others."""
    bad = list(_bad_lines(data, schema))
    keep = bytearray()
    start = 0
    for offset, reason, raw in bad:
        line = None if first_line is None else first_line + data.count(b"\n", 0, offset)
        where = None if split.file.compression else split.start + chunk.offset + offset
        current().add(mode, split.file.path, line, where, raw, reason)
        keep += data[start:offset]
        end = data.find(b"\n", offset)
        start = len(data) if end < 0 else end + 1
    keep += data[start:]
    if not keep.strip():
        return pl.DataFrame(schema=schema)
    try:
        return pl.read_ndjson(io.BytesIO(bytes(keep)), schema=schema)
    except pl.exceptions.PolarsError:
        first = str(exc).strip().splitlines()[0]
        raise BadRowError(f"{split.describe()}: cannot parse JSON Lines ({first})") from None
