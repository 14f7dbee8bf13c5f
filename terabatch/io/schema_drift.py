"""Files of one read that disagree on their columns: the strict check and the union.

``schema_mode="strict"`` (the default) takes the first file's columns as the dataset's and
reports a later file that lacks, adds or retypes a column. ``"union"`` combines the files'
columns the way ``pl.concat(how="diagonal_relaxed")`` combines frames: a column missing from a
file reads as null there, and a column whose types differ is widened to their common supertype.
Under union each file keeps a *layout* — its own columns and the types to parse them as — and
its batches are conformed to the dataset's schema as they are read.

Types inferred from a sample are guesses, so for CSV and JSON Lines a column with no value in a
file's sample (type Null) agrees with any type, and under strict a later file's column agrees
with the first file's type when some of its sampled values fit that type (integers in a float
column; integers and one typo in an integer column, where the typo is a bad row, reported or
quarantined when read). Only when none fit is the column retyped. Parquet declares its types:
there they must be equal.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import polars as pl

SCHEMA_MODES = ("strict", "union")
DRIFT_HINT = (
    "pass schema_mode='union' (CLI: --schema-mode union) to combine such files, "
    "or on_bad_files='skip' to leave this one out"
)

# A file's own columns and the types to parse them as, in the file's order.
Layout = tuple[tuple[str, pl.DataType], ...]
# Whether some sampled values of file ``index``'s column fit a type: ``fits(index, name, dtype)``.
Fits = Callable[[int, str, pl.DataType], bool]


@dataclass(frozen=True)
class Settled:
    """The dataset's schema, the files that agree with it, and why the others do not.

    ``schema`` still holds Null for a column no sample had a value for: the caller decides
    what such a column becomes. ``drifted`` holds ``(index, reason)`` pairs.
    """

    schema: pl.Schema
    kept: tuple[int, ...]
    drifted: tuple[tuple[int, str], ...]


def settle(
    paths: Sequence[str],
    schemas: Sequence[pl.Schema],
    mode: str,
    *,
    ordered: bool,
    fits: Fits | None = None,
) -> Settled:
    """Settle the schema of files read together.

    ``ordered``: column order matters (CSV). ``fits``: under strict, asked when a later file's
    type differs from the first's; without it (Parquet) types must be equal.

    >>> a = pl.Schema({"x": pl.Int64, "y": pl.String})
    >>> b = pl.Schema({"x": pl.Float64, "z": pl.Boolean})
    >>> settle(["a", "b"], [a, b], "union", ordered=True).schema
    Schema([('x', Float64), ('y', String), ('z', Boolean)])
    >>> settle(["a", "b"], [a, b], "strict", ordered=True).drifted
    ((1, "column 'y' is missing (present in a)"),)
    """
    if mode == "union":
        return _union(paths, schemas)
    return _strict(paths, schemas, ordered, fits)


def layout_of(own: pl.Schema, schema: pl.Schema) -> Layout | None:
    """How a file is parsed under union: its own columns; None when it has the dataset's.

    A column with no value in the file's sample is parsed as the dataset's type.
    """
    layout = tuple((n, schema[n] if t == pl.Null else t) for n, t in own.items())
    return None if layout == tuple(schema.items()) else layout


def conform(frame: pl.DataFrame, schema: pl.Schema, wanted: list[str]) -> pl.DataFrame:
    """Give a batch read with a file's layout the dataset's columns and types.

    >>> frame = pl.DataFrame({"x": [1]})
    >>> conform(frame, pl.Schema({"x": pl.Float64, "y": pl.String}), ["y", "x"]).row(0)
    (None, 1.0)
    """
    target = pl.DataFrame(schema={n: schema[n] for n in wanted})
    return pl.concat([target, frame], how="diagonal_relaxed").select(wanted)


def columns_to_read(layout: Layout, wanted: list[str]) -> list[str]:
    """The wanted columns a file has, or its first column so that its rows are still counted."""
    names = [n for n, _ in layout]
    return [n for n in wanted if n in names] or names[:1]


def _widened(a: pl.DataType, b: pl.DataType) -> pl.DataType | None:
    try:
        frames = [pl.DataFrame(schema={"c": a}), pl.DataFrame(schema={"c": b})]
        return pl.concat(frames, how="diagonal_relaxed").schema["c"]
    except pl.exceptions.PolarsError:
        return None


def _strict(
    paths: Sequence[str], schemas: Sequence[pl.Schema], ordered: bool, fits: Fits | None
) -> Settled:
    first = paths[0]
    reference = dict(schemas[0])
    # Where each column's type comes from: a later file when the first had no value for it.
    source = dict.fromkeys(reference, first)
    kept, drifted = [0], []
    for i in range(1, len(paths)):
        other = schemas[i]
        agrees = functools.partial(_agrees, fits, i)
        reason = _difference(first, reference, source, other, ordered, agrees)
        if reason is not None:
            drifted.append((i, reason))
            continue
        kept.append(i)
        for name, dtype in other.items():
            if reference[name] == pl.Null and dtype != pl.Null:
                reference[name], source[name] = dtype, paths[i]
    return Settled(pl.Schema(reference), tuple(kept), tuple(drifted))


def _difference(
    first: str,
    reference: dict[str, pl.DataType],
    source: dict[str, str],
    other: pl.Schema,
    ordered: bool,
    agrees: Callable[[str, pl.DataType, pl.DataType], bool],
) -> str | None:
    missing = [n for n in reference if n not in other]
    if missing:
        return f"column {missing[0]!r} is missing (present in {first})"
    extra = [n for n in other if n not in reference]
    if extra:
        return f"has an extra column {extra[0]!r} (not in {first})"
    for name, dtype in other.items():
        if not agrees(name, reference[name], dtype):
            return f"column {name!r} is {dtype}, not {reference[name]} as in {source[name]}"
    if ordered and list(other) != list(reference):
        return f"has the columns of {first} in another order ({', '.join(other)})"
    return None


def _agrees(
    fits: Fits | None, index: int, name: str, reference: pl.DataType, dtype: pl.DataType
) -> bool:
    if dtype == reference:
        return True
    if fits is None:  # declared types (Parquet) must be equal
        return False
    return pl.Null in (dtype, reference) or fits(index, name, reference)


def _union(paths: Sequence[str], schemas: Sequence[pl.Schema]) -> Settled:
    combined = dict(schemas[0])
    source = dict.fromkeys(combined, paths[0])
    kept, drifted = [0], []
    for i in range(1, len(paths)):
        widened = {}
        clash = None
        for name, dtype in schemas[i].items():
            if name not in combined:
                continue
            widened[name] = _widened(combined[name], dtype)
            if widened[name] is None:
                clash = name
                break
        if clash is not None:
            dtype = schemas[i][clash]
            drifted.append(
                (
                    i,
                    f"column {clash!r} is {dtype}, which does not combine with "
                    f"{combined[clash]} (in {source[clash]})",
                )
            )
            continue
        kept.append(i)
        for name, dtype in schemas[i].items():
            if name not in combined:
                combined[name], source[name] = dtype, paths[i]
            elif widened[name] != combined[name]:
                combined[name], source[name] = widened[name], paths[i]
    return Settled(pl.Schema(combined), tuple(kept), tuple(drifted))
