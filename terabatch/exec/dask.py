"""The Dask executor: run terabatch's tasks on the workers of an existing Dask cluster.

terabatch brings no scheduler of its own to a cluster. Each call becomes one Dask task
(``pure=False``, so a resubmitted call is a new task) carrying the call as the same cloudpickle
bytes the local worker processes receive (``terabatch.exec.worker.answer``). The user's
exceptions therefore come back inside the answer, unchanged, and a failed Dask task means the
cluster failed, not the user's code:

- a worker lost mid-call (``KilledWorker``) becomes ``WorkerDied``, which the shared scheduling
  loop resubmits. Dask's own ``allowed-failures`` may already rerun the task on another worker;
  when it gives up instead (a scheduler configured with ``allowed-failures: 0`` gives up at
  once), one lost worker still does not fail the job;
- a lost scheduler stops the job with ``ClusterError``: a new scheduler knows nothing of the
  calls, so there is nothing to wait for;
- any other failure (typically a worker without terabatch) is a ``ClusterError`` saying what the
  workers need.

Workers need terabatch (the driver's version) and every package the user's functions import;
inputs, outputs and the run directory must be paths that every worker reaches.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import CancelledError, Future

import cloudpickle
import distributed

import terabatch
from terabatch.errors import ClusterError, TerabatchError
from terabatch.exec.base import WorkerDied
from terabatch.exec.calls import answer, unpack

CONNECT_TIMEOUT = 10.0
CLOSE_TIMEOUT = 10.0
_LOST = "scheduler-connection-lost"


def scheduler_address(spec: str) -> str:
    """The Dask address of an ``executor=`` string: ``dask://`` means Dask's ``tcp://``.

    >>> scheduler_address("dask://10.0.0.5:8786")
    'tcp://10.0.0.5:8786'
    """
    return "tcp://" + spec.removeprefix("dask://") if spec.startswith("dask://") else spec


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _connect(address: str) -> distributed.Client:
    try:
        return distributed.Client(address, timeout=CONNECT_TIMEOUT, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ClusterError(
            f"cannot connect to the Dask scheduler at {address} ({_first_line(exc)}); check that "
            "`dask scheduler` is running there and that this machine can reach its port"
        ) from None


def _settle(bridge: Future, outcome: Callable[[], object]) -> None:
    """Give the concurrent future the outcome, unless the scheduling loop cancelled it."""
    if not bridge.set_running_or_notify_cancel():
        return
    try:
        bridge.set_result(outcome())
    except BaseException as exc:
        bridge.set_exception(exc)


class DaskExecutor:
    """Run calls as tasks on a Dask cluster.

    ``spec`` is a scheduler address (``"dask://host:8786"``, ``"tcp://host:8786"``) or a
    ``distributed.Client``. A client passed in stays open; one made here is closed by ``close``.
    """

    def __init__(self, spec: str | distributed.Client) -> None:
        if isinstance(spec, str):
            self.address = scheduler_address(spec)
            self._client = _connect(self.address)
            self._owns_client = True
        else:
            if spec.asynchronous:
                raise TerabatchError(
                    "executor= needs a synchronous distributed.Client (asynchronous=False)"
                )
            self._client = spec
            self._owns_client = False
            self.address = spec.scheduler.address
        # The calls still on the cluster, so that close() can cancel them.
        self._calls: dict[str, distributed.Future] = {}
        self._lock = threading.Lock()
        self._workers = 1
        self._closed = False

    @property
    def workers(self) -> int:
        """Worker threads in the cluster now (at least 1); clusters grow and shrink."""
        if self._client.status == "running":
            self._workers = max(1, sum(self._client.nthreads().values()))
        return self._workers

    def submit(self, fn: Callable, *args: object) -> Future:
        bridge: Future = Future()
        if self._client.status != "running":
            bridge.set_exception(self._lost(f"the client is {self._client.status}"))
            return bridge
        call = self._client.submit(
            answer,
            cloudpickle.dumps((fn, args)),
            key=f"terabatch-task-{uuid.uuid4().hex}",
            pure=False,
        )
        with self._lock:
            self._calls[call.key] = call
        call.add_done_callback(lambda done: self._answered(done, bridge))
        return bridge

    def _answered(self, call: distributed.Future, bridge: Future) -> None:
        # Runs on Dask's callback thread; fetching the answer from the worker happens here.
        with self._lock:
            self._calls.pop(call.key, None)
        _settle(bridge, lambda: unpack(self._payload(call)))

    def _payload(self, call: distributed.Future) -> bytes:
        """The answer's bytes, or the cluster's failure translated for the scheduling loop."""
        try:
            return call.result()
        except CancelledError as exc:
            if getattr(exc, "reason", _LOST) == _LOST or self._client.status != "running":
                raise self._lost("the connection closed") from None
            raise WorkerDied(f"the Dask task was cancelled ({exc.reason})") from None
        except distributed.KilledWorker as exc:
            worker = getattr(exc.last_worker, "address", exc.last_worker)
            raise WorkerDied(f"Dask worker {worker} died while running it") from None
        except (OSError, TimeoutError) as exc:
            if self._client.status != "running":
                raise self._lost(_first_line(exc)) from None
            raise
        except Exception as exc:
            while exc.__cause__ is not None:  # Dask wraps the worker's error in its own
                exc = exc.__cause__
            raise ClusterError(
                f"a Dask worker could not run a terabatch task: {type(exc).__name__}: "
                f"{_first_line(exc)}; every worker needs terabatch {terabatch.__version__} "
                "and the packages your functions import"
            ) from None

    def _lost(self, reason: str) -> ClusterError:
        return ClusterError(
            f"lost the Dask scheduler at {self.address}: {reason}; the run can be resumed by "
            "running the same command again"
        )

    def close(self) -> None:
        """Cancel the calls still on the cluster; close the client if it was made here."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            calls = list(self._calls.values())
            self._calls.clear()
        connected = self._client.status == "running"
        if calls and connected:
            self._client.cancel(calls)
        if not self._owns_client:
            return
        if connected:
            self._client.close(timeout=CLOSE_TIMEOUT)
            return
        # After losing the scheduler the client is still trying to reconnect; closing it cancels
        # that attempt, which Dask logs as an error with a traceback after our one-line message.
        logger = logging.getLogger("distributed.client")
        disabled, logger.disabled = logger.disabled, True
        try:
            self._client.close(timeout=CLOSE_TIMEOUT)
        finally:
            logger.disabled = disabled
