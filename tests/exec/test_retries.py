"""A task that raises is retried; one that keeps raising fails the job with the user's error."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from helpers import visible_files

import terabatch as tb
from terabatch.errors import UserFunctionError


def _flaky(counter: Path, failures: int):
    def fn(frame: pl.DataFrame) -> pl.DataFrame:
        calls = len(list(counter.iterdir()))
        (counter / str(calls)).touch()
        if calls < failures:
            raise ConnectionError("the enrichment service is down")
        return frame.with_columns(ok=pl.lit(True))

    return fn


@pytest.fixture
def src(tmp_path: Path) -> Path:
    path = tmp_path / "in.csv"
    pl.DataFrame({"id": range(50)}).write_csv(path)
    return path


def test_a_passing_failure_is_retried(tmp_path: Path, src: Path) -> None:
    counter = tmp_path / "calls"
    counter.mkdir()
    out = tmp_path / "out"
    summary = (
        tb.read_csv(src)
        .map_batches(_flaky(counter, 2))
        .write_parquet(out, workers=1, progress=False)
    )
    assert summary.rows_written == 50
    assert len(list(counter.iterdir())) == 3
    assert pl.read_parquet(out / "*.parquet")["ok"].all()


def test_a_task_that_keeps_failing_fails_the_job(tmp_path: Path, src: Path) -> None:
    counter = tmp_path / "calls"
    counter.mkdir()
    out = tmp_path / "out"
    with pytest.raises(UserFunctionError) as caught:
        tb.read_csv(src).map_batches(_flaky(counter, 99)).write_parquet(
            out, workers=1, progress=False, max_retries=2
        )
    assert len(list(counter.iterdir())) == 3  # the first try and two retries
    assert "the enrichment service is down" in str(caught.value)
    assert f"{src}, line 2" in str(caught.value)  # names the input
    assert "ConnectionError" in caught.value.traceback_text
    assert not out.exists() or visible_files(out) == {}
