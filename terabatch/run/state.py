"""The run directory: durable state of one job, so that a rerun resumes where a crash stopped.

``<run_dir>/<key>/`` holds ``run.json`` (the key, the output, the sizes the job was planned
with), ``done/`` with one small JSON marker per committed task (written by the driver after
the task's files were renamed into place, so a marker always means complete files),
``frames/`` with the results of sampling and broadcast passes, and ``shuffle/`` with the
shuffle files. Everything goes through fsspec, so the run directory may live on S3 or a
shared filesystem that every worker reaches.

``storage_options`` reach the run directory. The job driver passes the ``storage_options`` of
``write_*`` (the output's): one set of options serves the output and the run directory, and
a local path ignores them, so a local output with its run directory on S3 (or the other way
round) needs nothing more. The tasks that write into the run directory (shuffle files,
quarantined rows) carry the same options, so workers need no credentials of their own.
"""

from __future__ import annotations

import dataclasses
import io
import json
import posixpath
from typing import Any

import polars as pl
from fsspec.implementations.local import LocalFileSystem

from terabatch.exec.runtime import TaskResult
from terabatch.io.sinks import WrittenFile
from terabatch.io.storage import check_bucket, filesystem

DEFAULT_DIR = ".terabatch"
_SKIPPED_FIELDS = ("frame", "spill_path")


class RunState:
    """The run directory of one job, keyed by ``key`` under ``root``."""

    def __init__(self, root: str, key: str, storage_options: dict | None = None) -> None:
        self.key = key
        self.storage_options = storage_options or {}
        self.fs, root_path = filesystem(root.rstrip("/"), self.storage_options)
        self.root = root_path
        self.path = posixpath.join(root_path, key)

    def url(self, *parts: str) -> str:
        """A URL under the run directory, for tasks that open it through fsspec."""
        path = posixpath.join(self.path, *parts)
        return path if isinstance(self.fs, LocalFileSystem) else self.fs.unstrip_protocol(path)

    @property
    def display(self) -> str:
        return self.url()

    # life cycle ------------------------------------------------------------------------------

    def exists(self) -> bool:
        return self.fs.exists(posixpath.join(self.path, "run.json"))

    def start(self, info: dict[str, Any]) -> None:
        """Create a fresh run directory describing the job."""
        check_bucket(self.fs, self.path, self.display)  # never create a bucket from a typo
        self.remove()
        self.fs.makedirs(posixpath.join(self.path, "done"), exist_ok=True)
        self._write_json("run.json", {"key": self.key, **info})

    def info(self) -> dict[str, Any]:
        with self.fs.open(posixpath.join(self.path, "run.json"), "r") as f:
            return json.load(f)

    def remove(self) -> None:
        """Delete this run's state, and the run directory's root when nothing else is left."""
        if self.fs.exists(self.path):
            self.fs.rm(self.path, recursive=True)
        if self.fs.exists(self.root) and not self.fs.ls(self.root, detail=False):
            self.fs.rmdir(self.root)

    def other_runs(self, output: str) -> list[str]:
        """Keys of other unfinished runs under the same root that write ``output``."""
        if not self.fs.exists(self.root):
            return []
        found = []
        for path in self.fs.ls(self.root, detail=False):
            key = posixpath.basename(path.rstrip("/"))
            if key == self.key:
                continue
            try:
                with self.fs.open(posixpath.join(path, "run.json"), "r") as f:
                    if json.load(f).get("output") == output:
                        found.append(key)
            except (OSError, ValueError):
                continue
        return found

    def remove_run(self, key: str) -> None:
        path = posixpath.join(self.root, key)
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)

    # committed tasks -------------------------------------------------------------------------

    def record(self, stage: int, result: TaskResult) -> None:
        """Mark a task committed; its files are already in place."""
        data = {
            f.name: getattr(result, f.name)
            for f in dataclasses.fields(result)
            if f.name not in _SKIPPED_FIELDS
        }
        data["files"] = [dataclasses.asdict(w) for w in result.files]
        self._write_json(posixpath.join("done", f"{stage:03d}-{result.task_id:06d}.json"), data)

    def committed(self, stage: int) -> dict[int, TaskResult]:
        """The results of the tasks of ``stage`` that an earlier run committed."""
        done_dir = posixpath.join(self.path, "done")
        if not self.fs.exists(done_dir):
            return {}
        found: dict[int, TaskResult] = {}
        prefix = f"{stage:03d}-"
        for path in self.fs.ls(done_dir, detail=False):
            name = posixpath.basename(path)
            if not name.startswith(prefix) or not name.endswith(".json"):
                continue
            try:
                with self.fs.open(path, "r") as f:
                    data = json.load(f)
            except (OSError, ValueError):
                continue  # a marker cut short by a crash: the task runs again
            data["files"] = tuple(WrittenFile(**w) for w in data["files"])
            found[data["task_id"]] = TaskResult(**data)
        return found

    def count_committed(self) -> int:
        done_dir = posixpath.join(self.path, "done")
        if not self.fs.exists(done_dir):
            return 0
        return sum(p.endswith(".json") for p in self.fs.ls(done_dir, detail=False))

    def remove_attempts(self) -> None:
        """Delete what unfinished task attempts left in the shuffle directories."""
        for path in self.fs.glob(posixpath.join(self.path, "shuffle", "**", "attempt-*")):
            if self.fs.exists(path):
                self.fs.rm(path, recursive=True)

    # results of first passes -----------------------------------------------------------------

    def save_frames(self, stage: int, frames: list[pl.DataFrame]) -> None:
        """Keep a sampling or broadcast pass's result, so a resumed run need not redo it."""
        directory = posixpath.join(self.path, "frames", f"{stage:03d}")
        self.fs.makedirs(directory, exist_ok=True)
        for i, frame in enumerate(frames):
            with self.fs.open(posixpath.join(directory, f"{i:06d}.arrow"), "wb") as f:
                frame.write_ipc(f)
        self._write_json(posixpath.join("frames", f"{stage:03d}.json"), {"count": len(frames)})

    def load_frames(self, stage: int) -> list[pl.DataFrame] | None:
        marker = posixpath.join(self.path, "frames", f"{stage:03d}.json")
        if not self.fs.exists(marker):
            return None
        with self.fs.open(marker, "r") as f:
            count = json.load(f)["count"]
        directory = posixpath.join(self.path, "frames", f"{stage:03d}")
        frames = []
        for i in range(count):
            with self.fs.open(posixpath.join(directory, f"{i:06d}.arrow"), "rb") as f:
                frames.append(pl.read_ipc(io.BytesIO(f.read())))
        return frames

    def _write_json(self, name: str, data: dict[str, Any]) -> None:
        # Write, then rename: a marker is either whole or absent.
        path = posixpath.join(self.path, name)
        partial = path + ".partial"
        with self.fs.open(partial, "w") as f:
            json.dump(data, f, sort_keys=True)
        self.fs.mv(partial, path)
