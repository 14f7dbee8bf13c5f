"""read_parquet against polars.read_parquet: row-group splits, hive directories, pruning."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from helpers import make_frame, one_line_error
from hypothesis import given
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

import terabatch as tb
from terabatch.errors import InputReadError, SchemaError
from terabatch.io.parquet import balanced_lengths
from terabatch.io.sinks import CollectSink
from terabatch.plan.optimize import optimize
from terabatch.plan.stages import Sizes, plan_stages

RUN = {"progress": False}


def _tasks(ds: tb.Dataset, split_bytes: int = 1):
    return plan_stages(
        optimize(ds._plan), CollectSink(), Sizes(split_bytes, 1 << 20, 1, None), None
    )[0].tasks


def test_row_group_splits_equal_polars(parquet_file: Path, tiny_splits) -> None:
    tiny_splits(1)  # every row group is a split of its own
    ds = tb.read_parquet(parquet_file)
    tasks = _tasks(ds)
    assert [t.split.row_groups for t in tasks] == [(g,) for g in range(20)]
    expected = pl.read_parquet(parquet_file)
    assert ds.schema == expected.schema
    assert_frame_equal(ds.collect(**RUN), expected)


def test_splits_group_row_groups_up_to_the_target(parquet_file: Path) -> None:
    meta = pq.ParquetFile(parquet_file).metadata
    group_bytes = meta.row_group(0).total_byte_size
    tasks = _tasks(tb.read_parquet(parquet_file), split_bytes=3 * group_bytes)
    groups = [g for t in tasks for g in t.split.row_groups]
    assert groups == list(range(20))
    assert 5 <= len(tasks) <= 8
    assert sum(t.split.rows for t in tasks) == 2000


def _greedy(sizes: list[int], target: int) -> list[int]:
    lengths, length, size = [], 0, 0
    for nbytes in sizes:
        length, size = length + 1, size + nbytes
        if size >= target:
            lengths.append(length)
            length, size = 0, 0
    return [*lengths, length] if length else lengths


@given(st.lists(st.integers(0, 1000), max_size=60), st.integers(0, 3000))
def test_balanced_splits_are_as_many_as_greedy_ones_and_none_much_larger(
    sizes: list[int], target: int
) -> None:
    lengths = balanced_lengths(sizes, target)
    greedy = _greedy(sizes, target)
    assert sum(lengths) == len(sizes) and all(n > 0 for n in lengths)
    assert len(lengths) == len(greedy)
    if sizes:
        bounds = [0, *itertools.accumulate(lengths)]
        split_sizes = [sum(sizes[a:b]) for a, b in itertools.pairwise(bounds)]
        assert max(split_sizes) <= sum(sizes) / len(lengths) + max(sizes)


def test_row_groups_of_one_size_split_evenly() -> None:
    assert balanced_lengths([36] * 10, 218) == [5, 5]  # greedy: 7 and 3
    assert balanced_lengths([36] * 9, 100) == [3, 3, 3]


@pytest.fixture
def parquet_dir(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "pq"
    (folder / "nested").mkdir(parents=True)
    paths = [folder / "b.parquet", folder / "a.parquet", folder / "nested" / "c.parquet"]
    for i, path in enumerate(paths):
        make_frame(300, seed=30 + i, start=300 * i).write_parquet(path, row_group_size=64)
    (folder / "_SUCCESS").write_text("{}")
    (folder / "_temporary").mkdir()
    (folder / "_temporary" / "junk.parquet").write_bytes(b"half written")
    return sorted(paths)


@pytest.mark.parametrize("form", ["single", "directory", "glob", "list"])
def test_path_forms(parquet_dir: list[Path], form: str, tiny_splits) -> None:
    tiny_splits(1)
    folder = parquet_dir[0].parent
    source, files = {
        "single": (parquet_dir[0], parquet_dir[:1]),
        "directory": (folder, parquet_dir),
        "glob": (str(folder / "*.parquet"), parquet_dir[:2]),
        "list": ([parquet_dir[2], str(parquet_dir[0])], [parquet_dir[2], parquet_dir[0]]),
    }[form]
    expected = pl.concat([pl.read_parquet(p) for p in files])
    assert_frame_equal(tb.read_parquet(source).collect(**RUN), expected)


def test_hive_partitioned_directory(tmp_path: Path, tiny_splits) -> None:
    tiny_splits(1)
    frame = make_frame(1000, seed=5).with_columns(year=pl.col("id") % 3 + 2024)
    out = tmp_path / "hive"
    frame.write_parquet(out, partition_by=["year", "group"])
    ds = tb.read_parquet(out)
    expected = pl.read_parquet(out / "**" / "*.parquet", hive_partitioning=True)
    assert dict(ds.schema) == dict(expected.schema)
    got = ds.collect(**RUN).select(expected.columns)
    assert_frame_equal(got.sort("id"), expected.sort("id"))
    assert_frame_equal(got.sort("id"), frame.select(expected.columns).sort("id"))

    # Filters on a partition key skip whole files, and still give polars' answer.
    filtered = ds.filter(pl.col("year") == 2025, pl.col("group") != "a")
    summary = filtered.write_parquet(tmp_path / "out", **RUN)
    files = list(out.rglob("*.parquet"))
    assert summary.tasks < len(files)
    assert summary.tasks == len(list(out.glob("year=2025/*/*.parquet"))) - 1
    got = pl.read_parquet(tmp_path / "out" / "*.parquet").sort("id")
    want = expected.filter(pl.col("year") == 2025, pl.col("group") != "a").sort("id")
    assert_frame_equal(got.select(want.columns), want)


def test_predicate_pushdown_reads_fewer_row_groups(
    parquet_file: Path, tmp_path, tiny_splits
) -> None:
    tiny_splits(1)
    ds = tb.read_parquet(parquet_file)
    predicate = (pl.col("id") >= 250) & (pl.col("id") < 530)
    query = ds.filter(predicate).select("id", "value")
    assert "row groups pruned by" in query.explain()
    summary = query.write_parquet(tmp_path / "out", **RUN)
    # Row groups of 100 sorted ids: 250..529 lie in groups 2, 3, 4 and 5.
    assert summary.row_groups_read == 4 < 20
    assert summary.rows_read == 400
    assert summary.rows_written == 280
    expected = pl.read_parquet(parquet_file).filter(predicate).select("id", "value")
    got = pl.read_parquet(tmp_path / "out" / "*.parquet")
    assert_frame_equal(got, expected)
    assert query.count(**RUN) == expected.height


@pytest.mark.parametrize(
    ("predicate", "groups"),
    [
        (pl.col("id") == 1234, [12]),
        (pl.col("id").is_between(150, 349), [1, 2, 3]),
        (pl.col("id").is_in([5, 1999]), list(range(20))),  # not understood: nothing pruned
        ((pl.col("id") < 100) | (pl.col("id") >= 1900), [0, 19]),
        (pl.lit(1500) < pl.col("id"), list(range(15, 20))),
        (pl.col("id") > 5000, []),
    ],
)
def test_row_groups_kept_for_predicates(parquet_file: Path, predicate: pl.Expr, groups) -> None:
    ds = tb.read_parquet(parquet_file).filter(predicate)
    kept = [g for t in _tasks(ds) for g in t.split.row_groups]
    assert kept == groups
    # Pruning only ever drops groups without a match.
    table = pl.read_parquet(parquet_file).with_row_index("row")
    matching = table.filter(predicate)["row"] // 100
    assert set(matching.to_list()) <= set(kept)


def test_filter_above_a_computed_column_is_not_pushed(parquet_file: Path) -> None:
    ds = tb.read_parquet(parquet_file).with_columns(id=pl.col("id") - 1000).filter(pl.col("id") > 0)
    assert "row groups pruned" not in ds.explain()
    assert len(_tasks(ds)) == 20
    expected = pl.read_parquet(parquet_file).with_columns(id=pl.col("id") - 1000)
    assert_frame_equal(ds.collect(**RUN), expected.filter(pl.col("id") > 0))


def test_column_pruning(parquet_file: Path) -> None:
    query = tb.read_parquet(parquet_file).filter(pl.col("value") > 0).select("id")
    assert (
        query.explain()
        .splitlines()[0]
        .endswith('columns [id, value]; row groups pruned by [(col("value")) > (dyn int: 0)]')
    )
    expected = pl.read_parquet(parquet_file).filter(pl.col("value") > 0).select("id")
    assert_frame_equal(query.collect(**RUN), expected)


# Bad input ------------------------------------------------------------------------------------


def test_not_a_parquet_file(tmp_path: Path) -> None:
    path = tmp_path / "fake.parquet"
    path.write_text("id,name\n1,x\n")
    with pytest.raises(InputReadError) as info:
        tb.read_parquet(path)
    message = one_line_error(info.value)
    assert str(path) in message and "not a valid Parquet file" in message


def test_truncated_parquet_file(tmp_path: Path, parquet_file: Path) -> None:
    path = tmp_path / "cut.parquet"
    path.write_bytes(parquet_file.read_bytes()[:-100])
    with pytest.raises(InputReadError) as info:
        tb.read_parquet(path)
    assert str(path) in one_line_error(info.value)


@pytest.mark.parametrize(
    ("other", "reason"),
    [
        (pl.DataFrame({"a": ["x"], "b": [1.0]}), "column 'a' is String, not Int64 as in"),
        (pl.DataFrame({"b": [1.0]}), "column 'a' is missing (present in"),
        (pl.DataFrame({"a": [1], "b": [1.0], "c": [True]}), "has an extra column 'c' (not in"),
    ],
)
def test_files_with_different_schemas(tmp_path: Path, other: pl.DataFrame, reason: str) -> None:
    pl.DataFrame({"a": [1], "b": [2.0]}).write_parquet(tmp_path / "1.parquet")
    other.write_parquet(tmp_path / "2.parquet")
    with pytest.raises(SchemaError) as info:
        tb.read_parquet(tmp_path)
    message = one_line_error(info.value)
    assert message.startswith(f"{tmp_path / '2.parquet'}: {reason}"), message
    assert str(tmp_path / "1.parquet") in message and "schema_mode='union'" in message


def test_key_value_directories_above_the_dataset_are_not_columns(tmp_path: Path) -> None:
    root = tmp_path / "run=3" / "data"
    (root / "day=1").mkdir(parents=True)
    pl.DataFrame({"x": [1, 2]}).write_parquet(root / "day=1" / "p.parquet")
    got = tb.read_parquet(root).collect()
    assert got.columns == ["x", "day"]
    assert got["day"].to_list() == [1, 1]


def test_jobs_are_sized_by_the_rows_in_memory_not_the_compressed_files(tmp_path: Path) -> None:
    from terabatch.run.job import _data_bytes

    frame = pl.DataFrame(
        {"k": [f"key-{i % 1000:06d}" for i in range(200_000)], "v": range(200_000)}
    )
    path = tmp_path / "t.parquet"
    frame.write_parquet(path, compression="zstd", row_group_size=50_000)
    meta = pq.ParquetFile(path).metadata
    encoded = sum(meta.row_group(g).total_byte_size for g in range(meta.num_row_groups))
    ds = tb.read_parquet(path)
    assert ds._plan.source.data_bytes == 2 * encoded
    # zstd squeezes the repeated keys: sizing by the file would take the rows for far less.
    assert _data_bytes(ds._plan) > 2 * path.stat().st_size
    assert _data_bytes(ds._plan) >= frame.estimated_size() // 2


def test_planning_a_parquet_read_does_not_import_pandas(parquet_file: Path) -> None:
    # pyarrow imports pandas (0.3 s) when it builds a table and pandas is installed; the driver
    # only needs each file's schema.
    script = (
        "import sys, terabatch as tb\n"
        f"tb.read_parquet({str(parquet_file)!r}).explain()\n"
        "print('pandas' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
