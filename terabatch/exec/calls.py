"""The wire format of a call: what every executor sends to a worker and gets back.

A call is the cloudpickle bytes of ``(fn, args)``; its answer is the cloudpickle bytes of
``("ok", result)`` or ``("error", exception)``. Local worker processes and Dask workers run
``answer``; the driver runs ``unpack``. So a user's function and exception travel the same way
(through cloudpickle: by value when defined in a script, by reference when importable) whichever
executor runs them, and an exception raised by a task comes back unchanged.

Before its answer a local worker may send progress messages (``progress_message``): how far
the running task has read. They start with a byte no pickle starts with.
"""

from __future__ import annotations

import struct
import traceback

import cloudpickle

_PROGRESS = b"P"  # a pickle starts with its protocol opcode, b"\x80"
_COUNTS = struct.Struct("<qq")


def progress_message(rows: int, nbytes: int) -> bytes:
    """A message saying the running task has read ``rows`` rows, ``nbytes`` bytes of its split.

    >>> read_progress(progress_message(10, 2048))
    (10, 2048)
    """
    return _PROGRESS + _COUNTS.pack(rows, nbytes)


def read_progress(payload: bytes) -> tuple[int, int] | None:
    """The counts of a progress message; None for an answer."""
    if not payload.startswith(_PROGRESS):
        return None
    rows, nbytes = _COUNTS.unpack_from(payload, len(_PROGRESS))
    return rows, nbytes


def _error_payload(exc: BaseException) -> bytes:
    try:
        return cloudpickle.dumps(("error", exc))
    except Exception:
        from terabatch.exec.runtime import TaskFailure

        failure = TaskFailure(f"{type(exc).__name__}: {exc}", traceback.format_exc())
        return cloudpickle.dumps(("error", failure))


def _load_error(exc: Exception) -> Exception:
    """A call that does not unpickle here: this worker lacks a module the driver has."""
    from terabatch.errors import TaskLoadError

    return TaskLoadError(
        f"a worker cannot load the task ({type(exc).__name__}: {exc}); every worker needs the "
        "driver's terabatch version and the modules that define your functions (or define "
        "them in your script, or register their module with cloudpickle.register_pickle_by_value)"
    )


def answer(message: bytes) -> bytes:
    """Run one pickled call ``(fn, args)`` and return its pickled answer for ``unpack``."""
    try:
        fn, args = cloudpickle.loads(message)
    except Exception as exc:
        return _error_payload(_load_error(exc))
    try:
        return cloudpickle.dumps(("ok", fn(*args)))
    except BaseException as exc:
        return _error_payload(exc)


def unpack(payload: bytes) -> object:
    """The result of an answer from ``answer``, or raise the exception it carries.

    >>> unpack(answer(cloudpickle.dumps((divmod, (7, 2)))))
    (3, 1)
    """
    status, value = cloudpickle.loads(payload)
    if status == "error":
        raise value
    return value
