"""Line-oriented inputs (CSV, JSON Lines): opening, decompression, splits and record chunks.

Both formats read a split as a sequence of chunks of whole records, parse each chunk in one
call, and only on a problem fall back to a slow path that names the exact line. This module owns
everything the two formats share: where a split starts, how lines are counted for messages.
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import pyarrow as pa

from terabatch.errors import InputReadError
from terabatch.io.files import FileInfo, is_local, open_input
from terabatch.io.schema_drift import Layout
from terabatch.io.splits import iter_record_chunks, plan_ranges

PYARROW_CODEC = {"gzip": "gzip", "zstd": "zstd", "bz2": "bz2"}
_TAIL_WINDOW = 1 << 16


@dataclass(frozen=True)
class TextSplit:
    """A byte range ``[start, end)`` of a file's records; ``end`` is None for a compressed file.

    ``first_line`` is the line number of ``start`` when known without reading the file up to
    it: for the first split of each file.
    ``layout`` holds the file's own columns when they differ from the dataset's (schema union).
    """

    file: FileInfo
    start: int
    end: int | None
    layout: Layout | None = None
    first_line: int | None = None

    @property
    def nbytes(self) -> int:
        return self.file.size if self.end is None else self.end - self.start

    def describe(self) -> str:
        if self.end is None or (self.start <= 0 and self.end >= self.file.size):
            return self.file.path
        return f"{self.file.path} (bytes {self.start}-{self.end})"


@dataclass(frozen=True)
class Chunk:
    """Whole records read from a split, and the offset of its first byte in the split."""

    data: bytes
    offset: int


def open_text(file: FileInfo, storage_options: dict) -> BinaryIO:
    """Open a file for reading, decompressing by its suffix."""
    if file.compression is None:
        return open_input(file, storage_options)
    # The decompressor reads 64 KiB at a time: a read-ahead buffer saves a request per read.
    raw = open_input(file, storage_options, sequential=True)
    return pa.CompressedInputStream(pa.PythonFile(raw, mode="r"), PYARROW_CODEC[file.compression])


def read_prefix(file: FileInfo, storage_options: dict, nbytes: int) -> bytes:
    """Read the first ``nbytes`` (decompressed) bytes of a file; a one-line error on failure."""
    with open_text(file, storage_options) as f:
        try:
            return f.read(nbytes)
        except OSError as exc:
            raise InputReadError(f"{file.path}: cannot read ({_reason(exc, file)})") from None


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _reason(exc: BaseException, file: FileInfo) -> str:
    text = _first_line(exc)
    if file.compression:
        return f"corrupt or truncated {file.compression} stream: {text}"
    return text


def strip_bom(data: bytes) -> tuple[bytes, int]:
    """Remove a UTF-8 byte order mark, returning the data and how many bytes were removed."""
    if data.startswith(codecs.BOM_UTF8):
        return data[len(codecs.BOM_UTF8) :], len(codecs.BOM_UTF8)
    return data, 0


def plan_splits(
    file: FileInfo, storage_options: dict, data_start: int, target_bytes: int, quoted: bool
) -> list[TextSplit]:
    """Cut one file into splits; a compressed file is one split, as it cannot be entered midway."""
    first_line = read_prefix(file, storage_options, data_start).count(b"\n") + 1
    if file.compression is not None:
        return [TextSplit(file, data_start, None, first_line=first_line)]
    with open_input(file, storage_options) as f:
        ranges = plan_ranges(f, file.size, data_start, target_bytes, quoted)
    return [
        TextSplit(file, start, end, first_line=first_line if start == data_start else None)
        for start, end in ranges
    ]


def iter_chunks(
    split: TextSplit, storage_options: dict, chunk_bytes: int, quoted: bool
) -> Iterator[Chunk]:
    """Yield the split's records in chunks; line numbers are only counted when asked for."""
    if split.end is not None and not quoted and is_local(split.file.path):
        yield from _local_chunks(split, storage_options, chunk_bytes)
        return
    lines = 0  # whole lines yielded from a compressed stream, to say where it broke
    with open_text(split.file, storage_options) as f:
        try:
            if split.end is None:
                _skip(f, split.start)
            else:
                f.seek(split.start)
            length = None if split.end is None else split.end - split.start
            offset = 0
            for data in iter_record_chunks(f, length, chunk_bytes, quoted):
                if split.file.compression is not None:
                    lines += data.count(b"\n")
                yield Chunk(data, offset)
                offset += len(data)
        except OSError as exc:
            if split.file.compression is None:
                raise InputReadError(
                    f"{split.file.path}: cannot read ({_reason(exc, split.file)})"
                ) from None
            where = ""
            if lines:
                where = f" somewhere after line {line_of(split, storage_options, 0) - 1 + lines:,}"
            raise InputReadError(
                f"{split.file.path}: corrupt or truncated {split.file.compression} stream{where} "
                f"({_first_line(exc)}); restore the file from a good copy or remove it"
            ) from None


def _local_chunks(split: TextSplit, storage_options: dict, chunk_bytes: int) -> Iterator[Chunk]:
    """Chunks of a local uncompressed file, each read with one ``pread`` of whole records.

    The end of each chunk's last record is found first by reading back from the chunk's end,
    so the chunk itself is read straight into the ``bytes`` the parser takes: no second copy.
    """
    assert split.end is not None
    path = split.file.path
    handle = open_input(split.file, storage_options)
    try:
        fd = handle.fileno()
        pos = split.start
        while pos < split.end:
            cut = _record_end(fd, pos, split.end, chunk_bytes)
            data = _pread_exactly(fd, cut - pos, pos, path)
            yield Chunk(data, pos - split.start)
            pos = cut
    except OSError as exc:
        raise InputReadError(f"{path}: cannot read ({_reason(exc, split.file)})") from None
    finally:
        handle.close()


def _record_end(fd: int, pos: int, end: int, chunk_bytes: int) -> int:
    """The end of the last whole line within ``chunk_bytes`` of ``pos`` (the split's end at
    most); a line longer than ``chunk_bytes`` ends the chunk wherever it ends."""
    stop = min(pos + chunk_bytes, end)
    if stop == end:
        return end
    back = stop
    while back > pos:
        window = os.pread(fd, min(_TAIL_WINDOW, back - pos), max(pos, back - _TAIL_WINDOW))
        hit = window.rfind(b"\n")
        if hit >= 0:
            return back - len(window) + hit + 1
        back -= len(window)
    # No line ends within the chunk: it ends after it.
    forward = stop
    while forward < end:
        window = os.pread(fd, min(_TAIL_WINDOW, end - forward), forward)
        if not window:
            return end
        hit = window.find(b"\n")
        if hit >= 0:
            return forward + hit + 1
        forward += len(window)
    return end


def _pread_exactly(fd: int, nbytes: int, offset: int, path: str) -> bytes:
    data = os.pread(fd, nbytes, offset)
    if len(data) != nbytes:
        raise InputReadError(f"{path}: file shrank during the run (it was planned larger); rerun")
    return data


def _skip(f: BinaryIO, nbytes: int) -> None:
    while nbytes > 0:
        got = f.read(min(nbytes, 1 << 20))
        if not got:
            return
        nbytes -= len(got)


def line_of(split: TextSplit, storage_options: dict, offset_in_split: int) -> int:
    """The 1-based line number, in the whole file, of a byte of a split.

    Counting means reading the file up to that byte, so it only happens for error messages.
    """
    remaining = split.start + offset_in_split
    newlines = 0
    with open_text(split.file, storage_options) as f:
        while remaining > 0:
            block = f.read(min(remaining, 8 << 20))
            if not block:
                break
            newlines += block.count(b"\n")
            remaining -= len(block)
    return newlines + 1


def count_lines(data: bytes) -> int:
    """The number of line breaks in ``data``.

    >>> count_lines(b"a\\nb\\n")
    2
    """
    return int(np.count_nonzero(np.frombuffer(data, dtype=np.uint8) == 10))
