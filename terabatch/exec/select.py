"""Turn the user's ``executor=`` run option into an executor object."""

from __future__ import annotations

from typing import Any

from terabatch.errors import TerabatchError
from terabatch.exec.base import Executor

DASK_SCHEMES = ("dask://", "tcp://", "tls://")


def executor_for(spec: Any) -> Executor | None:
    """The executor that ``spec`` names; None means the local worker processes.

    ``spec`` is an executor object, a Dask scheduler address (``"dask://host:port"``) or a
    ``distributed.Client``.

    >>> executor_for(None) is None
    True
    """
    if spec is None or spec == "local":
        return None
    if isinstance(spec, str):
        if not spec.startswith(DASK_SCHEMES):
            raise TerabatchError(
                f"executor {spec!r} is not understood; pass 'local' or a Dask scheduler "
                "address such as dask://10.0.0.5:8786"
            )
        return _dask(spec)
    if type(spec).__module__.startswith("distributed"):
        return _dask(spec)
    if callable(getattr(spec, "submit", None)) and callable(getattr(spec, "close", None)):
        return spec
    raise TerabatchError(
        f"executor must be an address such as dask://host:8786 or a distributed.Client, "
        f"not {type(spec).__name__}"
    )


def _dask(spec: Any) -> Executor:
    try:
        from terabatch.exec.dask import DaskExecutor
    except ImportError as exc:
        raise TerabatchError(
            f"running on a Dask cluster needs dask.distributed ({exc}); "
            'install it with: pip install "terabatch[dask]"'
        ) from None
    return DaskExecutor(spec)
