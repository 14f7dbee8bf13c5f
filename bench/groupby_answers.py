"""Check a group-by answer against the reference answer, out of core, in DuckDB.

Both answers are Parquet (a file, or a directory of files). They are compared with one FULL
OUTER JOIN on the question's keys under a DuckDB memory limit, spilling to a temporary
directory, so that answers of ~1e8 rows (q10 at 1e8) are checked in bounded memory.

The answer passes if it has as many rows as the reference, every key of either side is found
once on the other side, and every result value equals the reference's within ``ATOL`` +
``RTOL`` * |expected| (nulls and NaNs equal each other). The answer's keys are cast to the
reference's types (string or categorical, int32 or int64 ...), its results to DOUBLE. q8's
answer may hold a list of values per key or one row per value; the values of every key are
numbered in ascending order and that number joins the keys, so each key's sorted values are
compared pairwise.

Usage (a check by hand; the runner calls ``check_answer``):
    python bench/groupby_answers.py QUESTION ANSWER REFERENCE [--temp-dir DIR]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import duckdb
from common import parquet_source
from groupby_contenders import QUESTIONS

RTOL = 1e-9
ATOL = 1e-12
CHECK_MEMORY = "2GB"
RANK = "rank"


class MissingColumnsError(ValueError):
    """An answer lacks some of the question's result columns."""


def _literal(value: object) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _name(column: str) -> str:
    return '"' + column.replace('"', '""') + '"'


def _scan(path: Path) -> str:
    """SQL that reads every Parquet file of an answer (marker files and paths ignored).

    ``can_have_nan``: Parquet min/max statistics leave NaNs out, and without it DuckDB trusts
    them and folds NaN tests on float columns to false (duckdb issue #25521).
    """
    return (
        f"read_parquet({_literal(parquet_source(path))}, "
        "hive_partitioning = false, union_by_name = true, can_have_nan = true)"
    )


def _types(con: duckdb.DuckDBPyConnection, path: Path, question: str) -> dict[str, str]:
    """DuckDB type of every column of the answer at ``path``; raise if any is missing."""
    types = {
        row[0]: row[1] for row in con.execute(f"DESCRIBE SELECT * FROM {_scan(path)}").fetchall()
    }
    missing = [c for c in QUESTIONS[question].columns if c not in types]
    if missing:
        raise MissingColumnsError(f"columns {missing} missing (got {list(types)})")
    return types


def _number(column: str) -> str:
    """``column`` as DOUBLE, NaN as null."""
    return f"nullif(TRY_CAST({column} AS DOUBLE), 'NaN'::DOUBLE)"


def _create_view(
    con: duckdb.DuckDBPyConnection,
    view: str,
    path: Path,
    question: str,
    types: dict[str, str],
    key_types: dict[str, str],
) -> None:
    """View ``view`` of an answer: keys cast to ``key_types``, results as DOUBLE with NaN as
    null, a ``present`` flag that is null only on the missing side of an outer join, and for
    q8 one row per value with the value's ascending number per key in ``rank``."""
    q = QUESTIONS[question]
    keys = ", ".join(f"TRY_CAST({_name(k)} AS {key_types[k]}) AS {_name(k)}" for k in q.keys)
    values = ", ".join(f"{_number(_name(v))} AS {_name(v)}" for v in q.outputs)
    source = _scan(path)
    if q.top2:
        (value,) = q.outputs
        if types[value].endswith("]"):  # a list (or array) of the values of each key
            unnested = f"unnest({_name(value)}) AS {_name(value)}"
            source = f"(SELECT {', '.join(map(_name, q.keys))}, {unnested} FROM {source})"
        partition = ", ".join(map(_name, q.keys))
        ranked = (
            f"row_number() OVER (PARTITION BY {partition} ORDER BY {_name(value)} NULLS LAST) "
            f"AS {RANK}"
        )
        source = f"(SELECT *, {ranked} FROM (SELECT {keys}, {values} FROM {source}))"
        con.execute(f"CREATE TEMP VIEW {view} AS SELECT *, true AS present FROM {source}")
    else:
        con.execute(
            f"CREATE TEMP VIEW {view} AS SELECT {keys}, {values}, true AS present FROM {source}"
        )


def _join_keys(question: str) -> list[str]:
    q = QUESTIONS[question]
    return [*q.keys, RANK] if q.top2 else list(q.keys)


def _struct(alias: str, columns: list[str]) -> str:
    return "struct_pack(" + ", ".join(f"{_name(c)} := {alias}.{_name(c)}" for c in columns) + ")"


def _comparison_query(question: str) -> str:
    """One pass over the outer join: matched rows, keys on one side only (the first in key
    order) and, per result column, the rows that differ (the first in key order)."""
    q = QUESTIONS[question]
    keys = _join_keys(question)
    join = " AND ".join(f"r.{_name(k)} IS NOT DISTINCT FROM a.{_name(k)}" for k in keys)
    both = "r.present AND a.present"
    order = _struct("r", keys)
    pair = f"{{'expected': {_struct('r', q.columns)}, 'got': {_struct('a', q.columns)}}}"
    aggregates = [
        f"count(*) FILTER (WHERE {both})",
        "count(*) FILTER (WHERE a.present IS NULL)",
        f"min({_struct('r', keys)}) FILTER (WHERE a.present IS NULL)",
        "count(*) FILTER (WHERE r.present IS NULL)",
        f"min({_struct('a', keys)}) FILTER (WHERE r.present IS NULL)",
    ]
    for column in q.outputs:
        got, want = f"a.{_name(column)}", f"r.{_name(column)}"
        close = f"(abs({got} - {want}) <= {ATOL!r} + {RTOL!r} * abs({want})) IS TRUE"
        bad = f"{both} AND NOT ({close} OR ({got} IS NULL AND {want} IS NULL))"
        aggregates += [
            f"count(*) FILTER (WHERE {bad})",
            f"arg_min({pair}, {order}) FILTER (WHERE {bad})",
        ]
    return (
        f"SELECT {', '.join(aggregates)} FROM reference AS r FULL OUTER JOIN answer AS a ON {join}"
    )


def _first_repeated_key(con: duckdb.DuckDBPyConnection, question: str) -> str:
    keys = ", ".join(map(_name, _join_keys(question)))
    key_and_count = con.execute(
        f"SELECT {keys}, count(*) AS n FROM answer GROUP BY ALL HAVING n > 1 LIMIT 1"
    ).fetchone()
    return f"{key_and_count[:-1]} appears {key_and_count[-1]:,} times"


def _differences(con: duckdb.DuckDBPyConnection, question: str, rows: int, expected: int) -> str:
    """What differs between the views ``answer`` and ``reference``, or '' if nothing."""
    if rows != expected:
        return f"{rows:,} rows, expected {expected:,}"
    matched, missing, first_missing, unexpected, first_unexpected, *columns = con.execute(
        _comparison_query(question)
    ).fetchone()
    if matched > expected - missing:  # some key of the reference is matched more than once
        repeated = matched - (expected - missing)
        return f"keys repeated in {repeated:,} rows, first: {_first_repeated_key(con, question)}"
    if missing or unexpected:
        parts = [f"{missing:,} expected keys missing, first {first_missing}"] if missing else []
        if unexpected:
            parts.append(f"{unexpected:,} unexpected keys, first {first_unexpected}")
        return "keys differ: " + "; ".join(parts)
    for column, bad, first in zip(
        QUESTIONS[question].outputs, columns[::2], columns[1::2], strict=True
    ):
        if bad:
            got = tuple(first["got"].values())
            return (
                f"{column} differs in {bad:,} rows, first: expected {first['expected']}, got {got}"
            )
    return ""


def check_answer(
    out: Path, reference: Path, question: str, temp_dir: Path, memory: str = CHECK_MEMORY
) -> tuple[str, int | None]:
    """Status (``ok`` or ``wrong answer: ...``) and row count of the answer at ``out``.

    DuckDB spills to ``temp_dir`` (created, then removed) beyond ``memory``.

    >>> import polars as pl, tempfile
    >>> tmp = Path(tempfile.mkdtemp())
    >>> pl.DataFrame({"id1": ["a", "b"], "v1": [1, 2]}).write_parquet(tmp / "ref.parquet")
    >>> pl.DataFrame({"id1": ["b", "a"], "v1": [2, 5]}).write_parquet(tmp / "out.parquet")
    >>> status, rows = check_answer(tmp / "out.parquet", tmp / "ref.parquet", "q1", tmp / "spill")
    >>> status
    "wrong answer: v1 differs in 1 rows, first: expected {'id1': 'a', 'v1': 1.0}, got ('a', 5.0)"
    """
    temp_dir.mkdir(parents=True, exist_ok=True)
    try:
        with duckdb.connect(config={"memory_limit": memory}) as con:
            con.execute(f"SET temp_directory = {_literal(temp_dir)}")
            con.execute("SET preserve_insertion_order = false")
            return _check(con, out, reference, question)
    except (duckdb.Error, MissingColumnsError) as exc:  # e.g. no room to spill
        return f"error: answer check failed: {exc}".splitlines()[0], None
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)


def _check(
    con: duckdb.DuckDBPyConnection, out: Path, reference: Path, question: str
) -> tuple[str, int | None]:
    reference_types = _types(con, reference, question)
    _create_view(con, "reference", reference, question, reference_types, reference_types)
    try:
        types = _types(con, out, question)
        _create_view(con, "answer", out, question, types, reference_types)
        rows = con.execute("SELECT count(*) FROM answer").fetchone()[0]
    except MissingColumnsError as exc:
        return f"wrong answer: {exc}", None
    except duckdb.Error as exc:  # any unreadable answer makes the run a failure
        return f"error: unreadable answer: {exc}".splitlines()[0], None
    expected = con.execute("SELECT count(*) FROM reference").fetchone()[0]
    difference = _differences(con, question, rows, expected)
    return ("ok" if not difference else f"wrong answer: {difference}"), rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("question", choices=QUESTIONS)
    parser.add_argument("answer", type=Path)
    parser.add_argument("reference", type=Path)
    parser.add_argument("--temp-dir", type=Path, default=None, help="where DuckDB spills")
    parser.add_argument("--memory", default=CHECK_MEMORY, help="DuckDB's memory limit")
    args = parser.parse_args()
    temp_dir = args.temp_dir or Path(tempfile.mkdtemp(prefix="groupby-check-"))
    status, rows = check_answer(args.answer, args.reference, args.question, temp_dir, args.memory)
    print(f"{status} ({rows if rows is None else f'{rows:,}'} rows)")


if __name__ == "__main__":
    main()
