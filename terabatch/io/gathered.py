"""Rows the driver gathered after a ``head`` or ``top_k``, handed to one task of a later stage.

A ``head(n)`` or ``top_k(k)`` that a shuffle or a join follows ends the parallel part of the
pipeline: the driver keeps the first ``n`` rows in task order (or the top ``k`` of every task's
top ``k``) and one task carries on with them. The planner leaves the frame empty; the driver
fills it in once the stage that gathers the rows has run.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import polars as pl

from terabatch.io.sources import Batch


@dataclass(frozen=True)
class GatheredSplit:
    """The one split of a gathered source."""

    nbytes: int = 0

    def describe(self) -> str:
        return "the rows kept by head or top_k"


@dataclass(frozen=True, eq=False)
class GatheredSource:
    """A frame the driver collected; ``slot`` names the stage whose rows fill it.

    >>> source = GatheredSource("g1", pl.DataFrame({"a": [1, 2]}))
    >>> [b.frame.height for b in source.read(GatheredSplit(), None, 1 << 20)]
    [2]
    """

    slot: str
    frame: pl.DataFrame | None = None
    format: str = "gathered rows"

    def read(
        self, split: GatheredSplit, columns: list[str] | None, chunk_bytes: int
    ) -> Iterator[Batch]:
        if self.frame is not None and self.frame.height:
            yield Batch(self.frame, split.describe)
