"""Sources: what a ``read_*`` call found (files, schema, options) and how its tasks read it.

The driver builds a source once (file discovery, headers, schema, footers); tasks receive the
source with their split and call ``read``. A source is frozen and picklable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import polars as pl
import pyarrow.parquet as pq

from terabatch.errors import SchemaError, suggest
from terabatch.io import csv as csv_format
from terabatch.io import json as json_format
from terabatch.io import parquet as parquet_format
from terabatch.io import text
from terabatch.io.files import FileInfo
from terabatch.io.stats_pruning import predicate_tree

SAMPLE_BYTES = 1 << 20


@dataclass(frozen=True)
class Batch:
    """A parsed batch and a lazy description of where its first row came from."""

    frame: pl.DataFrame
    origin: Callable[[], str]


Split = text.TextSplit | parquet_format.ParquetSplit


@dataclass(frozen=True)
class CsvSource:
    files: tuple[FileInfo, ...]
    schema: pl.Schema
    data_starts: tuple[int, ...]
    options: csv_format.CsvOptions
    storage_options: dict = field(default_factory=dict, hash=False, repr=False)
    format: str = "csv"

    def splits(self, target_bytes: int, predicate: pl.Expr | None) -> list[Split]:
        found: list[Split] = []
        for file, start in zip(self.files, self.data_starts, strict=True):
            found += text.plan_splits(
                file, self.storage_options, start, target_bytes, self.options.newlines_in_values
            )
        return found

    def read(self, split: Split, columns: list[str] | None, chunk_bytes: int) -> Iterator[Batch]:
        assert isinstance(split, text.TextSplit)
        for frame, chunk in csv_format.read_split(
            split, self.storage_options, self.schema, columns, self.options, chunk_bytes
        ):
            yield Batch(frame, _line_origin(split, self.storage_options, chunk))


@dataclass(frozen=True)
class JsonSource:
    files: tuple[FileInfo, ...]
    schema: pl.Schema
    data_starts: tuple[int, ...]
    storage_options: dict = field(default_factory=dict, hash=False, repr=False)
    format: str = "json"

    def splits(self, target_bytes: int, predicate: pl.Expr | None) -> list[Split]:
        found: list[Split] = []
        for file, start in zip(self.files, self.data_starts, strict=True):
            found += text.plan_splits(file, self.storage_options, start, target_bytes, quoted=False)
        return found

    def read(self, split: Split, columns: list[str] | None, chunk_bytes: int) -> Iterator[Batch]:
        assert isinstance(split, text.TextSplit)
        for frame, chunk in json_format.read_split(
            split, self.storage_options, self.schema, columns, chunk_bytes
        ):
            yield Batch(frame, _line_origin(split, self.storage_options, chunk))


def _line_origin(
    split: text.TextSplit, storage_options: dict, chunk: text.Chunk
) -> Callable[[], str]:
    offset = chunk.offset  # not the chunk itself: its data is unmapped once parsed

    def origin() -> str:
        return f"{split.file.path}, line {text.line_of(split, storage_options, offset)}"

    return origin


@dataclass(frozen=True)
class ParquetSource:
    files: tuple[FileInfo, ...]
    schema: pl.Schema
    hive_types: tuple[tuple[str, pl.DataType], ...]
    storage_options: dict = field(default_factory=dict, hash=False, repr=False)
    format: str = "parquet"

    def splits(self, target_bytes: int, predicate: pl.Expr | None) -> list[Split]:
        tree = predicate_tree(predicate) if predicate is not None else None
        found: list[Split] = []
        for file in self.files:
            meta = parquet_format.read_metadata(file, self.storage_options)
            found += parquet_format.plan_splits(
                file, meta, dict(self.hive_types), target_bytes, tree
            )
        return found

    def read(self, split: Split, columns: list[str] | None, chunk_bytes: int) -> Iterator[Batch]:
        assert isinstance(split, parquet_format.ParquetSplit)
        width = max(len(self.schema), 1)
        batch_rows = max(1024, chunk_bytes // (16 * width))
        rows_before = 0
        for frame in parquet_format.read_split(
            split, self.storage_options, self.schema, columns, batch_rows
        ):
            first_row = rows_before
            yield Batch(frame, lambda n=first_row: f"{split.describe()}, row {n + 1} of the split")
            rows_before += frame.height


Source = CsvSource | JsonSource | ParquetSource


def open_csv(
    files: tuple[FileInfo, ...],
    storage_options: dict,
    schema: dict | None,
    separator: str,
    quote_char: str,
    newlines_in_values: bool | None,
) -> CsvSource:
    """Read headers, check they agree, and settle the schema and the quoting mode."""
    options = csv_format.CsvOptions(separator, quote_char, bool(newlines_in_values))
    headers = [csv_format.read_header(f, storage_options, options) for f in files]
    names = headers[0][0]
    for file, (other, _) in zip(files[1:], headers[1:], strict=True):
        csv_format.check_same_columns(files[0], names, file, other)
    sample = csv_format.sample_records(files[0], storage_options, headers[0][1], SAMPLE_BYTES)
    if newlines_in_values is None:
        options = csv_format.CsvOptions(
            separator, quote_char, csv_format.has_multiline_fields(sample, options)
        )
    given = dict(schema or {})
    _check_schema_names(given, names, files[0])
    if len(given) < len(names):
        inferred = csv_format.infer_schema(sample, names, options)
    else:
        inferred = pl.Schema({})
    final = pl.Schema({n: given.get(n, inferred.get(n)) for n in names})
    return CsvSource(files, final, tuple(start for _, start in headers), options, storage_options)


def _check_schema_names(given: dict, names: list[str], file: FileInfo) -> None:
    for name in given:
        if name not in names:
            raise SchemaError(
                f"schema names column {name!r}, which {file.path} does not have"
                f"{suggest(name, names)}; columns are: {', '.join(names)}"
            )


def open_json(
    files: tuple[FileInfo, ...], storage_options: dict, schema: dict | None
) -> JsonSource:
    """Find where each file's data starts and settle the schema (given, or from a sample)."""
    starts = tuple(json_format.data_start(f, storage_options) for f in files)
    if schema:
        final = pl.Schema(schema)
    else:
        final = json_format.infer_schema(files[0], storage_options, starts[0], SAMPLE_BYTES)
    return JsonSource(files, final, starts, storage_options)


def open_parquet(files: tuple[FileInfo, ...], storage_options: dict) -> ParquetSource:
    """Read every footer, check the files agree, and add hive directory keys as columns."""
    metas: list[pq.FileMetaData] = [parquet_format.read_metadata(f, storage_options) for f in files]
    schema, hive = parquet_format.dataset_schema(files, metas)
    full = pl.Schema({**dict(schema), **hive})
    return ParquetSource(files, full, tuple(hive.items()), storage_options)
