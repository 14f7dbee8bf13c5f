"""The job driver: size the work from the budget (``run/sizing.py``), run the stages, commit,
summarise.

This is the only place that knows about all of plan, executor, sink and output; each of those
knows nothing of the others.
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import polars as pl
import pyarrow as pa
from fsspec.implementations.local import LocalFileSystem

from terabatch.errors import (
    DiskFullError,
    SpillLimitError,
    TerabatchError,
    UserFunctionError,
    is_disk_full,
)
from terabatch.exec.base import Executor, JobFailed, iter_results
from terabatch.exec.local import LocalExecutor
from terabatch.exec.process import stop_spares
from terabatch.exec.runtime import TaskResult
from terabatch.exec.select import executor_for
from terabatch.io.commit import QUARANTINE, OutputCommit
from terabatch.io.files import FileInfo
from terabatch.io.shuffle import map_dir
from terabatch.io.sinks import CollectSink, FileSink, FileWriter, Sink, SpillSink
from terabatch.io.sources import Batch, ParquetSource
from terabatch.io.storage import filesystem, storage_errors
from terabatch.ops.narrow import compile_ops
from terabatch.plan.coalesce import coalesce_stage
from terabatch.plan.fill import fill_later
from terabatch.plan.nodes import Head, Node, TopK, lineage, scans
from terabatch.plan.optimize import optimize
from terabatch.plan.overlap import groups
from terabatch.plan.schema import output_schema
from terabatch.plan.stages import Sizes, Stage, Task, plan_stages, split_at_head
from terabatch.run.accounting import RowAccount
from terabatch.run.job_key import job_key
from terabatch.run.memory import MemoryMonitor, format_size
from terabatch.run.options import RunOptions
from terabatch.run.progress import ProgressReporter
from terabatch.run.sizing import size_job
from terabatch.run.state import DEFAULT_DIR, RunState
from terabatch.run.summary import JobSummary

SPILL_SHARE_OF_FREE_DISK = 0.9


@dataclass
class Outcome:
    summary: JobSummary
    frame: pl.DataFrame | None = None
    count: int = 0
    results: list[TaskResult] = field(default_factory=list)


class Job:
    """One run of a plan into a sink, with its run directory.

    A job writing files (or given ``run_dir``) keeps its state in ``<run_dir>/<key>/``, where
    the key hashes the plan, the inputs and the output: a rerun with the same key resumes,
    reusing every committed task and the sizes the first run was planned with. Other jobs use
    a temporary run directory that goes away when they finish.
    """

    def __init__(
        self,
        plan: Node,
        sink: Sink,
        options: RunOptions,
        output: str | None = None,
        storage_options: dict | None = None,
    ) -> None:
        self.plan = optimize(plan)
        self.sink, self.options, self.output = sink, options, output
        files = _scan_files(self.plan)
        self.input_bytes = sum(f.size for f in files)
        self.sizing = size_job(options, _data_bytes(self.plan))
        self.key = job_key(self.plan, sink, output)
        self.persistent = output is not None or options.run_dir is not None
        self.state = _run_state(options, output, self.key, storage_options)
        self.notes: list[str] = []
        self.resumed = 0
        self.executor: Executor | None = None
        try:
            with storage_errors(output or self.state.display):
                sizes = self._start_state()
            shuffle_dir, opts = self.state.url("shuffle"), self.state.storage_options
            self.stages = plan_stages(self.plan, sink, sizes, shuffle_dir, opts)
            executor = executor_for(options.executor)
            if executor is not None:
                stop_spares()  # the readers' local workers: this job runs elsewhere
            else:
                split = self.sizing.split_bytes
                expected = sum(1 if f.compression else -(-f.size // split) for f in files)
                executor = LocalExecutor(max(1, min(self.sizing.workers, expected)))
                executor.start()
            self.executor = executor
        except BaseException:
            self.finish(succeeded=False)
            raise
        self.stage: Stage = self.stages[-1]
        self.spill_limit = options.spill_limit or _default_spill_limit(self.state)
        self.spilled = 0
        tasks = sum(len(s.tasks) for s in self.stages)
        self.summary = JobSummary(workers=self.executor.workers, tasks=tasks)
        self.account = RowAccount(options.max_bad_rows)
        self.summary.resumed_tasks = self.resumed

    def _start_state(self) -> Sizes:
        """Resume the run of this job found in the run directory, or start a fresh one."""
        sizes = Sizes(
            self.sizing.split_bytes,
            self.sizing.chunk_bytes,
            self.sizing.partitions,
            self.sizing.worker_memory,
            self.sizing.data_room,
        )
        state, resume = self.state, self.options.resume
        if self.persistent and self.output is not None:
            for other in state.other_runs(self.output):
                state.remove_run(other)
                self.notes.append(f"removed an unfinished run of a different job ({other})")
        if self.persistent and resume is not False and state.exists():
            info = state.info()
            self.resumed = state.count_committed()
            state.remove_attempts()
            self.notes.append(
                f"resuming the unfinished run in {state.display}: {self.resumed} tasks already "
                "done (pass resume=False, CLI --no-resume, to start afresh)"
            )
            return Sizes(**info["sizes"])
        if resume is True:
            self.notes.append(f"no unfinished run of this job in {state.display}; starting")
        state.start({"output": self.output, "sizes": dataclasses.asdict(sizes)})
        return sizes

    def close(self) -> None:
        """Stop the workers."""
        if self.executor is not None:
            self.executor.close()

    def finish(self, succeeded: bool) -> bool:
        """Stop the workers and clean the run directory; True when state is kept to resume."""
        self.close()
        try:
            keep = not succeeded and self.persistent and self.state.count_committed() > 0
            if keep:
                self.state.remove_attempts()
            else:
                self.state.remove()
        except (OSError, TerabatchError):
            if succeeded:
                raise
            return False  # cleaning up after a failure must not hide the failure
        return keep

    def _pressure(self, monitor: MemoryMonitor) -> bool:
        return self.options.memory is not None and monitor.current > 0.85 * self.options.memory

    def results(
        self,
        monitor: MemoryMonitor,
        reporter: ProgressReporter,
        dirs: Callable[[Task], tuple[str | None, str | None]],
        max_waiting: int | None = None,
        staged: Callable[[TaskResult], bool] | None = None,
    ) -> Iterator[TaskResult]:
        """Run every stage; yield the last stage's results in task order.

        Earlier stages write shuffle files; their results only feed progress and the summary.
        ``staged`` tells whether a last-stage task an earlier run finished still has its files.
        """
        *earlier, (last,) = groups(self.stages)
        for group in earlier:
            first = self.stages[group[0]]  # read now: a first pass fills in the stages after it
            if first.feeds is not None:
                # A first pass (a sort's key sample, a broadcast join's small right side, the
                # rows a head kept) runs alone: its rows fill the later stages that wait for them.
                i = group[0]
                frames = self.state.load_frames(i) if self.persistent else None
                if frames is None:
                    results = self._run_stages([i], monitor, reporter, _no_dirs, None)
                    frames = [r.frame for r in results if r.frame is not None]
                    if self.persistent:
                        self.state.save_frames(i, frames)
                self.stages[i + 1 :] = fill_later(first, frames, self.stages[i + 1 :])
                continue
            for index in group:
                self._coalesce(index)
            for _ in self._run_stages(group, monitor, reporter, self._shuffle_dirs, None):
                pass
        self._coalesce(last)
        self.stage = self.stages[-1]  # a first pass may have completed the last stage's tasks
        yield from self._run_stages([last], monitor, reporter, dirs, max_waiting, staged)

    def _coalesce(self, index: int) -> None:
        """Group a reduce stage's small partitions, now that the map stage wrote them."""
        # The planned workers, not the executor's: every executor must cut the same tasks, so
        # that they write the same files.
        before = len(self.stages[index].tasks)
        self.stages[index] = coalesce_stage(
            self.stages[index], self.sizing.workers, self.sizing.data_room
        )
        self.summary.tasks -= before - len(self.stages[index].tasks)

    def _count_spill(self, result: TaskResult) -> None:
        """Stop the job once shuffle files pass the spill limit, before the disk fills."""
        self.spilled += result.bytes_out
        if self.spilled > self.spill_limit:
            raise SpillLimitError(
                f"shuffle files reached {format_size(self.spilled)} in "
                f"{self.state.url('shuffle')}, over the spill limit of "
                f"{format_size(self.spill_limit)}; pass a larger spill_limit= "
                "or a run_dir= (CLI --run-dir) on a disk with more free space"
            )

    def _shuffle_dirs(self, task: Task) -> tuple[str, str]:
        root = task.sink.directory  # a join shuffles its two sides into two directories
        attempt = posixpath.join(root, f"attempt-{task.task_id:05d}-{os.urandom(4).hex()}")
        return attempt, map_dir(root, task.task_id)

    def _run_stages(
        self,
        indices: list[int],
        monitor: MemoryMonitor,
        reporter: ProgressReporter,
        dirs: Callable[[Task], tuple[str | None, str | None]],
        max_waiting: int | None,
        staged: Callable[[TaskResult], bool] | None = None,
    ) -> Iterator[TaskResult]:
        """Run the tasks of stages ``indices`` together; yield their results stage by stage,
        in task order."""
        runs = {index: _StageRun(self, index, reporter, staged) for index in indices}
        run_of: dict[int, _StageRun] = {}  # by id(task): task ids repeat across stages
        todo: list[Task] = []
        for run in runs.values():
            for task in run.todo:
                run_of[id(task)] = run
                todo.append(task)
        for run in runs.values():
            for result in run.committed.values():
                run.count(result)
        ready = iter_results(
            self.executor,
            tuple(todo),
            dirs=dirs,
            on_result=lambda task, result: run_of[id(task)].finished(result),
            max_running=self.executor.workers + 1,
            max_waiting=max_waiting,
            memory_pressure=lambda: self._pressure(monitor),
            max_retries=self.options.max_retries,
            on_progress=lambda task, rows, nbytes: run_of[id(task)].progress.running(
                task.task_id, rows, nbytes
            ),
        )
        for run in runs.values():
            for task in run.stage.tasks:
                if task.task_id in run.committed:
                    yield run.committed[task.task_id]
                else:
                    yield next(ready)


class _StageRun:
    """One stage of a job while it runs: its progress, the tasks an earlier run committed,
    and the accounting of every finished task."""

    def __init__(
        self,
        job: Job,
        index: int,
        reporter: ProgressReporter,
        staged: Callable[[TaskResult], bool] | None,
    ) -> None:
        self.job, self.index = job, index
        self.stage = stage = job.stages[index]
        self.progress = reporter.stage(stage.name, len(stage.tasks), stage.input_bytes)
        committed = job.state.committed(index) if job.persistent else {}
        if staged is not None:
            kept = {i: r for i, r in committed.items() if staged(r)}
            job.summary.resumed_tasks -= len(committed) - len(kept)
            committed = kept
        self.committed = committed
        # First passes read rows a second time: their bad rows are met again where they count.
        self.counts = stage.feeds is None
        self.last = index == len(job.stages) - 1
        quarantine = job.state.url("quarantine", f"stage-{index:03d}") if self.counts else None
        opts = job.state.storage_options
        self.todo = tuple(
            replace(t, quarantine_dir=quarantine, quarantine_options=opts)
            for t in stage.tasks
            if t.task_id not in committed
        )

    def count(self, result: TaskResult) -> None:
        """Rows, bytes, spill and progress of a task, finished now or by an earlier run."""
        job, stage = self.job, self.stage
        if self.counts:
            job.account.add(result, stage.reads_input, self.last)
        job._count_spill(result)
        if stage.reads_input:
            job.summary.rows_read += result.rows_in
            job.summary.bytes_read += result.bytes_in
            job.summary.row_groups_read += result.row_groups
        self.progress.advance(result.task_id, result.rows_in, result.bytes_in)

    def finished(self, result: TaskResult) -> None:
        self.count(result)
        if self.job.persistent and result.frame is None and result.spill_path is None:
            self.job.state.record(self.index, result)


def _run_state(
    options: RunOptions, output: str | None, key: str, storage_options: dict | None
) -> RunState:
    if options.run_dir is not None:
        return RunState(options.run_dir, key, storage_options)
    if output is not None:
        parent = posixpath.dirname(output.rstrip("/")) or "."
        return RunState(posixpath.join(parent, DEFAULT_DIR), key, storage_options)
    return RunState(tempfile.mkdtemp(prefix="terabatch-run-"), key)


def _default_spill_limit(state: RunState) -> int:
    if not isinstance(state.fs, LocalFileSystem):
        return 1 << 62  # object stores do not fill up
    probe = state.path
    while not os.path.exists(probe):
        probe = os.path.dirname(probe) or "."
    return int(SPILL_SHARE_OF_FREE_DISK * shutil.disk_usage(probe).free)


def _no_dirs(task: Task) -> tuple[None, None]:
    return None, None


def _scan_files(plan: Node) -> list[FileInfo]:
    return [f for scan in scans(plan) for f in scan.source.files]


# A gzip/zstd/bz2 text file holds about four times its size: what sizes the job's partitions.
COMPRESSED_TEXT_FACTOR = 4


def _data_bytes(plan: Node) -> int:
    """What the job's inputs take once read: Parquet by its footers, compressed text by an
    estimate, plain text by its size."""
    total = 0
    for scan in scans(plan):
        source = scan.source
        if isinstance(source, ParquetSource) and source.data_bytes:
            total += source.data_bytes
            continue
        total += sum(
            f.size * (COMPRESSED_TEXT_FACTOR if f.compression else 1) for f in source.files
        )
    return total


def _with_notes(exc: BaseException) -> BaseException:
    text = getattr(exc, "traceback_text", "")
    if text and not getattr(exc, "__notes__", None):
        exc.add_note("Traceback in the worker:\n" + text.rstrip())
    return exc


def run(
    plan: Node,
    sink: Sink,
    options: RunOptions,
    output: str | None = None,
    mode: str = "error",
    storage_options: dict | None = None,
    manifest: dict | None = None,
) -> Outcome:
    """Run a plan to completion into a file sink, a collected frame or a count."""
    started = time.monotonic()
    job = Job(plan, sink, options, output, storage_options)
    commit = None
    outcome = Outcome(job.summary)
    if options.progress:
        for note in job.notes:
            print(f"terabatch: {note}", file=sys.stderr, flush=True)

    def dirs(task: Task) -> tuple[str | None, str | None]:
        if commit is None or not isinstance(task.sink, FileSink):
            return None, None
        return commit.attempt_dir(task.task_id), commit.task_dir(task.task_id)

    try:
        if isinstance(sink, FileSink):
            assert output is not None
            commit = OutputCommit(output, mode, storage_options or {}, job.key)
            commit.prepare()
        with MemoryMonitor() as monitor, ProgressReporter(options.progress) as reporter:
            frames: list[pl.DataFrame] = []
            staged = None if commit is None else lambda r: commit.has_staged(r.task_id, r.files)
            for result in job.results(monitor, reporter, dirs, staged=staged):
                outcome.results.append(result)
                outcome.count += result.rows_out
                if result.frame is not None:
                    frames.append(result.frame)
                if job.stage.limit is not None and sum(f.height for f in frames) >= job.stage.limit:
                    break
            job.close()
            if isinstance(sink, CollectSink) or job.stage.gathers:
                outcome.frame = _finish_on_driver(job, frames)
                outcome.count = outcome.frame.height
            if commit is not None:
                _commit(job, commit, outcome, manifest or {})
            else:
                _keep_quarantine(job)
        job.summary.peak_memory = monitor.peak
    except BaseException as caught:
        exc = caught
        if is_disk_full(exc):
            exc = DiskFullError(
                f"no space left on device: {exc}; free disk space (or point run_dir= / "
                "--run-dir at a larger disk) and run the same job again to resume"
            )
        kept = job.finish(succeeded=False)
        if commit is not None:
            commit.abort(keep_tasks=kept)
        if isinstance(exc, UserFunctionError | JobFailed):
            _with_notes(exc)
        if kept:
            exc.add_note(
                f"{job.state.count_committed()} finished tasks are kept in {job.state.display}; "
                "run the same job again to resume"
            )
        if exc is not caught or isinstance(exc, UserFunctionError | JobFailed):
            raise exc from None
        raise
    job.finish(succeeded=True)
    job.summary.rows_written = outcome.count
    job.summary.rows_bad = job.account.bad
    job.summary.seconds = time.monotonic() - started
    if options.progress and isinstance(sink, FileSink):
        print(job.summary.render(), file=sys.stderr, flush=True)
    return outcome


def _finish_on_driver(job: Job, frames: list[pl.DataFrame]) -> pl.DataFrame:
    """Combine collected task outputs in task order; apply the head and what follows it."""
    if not frames:
        return pl.DataFrame(schema=output_schema(job.plan) or {})
    frame = pl.concat(frames, how="vertical_relaxed")
    if job.stage.limit is not None:
        frame = frame.head(job.stage.limit)
    # What follows the first head runs here, on all the rows at once: it may hold further heads
    # (applied to the whole frame, not per batch) and map_batches that yield several batches.
    ops = list(job.stage.driver_ops)
    while ops:
        before, n, ops = split_at_head(ops)
        if before:
            out = compile_ops(before)(iter([Batch(frame, lambda: "the rows kept by head")]))
            frames = [batch.frame for batch in out]
            frame = pl.concat(frames, how="vertical_relaxed") if frames else frame.clear()
        if n is not None:
            frame = frame.head(n)
    return frame


def _commit(job: Job, commit: OutputCommit, outcome: Outcome, manifest: dict) -> None:
    files = []
    if job.stage.gathers:
        assert outcome.frame is not None and isinstance(job.sink, FileSink)
        writer = FileWriter(job.sink, commit.task_dir(0), 0)
        writer.write(outcome.frame)
        files = [(0, w) for w in writer.close()]
    else:
        files = [(r.task_id, w) for r in outcome.results for w in r.files]
    schema = output_schema(job.plan)
    if not files and schema is not None:
        writer = FileWriter(job.sink, commit.task_dir(0), 0)
        writer.write_empty(pl.DataFrame(schema=schema))
        files = [(0, w) for w in writer.close()]
    account = job.account
    account.check(final=True)
    narrow = len(job.stages) == 1 and not job.stage.gathers
    manifest = {
        **manifest,
        "rows_read": account.read,
        "rows_bad": account.bad,
        "inputs": account.per_file(with_written=narrow),
    }
    extra = [(url, f"{QUARANTINE}/{_quarantine_name(url)}") for url in account.quarantine_files]
    written = commit.commit(files, manifest, extra)
    if extra:
        job.summary.quarantine = f"{commit.out}/{QUARANTINE}"
    job.summary.output = commit.out
    job.summary.files = [w.path for w in written]
    job.summary.files_written = len(written)
    job.summary.bytes_written = sum(w.bytes for w in written)


def _quarantine_name(url: str) -> str:
    """``.../quarantine/stage-001/part-00003.parquet`` -> ``stage-001-part-00003.parquet``."""
    stage, name = url.rstrip("/").split("/")[-2:]
    return f"{stage}-{name}"


def _keep_quarantine(job: Job) -> None:
    """Results that are not files keep their quarantine beside the run directory."""
    job.account.check(final=True)
    if not job.account.quarantine_files:
        return
    root = job.options.run_dir or tempfile.gettempdir()
    target = posixpath.join(root, f"quarantine-{job.key}")
    fs = job.state.fs
    fs.makedirs(target, exist_ok=True)
    for url in job.account.quarantine_files:
        fs.mv(url, posixpath.join(target, _quarantine_name(url)))
    job.summary.quarantine = target
    print(
        f"terabatch: {job.account.bad:,} bad rows quarantined in {target}",
        file=sys.stderr,
        flush=True,
    )


def _read_spill(state: RunState, url: str) -> Iterator[pa.RecordBatch]:
    """A task's spilled rows, then the spill file is gone; local (memory-mapped) or remote."""
    if isinstance(state.fs, LocalFileSystem):
        with pa.memory_map(url) as source:
            reader = pa.ipc.open_file(source)
            for i in range(reader.num_record_batches):
                yield reader.get_batch(i)
        shutil.rmtree(os.path.dirname(url), ignore_errors=True)
        return
    fs, path = filesystem(url, state.storage_options)
    with fs.open(path, "rb") as handle:
        reader = pa.ipc.open_file(handle)
        for i in range(reader.num_record_batches):
            yield reader.get_batch(i)
    fs.rm(posixpath.dirname(path), recursive=True)


def stream(plan: Node, options: RunOptions) -> Iterator[pa.RecordBatch]:
    """Yield the plan's rows as Arrow record batches, in input order, with bounded memory."""
    if any(isinstance(op, Head | TopK) for op in lineage(plan)[1]):
        # Rows after a head are few: collect them, then hand them out.
        frame = run(plan, CollectSink(), options).frame
        yield from frame.to_arrow().to_batches() if frame is not None else []
        return
    job = Job(plan, SpillSink(), options)
    scratch = job.state.url("stream")

    def dirs(task: Task) -> tuple[str, str]:
        return (
            os.path.join(scratch, f"attempt-{task.task_id:05d}-{os.urandom(4).hex()}"),
            os.path.join(scratch, f"task-{task.task_id:05d}"),
        )

    try:
        with MemoryMonitor() as monitor, ProgressReporter(options.progress) as reporter:
            # Spill files wait on disk until the caller takes them: bound how many.
            waiting = 4 * job.executor.workers
            for result in job.results(monitor, reporter, dirs, max_waiting=waiting):
                if result.spill_path is None:
                    continue
                yield from _read_spill(job.state, result.spill_path)
    except (UserFunctionError, JobFailed) as exc:
        job.finish(succeeded=False)
        raise _with_notes(exc) from None
    except BaseException:
        job.finish(succeeded=False)
        raise
    _keep_quarantine(job)
    job.finish(succeeded=True)
