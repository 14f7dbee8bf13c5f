"""The executor conformance suite: the same pipelines on every executor, the same answers.

Each pipeline runs on the local worker processes, the inline executor and a real Dask cluster
(scheduler and two workers started by the ``dask_cluster`` fixture). Results are checked
against Polars computing the same query on the same files, and written files must be
byte-identical to the local executor's. Inputs are cut into many splits and shuffles into
several partitions, so every pipeline runs as many tasks per stage.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cloudpickle
import polars as pl
import pytest
from helpers import files_under, make_frame, one_line_error
from polars.testing import assert_frame_equal

import terabatch as tb
import terabatch.plan.stages as stages_module
import terabatch.run.sizing as sizing_module
from terabatch.errors import BadRowError, UserFunctionError
from terabatch.exec.inline import InlineExecutor

EXECUTORS = ["local", "inline", "dask"]

# Dask workers have terabatch but not the tests: send this module's functions by value, as the
# README tells users to do for functions of their own modules.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@dataclass(frozen=True)
class Inputs:
    csv: Path
    jsonl: Path
    parquet: Path
    right: Path

    def frames(self) -> dict[str, pl.DataFrame]:
        return {
            "csv": pl.read_csv(self.csv),
            "jsonl": pl.read_ndjson(self.jsonl),
            "parquet": pl.read_parquet(self.parquet),
            "right": pl.read_parquet(self.right),
        }


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    root = tmp_path_factory.mktemp("conformance-inputs")
    frame = make_frame(600, seed=1)
    made = Inputs(root / "a.csv", root / "a.jsonl", root / "a.parquet", root / "right.parquet")
    frame.write_csv(made.csv)
    frame.write_ndjson(made.jsonl)
    make_frame(1000, seed=2).write_parquet(made.parquet, row_group_size=100)
    pl.DataFrame({"group": ["a", "b", "c", "e"], "label": ["A", "B", "C", "E"]}).write_parquet(
        made.right
    )
    return made


@pytest.fixture(autouse=True)
def many_tasks(tiny_splits, monkeypatch: pytest.MonkeyPatch) -> None:
    tiny_splits(6_000, 2_000)  # the CSV is cut into 7 splits, the Parquet file into 10
    monkeypatch.setattr(sizing_module, "MAX_PARTITION", 12_000)  # 3 to 5 shuffle partitions


@pytest.fixture(params=EXECUTORS)
def run(request: pytest.FixtureRequest) -> dict:
    """The run options that select the executor under test.

    ``workers=2`` everywhere: the planner sizes splits and shuffle partitions from it, and the
    same plan is what makes the outputs byte-identical.
    """
    same = {"workers": 2, "progress": False}
    if request.param == "local":
        return same
    if request.param == "inline":
        return {**same, "executor": InlineExecutor()}
    return {**same, "executor": request.getfixturevalue("dask_cluster").url}


@dataclass(frozen=True)
class Case:
    """A pipeline on the inputs and Polars' answer to it; ``keys`` when row order is free."""

    build: Callable[[Inputs], tb.Dataset]
    want: Callable[[dict[str, pl.DataFrame]], pl.DataFrame]
    keys: tuple[str, ...] | None = None
    broadcast: bool = True


def _length(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(length=pl.col("text").str.len_chars())


CASES = {
    "csv narrow": Case(
        lambda i: (
            tb.read_csv(i.csv)
            .filter(pl.col("value") > 0)
            .with_columns(double=pl.col("value") * 2)
            .select("id", "group", "double")
        ),
        lambda f: (
            f["csv"]
            .filter(pl.col("value") > 0)
            .with_columns(double=pl.col("value") * 2)
            .select("id", "group", "double")
        ),
    ),
    "jsonl map_batches lambda": Case(
        lambda i: tb.read_json(i.jsonl).map_batches(
            lambda frame: frame.with_columns(length=pl.col("text").str.len_chars()),
            batch_size=45,
        ),
        lambda f: _length(f["jsonl"]),
    ),
    "parquet pushdown": Case(
        lambda i: tb.read_parquet(i.parquet).filter(pl.col("id").is_between(450, 710)),
        lambda f: f["parquet"].filter(pl.col("id").is_between(450, 710)),
    ),
    "head": Case(
        lambda i: tb.read_csv(i.csv).filter(pl.col("flag")).head(170),
        lambda f: f["csv"].filter(pl.col("flag")).head(170),
    ),
    "group_by": Case(
        lambda i: (
            tb.read_csv(i.csv)
            .group_by("group")
            .agg(pl.col("value").sum(), pl.col("score").median().alias("median"), pl.len())
        ),
        lambda f: (
            f["csv"]
            .group_by("group")
            .agg(pl.col("value").sum(), pl.col("score").median().alias("median"), pl.len())
        ),
        keys=("group",),
    ),
    "unique": Case(
        lambda i: tb.read_parquet(i.parquet).unique(["group", "flag"], keep="first"),
        lambda f: f["parquet"].unique(["group", "flag"], keep="first", maintain_order=True),
        keys=("group", "flag"),
    ),
    "sort": Case(
        lambda i: tb.read_parquet(i.parquet).sort("value", "id", descending=[True, False]),
        lambda f: f["parquet"].sort("value", "id", descending=[True, False]),
    ),
    "over": Case(
        lambda i: tb.read_json(i.jsonl).with_columns(
            total=pl.col("value").sum().over("group"), rank=pl.col("id").rank().over("group")
        ),
        lambda f: f["jsonl"].with_columns(
            total=pl.col("value").sum().over("group"), rank=pl.col("id").rank().over("group")
        ),
        keys=("id",),
    ),
    "top_k": Case(
        lambda i: tb.read_parquet(i.parquet).top_k(7, by="id"),
        lambda f: f["parquet"].top_k(7, by="id"),
        keys=("id",),
    ),
    "join broadcast": Case(
        lambda i: tb.read_csv(i.csv).join(tb.read_parquet(i.right), on="group", how="left"),
        lambda f: f["csv"].join(f["right"], on="group", how="left"),
        keys=("id",),
    ),
    "join hash": Case(
        lambda i: tb.read_parquet(i.parquet).join(tb.read_csv(i.csv), on="id", how="full"),
        lambda f: f["parquet"].join(f["csv"], on="id", how="full"),
        keys=("id", "id_right"),
        broadcast=False,
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_collect_equals_polars(
    inputs: Inputs, run: dict, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = CASES[name]
    if not case.broadcast:
        monkeypatch.setattr(stages_module, "BROADCAST_BYTES", 0)
    got = case.build(inputs).collect(**run)
    want = case.want(inputs.frames())
    if case.keys is not None:
        got, want = got.sort(case.keys), want.sort(case.keys)
    assert_frame_equal(got, want.select(got.columns))


def _broken(frame: pl.DataFrame) -> pl.DataFrame:
    raise ValueError(f"cannot take {frame.height} rows")


def test_errors_come_back_alike(inputs: Inputs, run: dict, tmp_path: Path) -> None:
    with pytest.raises(UserFunctionError) as info:
        tb.read_csv(inputs.csv).map_batches(_broken).collect(**run)
    message = one_line_error(info.value)
    assert message.startswith("map_batches(_broken) raised ValueError: cannot take ")
    assert f"(batch starting at {inputs.csv}, line " in message
    assert 'raise ValueError(f"cannot take' in info.value.traceback_text
    bad = tmp_path / "bad.csv"
    lines = pl.read_csv(inputs.csv).write_csv().splitlines()
    bad.write_text("\n".join([*lines[:400], "oops" + lines[400], *lines[401:]]) + "\n")
    with pytest.raises(BadRowError) as info:
        tb.read_csv(bad, schema={"id": pl.Int64}).count(**run)
    assert one_line_error(info.value).startswith(f"{bad}: line 401: column 'id': 'oops")


def test_count_and_iter_batches(inputs: Inputs, run: dict) -> None:
    predicate = (pl.col("group") == "a") | (pl.col("score") > 90)
    want = pl.read_ndjson(inputs.jsonl).filter(predicate)
    ds = tb.read_json(inputs.jsonl).filter(predicate)
    assert ds.count(**run) == want.height
    batches = list(ds.iter_batches(**run))
    assert len(batches) > 1
    assert_frame_equal(pl.concat(batches), want)


@dataclass(frozen=True)
class Write:
    """A pipeline written to files, and Polars' answer; ``keys`` when row order is free."""

    write: Callable[[Inputs, Path, dict], tb.JobSummary]
    want: Callable[[dict[str, pl.DataFrame]], pl.DataFrame]
    keys: tuple[str, ...] | None = None
    fmt: str = "parquet"


WRITES = {
    "partitioned parquet": Write(
        lambda i, out, run: (
            tb.read_csv(i.csv).map_batches(_length).write_parquet(out, partition_by="group", **run)
        ),
        lambda f: _length(f["csv"]),
        keys=("id",),
    ),
    "csv from jsonl": Write(
        lambda i, out, run: (
            tb.read_json(i.jsonl).filter(pl.col("value") > -500).write_csv(out, **run)
        ),
        lambda f: f["jsonl"].filter(pl.col("value") > -500),
        fmt="csv",
    ),
    "group_by to parquet": Write(
        lambda i, out, run: (
            tb.read_parquet(i.parquet)
            .group_by("group", "flag")
            .agg(pl.col("value").sum(), pl.col("score").max())
            .write_parquet(out, **run)
        ),
        lambda f: (
            f["parquet"].group_by("group", "flag").agg(pl.col("value").sum(), pl.col("score").max())
        ),
        keys=("group", "flag"),
    ),
    "sort to parquet": Write(
        lambda i, out, run: tb.read_csv(i.csv).sort("value", "id").write_parquet(out, **run),
        lambda f: f["csv"].sort("value", "id"),
    ),
}

_local_outputs: dict[str, dict[str, bytes]] = {}


def _local_files(name: str, inputs: Inputs, root: Path) -> dict[str, bytes]:
    """The local executor's files for a write, made once per module."""
    if name not in _local_outputs:
        out = root / "local"
        WRITES[name].write(inputs, out, {"workers": 2, "progress": False})
        _local_outputs[name] = files_under(out)
    return _local_outputs[name]


def _read_back(out: Path, fmt: str) -> pl.DataFrame:
    if fmt == "csv":
        return pl.read_csv(out / "*.csv")
    return pl.read_parquet(out / "**" / "*.parquet", hive_partitioning=True)


@pytest.mark.parametrize("name", WRITES)
def test_written_files_equal_polars_and_local_bytes(
    inputs: Inputs, run: dict, name: str, tmp_path: Path
) -> None:
    case = WRITES[name]
    out = tmp_path / "out"
    summary = case.write(inputs, out, run)
    got, want = _read_back(out, case.fmt), case.want(inputs.frames())
    if case.keys is not None:
        got, want = got.sort(case.keys), want.sort(case.keys)
    assert_frame_equal(got, want.select(got.columns), check_dtypes=False)
    assert summary.rows_written == want.height
    files = files_under(out)
    assert len([p for p in files if p.endswith(f".{case.fmt}")]) >= 2
    if run.get("executor") is None:
        _local_outputs.setdefault(name, files)  # the reference for the other executors
    assert files == _local_files(name, inputs, tmp_path)
