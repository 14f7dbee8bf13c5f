"""Run one task inside a worker: read the split, apply the fused operators, write the sink.

This is the only code that touches data. It runs the same way under every executor; a task
that succeeds has its output renamed from its attempt directory into its task directory, so a
retried or duplicated attempt never leaves a mix of files.
"""

from __future__ import annotations

import ctypes
import gc
import os
import posixpath
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import polars as pl
import pyarrow as pa

from terabatch.errors import DiskFullError, TerabatchError, is_disk_full
from terabatch.io.bad_rows import collecting
from terabatch.io.shuffle import ShuffleSink, ShuffleWriter
from terabatch.io.sinks import CollectSink, CountSink, FileSink, FileWriter, SpillSink, WrittenFile
from terabatch.io.sources import Batch
from terabatch.io.storage import filesystem, replace_tree
from terabatch.ops.narrow import compile_ops
from terabatch.plan.stages import Task
from terabatch.run.memory import process_rss


@dataclass
class TaskResult:
    """What a task reports back to the driver."""

    task_id: int
    rows_in: int = 0
    rows_out: int = 0
    bytes_in: int = 0
    files: tuple[WrittenFile, ...] = ()
    frame: pl.DataFrame | None = None
    spill_path: str | None = None
    peak_rss: int = 0
    row_groups: int = 0
    bytes_out: int = 0
    rows_bad: int = 0  # quarantined or skipped rows
    first_bad: str | None = None
    quarantine_file: str | None = None
    source_file: str | None = None


class TaskFailure(Exception):
    """An unexpected error inside a task, carrying the worker's traceback as text."""

    def __init__(self, message: str, traceback_text: str) -> None:
        super().__init__(message)
        self.traceback_text = traceback_text

    def __reduce__(self):
        return (type(self), (str(self), self.traceback_text))


# How often a running task tells the driver how far it has read (where the executor listens).
PROGRESS_SECONDS = 0.5
_report: Callable[[int, int], None] | None = None


def report_progress_to(report: Callable[[int, int], None] | None) -> None:
    """Send the running task's rows and bytes read so far to ``report`` while it runs.

    A local worker passes a function writing to its pipe; it may be called from a Polars
    thread pulling the source.
    """
    global _report
    _report = report


class _Counter:
    def __init__(self) -> None:
        self.rows = 0
        self.read_to = 0
        self.due = time.monotonic() + PROGRESS_SECONDS


def _count(batches: Iterator[Batch], counter: _Counter) -> Iterator[Batch]:
    for batch in batches:
        counter.rows += batch.frame.height
        counter.read_to = max(counter.read_to, batch.read_to)
        if _report is not None and time.monotonic() >= counter.due:
            counter.due = time.monotonic() + PROGRESS_SECONDS
            _report(counter.rows, counter.read_to)
        yield batch


def _limit(batches: Iterator[Batch], n: int) -> Iterator[Batch]:
    taken = 0
    for batch in batches:
        if taken >= n:
            return
        frame = batch.frame.head(n - taken)
        taken += frame.height
        yield Batch(frame, batch.origin)
        if taken >= n:
            return


def _relieve_memory(task: Task, result: TaskResult) -> None:
    rss = process_rss()
    result.peak_rss = max(result.peak_rss, rss)
    if task.memory_limit is not None and rss > task.memory_limit:
        gc.collect()
        pa.default_memory_pool().release_unused()


def _drain(
    out: Iterator[Batch], writer: FileWriter | ShuffleWriter, task: Task, result: TaskResult
) -> None:
    """Write every batch; on any failure close what is open, leaving nothing half-written."""
    try:
        for batch in out:
            writer.write(batch.frame)
            result.rows_out += batch.frame.height
            _relieve_memory(task, result)
    except BaseException:
        writer.abort()
        raise


def _execute(task: Task, attempt_dir: str | None) -> TaskResult:
    file = getattr(getattr(task.split, "file", None), "path", None)
    with collecting(file or "") as bad:
        result = _execute_collecting(task, attempt_dir)
    result.source_file = file
    # A row the reader dropped was read all the same: rows read = written + filtered + bad.
    result.rows_in += bad.read
    result.rows_bad, result.first_bad = bad.count, bad.first
    if task.quarantine_dir is not None:
        name = f"part-{task.task_id:05d}.parquet"
        result.quarantine_file = bad.write(task.quarantine_dir, name, task.quarantine_options)
    return result


def _execute_collecting(task: Task, attempt_dir: str | None) -> TaskResult:
    result = TaskResult(task.task_id, bytes_in=task.split.nbytes)
    result.row_groups = len(getattr(task.split, "row_groups", ()))
    counter = _Counter()
    columns = list(task.columns) if task.columns is not None else None
    batches = _count(task.source.read(task.split, columns, task.chunk_bytes), counter)
    out = compile_ops(list(task.ops))(batches)
    if task.limit is not None:
        out = _limit(out, task.limit)
    sink = task.sink
    if isinstance(sink, FileSink):
        assert attempt_dir is not None
        writer = FileWriter(sink, attempt_dir, task.task_id)
        _drain(out, writer, task, result)
        result.files = tuple(writer.close())
    elif isinstance(sink, CollectSink):
        frames = []
        for batch in out:
            frames.append(batch.frame)
            result.rows_out += batch.frame.height
        result.frame = pl.concat(frames, how="vertical_relaxed") if frames else None
    elif isinstance(sink, SpillSink):
        assert attempt_dir is not None
        result.spill_path = _spill(out, attempt_dir, sink, result, task)
    elif isinstance(sink, ShuffleSink):
        assert attempt_dir is not None
        shuffle = ShuffleWriter(sink, attempt_dir)
        _drain(out, shuffle, task, result)
        result.bytes_out = shuffle.close()
    elif isinstance(sink, CountSink):
        for batch in out:
            result.rows_out += batch.frame.height
    result.rows_in = counter.rows
    result.peak_rss = max(result.peak_rss, process_rss())
    return result


def _spill(
    out: Iterator[Batch], attempt_dir: str, sink: SpillSink, result: TaskResult, task: Task
) -> str | None:
    fs, root = filesystem(attempt_dir, sink.storage_options or {})
    fs.makedirs(root, exist_ok=True)
    path = posixpath.join(root, "spill.arrow")
    writer = None
    schema = None  # the IPC writer does not expose its schema
    with fs.open(path, "wb") as handle:
        for batch in out:
            table = batch.frame.to_arrow()
            if writer is None:
                schema = table.schema
                writer = pa.ipc.new_file(handle, schema)
            writer.write_table(table.cast(schema) if table.schema != schema else table)
            result.rows_out += batch.frame.height
            _relieve_memory(task, result)
        if writer is not None:
            writer.close()
    return path if writer is not None else None


def _promote(attempt_dir: str, task_dir: str, storage_options: dict) -> None:
    fs, attempt = filesystem(attempt_dir, storage_options)
    _, final = filesystem(task_dir, storage_options)
    replace_tree(fs, attempt, final)


def run_task(task: Task, attempt_dir: str | None, task_dir: str | None) -> TaskResult:
    """Run a task; errors caused by the input come back as ``TerabatchError``."""
    # The attempt directory is where the sink writes (the output's staging area, or shuffle or
    # spill files in the run directory); the sink carries the options that reach it.
    storage = getattr(task.sink, "storage_options", None) or {}
    try:
        result = _execute(task, attempt_dir)
        if attempt_dir is not None and task_dir is not None:
            _promote(attempt_dir, task_dir, storage)
            if result.spill_path is not None:
                result.spill_path = f"{task_dir.rstrip('/')}/spill.arrow"
        return result
    except TerabatchError:
        _discard(attempt_dir, storage)
        raise
    except OSError as exc:
        _discard(attempt_dir, storage)
        if is_disk_full(exc):
            raise DiskFullError(
                f"no space left on device writing the output of task {task.task_id} "
                f"({task.describe()}); free disk "
                "space (or point run_dir= / --run-dir at a larger disk) and run the same job "
                "again to resume"
            ) from None
        raise TaskFailure(
            f"task {task.task_id} ({task.describe()}) failed: {type(exc).__name__}: {exc}",
            traceback.format_exc(),
        ) from None
    except pl.exceptions.PolarsError as exc:
        _discard(attempt_dir, storage)
        first = str(exc).strip().splitlines()[0]
        raise TerabatchError(f"{task.describe()}: {first}") from None
    except Exception as exc:
        _discard(attempt_dir, storage)
        raise TaskFailure(
            f"task {task.task_id} ({task.describe()}) failed: {type(exc).__name__}: {exc}",
            traceback.format_exc(),
        ) from None


def _discard(attempt_dir: str | None, storage_options: dict) -> None:
    if attempt_dir is None:
        return
    try:
        fs, path = filesystem(attempt_dir, storage_options)
        if fs.exists(path):
            fs.rm(path, recursive=True)
    except Exception:
        pass


def configure_worker() -> None:
    """Run once per worker process: one thread per library, so workers never oversubscribe."""
    os.environ.setdefault("POLARS_MAX_THREADS", "1")
    pa.set_cpu_count(1)
    pa.set_io_thread_count(2)
    _reuse_freed_chunks()


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def _reuse_freed_chunks() -> None:
    """Let glibc's malloc keep freed input chunks for the next one.

    By default a block above 128 KiB is mapped fresh and unmapped on free, so every chunk read
    into a new ``bytes`` pays a page fault per 4 KiB page: six times the cost of the read itself
    (measured: 19 ms against 3 ms per 32 MiB). Chunks stay under the 32 MiB ceiling glibc
    allows here (``MAX_CHUNK``). Other C libraries keep their own defaults.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter runs on
    except (OSError, AttributeError):
        return
    mallopt(_M_MMAP_THRESHOLD, 32 << 20)
    mallopt(_M_TRIM_THRESHOLD, 128 << 20)
