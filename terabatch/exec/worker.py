"""A worker process: receive pickled calls on one pipe, send results on another.

Workers are plain ``python -m terabatch.exec.worker`` processes rather than multiprocessing
children: multiprocessing's ``spawn`` re-imports the user's main script in every worker, which
re-runs a script written without an ``if __name__ == "__main__"`` guard. Calls arrive as
cloudpickle bytes, so user functions travel by value and the worker needs nothing of the user's
code. The user's own ``print`` output goes to the worker's stdout, which is the driver's stderr.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import traceback
from multiprocessing.connection import Connection

import cloudpickle

PR_SET_PDEATHSIG = 1


def _error_payload(exc: BaseException) -> bytes:
    try:
        return cloudpickle.dumps(("error", exc))
    except Exception:
        from terabatch.exec.runtime import TaskFailure

        failure = TaskFailure(f"{type(exc).__name__}: {exc}", traceback.format_exc())
        return cloudpickle.dumps(("error", failure))


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
    from terabatch.exec.runtime import configure_worker

    _follow_driver()
    configure_worker()
    inbox = Connection(read_fd, writable=False)
    outbox = Connection(write_fd, readable=False)
    while True:
        try:
            message = inbox.recv_bytes()
        except (EOFError, OSError):
            return
        try:
            fn, args = cloudpickle.loads(message)
            payload = cloudpickle.dumps(("ok", fn(*args)))
        except BaseException as exc:
            payload = _error_payload(exc)
        try:
            outbox.send_bytes(payload)
        except (BrokenPipeError, OSError):
            return


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]))
