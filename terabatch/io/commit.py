"""Atomic output directories.

Tasks write under ``<out>/_temporary/<job key>/task-<id>/``: a task attempt writes to its own
directory and renames it into place when it succeeds, so a retried task never mixes files with a
failed attempt. When every task has succeeded the driver moves the files into ``<out>`` and writes
``_SUCCESS`` last, with the list of files, rows and bytes. A failed job removes its staging
directory, except the finished tasks' directories when the run is kept to be resumed: a rerun of
the same job (same key) finds them there. Readers skip names starting with ``_``.
"""

from __future__ import annotations

import json
import posixpath
import uuid
from collections.abc import Iterable

from fsspec.implementations.local import LocalFileSystem

from terabatch.errors import OutputExistsError, TerabatchError
from terabatch.io.sinks import WrittenFile
from terabatch.io.storage import check_bucket, filesystem, storage_errors

STAGING = "_temporary"
SUCCESS = "_SUCCESS"
QUARANTINE = "_quarantine"


class OutputCommit:
    """The staging area and final commit of one job writing to ``out``."""

    def __init__(self, out: str, mode: str, storage_options: dict, job_id: str) -> None:
        if mode not in ("error", "overwrite"):
            raise TerabatchError(f"mode must be 'error' or 'overwrite', not {mode!r}")
        self.out, self.mode, self.job_id = out.rstrip("/"), mode, job_id
        self.fs, self.root = filesystem(self.out, storage_options)
        self.storage_options = storage_options
        self.staging = posixpath.join(self.root, STAGING, job_id)
        self._created_root = False
        self._staged = False  # nothing to clean up before the staging area exists
        self._listing: set[str] | None = None

    def _existing_output(self) -> list[str]:
        if not self.fs.exists(self.root):
            return []
        if not self.fs.isdir(self.root):
            raise OutputExistsError(f"output path {self.out!r} is a file, not a directory")
        return [p for p in self.fs.ls(self.root, detail=False) if posixpath.basename(p) != STAGING]

    def prepare(self) -> None:
        """Check the output directory and create the staging area."""
        with storage_errors(self.out):
            self._prepare()

    def _prepare(self) -> None:
        existing = self._existing_output()
        if existing and self.mode == "error":
            raise OutputExistsError(
                f"output directory {self.out!r} already holds {len(existing)} entries; "
                "pass mode='overwrite' (CLI: --overwrite) to replace them, or choose another path"
            )
        check_bucket(self.fs, self.root, self.out)
        root_existed = self.fs.exists(self.root)
        staged = root_existed and self._clear_other_staging()
        # An output directory holding nothing but staging was made by an earlier run of terabatch.
        self._created_root = not root_existed or (staged and not existing)
        self.fs.makedirs(self.staging, exist_ok=True)
        self._staged = True

    def _clear_other_staging(self) -> bool:
        """Remove what other jobs (other keys) staged here; True if a staging area existed."""
        parent = posixpath.join(self.root, STAGING)
        if not self.fs.exists(parent):
            return False
        for path in self.fs.ls(parent, detail=False):
            if posixpath.basename(path.rstrip("/")) == self.job_id:
                for attempt in self.fs.glob(posixpath.join(path, "attempt-*")):
                    self.fs.rm(attempt, recursive=True)
            else:
                self.fs.rm(path, recursive=True)
        return True

    def attempt_dir(self, task_id: int) -> str:
        """A fresh directory for one attempt at a task."""
        return self._url(
            posixpath.join(self.staging, f"attempt-{task_id:05d}-{uuid.uuid4().hex[:8]}")
        )

    def task_dir(self, task_id: int) -> str:
        return self._url(posixpath.join(self.staging, f"task-{task_id:05d}"))

    def has_staged(self, task_id: int, files: Iterable[WrittenFile]) -> bool:
        """Whether a finished task's files are still in the staging area (a resumed run
        reruns a task whose files someone removed, rather than failing at the commit)."""
        if self._listing is None:
            found = self.fs.find(self.staging) if self.fs.exists(self.staging) else []
            self._listing = set(found)
        task_dir = posixpath.join(self.staging, f"task-{task_id:05d}")
        return all(posixpath.join(task_dir, w.path) in self._listing for w in files)

    def _url(self, path: str) -> str:
        return path if isinstance(self.fs, LocalFileSystem) else self.fs.unstrip_protocol(path)

    def commit(
        self,
        files: Iterable[tuple[int, WrittenFile]],
        manifest: dict,
        extra: Iterable[tuple[str, str]] = (),
    ) -> list[WrittenFile]:
        """Move every task's files into the output directory and write ``_SUCCESS`` last.

        ``extra`` holds (URL, relative path) of other files that join the output, such as the
        quarantined rows; they are listed in the manifest apart from the data files.
        """
        if self.mode == "overwrite":
            for path in self._existing_output():
                self.fs.rm(path, recursive=True)
        others = []
        for url, relative in extra:
            target = posixpath.join(self.root, relative)
            self.fs.makedirs(posixpath.dirname(target), exist_ok=True)
            _move(url, self.fs, target, self.storage_options)
            others.append(relative)
        if others:
            manifest = {**manifest, "quarantine": sorted(others)}
        final: list[WrittenFile] = []
        for task_id, written in files:
            source = posixpath.join(self.staging, f"task-{task_id:05d}", written.path)
            target = posixpath.join(self.root, written.path)
            self.fs.makedirs(posixpath.dirname(target), exist_ok=True)
            self.fs.mv(source, target)
            final.append(written)
        final.sort(key=lambda w: w.path)
        manifest = {
            **manifest,
            "files": [{"path": w.path, "rows": w.rows, "bytes": w.bytes} for w in final],
            "rows": sum(w.rows for w in final),
            "bytes": sum(w.bytes for w in final),
        }
        with self.fs.open(posixpath.join(self.root, SUCCESS), "w") as f:
            json.dump(manifest, f, indent=2, sort_keys=True)
        self._remove_staging()
        return final

    def abort(self, keep_tasks: bool = False) -> None:
        """Remove everything this job staged, or only unfinished attempts when resumable."""
        if not self._staged:
            return
        if keep_tasks:
            for attempt in self.fs.glob(posixpath.join(self.staging, "attempt-*")):
                self.fs.rm(attempt, recursive=True)
            return
        self._remove_staging()

    def _remove_staging(self) -> None:
        if self.fs.exists(self.staging):
            self.fs.rm(self.staging, recursive=True)
        parent = posixpath.join(self.root, STAGING)
        if self.fs.exists(parent) and not self.fs.ls(parent, detail=False):
            self.fs.rmdir(parent)
        # Remove the output directory only if this job created it and it stayed empty.
        if (
            self._created_root
            and self.fs.exists(self.root)
            and not self.fs.ls(self.root, detail=False)
        ):
            self.fs.rmdir(self.root)


def _move(url: str, fs, target: str, storage_options: dict) -> None:
    """Move a file into ``fs`` at ``target``, copying when it lives on another filesystem."""
    source_fs, source = filesystem(url, storage_options)
    if type(source_fs) is type(fs):
        fs.mv(source, target)
        return
    with source_fs.open(source, "rb") as src, fs.open(target, "wb") as dst:
        dst.write(src.read())
    source_fs.rm(source)
