"""Run a command and measure its wall time and peak RSS summed over its process tree.

Every ``interval`` seconds (50 ms by default) the resident set sizes of the process and all
its descendants are summed with psutil; the largest sum is the peak tree RSS. Pages shared
between processes (e.g. copy-on-write after ``fork``) are counted once per process, so the
figure is an upper bound for multi-process contenders. Peaks shorter than the interval can
be missed.

Usage as a script:
    python bench/peak_rss.py [--timeout S] -- COMMAND [ARG ...]
"""

from __future__ import annotations

import argparse
import subprocess
import time
from typing import IO, NamedTuple

import psutil

DEFAULT_INTERVAL = 0.05


class Measurement(NamedTuple):
    """Outcome of one measured run; ``returncode`` is None if the run timed out."""

    wall_s: float
    peak_rss_bytes: int
    returncode: int | None


def tree_rss(proc: psutil.Process) -> int:
    """Sum of RSS over ``proc`` and all its descendants that are still alive."""
    total = 0
    try:
        members = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    for member in members:
        try:
            total += member.memory_info().rss
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            continue
    return total


def kill_tree(proc: psutil.Process) -> None:
    """Kill ``proc`` and all its descendants."""
    try:
        members = [*proc.children(recursive=True), proc]
    except psutil.NoSuchProcess:
        return
    for member in members:
        try:
            member.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(members, timeout=10)


def measure(
    cmd: list[str],
    *,
    timeout: float | None = None,
    interval: float = DEFAULT_INTERVAL,
    env: dict[str, str] | None = None,
    stdout: IO[bytes] | int | None = None,
    stderr: IO[bytes] | int | None = None,
) -> Measurement:
    """Run ``cmd`` to completion (or until ``timeout`` s), sampling tree RSS every ``interval`` s.

    ``stdout``/``stderr`` are passed to ``subprocess.Popen``; use files rather than pipes, since
    pipes are not drained while the command runs.
    """
    start = time.perf_counter()
    popen = subprocess.Popen(cmd, env=env, stdout=stdout, stderr=stderr)
    proc = psutil.Process(popen.pid)
    peak = 0
    while popen.poll() is None:
        peak = max(peak, tree_rss(proc))
        elapsed = time.perf_counter() - start
        if timeout is not None and elapsed > timeout:
            kill_tree(proc)
            popen.wait()
            return Measurement(elapsed, peak, None)
        time.sleep(interval)
    return Measurement(time.perf_counter() - start, peak, popen.returncode)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=None, help="seconds before killing")
    parser.add_argument("cmd", nargs=argparse.REMAINDER, help="command to run, after --")
    args = parser.parse_args()
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("no command given")
    wall_s, peak, returncode = measure(cmd, timeout=args.timeout)
    status = "timeout" if returncode is None else f"exit {returncode}"
    print(f"wall={wall_s:.2f} s peak_tree_rss={peak / 2**20:.1f} MiB {status}")


if __name__ == "__main__":
    main()
