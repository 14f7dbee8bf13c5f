"""Cut line-oriented files (CSV, JSON Lines) into byte ranges and chunks that hold whole records.

A record ends at a newline. With ``quoted=True`` a newline only ends a record when it is outside
double quotes; RFC 4180 escapes a quote by doubling it, so "outside quotes" is exactly "an even
number of quote characters since the last record boundary". Ranges and chunks always start at a
record boundary, which is what makes the parity test local to the bytes at hand.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import BinaryIO

QUOTE = b'"'
NEWLINE = b"\n"
_WINDOW = 1 << 16
_SCAN_BLOCK = 8 << 20


def last_record_end(buf: bytes, quoted: bool, start: int = 0) -> int:
    """Return the offset just after the last record-ending newline in ``buf[start:]``, or -1.

    ``buf[start:]`` must begin at a record boundary when ``quoted`` is true.

    >>> last_record_end(b'a,b\\n1,"x\\ny"\\n2,', quoted=True)
    12
    >>> last_record_end(b'a,b\\n1,"x\\ny"\\n2,', quoted=False)
    12
    >>> last_record_end(b'1,"x\\ny', quoted=True)
    -1
    """
    pos = buf.rfind(NEWLINE, start)
    if not quoted:
        return pos + 1 if pos >= 0 else -1
    total = buf.count(QUOTE, start)
    while pos >= 0:
        if (total - buf.count(QUOTE, pos)) % 2 == 0:
            return pos + 1
        pos = buf.rfind(NEWLINE, start, pos)
    return -1


def _next_line_start(f: BinaryIO, offset: int, size: int) -> int:
    """First offset >= ``offset`` that follows a newline (ignoring quotes), or ``size``."""
    f.seek(offset - 1)
    pos = offset - 1
    while pos < size:
        window = f.read(_WINDOW)
        if not window:
            return size
        hit = window.find(NEWLINE)
        if hit >= 0:
            return pos + hit + 1
        pos += len(window)
    return size


def _quoted_boundaries(f: BinaryIO, data_start: int, size: int, targets: list[int]) -> list[int]:
    """Record starts at or after each target, tracking quote parity from ``data_start``."""
    found: list[int] = []
    f.seek(data_start)
    pos, parity, want = data_start, 0, 0
    while want < len(targets) and pos < size:
        block = f.read(_SCAN_BLOCK)
        if not block:
            break
        cursor = 0
        while want < len(targets):
            target = targets[want]
            if target - 1 >= pos + len(block):
                break
            begin = max(target - 1 - pos, cursor)
            # parity at `begin`, from the parity at `cursor`
            parity = (parity + block.count(QUOTE, cursor, begin)) % 2
            cursor = begin
            hit = -1
            while True:
                nl = block.find(NEWLINE, cursor)
                if nl < 0:
                    break
                parity = (parity + block.count(QUOTE, cursor, nl)) % 2
                cursor = nl + 1
                if parity == 0:
                    hit = nl
                    break
            if hit < 0:
                break
            found.append(pos + hit + 1)
            while want < len(targets) and targets[want] <= pos + hit + 1:
                want += 1
        parity = (parity + block.count(QUOTE, cursor)) % 2
        pos += len(block)
    return found


def plan_ranges(
    f: BinaryIO, size: int, data_start: int, target_bytes: int, quoted: bool
) -> list[tuple[int, int]]:
    """Cut ``[data_start, size)`` of a seekable file into ranges of about ``target_bytes``.

    Every range starts and ends on a record boundary, so reading the ranges one after another
    gives exactly the records of the whole file, each once.

    >>> import io
    >>> data = b"h\\n" + b"".join(b"%d\\n" % i for i in range(10))
    >>> plan_ranges(io.BytesIO(data), len(data), 2, 7, quoted=False)
    [(2, 10), (10, 16), (16, 22)]
    """
    if data_start >= size:
        return []
    targets = list(range(data_start + target_bytes, size, max(target_bytes, 1)))
    if quoted:
        cuts = _quoted_boundaries(f, data_start, size, targets)
    else:
        cuts = []
        for target in targets:
            if cuts and target <= cuts[-1]:
                continue
            cut = _next_line_start(f, target, size)
            if cut >= size:
                break
            cuts.append(cut)
    edges = [data_start, *[c for c in cuts if data_start < c < size], size]
    edges = sorted(set(edges))
    return list(itertools.pairwise(edges))


def iter_record_chunks(
    stream: BinaryIO, length: int | None, chunk_bytes: int, quoted: bool
) -> Iterator[bytes]:
    """Read ``length`` bytes (or to EOF) and yield chunks of about ``chunk_bytes`` whole records.

    The stream must be positioned at a record boundary. The last chunk is whatever remains, which
    may lack a final newline. A seekable stream is rewound to the end of the last whole record
    instead of carrying the partial record over, which saves copying every chunk once more.

    >>> import io
    >>> list(iter_record_chunks(io.BytesIO(b'1\\n"a\\nb"\\n3'), None, 2, quoted=True))
    [b'1\\n', b'"a\\nb"\\n3']
    """
    seekable = stream.seekable()
    remaining = length
    carry = b""
    want = chunk_bytes
    while remaining is None or remaining > 0:
        size = want if remaining is None else min(want, remaining)
        data = stream.read(size)
        if not data:
            break
        buf = carry + data if carry else data
        at_end = len(data) < size or (remaining is not None and remaining == len(data))
        cut = len(buf) if at_end else last_record_end(buf, quoted)
        if cut <= 0:
            # One record longer than the chunk: read on, in bigger steps.
            if seekable:
                stream.seek(-len(buf), 1)
                carry, want = b"", want * 2
            else:
                carry = buf
                if remaining is not None:
                    remaining -= len(data)
            continue
        if seekable:
            stream.seek(cut - len(buf), 1)
            consumed = cut
        else:
            consumed, carry = len(data), buf[cut:]
        if remaining is not None:
            remaining -= consumed
        want = chunk_bytes
        yield buf[:cut] if cut < len(buf) else buf
    if carry:
        yield carry
