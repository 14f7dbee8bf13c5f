"""Reduce a shuffle partition too large for a worker's room in pieces that fit.

A partition's size is known before it is loaded: its Arrow IPC files on disk, times
``EXPANSION`` in memory, times ``WORKING_FACTOR`` for the operation on it. When that exceeds the
worker's room, the reduce task streams the partition, batch by batch, into ``k`` piece files
beside it and reduces the pieces one after the other, in a fixed order:

- group_by, unique, window: pieces by a hash of the keys with another seed than the map side's,
  so every row of a key is in one piece and each piece's result is exact.
- sort: pieces are key sub-ranges cut from a sample of the partition, reduced in key order, so
  the partition comes out sorted. The rows of one key need not meet: a key too heavy for the room
  gets a piece of its own, streamed as it is (the sort is stable: equal keys keep input order).
- join: both sides are split by the same seed into the same pieces and joined pair by pair.

A piece still too large is split again with the next seed. Rows keep their input order within
a piece, so ``first``, ``last`` and ``unique(keep="first")`` stay exact. No split can separate
the rows of one key: before splitting, a sample of the keys shows whether one key alone holds
more rows than the room, and if so the task stops with a ``PartitionTooLargeError`` naming it.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import polars as pl
import pyarrow as pa

from terabatch.errors import PartitionTooLargeError
from terabatch.io.shuffle import (
    EXPANSION,
    WORKING_FACTOR,
    BatchEntry,
    PartitionedFile,
    RangeSpec,
    boundaries_from_sample,
    partition_of,
    range_partition_of,
)
from terabatch.io.storage import is_local
from terabatch.run.memory import format_size

MAX_FANOUT = 64
MAX_DEPTH = 4
SAMPLE_ROWS = 10_000
_ROW, _COUNT = "__terabatch_row", "__terabatch_count"


@dataclass(frozen=True)
class Segment:
    """Record batches ``batches`` (numbers, in file order) of the Arrow IPC file ``path``."""

    path: str
    batches: tuple[int, ...]


@dataclass(frozen=True)
class Piece:
    """Rows in record batches of Arrow IPC files, read in order: a whole partition or a piece
    of one.

    ``measured`` is their size in memory when known (written files record it); otherwise it is
    estimated from the size on disk. ``single_key`` marks a sort piece whose rows all have one
    key.
    """

    segments: tuple[Segment, ...]
    disk_bytes: int
    measured: int | None = None
    single_key: bool = False

    @property
    def memory_bytes(self) -> int:
        return self.measured if self.measured is not None else self.disk_bytes * EXPANSION


def fits(memory_bytes: float, room: int | None) -> bool:
    """Whether rows taking ``memory_bytes`` can be reduced within ``room``.

    >>> fits(100, None), fits(100, 200), fits(101, 200)
    (True, True, False)
    """
    return room is None or memory_bytes * WORKING_FACTOR <= room


# Decompressed in the task's own thread: a worker has one core (5 M rows of db-benchmark's x:
# 0.32 against 0.49 s of CPU with Arrow's threads).
_READ_OPTIONS = pa.ipc.IpcReadOptions(use_threads=False)


def _open_input(fs, path: str):
    # Arrow's own file object reads without a Python call per buffer; fsspec's elsewhere.
    return pa.OSFile(path, "rb") if is_local(fs) else fs.open(path, "rb")


def iter_batches(fs, piece: Piece, columns: list[str] | None) -> Iterator[pa.RecordBatch]:
    """A piece's record batches in order, with only ``columns`` (all when None)."""
    for segment in piece.segments:
        with _open_input(fs, segment.path) as handle:
            reader = pa.ipc.open_file(handle, options=_READ_OPTIONS)
            if columns is not None:
                names = reader.schema.names
                options = pa.ipc.IpcReadOptions(
                    included_fields=[names.index(c) for c in columns], use_threads=False
                )
                handle.seek(0)
                reader = pa.ipc.open_file(handle, options=options)
            for i in segment.batches:
                yield reader.get_batch(i)


def iter_frames(
    fs, piece: Piece, columns: list[str] | None, chunk_bytes: int
) -> Iterator[pl.DataFrame]:
    """Stream a piece's rows in order, about ``chunk_bytes`` at a time, reading only
    ``columns`` (all when None) from the files."""
    pending: list[pa.RecordBatch] = []
    size = 0
    for batch in iter_batches(fs, piece, columns):
        if pending and batch.schema != pending[0].schema:
            yield _frame(pending, columns)
            pending, size = [], 0
        pending.append(batch)
        size += batch.nbytes
        if size >= chunk_bytes:
            yield _frame(pending, columns)
            pending, size = [], 0
    if pending:
        yield _frame(pending, columns)


def _frame(batches: list[pa.RecordBatch], columns: list[str] | None) -> pl.DataFrame:
    frame = pl.from_arrow(pa.Table.from_batches(batches))
    return frame.select(columns) if columns is not None else frame


def load(fs, piece: Piece, schema: pl.Schema | None = None) -> pl.DataFrame:
    """A piece's rows as one frame (an empty frame of ``schema`` when it has none)."""
    frames = []
    for segment in piece.segments:
        with _open_input(fs, segment.path) as handle:
            reader = pa.ipc.open_file(handle, options=_READ_OPTIONS)
            batches = [reader.get_batch(i) for i in segment.batches]
            frames.append(pl.from_arrow(pa.Table.from_batches(batches, reader.schema)))
    if frames:
        return pl.concat(frames, how="vertical_relaxed") if len(frames) > 1 else frames[0]
    return pl.DataFrame(schema=schema or {})


@dataclass(frozen=True)
class Measure:
    """One streaming pass over a piece: its rows, their size in memory, evenly spaced rows of
    the key columns, and all the rows when they turned out to fit."""

    rows: int
    nbytes: int
    sample: pl.DataFrame
    frame: pl.DataFrame | None

    @property
    def row_bytes(self) -> float:
        return self.nbytes / self.rows if self.rows else 0.0


def measure(fs, piece: Piece, keys: tuple[str, ...], chunk_bytes: int, room: int) -> Measure:
    """Stream a piece once, keeping at most about ``2 * SAMPLE_ROWS`` sampled keys (all
    columns when ``keys`` is empty), and its rows while they fit ``room``."""
    step, seen, nbytes, kept = 1, 0, 0, 0
    parts: list[pl.DataFrame] = []
    rows: list[pl.DataFrame] | None = []
    for frame in iter_frames(fs, piece, None, chunk_bytes):
        nbytes += frame.estimated_size()
        if rows is not None and fits(nbytes, room):
            rows.append(frame)
        else:
            rows = None  # too large to keep: the caller reads the piece again, in pieces
        numbered = frame.select(list(keys) or frame.columns).with_columns(
            pl.int_range(seen, seen + frame.height).alias(_ROW)
        )
        picked = numbered.filter(pl.col(_ROW) % step == 0)
        parts.append(picked)
        kept += picked.height
        seen += frame.height
        while kept > 2 * SAMPLE_ROWS:
            step *= 2
            parts = [pl.concat(parts).filter(pl.col(_ROW) % step == 0)]
            kept = parts[0].height
    sample = pl.concat(parts, how="vertical_relaxed").drop(_ROW) if parts else pl.DataFrame()
    whole = pl.concat(rows, how="vertical_relaxed") if rows else None
    return Measure(seen, nbytes, sample, whole)


def heaviest(sample: pl.DataFrame) -> tuple[pl.DataFrame, float]:
    """The most frequent key of a sample (as a one-row frame) and its share of the sample.

    >>> key, share = heaviest(pl.DataFrame({"k": ["a", "b", "a", None]}))
    >>> key["k"].to_list(), share
    (['a'], 0.5)
    """
    counts = sample.group_by(sample.columns).agg(pl.len().alias(_COUNT))
    top = counts.sort([_COUNT, *sample.columns], descending=[True] + [False] * sample.width)
    return top.head(1).drop(_COUNT), top[_COUNT][0] / sample.height


def matches(key: pl.DataFrame, names: tuple[str, ...] | None = None) -> pl.Expr:
    """True for the rows equal to the one-row ``key`` (nulls equal nulls), on ``names``."""
    names = names or tuple(key.columns)
    return pl.all_horizontal(
        pl.col(n).eq_missing(pl.lit(key[c])) for n, c in zip(names, key.columns, strict=True)
    )


def count_key(fs, piece: Piece, keys: tuple[str, ...], key: pl.DataFrame, chunk_bytes: int) -> int:
    """How many rows of a piece have ``key``, exactly (reads the key columns only)."""
    match = matches(key, keys or None)
    columns = list(keys) or None
    return sum(f.filter(match).height for f in iter_frames(fs, piece, columns, chunk_bytes))


def split(
    fs,
    piece: Piece,
    numbers_of: Callable[[pl.DataFrame], pl.Series],
    path: str,
    chunk_bytes: int,
) -> dict[int, Piece]:
    """Stream a piece into the file ``path`` of ``fs``, in pieces numbered by ``numbers_of``."""
    file = PartitionedFile(fs, path)
    try:
        for frame in iter_frames(fs, piece, None, chunk_bytes):
            file.write_numbered(frame, numbers_of(frame))
        file.close()
    except BaseException:
        file.abort()
        raise
    return pieces_of(path, file.batches)


def pieces_of(path: str, batches: list[BatchEntry]) -> dict[int, Piece]:
    """The pieces of one partitioned file, by number, from its index.

    >>> pieces = pieces_of("f.arrow", [BatchEntry(1, 5, 50, 80), BatchEntry(0, 2, 20, 30),
    ...     BatchEntry(1, 1, 10, 16)])
    >>> pieces[1].segments[0].batches, pieces[1].disk_bytes, pieces[1].memory_bytes
    ((0, 2), 60, 96)
    """
    numbers: dict[int, list[int]] = {}
    for i, entry in enumerate(batches):
        numbers.setdefault(entry.partition, []).append(i)
    return {
        n: Piece(
            (Segment(path, tuple(found)),),
            sum(batches[i].disk_bytes for i in found),
            sum(batches[i].memory_bytes for i in found),
        )
        for n, found in numbers.items()
    }


def fanout(memory_bytes: float, room: int) -> int:
    """How many pieces to cut: twice what the room needs, for uneven pieces."""
    return min(MAX_FANOUT, max(2, -(-int(2 * memory_bytes * WORKING_FACTOR) // room)))


def _remove_file(fs, path: str) -> None:
    if fs.exists(path):
        fs.rm(path)


@dataclass(frozen=True)
class Splitter:
    """Where a reduce task splits its partition, and within which room."""

    fs: object
    room: int
    chunk_bytes: int
    scratch: str
    where: str

    @property
    def split_chunk(self) -> int:
        # Larger batches than a map task's chunk while the room allows: fewer, larger record
        # batches in the piece files.
        return max(self.chunk_bytes, self.room // 4)

    def too_heavy(self, what: str, rows: int, nbytes: float) -> PartitionTooLargeError:
        return PartitionTooLargeError(
            f"{self.where}: {what} alone has {rows:,} rows, about {format_size(nbytes)} in "
            f"memory and {format_size(nbytes * WORKING_FACTOR)} to reduce, more than a worker's "
            f"{format_size(self.room)} of room allows; raise "
            "memory= or filter that key out first (aggregations that combine per batch, like "
            "sum, mean, count, min and max, and unique with keep='any', 'first' or 'last' "
            "never need a key's rows together)"
        )

    def _depth(self, name: str, nbytes: int) -> int:
        """How many splits led to this piece, plus one: the seed of its own split."""
        depth = name.count("-") + 1
        if depth > MAX_DEPTH:
            raise PartitionTooLargeError(
                f"{self.where}: about {format_size(nbytes)} of rows still do not fit a "
                f"worker's {format_size(self.room)} of room after splitting the partition "
                f"{MAX_DEPTH} times; raise memory="
            )
        return depth

    def _measure(self, piece: Piece, keys: tuple[str, ...]) -> Measure:
        return measure(self.fs, piece, keys, self.split_chunk, self.room)

    def _check_heaviest(self, piece: Piece, keys: tuple[str, ...], found: Measure) -> None:
        """Stop if one key's rows alone cannot fit: no split can separate them."""
        key, share = heaviest(found.sample)
        if fits(2 * share * found.nbytes, self.room):
            return  # clearly fits, by the sample
        exact = count_key(self.fs, piece, keys, key, self.split_chunk)
        if not fits(exact * found.row_bytes, self.room):
            raise self.too_heavy(f"key {key.row(0, named=True)}", exact, exact * found.row_bytes)

    def hashed(
        self, piece: Piece, keys: tuple[str, ...], name: str = "p"
    ) -> Iterator[pl.DataFrame]:
        """Whole pieces of a partition, by a hash of ``keys`` (all columns when empty)."""
        if fits(piece.memory_bytes, self.room):
            yield load(self.fs, piece)
            return
        found = self._measure(piece, keys)
        if found.frame is not None:
            yield found.frame
            return
        self._check_heaviest(piece, keys, found)
        depth = self._depth(name, found.nbytes)
        k = fanout(found.nbytes, self.room)
        path = posixpath.join(self.scratch, f"{name}.arrow")
        pieces = split(
            self.fs, piece, lambda f: partition_of(f, keys, k, seed=depth), path, self.split_chunk
        )
        for n in sorted(pieces):
            yield from self.hashed(pieces[n], keys, f"{name}-{n}")
        _remove_file(self.fs, path)

    def ranged(self, piece: Piece, spec: RangeSpec, name: str = "p") -> Iterator[pl.DataFrame]:
        """Pieces of a sort partition, in key order; a piece of one key is streamed."""
        if piece.single_key:
            yield from iter_frames(self.fs, piece, None, self.split_chunk)
            return
        if fits(piece.memory_bytes, self.room):
            yield load(self.fs, piece)
            return
        found = self._measure(piece, spec.by)
        if found.frame is not None:
            yield found.frame
            return
        self._depth(name, found.nbytes)
        cuts = boundaries_from_sample(found.sample, spec, fanout(found.nbytes, self.room))
        key, share = heaviest(found.sample)
        heavy = None if fits(share * found.nbytes, self.room) else key
        if heavy is not None:
            # A range starts at the heavy key, so that its rows and the rows after it in that
            # range can be told apart: its own piece first, then the rest of the range.
            cuts = pl.concat([cuts, heavy]).sort(
                list(spec.by), descending=list(spec.descending), nulls_last=spec.nulls_last
            )
        ranged = replace(spec, boundaries=cuts)
        own = None if heavy is None else int(range_partition_of(heavy, ranged)[0])

        def numbers_of(frame: pl.DataFrame) -> pl.Series:
            numbers = range_partition_of(frame, ranged).cast(pl.Int64)
            if heavy is None:
                return numbers
            other = ~frame.select(matches(heavy, spec.by)).to_series()
            return numbers + (numbers > own) + ((numbers == own) & other)

        path = posixpath.join(self.scratch, f"{name}.arrow")
        pieces = split(self.fs, piece, numbers_of, path, self.split_chunk)
        for n in sorted(pieces):
            sub = replace(pieces[n], single_key=n == own)
            yield from self.ranged(sub, spec, f"{name}-{n}")
        _remove_file(self.fs, path)

    def paired(
        self,
        left: Piece,
        right: Piece,
        on: tuple[tuple[str, ...], tuple[str, ...]],
        schemas: tuple[pl.Schema, pl.Schema],
        name: str = "p",
    ) -> Iterator[tuple[pl.DataFrame, pl.DataFrame]]:
        """Pairs of join pieces, both sides split on their keys by the same hash."""
        if fits(left.memory_bytes + right.memory_bytes, self.room):
            yield load(self.fs, left, schemas[0]), load(self.fs, right, schemas[1])
            return
        found = (self._measure(left, on[0]), self._measure(right, on[1]))
        nbytes = found[0].nbytes + found[1].nbytes
        if fits(nbytes, self.room):
            yield tuple(
                m.frame if m.frame is not None else load(self.fs, p, schema)
                for m, p, schema in zip(found, (left, right), schemas, strict=True)
            )
            return
        self._check_join_key((left, right), on, found)
        depth = self._depth(name, nbytes)
        k = fanout(nbytes, self.room)
        paths = [posixpath.join(self.scratch, f"{name}-{side}.arrow") for side in ("left", "right")]
        sides = [
            split(
                self.fs,
                piece,
                lambda f, keys=keys: partition_of(f, keys, k, seed=depth),
                path,
                self.split_chunk,
            )
            for path, piece, keys in zip(paths, (left, right), on, strict=True)
        ]
        empty = Piece((), 0, 0)
        for n in range(k):
            pair = sides[0].get(n, empty), sides[1].get(n, empty)
            if pair[0].segments or pair[1].segments:
                yield from self.paired(*pair, on, schemas, f"{name}-{n}")
        for path in paths:
            _remove_file(self.fs, path)

    def _check_join_key(self, pieces, on, found: tuple[Measure, Measure]) -> None:
        """Stop if the rows of one key, on both sides together, alone cannot fit."""
        for side in found:
            if not side.rows:
                continue
            key, _ = heaviest(side.sample)  # key columns by position: either side's names match
            counts = [
                count_key(self.fs, piece, keys, key, self.split_chunk) if m.rows else 0
                for piece, keys, m in zip(pieces, on, found, strict=True)
            ]
            nbytes = sum(c * m.row_bytes for c, m in zip(counts, found, strict=True))
            if not fits(nbytes, self.room):
                named = key.rename(dict(zip(key.columns, on[0], strict=True)))
                what = f"join key {named.row(0, named=True)} ({counts[0]:,} left and "
                what += f"{counts[1]:,} right rows)"
                raise self.too_heavy(what, sum(counts), nbytes)
