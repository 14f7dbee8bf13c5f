"""The ``terabatch`` command: ``convert``, ``inspect`` and ``demo``.

Results go to stdout, progress and errors to stderr. An error caused by the input prints one line
``terabatch: error: <message>`` and exits with 2; anything else is an internal error (exit 1)
whose traceback ``TERABATCH_DEBUG=1`` shows.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import click
import polars as pl
from rich.table import Table

from terabatch import __version__
from terabatch.dataset import Dataset
from terabatch.demo import plain_console, render_result, run_demo
from terabatch.errors import TerabatchError
from terabatch.inspect_path import FORMATS, default_separator, detect_format, inspect_path
from terabatch.io.bad_files import ON_BAD_FILES
from terabatch.io.schema_drift import SCHEMA_MODES
from terabatch.io.sinks import CODECS
from terabatch.readers import read_csv, read_json, read_parquet
from terabatch.run.memory import format_size
from terabatch.run.summary import JobSummary

EXIT_INTERNAL, EXIT_ERROR, EXIT_INTERRUPTED = 1, 2, 130
LIST_FILES_UP_TO = 10


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.strip().splitlines()) or "(no message)"


def _fail(exc: BaseException) -> NoReturn:
    """Report an exception that escaped a command the way the module docstring promises."""
    if isinstance(exc, KeyboardInterrupt):
        click.echo("terabatch: interrupted", err=True)
        _echo_notes(exc)
        sys.exit(EXIT_INTERRUPTED)
    if isinstance(exc, TerabatchError):
        click.echo(f"terabatch: error: {_one_line(str(exc))}", err=True)
        _echo_notes(exc)
        traceback_text = getattr(exc, "traceback_text", "")
        if traceback_text:
            click.echo("Traceback from your function:", err=True)
            click.echo(traceback_text.rstrip(), err=True)
        sys.exit(EXIT_ERROR)
    if os.environ.get("TERABATCH_DEBUG") == "1":
        raise exc
    click.echo(
        f"terabatch: internal error: {type(exc).__name__}: {_one_line(str(exc))} "
        "(set TERABATCH_DEBUG=1 for the traceback)",
        err=True,
    )
    sys.exit(EXIT_INTERNAL)


def _echo_notes(exc: BaseException) -> None:
    """What the run added to the error (such as how to resume); tracebacks come separately."""
    for note in getattr(exc, "__notes__", []):
        if not note.startswith("Traceback in the worker"):
            click.echo(f"terabatch: {_one_line(note)}", err=True)


class _Cli(click.Group):
    """A click group that turns exceptions from its commands into one-line messages."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            # Usage errors, --help and --version keep click's own messages and exit codes.
            raise
        except (Exception, KeyboardInterrupt) as exc:
            _fail(exc)


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="terabatch")
def cli() -> None:
    """Process CSV, JSON Lines and Parquet far larger than memory, on every core."""


# convert -------------------------------------------------------------------------------------


def _parse_filters(texts: Sequence[str]) -> list[pl.Expr]:
    """Turn SQL predicates such as ``status = 200 AND bytes > 10`` into polars expressions.

    >>> _parse_filters(["x > 1"])[0].meta.root_names()
    ['x']
    """
    exprs = []
    for text in texts:
        try:
            exprs.append(pl.sql_expr(text))
        except pl.exceptions.PolarsError as exc:
            raise TerabatchError(
                f"--filter {text!r} is not a SQL predicate ({_one_line(str(exc))}); "
                "write it like: status = 200 AND bytes > 10"
            ) from None
    return exprs


def _parse_columns(text: str) -> list[str]:
    """Split ``--select a,b, c`` into column names.

    >>> _parse_columns("day, path,bytes")
    ['day', 'path', 'bytes']
    """
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise click.BadParameter(f"empty column name in {text!r}", param_hint="--select")
    return names


def _open(sources: Sequence[str], fmt: str, separator: str | None, **checks: str) -> Dataset:
    if fmt == "csv":
        sep = separator or default_separator(sources[0])
        # "\t" typed in a shell arrives as backslash-t; nobody means a two-character separator.
        return read_csv(list(sources), separator="\t" if sep == "\\t" else sep, **checks)
    if separator is not None:
        raise click.BadParameter("applies to CSV input only", param_hint="--separator")
    if fmt == "json":
        return read_json(list(sources), **checks)
    bad_rows = checks.pop("on_bad_rows", "fail")
    if bad_rows != "fail":
        raise click.BadParameter(
            "Parquet rows are typed and cannot be bad; use it with CSV or JSON input",
            param_hint="--on-bad-rows",
        )
    return read_parquet(list(sources), **checks)


def _bad_row_limit(text: str | None) -> int | float | None:
    """``100`` (rows), ``0.01`` or ``1%`` (a share of the rows read)."""
    if text is None:
        return None
    try:
        if text.endswith("%"):
            return float(text[:-1]) / 100
        return float(text) if "." in text else int(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is neither a row count (100) nor a share (0.01 or 1%)",
            param_hint="--max-bad-rows",
        ) from None


def _write(dataset: Dataset, dest: str, to: str, options: dict[str, Any]) -> JobSummary:
    writer = {
        "parquet": dataset.write_parquet,
        "csv": dataset.write_csv,
        "json": dataset.write_json,
    }
    return writer[to](dest, **options)


@cli.command()
@click.argument("sources", nargs=-1, required=True, metavar="SOURCE...")
@click.argument("dest")
@click.option("--to", "to", type=click.Choice(FORMATS), required=True, help="Output format.")
@click.option(
    "--from",
    "from_",
    type=click.Choice(FORMATS),
    help="Input format. Default: from the first source's file names.",
)
@click.option(
    "--partition-by", multiple=True, metavar="COL", help="Write COL=value/ directories (repeat)."
)
@click.option(
    "--compression",
    type=click.Choice(sorted({c for codecs in CODECS.values() for c in codecs if c})),
    help="Output codec. Default: zstd for parquet, none for csv and json.",
)
@click.option(
    "--max-rows-per-file",
    type=click.IntRange(min=1),
    metavar="N",
    help="Start a new file after N rows.",
)
@click.option(
    "--filter",
    "filters",
    multiple=True,
    metavar="EXPR",
    help='Keep rows where the SQL predicate holds, e.g. "status = 200 AND bytes > 10". '
    "Repeat to require several.",
)
@click.option(
    "--select", "columns", metavar="COLS", help="Comma-separated columns to keep (after --filter)."
)
@click.option("--overwrite", is_flag=True, help="Replace DEST if it exists.")
@click.option("--workers", type=click.IntRange(min=1), help="Worker processes. Default: all cores.")
@click.option("--memory", metavar="SIZE", help="Memory budget for the whole run, e.g. 4GB.")
@click.option("--quiet", "-q", is_flag=True, help="No progress or summary on stderr.")
@click.option(
    "--separator", metavar="CHAR", help="CSV input field separator. Default: tab for .tsv, else ,"
)
@click.option(
    "--executor",
    metavar="URL",
    help="Run the tasks on a Dask cluster, e.g. dask://10.0.0.5:8786. Default: local processes.",
)
@click.option(
    "--run-dir", metavar="DIR", help="Where run state lives. Default: .terabatch beside DEST."
)
@click.option(
    "--resume/--no-resume",
    default=None,
    help="Continue an unfinished run of the same job (default: when one exists), or start afresh.",
)
@click.option(
    "--max-retries", type=click.IntRange(min=0), default=3, show_default=True, metavar="N"
)
@click.option("--spill-limit", metavar="SIZE", help="Disk budget for shuffle files, e.g. 100GB.")
@click.option(
    "--on-bad-rows",
    type=click.Choice(["fail", "quarantine", "skip"]),
    default="fail",
    show_default=True,
    help="A row that does not parse: stop with its file and line, move it to "
    "DEST/_quarantine/, or drop it and count it.",
)
@click.option(
    "--max-bad-rows",
    metavar="N|SHARE",
    help="Stop when more rows than this are bad: a count (1000) or a share (0.01 or 1%).",
)
@click.option(
    "--schema-mode",
    type=click.Choice(SCHEMA_MODES),
    default="strict",
    show_default=True,
    help="Files whose columns differ: an error (strict), or combined with nulls and widened "
    "types (union).",
)
@click.option(
    "--on-bad-files",
    type=click.Choice(ON_BAD_FILES),
    default="fail",
    show_default=True,
    help="Empty, unreadable or corrupt input files (and, under strict, files whose columns "
    "differ): an error (fail), or left out with a warning (skip).",
)
def convert(
    sources: tuple[str, ...],
    dest: str,
    to: str,
    from_: str | None,
    partition_by: tuple[str, ...],
    compression: str | None,
    max_rows_per_file: int | None,
    filters: tuple[str, ...],
    columns: str | None,
    overwrite: bool,
    workers: int | None,
    memory: str | None,
    quiet: bool,
    separator: str | None,
    executor: str | None,
    run_dir: str | None,
    resume: bool | None,
    max_retries: int,
    spill_limit: str | None,
    on_bad_rows: str,
    max_bad_rows: str | None,
    schema_mode: str,
    on_bad_files: str,
) -> None:
    """Convert SOURCE... (files, directories or quoted globs) into the directory DEST.

    Prints "DEST<tab>ROWS" on stdout when done; the run's summary goes to stderr.
    """
    fmt = from_ or detect_format(sources[0])
    dataset = _open(
        sources,
        fmt,
        separator,
        schema_mode=schema_mode,
        on_bad_files=on_bad_files,
        on_bad_rows=on_bad_rows,
    )
    if filters:
        dataset = dataset.filter(*_parse_filters(filters))
    if columns is not None:
        dataset = dataset.select(_parse_columns(columns))
    summary = _write(
        dataset,
        dest,
        to,
        {
            "compression": compression or ("zstd" if to == "parquet" else None),
            "partition_by": list(partition_by),
            "max_rows_per_file": max_rows_per_file,
            "mode": "overwrite" if overwrite else "error",
            "workers": workers,
            "memory": memory,
            "progress": not quiet,
            "executor": executor,
            "run_dir": run_dir,
            "resume": resume,
            "max_retries": max_retries,
            "spill_limit": spill_limit,
            "max_bad_rows": _bad_row_limit(max_bad_rows),
        },
    )
    click.echo(f"{summary.output}\t{summary.rows_written}")


# inspect -------------------------------------------------------------------------------------


def _file_listing(paths: list[str]) -> str:
    """The number of files and, when few, their names under their common directory.

    >>> print(_file_listing(["/d/a=1/x.csv", "/d/a=2/y.csv"]))
    2 files in /d/
      a=1/x.csv
      a=2/y.csv
    """
    count = f"{len(paths):,} file" + ("s" if len(paths) != 1 else "")
    if len(paths) > LIST_FILES_UP_TO:
        return count
    # Common leading components of the directories; os.path.commonpath would mangle URLs.
    parts = os.path.commonprefix([p.split("/")[:-1] for p in paths])  # noqa: RUF071
    prefix = "".join(f"{part}/" for part in parts)
    header = f"{count} in {prefix}" if prefix else count
    return "\n".join([header, *(f"  {p[len(prefix) :]}" for p in paths)])


def _overview(facts: dict[str, Any]) -> Table:
    table = Table(title=facts["path"], show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("format", facts["format"])
    table.add_row("files", _file_listing([f["path"] for f in facts["files"]]))
    table.add_row("size", f"{format_size(facts['total_bytes'])} ({facts['total_bytes']:,} bytes)")
    table.add_row("compression", ", ".join(facts["compression"]) or "none")
    table.add_row("rows", f"{facts['rows']:,}")
    groups = facts["row_groups"]
    if groups is not None:
        table.add_row(
            "row groups",
            f"{groups['count']:,} ({groups['min_rows']:,} to {groups['max_rows']:,} rows each)",
        )
    partitions = facts["partitions"]
    if partitions:
        keys = ", ".join(f"{key} ({n:,} values)" for key, n in partitions.items())
        table.add_row("partitions", keys)
    complete = facts["complete"]
    if complete is not None:
        table.add_row(
            "written",
            f"completely (_SUCCESS): {complete['rows']:,} rows in {complete['files']:,} files",
        )
    return table


def _schema_table(schema: dict[str, str]) -> Table:
    table = Table(title="schema", title_justify="left")
    table.add_column("column")
    table.add_column("type")
    for name, dtype in schema.items():
        table.add_row(name, dtype)
    return table


@cli.command("inspect")
@click.argument("path")
@click.option("--from", "from_", type=click.Choice(FORMATS), help="Format, if names don't say.")
@click.option("--json", "as_json", is_flag=True, help="Print the facts as JSON.")
@click.option("--workers", type=click.IntRange(min=1), help="Workers for counting CSV/JSON rows.")
@click.option("--quiet", "-q", is_flag=True, help="No progress on stderr while counting rows.")
def inspect_command(
    path: str, from_: str | None, as_json: bool, workers: int | None, quiet: bool
) -> None:
    """Describe PATH (a file, directory or quoted glob): files, schema, rows, partitions."""
    facts = inspect_path(path, from_, workers=workers, progress=not quiet)
    if as_json:
        click.echo(json.dumps(facts, indent=2))
        return
    console = plain_console()
    console.print(_overview(facts))
    if facts["schema"]:
        console.print(_schema_table(facts["schema"]))


# demo ----------------------------------------------------------------------------------------


@cli.command()
@click.option("--rows", type=click.IntRange(min=1), default=2_000_000, show_default=True)
@click.option(
    "--keep",
    type=click.Path(file_okay=False),
    help="Write the data under this directory instead of a new temporary one.",
)
@click.option("--workers", type=click.IntRange(min=1), help="Worker processes. Default: all cores.")
def demo(rows: int, keep: str | None, workers: int | None) -> None:
    """Generate a web-server log and run a pipeline over it, showing progress and results.

    The data stays where it was written (a new temporary directory unless --keep), so that
    the commands printed at the end can be tried on it.
    """
    console = plain_console()
    render_result(run_demo(rows, keep, workers=workers, console=console), console)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``terabatch`` console script."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="terabatch")
