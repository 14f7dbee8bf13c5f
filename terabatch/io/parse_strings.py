"""Turn columns of text into typed columns and say which values did not parse.

The slow paths of the CSV and JSON readers use this to name the exact bad value once the fast
parser has refused a chunk.
"""

from __future__ import annotations

import polars as pl


def parse_series(values: pl.Series, dtype: pl.DataType) -> pl.Series:
    """Parse text values as ``dtype``; a value that does not parse becomes null.

    >>> parse_series(pl.Series(["1", "x", None]), pl.Int64).to_list()
    [1, None, None]
    >>> parse_series(pl.Series(["2026-01-02"]), pl.Date).to_list()
    [datetime.date(2026, 1, 2)]
    """
    if dtype == pl.String:
        return values
    if dtype == pl.Date:
        return values.str.to_date(strict=False)
    if isinstance(dtype, pl.Datetime) or dtype == pl.Datetime:
        return values.str.to_datetime(strict=False).cast(dtype, strict=False)
    if dtype == pl.Boolean:
        lowered = values.str.to_lowercase()
        return pl.select(
            pl.when(lowered == "true")
            .then(True)
            .when(lowered == "false")
            .then(False)
            .otherwise(None)
            .alias(values.name)
        ).to_series()
    return values.cast(dtype, strict=False)


def unparsable(values: pl.Series, parsed: pl.Series) -> pl.Series:
    """Mask of the values that were present as text but did not parse."""
    return values.is_not_null() & (values != "") & parsed.is_null()
