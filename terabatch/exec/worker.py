"""A worker process: receive pickled calls on one pipe, send results on another.

Workers are plain ``python -m terabatch.exec.worker`` processes rather than multiprocessing
children: multiprocessing's ``spawn`` re-imports the user's main script in every worker, which
re-runs a script written without an ``if __name__ == "__main__"`` guard. Calls arrive as
cloudpickle bytes, so user functions travel by value and the worker needs nothing of the user's
code. The user's own ``print`` output goes to the worker's stdout, which is the driver's stderr.
Calls and answers are in the format of ``terabatch.exec.calls``, which Dask workers run too.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from multiprocessing.connection import Connection

from terabatch.exec.calls import answer, progress_message

PR_SET_PDEATHSIG = 1


def _follow_driver() -> None:
    """Die with the driver, and leave Ctrl-C to it.

    A worker that outlived a killed driver could still rename a finished attempt into place
    while a resumed run redoes the same task; Linux stops it the moment its parent exits. The
    terminal sends Ctrl-C to the whole process group: the driver handles it and stops us.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
        if os.getppid() == 1:  # the driver died before prctl took effect
            os._exit(1)


def serve(read_fd: int, write_fd: int) -> None:
    """Answer calls until the driver closes the pipe."""
    from terabatch.exec.runtime import configure_worker, report_progress_to

    _follow_driver()
    configure_worker()
    inbox = Connection(read_fd, writable=False)
    outbox = Connection(write_fd, readable=False)

    def report(rows: int, nbytes: int) -> None:
        with contextlib.suppress(OSError):  # a driver gone away hears of it with the answer
            outbox.send_bytes(progress_message(rows, nbytes))

    report_progress_to(report)
    while True:
        try:
            message = inbox.recv_bytes()
        except (EOFError, OSError):
            return
        try:
            outbox.send_bytes(answer(message))
        except (BrokenPipeError, OSError):
            return


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]))
    # Every call is answered and its files closed: skip the interpreter's teardown (0.15 s
    # with Polars and Arrow loaded), which the driver would wait for at the end of each job.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
