"""Sources: what a ``read_*`` call found (files, schema, options) and how its tasks read it.

The driver builds a source once (file discovery, headers, schema, footers); tasks receive the
source with their split and call ``read``. A source is frozen and picklable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import TypeVar

import polars as pl

from terabatch.errors import SchemaError, suggest
from terabatch.io import csv as csv_format
from terabatch.io import json as json_format
from terabatch.io import parquet as parquet_format
from terabatch.io import text
from terabatch.io.bad_files import BadFiles
from terabatch.io.files import FileInfo
from terabatch.io.schema_drift import (
    DRIFT_HINT,
    Fits,
    Layout,
    columns_to_read,
    conform,
    layout_of,
    settle,
)
from terabatch.io.stats_pruning import predicate_tree

SAMPLE_BYTES = 1 << 20
DRIFT_SAMPLE_BYTES = 16 << 10

T = TypeVar("T")
S = TypeVar("S", text.TextSplit, parquet_format.ParquetSplit)


@dataclass(frozen=True)
class Batch:
    """A parsed batch and a lazy description of where its first row came from.

    ``read_to`` (sources only) is how many bytes of the split are read once this batch is out,
    for progress within a task; 0 where unknown (compressed files, shuffle files).
    """

    frame: pl.DataFrame
    origin: Callable[[], str]
    read_to: int = 0


Split = text.TextSplit | parquet_format.ParquetSplit


@dataclass(frozen=True)
class CsvSource:
    """CSV files. ``layouts`` (one per file, or empty when every file has the dataset's
    columns) and ``skipped_files`` (``(path, reason)`` pairs) come from planning."""

    files: tuple[FileInfo, ...]
    schema: pl.Schema
    data_starts: tuple[int, ...]
    options: csv_format.CsvOptions
    storage_options: dict = field(default_factory=dict, hash=False, repr=False)
    format: str = "csv"
    on_bad_rows: str = "fail"
    layouts: tuple[Layout | None, ...] = ()
    skipped_files: tuple[tuple[str, str], ...] = ()

    def splits(self, target_bytes: int, predicate: pl.Expr | None) -> list[Split]:
        found: list[Split] = []
        layouts = self.layouts or (None,) * len(self.files)
        for file, start, layout in zip(self.files, self.data_starts, layouts, strict=True):
            splits = text.plan_splits(
                file, self.storage_options, start, target_bytes, self.options.newlines_in_values
            )
            found += _with_layout(splits, layout)
        return found

    def read(self, split: Split, columns: list[str] | None, chunk_bytes: int) -> Iterator[Batch]:
        assert isinstance(split, text.TextSplit)
        wanted = _wanted(self.schema, columns)
        schema, columns = _parse_as(split.layout, self.schema, columns, wanted)
        for frame, chunk in csv_format.read_split(
            split,
            self.storage_options,
            schema,
            columns,
            self.options,
            chunk_bytes,
            self.on_bad_rows,
        ):
            if split.layout is not None:
                frame = conform(frame, self.schema, wanted)
            yield Batch(
                frame, _line_origin(split, self.storage_options, chunk), _read_to(split, chunk)
            )


@dataclass(frozen=True)
class JsonSource:
    """JSON Lines files; ``layouts`` and ``skipped_files`` as for ``CsvSource``."""

    files: tuple[FileInfo, ...]
    schema: pl.Schema
    data_starts: tuple[int, ...]
    storage_options: dict = field(default_factory=dict, hash=False, repr=False)
    format: str = "json"
    on_bad_rows: str = "fail"
    layouts: tuple[Layout | None, ...] = ()
    skipped_files: tuple[tuple[str, str], ...] = ()

    def splits(self, target_bytes: int, predicate: pl.Expr | None) -> list[Split]:
        found: list[Split] = []
        layouts = self.layouts or (None,) * len(self.files)
        for file, start, layout in zip(self.files, self.data_starts, layouts, strict=True):
            splits = text.plan_splits(file, self.storage_options, start, target_bytes, False)
            found += _with_layout(splits, layout)
        return found

    def read(self, split: Split, columns: list[str] | None, chunk_bytes: int) -> Iterator[Batch]:
        assert isinstance(split, text.TextSplit)
        wanted = _wanted(self.schema, columns)
        schema, columns = _parse_as(split.layout, self.schema, columns, wanted)
        for frame, chunk in json_format.read_split(
            split, self.storage_options, schema, columns, chunk_bytes, self.on_bad_rows
        ):
            if split.layout is not None:
                frame = conform(frame, self.schema, wanted)
            yield Batch(
                frame, _line_origin(split, self.storage_options, chunk), _read_to(split, chunk)
            )


def _read_to(split: text.TextSplit, chunk: text.Chunk) -> int:
    """Bytes of the split read up to the end of ``chunk``; unknown for a compressed file, whose
    chunk offsets count decompressed bytes."""
    return 0 if split.end is None else chunk.offset + len(chunk.data)


def _wanted(schema: pl.Schema, columns: list[str] | None) -> list[str]:
    names = list(schema.names())
    return names if columns is None else [n for n in names if n in set(columns)]


def _parse_as(
    layout: Layout | None, schema: pl.Schema, columns: list[str] | None, wanted: list[str]
) -> tuple[pl.Schema, list[str] | None]:
    """The schema and columns to parse a file with: its own layout's, if it has one."""
    if layout is None:
        return schema, columns
    return pl.Schema(layout), columns_to_read(layout, wanted)


def _with_layout(splits: list[S], layout: Layout | None) -> list[S]:
    return splits if layout is None else [replace(s, layout=layout) for s in splits]


def _line_origin(
    split: text.TextSplit, storage_options: dict, chunk: text.Chunk
) -> Callable[[], str]:
    offset = chunk.offset  # not the chunk itself: its data is unmapped once parsed

    def origin() -> str:
        return f"{split.file.path}, line {text.line_of(split, storage_options, offset)}"

    return origin


# Footers give the row groups' encoded size (after dictionaries, before compression); decoded into
# Polars frames the db-benchmark tables take 1.5 to 2.2 times that.
DECODED_PER_ENCODED = 2


@dataclass(frozen=True)
class ParquetSource:
    """Parquet files; ``layouts`` and ``skipped_files`` as for ``CsvSource``."""

    files: tuple[FileInfo, ...]
    schema: pl.Schema
    hive_types: tuple[tuple[str, pl.DataType], ...]
    storage_options: dict = field(default_factory=dict, hash=False, repr=False)
    format: str = "parquet"
    layouts: tuple[Layout | None, ...] = ()
    skipped_files: tuple[tuple[str, str], ...] = ()
    # The rows' size in memory, estimated from the footers: what sizes the job, not file sizes.
    data_bytes: int = 0

    def splits(self, target_bytes: int, predicate: pl.Expr | None) -> list[Split]:
        tree = predicate_tree(predicate) if predicate is not None else None
        found: list[Split] = []
        layouts = self.layouts or (None,) * len(self.files)
        for file, layout in zip(self.files, layouts, strict=True):
            meta = parquet_format.read_metadata(file, self.storage_options)
            splits = parquet_format.plan_splits(
                file, meta, dict(self.hive_types), target_bytes, tree
            )
            found += _with_layout(splits, layout)
        return found

    def read(self, split: Split, columns: list[str] | None, chunk_bytes: int) -> Iterator[Batch]:
        assert isinstance(split, parquet_format.ParquetSplit)
        width = max(len(self.schema), 1)
        batch_rows = max(1024, chunk_bytes // (16 * width))
        wanted = _wanted(self.schema, columns)
        if split.layout is not None:
            hive = {k for k, _ in self.hive_types}
            in_file = columns_to_read(split.layout, [n for n in wanted if n not in hive])
            columns = in_file + [n for n in wanted if n in hive]
        rows_before = 0
        for frame in parquet_format.read_split(
            split, self.storage_options, self.schema, columns, batch_rows
        ):
            if split.layout is not None:
                frame = conform(frame, self.schema, wanted)
            first_row = rows_before
            rows_before += frame.height
            # Row groups are read whole: the bytes read so far, in proportion to the rows.
            read_to = split.nbytes * rows_before // max(split.rows, 1)
            yield Batch(
                frame,
                lambda n=first_row: f"{split.describe()}, row {n + 1} of the split",
                read_to,
            )


Source = CsvSource | JsonSource | ParquetSource


def open_csv(
    files: tuple[FileInfo, ...],
    storage_options: dict,
    schema: dict | None,
    options: csv_format.CsvOptions,
    detect_multiline: bool,
    schema_mode: str,
    on_bad_files: str,
) -> CsvSource:
    """Read and check every header, settle the schema and the quoting mode.

    The first file's types and quoting come from its first ``SAMPLE_BYTES``, the others' types
    from their first ``DRIFT_SAMPLE_BYTES``: enough to see a column retyped, and cheap enough
    for thousands of files.
    """
    given = dict(schema or {})
    bad = BadFiles(on_bad_files)

    def sample_bytes(file: FileInfo) -> int:
        return SAMPLE_BYTES if file is files[0] else DRIFT_SAMPLE_BYTES

    probes = bad.probe_each(
        files,
        lambda f: csv_format.probe(
            f, storage_options, options, sample_bytes(f), detect_multiline and f is files[0]
        ),
    )
    if detect_multiline:
        multiline = any(p.multiline for _, p in probes)
        options = replace(options, newlines_in_values=multiline)
    names = _all_names([p.names for _, p in probes], schema_mode)
    _check_schema_names(given, names, probes[0][0], schema_mode)

    def fits(index: int, column: str, dtype: pl.DataType) -> bool:
        file = probes[index][0]
        return csv_format.sample_fits(
            file, storage_options, options, sample_bytes(file), column, dtype
        )

    own = [pl.Schema({n: given.get(n, p.types[n]) for n in p.names}) for _, p in probes]
    kept, schemas, settled = _settle(bad, probes, own, schema_mode, ordered=True, fits=fits)
    final = pl.Schema({n: pl.String if t == pl.Null else t for n, t in settled.items()})
    return CsvSource(
        tuple(f for f, _ in kept),
        final,
        tuple(p.data_start for _, p in kept),
        options,
        storage_options,
        layouts=_layouts(schemas, final, schema_mode),
        skipped_files=bad.report(files),
    )


def _all_names(headers: list[list[str]], schema_mode: str) -> list[str]:
    if schema_mode == "strict":
        return headers[0]
    return list(dict.fromkeys(n for names in headers for n in names))


def _check_schema_names(given: dict, names: list[str], file: FileInfo, schema_mode: str) -> None:
    where = file.path if schema_mode == "strict" else "none of the files"
    for name in given:
        if name not in names:
            raise SchemaError(
                f"schema names column {name!r}, which {where} does not have"
                f"{suggest(name, names)}; columns are: {', '.join(names)}"
            )


def _settle(
    bad: BadFiles,
    probes: list[tuple[FileInfo, T]],
    schemas: list[pl.Schema],
    schema_mode: str,
    *,
    ordered: bool,
    fits: Fits | None,
) -> tuple[list[tuple[FileInfo, T]], list[pl.Schema], pl.Schema]:
    """Settle the files' schemas and report the files that drift.

    Returns the files kept, their own schemas, and the dataset's schema (Null where no sample
    had a value).
    """
    paths = [f.path for f, _ in probes]
    settled = settle(paths, schemas, schema_mode, ordered=ordered, fits=fits)
    for i, reason in settled.drifted:
        bad.reject(probes[i][0], reason, SchemaError, DRIFT_HINT)
    return (
        [probes[i] for i in settled.kept],
        [schemas[i] for i in settled.kept],
        settled.schema,
    )


def _layouts(
    schemas: list[pl.Schema], final: pl.Schema, schema_mode: str
) -> tuple[Layout | None, ...]:
    if schema_mode != "union":
        return ()
    found = tuple(layout_of(own, final) for own in schemas)
    return found if any(layout is not None for layout in found) else ()


def open_json(
    files: tuple[FileInfo, ...],
    storage_options: dict,
    schema: dict | None,
    schema_mode: str,
    on_bad_files: str,
    on_bad_rows: str = "fail",
) -> JsonSource:
    """Find where each file's data starts and settle the schema (given, or from samples)."""
    bad = BadFiles(on_bad_files)
    if schema:
        # A given schema is the dataset's: fields a file lacks read as null, others are ignored.
        starts = bad.probe_each(files, lambda f: json_format.data_start(f, storage_options))
        return JsonSource(
            tuple(f for f, _ in starts),
            pl.Schema(schema),
            tuple(start for _, start in starts),
            storage_options,
            skipped_files=bad.report(files),
            on_bad_rows=on_bad_rows,
        )

    def sample_bytes(file: FileInfo) -> int:
        return SAMPLE_BYTES if file is files[0] else DRIFT_SAMPLE_BYTES

    def probe(file: FileInfo) -> tuple[int, pl.Schema]:
        start = json_format.data_start(file, storage_options)
        skip_bad = on_bad_rows != "fail"
        return start, json_format.infer_schema(
            file, storage_options, start, sample_bytes(file), skip_bad
        )

    probes = bad.probe_each(files, probe)

    def fits(index: int, column: str, dtype: pl.DataType) -> bool:
        file, (start, _) = probes[index]
        return json_format.sample_fits(
            file, storage_options, start, sample_bytes(file), column, dtype
        )

    kept, schemas, settled = _settle(
        bad, probes, [s for _, (_, s) in probes], schema_mode, ordered=False, fits=fits
    )
    return JsonSource(
        tuple(f for f, _ in kept),
        settled,
        tuple(start for _, (start, _) in kept),
        storage_options,
        layouts=_layouts(schemas, settled, schema_mode),
        skipped_files=bad.report(files),
        on_bad_rows=on_bad_rows,
    )


def open_parquet(
    files: tuple[FileInfo, ...], storage_options: dict, schema_mode: str, on_bad_files: str
) -> ParquetSource:
    """Read every footer, settle the schema, and add hive directory keys as columns."""
    bad = BadFiles(on_bad_files)
    encoded: dict[str, int] = {}

    def probe(file: FileInfo) -> pl.Schema:
        meta = parquet_format.read_metadata(file, storage_options)
        encoded[file.path] = sum(
            meta.row_group(g).total_byte_size for g in range(meta.num_row_groups)
        )
        return parquet_format.file_schema(meta)

    probes = bad.probe_each(files, probe)
    kept, schemas, settled = _settle(
        bad, probes, [s for _, s in probes], schema_mode, ordered=False, fits=None
    )
    kept_files = tuple(f for f, _ in kept)
    hive = parquet_format.hive_types(kept_files, settled)
    return ParquetSource(
        kept_files,
        pl.Schema({**dict(settled), **hive}),
        tuple(hive.items()),
        storage_options,
        layouts=_layouts(schemas, settled, schema_mode),
        skipped_files=bad.report(files),
        data_bytes=DECODED_PER_ENCODED * sum(encoded.get(f.path, f.size) for f in kept_files),
    )
