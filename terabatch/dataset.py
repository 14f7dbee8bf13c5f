"""The user API: a lazy ``Dataset``; each method validates its arguments and adds one node.

Nothing runs until a terminal method (``write_*``, ``collect``, ``count``, ``iter_batches``) is
called. Those accept the run options of ``terabatch.run.options.RunKwargs``: ``workers``,
``memory`` (e.g. ``"4GB"``), ``progress``, ``executor``, ``run_dir``, ``resume``, ...
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Unpack

import polars as pl
import pyarrow as pa

from terabatch.errors import SchemaError, TerabatchError, suggest
from terabatch.explain import explain_plan
from terabatch.io.bad_rows import check_mode
from terabatch.io.sinks import CODECS, CollectSink, CountSink, FileSink
from terabatch.plan.expressions import across_rows, depends_on_order, input_columns, window_keys
from terabatch.plan.nodes import (
    Aggregate,
    Drop,
    Filter,
    Head,
    Join,
    MapBatches,
    Node,
    Rename,
    Select,
    Sort,
    TopK,
    Unique,
    Window,
    WithColumns,
)
from terabatch.plan.schema import apply_to_schema, output_schema
from terabatch.run import job
from terabatch.run.options import RunKwargs, RunOptions, run_options
from terabatch.run.summary import JobSummary

IntoExpr = str | pl.Expr


def _exprs(
    args: Sequence[IntoExpr | Sequence[IntoExpr]], named: Mapping[str, Any]
) -> tuple[pl.Expr, ...]:
    flat: list[pl.Expr] = []
    for arg in args:
        items = arg if isinstance(arg, list | tuple) else [arg]
        for item in items:
            if isinstance(item, str):
                flat.append(pl.col(item))
            elif isinstance(item, pl.Expr):
                flat.append(item)
            else:
                raise TerabatchError(
                    f"expected a column name or a polars expression, got {type(item).__name__}"
                )
    for name, value in named.items():
        expr = value if isinstance(value, pl.Expr) else pl.lit(value)
        flat.append(expr.alias(name))
    return tuple(flat)


def _row_wise(method: str, exprs: tuple[pl.Expr, ...]) -> tuple[pl.Expr, ...]:
    """Refuse expressions that look across rows: batch by batch they would be silently wrong."""
    for expr in exprs:
        what = across_rows(expr)
        if what is not None:
            raise TerabatchError(
                f"{method}({expr}) uses {what}, which needs all rows at once, but {method} runs "
                "batch by batch; compute it on a collected result (ds.collect()) or, for row "
                "counts, use ds.count()"
            )
    return exprs


JOIN_KINDS = ("inner", "left", "right", "full", "semi", "anti")


def _check_join_key_types(
    left: Dataset, right: Dataset, left_on: tuple[str, ...], right_on: tuple[str, ...]
) -> None:
    """Keys must have equal types: both sides are hashed to the same partitions."""
    left_schema, right_schema = output_schema(left._plan), output_schema(right._plan)
    if left_schema is None or right_schema is None:
        return
    for a, b in zip(left_on, right_on, strict=True):
        for name, schema, side in ((a, left_schema, "left"), (b, right_schema, "right")):
            if name not in schema:
                raise SchemaError(
                    f"join key {name!r} not found on the {side} side"
                    f"{suggest(name, list(schema.names()))}"
                )
        if left_schema[a] != right_schema[b]:
            raise SchemaError(
                f"join keys {a!r} ({left_schema[a]}) and {b!r} ({right_schema[b]}) differ in "
                "type; cast one side with with_columns first"
            )


def _window_order(plan: Node) -> tuple[str, ...] | None:
    """The keys of the window that last grouped the rows, when only row-wise steps followed."""
    node = plan
    while isinstance(node, Filter | WithColumns | Select | Drop | Rename | MapBatches):
        node = node.child
    return node.keys if isinstance(node, Window) else None


def _check_row_order(plan: Node, keys: Sequence[str] | None, uses: list[tuple[str, str]]) -> None:
    """Refuse what follows the rows' order (``uses``: what, and where) where a window changed it.

    A window's rows come out grouped by its keys, each group in input order; Polars keeps them
    in input order. Whatever depends on the order within groups of other ``keys`` would read
    the wrong one. After a sort, the order is the sort's.
    """
    earlier = _window_order(plan)
    if earlier is None or (keys is not None and set(keys) == set(earlier)) or not uses:
        return
    what, where = uses[0]
    names = ", ".join(earlier)
    raise TerabatchError(
        f"{where} uses {what}, which follows the order of the rows, but after the window over "
        f"{names} the rows are grouped by {names}, not in input order; sort the rows first "
        "(ds.sort(...)) to give them the order it should follow"
    )


def _ordered_uses(method: str, exprs: Sequence[pl.Expr]) -> list[tuple[str, str]]:
    found = ((depends_on_order(e), e) for e in exprs)
    return [(what, f"{method}({e})") for what, e in found if what is not None]


def _quiet_options(run: RunKwargs) -> RunOptions:
    """Run options for results returned to the caller: no progress bar unless asked."""
    return run_options(**{"progress": False, **run})


class Dataset:
    """A lazy pipeline over files too large for memory.

    >>> import tempfile, pathlib, polars as pl, terabatch as tb
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "t.csv"
    >>> _ = path.write_text("user,bytes\\na,10\\nb,20\\na,5\\n")
    >>> ds = tb.read_csv(path).filter(pl.col("bytes") > 6).select("user")
    >>> ds.collect()["user"].to_list()
    ['a', 'b']
    """

    def __init__(self, plan: Node) -> None:
        self._plan = plan

    def __repr__(self) -> str:
        return f"<terabatch.Dataset\n{self.explain(optimized=False)}>"

    def _add(self, node: Node) -> Dataset:
        schema = output_schema(self._plan)
        if schema is not None and not isinstance(node, MapBatches):
            apply_to_schema(node, schema)
        return Dataset(node)

    @property
    def schema(self) -> pl.Schema:
        """Column names and types of the result; unknown after ``map_batches`` without a schema."""
        schema = output_schema(self._plan)
        if schema is None:
            raise TerabatchError(
                "the schema is unknown after map_batches; pass map_batches(fn, schema={...})"
            )
        return schema

    @property
    def columns(self) -> list[str]:
        return list(self.schema.names())

    # narrow operations ---------------------------------------------------------------------

    def select(self, *exprs: IntoExpr | Sequence[IntoExpr], **named: Any) -> Dataset:
        """Keep or compute columns: ``ds.select("a", total=pl.col("b") * 2)``."""
        built = _row_wise("select", _exprs(exprs, named))
        if built and all(input_columns(e) == set() for e in built):
            raise TerabatchError("select needs at least one expression that reads a column")
        return self._add(Select(self._plan, built))

    def with_columns(self, *exprs: IntoExpr | Sequence[IntoExpr], **named: Any) -> Dataset:
        """Add or replace columns: ``ds.with_columns(day=pl.col("ts").str.slice(0, 10))``.

        Window expressions (``pl.col("v").sum().over("k")``) are computed exactly after a
        shuffle on their keys; rows then come out grouped by key, each group in input order. A
        window that depends on the order (``cum_sum``, ``shift``, ...) after a window over other
        keys is refused: sort first.
        """
        built = _exprs(exprs, named)
        keys = set().union(*(window_keys(e) for e in built)) if built else set()
        if not keys:
            return self._add(WithColumns(self._plan, _row_wise("with_columns", built)))
        if len(keys) > 1 or ("?",) in keys:
            raise TerabatchError(
                "the windows of one with_columns must all be over the same plain columns; "
                f"found {sorted(keys)}: split them into separate steps"
            )
        for expr in built:
            what = across_rows(expr, windows=True)
            if what is not None:
                raise TerabatchError(
                    f"with_columns({expr}) uses {what} outside over(); only windows look "
                    "across rows here"
                )
        key = next(iter(keys))
        _check_row_order(self._plan, key, _ordered_uses("with_columns", built))
        return self._add(Window(self._plan, built, key))

    def filter(self, *predicates: pl.Expr) -> Dataset:
        """Keep the rows where every predicate is true: ``ds.filter(pl.col("status") == 200)``."""
        if not predicates or not all(isinstance(p, pl.Expr) for p in predicates):
            raise TerabatchError(
                "filter takes one or more polars expressions, e.g. pl.col('x') > 0"
            )
        predicate = predicates[0]
        for p in predicates[1:]:
            predicate = predicate & p
        _row_wise("filter", (predicate,))
        return self._add(Filter(self._plan, predicate))

    def drop(self, *columns: str) -> Dataset:
        """Remove columns."""
        return self._add(Drop(self._plan, tuple(columns)))

    def rename(self, mapping: Mapping[str, str]) -> Dataset:
        """Rename columns: ``ds.rename({"old": "new"})``."""
        return self._add(Rename(self._plan, tuple(mapping.items())))

    def map_batches(
        self,
        fn: Callable[[pl.DataFrame], pl.DataFrame],
        batch_size: int | None = None,
        schema: Mapping[str, pl.DataType] | None = None,
        on_error: str = "fail",
    ) -> Dataset:
        """Run any Python function ``DataFrame -> DataFrame`` on every batch, on every core.

        ``batch_size`` fixes the number of rows per call (the last call may get fewer);
        ``schema`` declares the output columns so that later steps can be checked early.
        When the function raises, the job fails with its traceback (``on_error="fail"``), or
        the batch is bisected until the rows that make it raise are found: they go to the
        quarantine with the exception as the reason (``"quarantine"``) or are dropped and
        counted (``"skip"``); the function's output for the other rows is kept.
        """
        mode = check_mode("on_error", on_error)
        if not callable(fn):
            raise TerabatchError(f"map_batches needs a function, got {type(fn).__name__}")
        if batch_size is not None and batch_size < 1:
            raise TerabatchError(f"batch_size must be at least 1, not {batch_size}")
        declared = pl.Schema(schema) if schema is not None else None
        return self._add(MapBatches(self._plan, fn, batch_size, declared, mode))

    def head(self, n: int = 5) -> Dataset:
        """The first ``n`` rows in input order."""
        if n < 0:
            raise TerabatchError(f"head needs n >= 0, not {n}")
        return self._add(Head(self._plan, n))

    def top_k(self, k: int, *, by: IntoExpr | Sequence[IntoExpr]) -> Dataset:
        """The ``k`` rows with the largest ``by`` values, without sorting everything.

        Each task keeps its own top ``k``; the driver picks the top ``k`` of those.
        """
        return self._top(k, by, largest=True)

    def bottom_k(self, k: int, *, by: IntoExpr | Sequence[IntoExpr]) -> Dataset:
        """The ``k`` rows with the smallest ``by`` values, without sorting everything."""
        return self._top(k, by, largest=False)

    def _top(self, k: int, by: IntoExpr | Sequence[IntoExpr], largest: bool) -> Dataset:
        if k < 0:
            raise TerabatchError(f"k must be >= 0, not {k}")
        keys = _row_wise("top_k", _exprs((by,), {}))
        if not keys:
            raise TerabatchError("top_k needs at least one column in by=")
        return self._add(TopK(self._plan, k, keys, largest))

    # shuffles ------------------------------------------------------------------------------

    def group_by(self, *keys: IntoExpr | Sequence[IntoExpr]) -> GroupBy:
        """Group rows by key columns or expressions; finish with ``.agg(...)``.

        Every row of a key meets in one reduce task after a hash shuffle, so any Polars
        aggregation is exact. Groups come out in no particular order.
        """
        built = _exprs(keys, {})
        if not built:
            raise TerabatchError("group_by needs at least one key")
        return GroupBy(self, _row_wise("group_by", built))

    def sort(
        self,
        by: str | Sequence[str],
        *more_by: str,
        descending: bool | Sequence[bool] = False,
        nulls_last: bool = False,
    ) -> Dataset:
        """Sort all rows by key columns, into one global order across output files.

        A first pass samples the keys to cut them into ranges; each range is sorted by one
        task, and the output lists the ranges in order (``part-00000`` first). The sort is
        stable: rows with equal keys keep their input order.
        """
        keys = ((by,) if isinstance(by, str) else tuple(by)) + more_by
        if not keys or not all(isinstance(k, str) for k in keys):
            raise TerabatchError("sort takes column names")
        flags = (descending,) * len(keys) if isinstance(descending, bool) else tuple(descending)
        if len(flags) != len(keys):
            raise TerabatchError(f"descending has {len(flags)} values for {len(keys)} columns")
        return self._add(Sort(self._plan, keys, flags, nulls_last))

    def join(
        self,
        other: Dataset,
        on: str | Sequence[str] | None = None,
        *,
        left_on: str | Sequence[str] | None = None,
        right_on: str | Sequence[str] | None = None,
        how: str = "inner",
        suffix: str = "_right",
    ) -> Dataset:
        """Join with another dataset on key columns, as Polars' ``join`` does.

        Both sides are hash-partitioned on their keys into the same partitions, and each pair
        of partitions is joined by one task, so neither side has to fit in memory. ``how`` is
        inner, left, right, full, semi or anti. Rows come out grouped by partition.
        """
        if not isinstance(other, Dataset):
            raise TerabatchError(f"join needs a terabatch Dataset, got {type(other).__name__}")
        if how not in JOIN_KINDS:
            raise TerabatchError(f"how must be one of {', '.join(JOIN_KINDS)}, not {how!r}")
        if on is not None:
            left_on = right_on = on
        if left_on is None or right_on is None:
            raise TerabatchError("join needs on= or both left_on= and right_on=")
        left_keys = (left_on,) if isinstance(left_on, str) else tuple(left_on)
        right_keys = (right_on,) if isinstance(right_on, str) else tuple(right_on)
        if len(left_keys) != len(right_keys) or not left_keys:
            raise TerabatchError("left_on and right_on need the same number of columns")
        _check_join_key_types(self, other, left_keys, right_keys)
        return self._add(Join(self._plan, other._plan, left_keys, right_keys, how, suffix))

    def unique(self, subset: str | Sequence[str] | None = None, *, keep: str = "any") -> Dataset:
        """Keep one row per distinct ``subset`` of columns (all columns by default).

        ``keep`` is ``"first"`` or ``"last"`` (in input order), ``"any"``, or ``"none"`` (drop
        every row whose key repeats). Rows come out in no particular order.
        """
        if keep not in ("first", "last", "any", "none"):
            raise TerabatchError(f"keep must be 'first', 'last', 'any' or 'none', not {keep!r}")
        columns = (subset,) if isinstance(subset, str) else tuple(subset) if subset else None
        if keep in ("first", "last") and columns is not None:
            _check_row_order(self._plan, columns, [(f"keep={keep!r}", "unique")])
        return self._add(Unique(self._plan, columns, keep))

    # results -------------------------------------------------------------------------------

    def count(self, **run: Unpack[RunKwargs]) -> int:
        """Number of rows."""
        plan = self._plan
        schema = output_schema(plan)
        if schema is not None and len(schema):
            plan = Select(plan, (pl.col(schema.names()[0]),))
        return job.run(plan, CountSink(), _quiet_options(run)).count

    def collect(self, **run: Unpack[RunKwargs]) -> pl.DataFrame:
        """Run and return the result as one Polars DataFrame (it must fit in memory)."""
        frame = job.run(self._plan, CollectSink(), _quiet_options(run)).frame
        return frame if frame is not None else pl.DataFrame()

    to_polars = collect

    def to_arrow(self, **run: Unpack[RunKwargs]) -> pa.Table:
        """Run and return a ``pyarrow.Table``."""
        return self.collect(**run).to_arrow()

    def to_pandas(self, **run: Unpack[RunKwargs]):
        """Run and return a ``pandas.DataFrame`` (needs pandas installed)."""
        return self.collect(**run).to_pandas()

    def iter_batches(self, **run: Unpack[RunKwargs]) -> Iterator[pl.DataFrame]:
        """Stream the result as Polars DataFrames in input order, with bounded memory."""
        for batch in job.stream(self._plan, _quiet_options(run)):
            yield pl.from_arrow(batch)

    def _write(
        self,
        fmt: str,
        path: str | os.PathLike,
        *,
        compression: str | None,
        compression_level: int | None,
        partition_by: str | Sequence[str] | None,
        max_rows_per_file: int | None,
        mode: str,
        storage_options: dict | None,
        run: RunKwargs,
    ) -> JobSummary:
        keys = (partition_by,) if isinstance(partition_by, str) else tuple(partition_by or ())
        schema = output_schema(self._plan)
        if schema is not None:
            for key in keys:
                if key not in schema:
                    raise SchemaError(
                        f"partition_by column {key!r} not found{suggest(key, list(schema.names()))}"
                    )
        if compression not in CODECS[fmt]:
            allowed = ", ".join(str(c) for c in CODECS[fmt])
            raise TerabatchError(
                f"compression {compression!r} is not available for {fmt}; choose one of {allowed}"
            )
        if fmt != "parquet" and compression == "none":
            compression = None
        if max_rows_per_file is not None and max_rows_per_file < 1:
            raise TerabatchError("max_rows_per_file must be at least 1")
        sink = FileSink(
            fmt,
            compression,
            compression_level,
            keys,
            max_rows_per_file,
            storage_options=storage_options,
        )
        out = job.run(
            self._plan,
            sink,
            run_options(**run),
            output=os.fspath(path),
            mode=mode,
            storage_options=storage_options,
            manifest={"format": fmt, "compression": compression, "partition_by": list(keys)},
        )
        return out.summary

    def write_parquet(
        self,
        path: str | os.PathLike,
        *,
        compression: str = "zstd",
        compression_level: int | None = None,
        partition_by: str | Sequence[str] | None = None,
        max_rows_per_file: int | None = None,
        mode: str = "error",
        storage_options: dict | None = None,
        **run: Unpack[RunKwargs],
    ) -> JobSummary:
        """Write a directory of Parquet files, atomically, with a ``_SUCCESS`` manifest.

        ``partition_by`` writes hive-style ``key=value/`` directories; ``mode="overwrite"``
        replaces an existing output directory only once the new output is complete.
        """
        return self._write(
            "parquet",
            path,
            compression=compression,
            compression_level=compression_level,
            partition_by=partition_by,
            max_rows_per_file=max_rows_per_file,
            mode=mode,
            storage_options=storage_options,
            run=run,
        )

    def write_csv(
        self,
        path: str | os.PathLike,
        *,
        compression: str | None = None,
        partition_by: str | Sequence[str] | None = None,
        max_rows_per_file: int | None = None,
        mode: str = "error",
        storage_options: dict | None = None,
        **run: Unpack[RunKwargs],
    ) -> JobSummary:
        """Write a directory of CSV files (optionally gzip/zstd/bz2), atomically."""
        return self._write(
            "csv",
            path,
            compression=compression,
            compression_level=None,
            partition_by=partition_by,
            max_rows_per_file=max_rows_per_file,
            mode=mode,
            storage_options=storage_options,
            run=run,
        )

    def write_json(
        self,
        path: str | os.PathLike,
        *,
        compression: str | None = None,
        partition_by: str | Sequence[str] | None = None,
        max_rows_per_file: int | None = None,
        mode: str = "error",
        storage_options: dict | None = None,
        **run: Unpack[RunKwargs],
    ) -> JobSummary:
        """Write a directory of JSON Lines files (optionally compressed), atomically."""
        return self._write(
            "json",
            path,
            compression=compression,
            compression_level=None,
            partition_by=partition_by,
            max_rows_per_file=max_rows_per_file,
            mode=mode,
            storage_options=storage_options,
            run=run,
        )

    def explain(self, optimized: bool = True) -> str:
        """Describe the plan: operators, pushed-down columns and predicates, and the stages."""
        return explain_plan(self._plan, optimized)


class GroupBy:
    """The keys of a ``group_by``, waiting for their aggregations."""

    def __init__(self, dataset: Dataset, keys: tuple[pl.Expr, ...]) -> None:
        self._dataset, self._keys = dataset, keys

    def agg(self, *aggs: IntoExpr | Sequence[IntoExpr], **named: Any) -> Dataset:
        """Aggregate each group with Polars expressions: ``.agg(pl.col("v").sum(), n=pl.len())``.

        >>> import tempfile, pathlib, polars as pl, terabatch as tb
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "t.csv"
        >>> _ = path.write_text("k,v\\na,1\\nb,2\\na,3\\n")
        >>> out = tb.read_csv(path).group_by("k").agg(pl.col("v").sum()).collect()
        >>> sorted(out.rows())
        [('a', 4), ('b', 2)]
        """
        built = _exprs(aggs, named)
        if not built:
            raise TerabatchError("agg needs at least one expression")
        # Only plain columns name the same groups as a window over them.
        plain = all(k.meta.is_column() for k in self._keys)
        keys = [k.meta.output_name() for k in self._keys] if plain else None
        _check_row_order(self._dataset._plan, keys, _ordered_uses("agg", built))
        return self._dataset._add(Aggregate(self._dataset._plan, self._keys, built))
