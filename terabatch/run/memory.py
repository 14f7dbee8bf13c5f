"""Memory sizes and the real memory of a process tree."""

from __future__ import annotations

import re
import threading
import time

import psutil

from terabatch.errors import TerabatchError

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(I?B)?\s*$", re.IGNORECASE)


def parse_size(text: str | int | None) -> int | None:
    """Parse a size such as ``"4GB"``, ``"512MiB"`` or ``1000000`` into bytes (binary units).

    >>> parse_size("4GB"), parse_size("512mb"), parse_size(1024), parse_size(None)
    (4294967296, 536870912, 1024, None)
    """
    if text is None or isinstance(text, int):
        return text
    match = _SIZE.match(str(text))
    if not match:
        raise TerabatchError(f"not a size: {text!r} (write it like 4GB, 512MB or 1000000)")
    number, unit = float(match.group(1)), match.group(2).upper()
    return int(number * _UNITS[unit])


def format_size(n: float) -> str:
    """Format bytes for people.

    >>> format_size(1536), format_size(3 * 2**30)
    ('1.5 KiB', '3.0 GiB')
    """
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def tree_rss(pid: int | None = None) -> int:
    """Resident memory of a process and all its descendants, in bytes."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            continue
    return total


def process_rss() -> int:
    return psutil.Process().memory_info().rss


class MemoryMonitor:
    """Sample the tree's RSS in the background; keep the peak and the latest value.

    Finding a tree's processes scans every process of the machine (5 ms); reading their RSS is
    cheap. The tree is listed again every ``relist`` seconds (workers live for the whole job)
    and its RSS read every ``interval``: listing on every sample took 10 % of a core.
    """

    def __init__(self, interval: float = 0.05, relist: float = 1.0) -> None:
        self.interval, self.relist = interval, relist
        self.peak = 0
        self.current = 0
        self._procs: list[psutil.Process] = []
        self._listed_at = -relist
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="terabatch-memory", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> int:
        now = time.monotonic()
        if now - self._listed_at >= self.relist:
            try:
                root = psutil.Process()
                self._procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                self._procs = []
            self._listed_at = now
        total = 0
        for proc in self._procs:
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                continue
        self.current = total
        self.peak = max(self.peak, self.current)
        return self.current

    def __enter__(self) -> MemoryMonitor:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()
