"""Run state and resume: a killed or failed run is finished by running the same job again.

The killed driver is a real process (``kill -9``); its workers die with it. Every resumed output
is compared byte for byte with an uninterrupted run of the same job.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import polars as pl
import pytest
from helpers import files_under, visible_files

import terabatch as tb

DRIVER = textwrap.dedent(
    """
    import sys, time
    import polars as pl
    import terabatch as tb

    src, out, kind = sys.argv[1:4]

    def slow(frame):
        time.sleep(0.2)
        return frame.with_columns(w=pl.col("v") * 2)

    def slow_reduce(frame):
        # Says that the reduce stage has started, then takes long enough to be killed in it.
        open(out + ".reducing", "w").close()
        time.sleep(1.0)
        return frame

    ds = tb.read_csv(src + "/*.csv")
    if kind == "narrow":
        ds = ds.map_batches(slow)
    else:
        ds = ds.group_by("k").agg(pl.col("v").sum(), n=pl.len()).map_batches(slow_reduce)
    summary = ds.write_parquet(out, workers=int(sys.argv[4]), progress=False)
    print(summary.resumed_tasks, summary.rows_written)
    """
)


def _inputs(root: Path, files: int = 16, rows: int = 300) -> Path:
    src = root / "src"
    src.mkdir()
    for i in range(files):
        ids = range(i * rows, (i + 1) * rows)
        pl.DataFrame({"k": [n % 37 for n in ids], "v": list(ids)}).write_csv(src / f"{i:02d}.csv")
    return src


def _driver(tmp_path: Path, src: Path, out: Path, kind: str, workers: int) -> subprocess.Popen:
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    return subprocess.Popen(
        [sys.executable, str(script), str(src), str(out), kind, str(workers)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )


def _markers(out: Path, prefix: str) -> list[str]:
    run_root = out.parent / ".terabatch"
    return [p.name for p in run_root.glob(f"*/done/{prefix}*.json")]


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the driver never reached the point to kill it"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.parametrize(
    ("kind", "workers", "stage_prefix", "done_before_kill"),
    [("narrow", 2, "000-", 3), ("groupby", 1, "000-", 16)],
    ids=["narrow-map", "groupby-reduce"],
)
def test_killed_driver_resumes_to_byte_identical_output(
    tmp_path: Path, kind: str, workers: int, stage_prefix: str, done_before_kill: int
) -> None:
    src = _inputs(tmp_path)
    out = tmp_path / "out"
    proc = _driver(tmp_path, src, out, kind, workers)
    reducing = Path(f"{out}.reducing")
    _kill_when(
        proc,
        lambda: (
            len(_markers(out, stage_prefix)) >= done_before_kill
            and (kind != "groupby" or reducing.exists())
        ),
    )
    reducing.unlink(missing_ok=True)
    assert not (out / "_SUCCESS").exists()
    assert visible_files(out) == {}

    resumed = _driver(tmp_path, src, out, kind, workers)
    stdout, stderr = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, stderr
    resumed_tasks, rows = map(int, stdout.split())
    assert resumed_tasks >= done_before_kill

    clean = _driver(tmp_path, src, tmp_path / "clean", kind, workers)
    clean_out, stderr = clean.communicate(timeout=120)
    assert clean.returncode == 0, stderr
    assert clean_out.split() == ["0", str(rows)]
    assert files_under(out) == files_under(tmp_path / "clean")
    assert not (tmp_path / ".terabatch").exists()  # run state goes once the job succeeded


def _fail_once(flag: Path, value: int = 4000):
    def fn(frame: pl.DataFrame) -> pl.DataFrame:
        if (frame["v"] == value).any() and not flag.exists():
            raise RuntimeError("flaky service")
        return frame

    return fn


def test_failed_run_resumes_without_redoing_committed_tasks(tmp_path: Path) -> None:
    src = _inputs(tmp_path)
    out = tmp_path / "out"
    flag = tmp_path / "service-is-back"
    calls = tmp_path / "calls"
    calls.mkdir()

    def job(**run):
        def record(frame: pl.DataFrame) -> pl.DataFrame:
            (calls / f"{frame['v'].min()}").touch()
            return _fail_once(flag)(frame)

        return (
            tb.read_csv(str(src / "*.csv"))
            .map_batches(record)
            .write_parquet(out, workers=2, progress=False, max_retries=0, **run)
        )

    with pytest.raises(tb.TerabatchError) as caught:
        job()
    assert "run the same job again to resume" in "\n".join(caught.value.__notes__)
    first_calls = {p.name for p in calls.iterdir()}
    flag.touch()  # the closure sees it at run time; the job's key is unchanged
    for p in calls.iterdir():
        p.unlink()
    summary = job()
    assert summary.resumed_tasks > 0
    redone = {p.name for p in calls.iterdir()}
    assert len(redone) == 16 - summary.resumed_tasks
    assert redone | first_calls == {str(i * 300) for i in range(16)}
    expected = pl.read_csv(str(src / "*.csv")).sort("v")
    assert pl.read_parquet(str(out / "*.parquet")).sort("v").equals(expected)
    assert summary.rows_read == summary.rows_written == 16 * 300


def test_a_resumed_run_redoes_finished_tasks_whose_staged_files_were_removed(
    tmp_path: Path,
) -> None:
    src = _inputs(tmp_path)
    out = tmp_path / "out"
    flag = tmp_path / "service-is-back"

    def job():
        return (
            tb.read_csv(str(src / "*.csv"))
            .map_batches(_fail_once(flag))
            .write_parquet(out, workers=2, progress=False, max_retries=0)
        )

    with pytest.raises(tb.TerabatchError):
        job()
    assert _markers(out, "000-")  # finished tasks kept, their files staged under out/
    shutil.rmtree(out)  # the user clears the output directory before trying again
    flag.touch()
    summary = job()
    assert summary.resumed_tasks == 0
    expected = pl.read_csv(str(src / "*.csv")).sort("v")
    assert pl.read_parquet(str(out / "*.parquet")).sort("v").equals(expected)
    assert summary.rows_read == summary.rows_written == 16 * 300


def test_a_join_whose_sides_map_together_resumes_without_redoing_either_side(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import terabatch.plan.stages as stages_module

    monkeypatch.setattr(stages_module, "BROADCAST_BYTES", 0)  # both sides shuffled
    src = _inputs(tmp_path, files=6)
    right = tmp_path / "right"
    right.mkdir()
    pl.DataFrame({"k": list(range(37)), "w": [k * 10 for k in range(37)]}).write_csv(
        right / "r.csv"
    )
    out, flag, calls = tmp_path / "out", tmp_path / "service-is-back", tmp_path / "calls"
    calls.mkdir()
    schema = {"k": pl.Int64, "v": pl.Int64}

    def job(**run):
        def record(frame: pl.DataFrame) -> pl.DataFrame:
            (calls / f"left-{frame['v'].min()}").touch()
            return _fail_once(flag, 1200)(frame)  # the fifth of six left tasks fails

        left = tb.read_csv(str(src / "*.csv")).map_batches(record, schema=schema)
        joined = left.join(tb.read_csv(str(right / "r.csv")), on="k")
        return joined.write_parquet(out, workers=2, progress=False, max_retries=0, **run)

    with pytest.raises(tb.TerabatchError):
        job()
    # Left tasks committed before the failure (stage 0; task i reads file i, v from i * 300):
    # a fifth task starts only once two have finished, with two workers.
    committed = {f"left-{int(name[4:10]) * 300}" for name in _markers(out, "000-")}
    assert len(committed) >= 2 and "left-1200" not in committed
    for p in calls.iterdir():
        p.unlink()
    flag.touch()
    summary = job()
    redone = {p.name for p in calls.iterdir()}
    assert "left-1200" in redone and not redone & committed
    assert summary.resumed_tasks >= len(committed)
    expected = pl.read_csv(str(src / "*.csv")).join(pl.read_csv(right / "r.csv"), on="k")
    assert pl.read_parquet(str(out / "*.parquet")).sort("v").equals(expected.sort("v"))


def test_resume_false_starts_afresh_and_a_changed_input_is_a_new_job(tmp_path: Path) -> None:
    src = _inputs(tmp_path, files=4)
    out = tmp_path / "out"
    flag = tmp_path / "ok"
    ds = tb.read_csv(str(src / "*.csv")).map_batches(_fail_once(flag, 700))
    with pytest.raises(tb.TerabatchError):
        ds.write_parquet(out, workers=1, progress=False, max_retries=0)
    (run_dir,) = (tmp_path / ".terabatch").iterdir()
    flag.touch()
    assert ds.write_parquet(out, workers=1, progress=False, resume=False).resumed_tasks == 0
    assert not run_dir.exists()

    flag.unlink()
    out2 = tmp_path / "out2"
    with pytest.raises(tb.TerabatchError):
        ds.write_parquet(out2, workers=1, progress=False, max_retries=0)
    (src / "00.csv").write_text("k,v\n1,1\n")  # the input changed: the old state is stale
    flag.touch()
    summary = (
        tb.read_csv(str(src / "*.csv"))
        .map_batches(_fail_once(flag, 700))
        .write_parquet(out2, workers=1, progress=False)
    )
    assert summary.resumed_tasks == 0
    assert summary.rows_written == 1 + 3 * 300
    assert not (tmp_path / ".terabatch").exists()


def test_run_dir_option_and_cli_resume(tmp_path: Path) -> None:
    src = _inputs(tmp_path, files=3)
    out = tmp_path / "out"
    run_dir = tmp_path / "state"
    cmd = [str(Path(sys.executable).parent / "terabatch"), "convert", str(src / "*.csv"), str(out)]
    cmd += ["--to", "parquet", "--run-dir", str(run_dir), "--resume"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "no unfinished run of this job" in done.stderr
    assert not run_dir.exists()
    assert pl.read_parquet(str(out / "*.parquet")).height == 900


def test_cli_failure_says_how_to_resume(tmp_path: Path) -> None:
    src = _inputs(tmp_path, files=3)
    (src / "02.csv").write_text("k,v\n1,2\n3,x\n")
    cmd = [str(Path(sys.executable).parent / "terabatch"), "convert", str(src / "*.csv")]
    cmd += [str(tmp_path / "out"), "--to", "parquet", "--workers", "1", "--quiet"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert lines[0].startswith("terabatch: error: ") and "02.csv" in lines[0]
    assert "finished tasks are kept in" in lines[1] and "to resume" in lines[1]
    assert "Traceback" not in done.stderr


def test_ctrl_c_stops_cleanly_and_resumes(tmp_path: Path) -> None:
    src = _inputs(tmp_path)
    out = tmp_path / "out"
    proc = _driver(tmp_path, src, out, "narrow", 2)
    deadline = time.monotonic() + 60
    while len(_markers(out, "000-")) < 3:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "KeyboardInterrupt" in stderr and "run the same job again to resume" in stderr
    assert visible_files(out) == {}
    leftovers = [p for p in tmp_path.rglob("attempt-*")]
    assert leftovers == []  # unfinished attempts are removed, finished tasks kept
    resumed = _driver(tmp_path, src, out, "narrow", 2)
    stdout, stderr = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, stderr
    assert int(stdout.split()[0]) >= 3
    expected = pl.read_csv(str(src / "*.csv")).with_columns(w=pl.col("v") * 2)
    assert pl.read_parquet(str(out / "*.parquet")).sort("v").equals(expected.sort("v"))
