"""The key of a job: a hash of its plan, its inputs and where it writes.

Two runs with the same key do the same work, so a rerun may reuse the tasks that an earlier,
unfinished run committed. The key covers everything that changes what a task writes: every
plan node and expression, each input file's path, size and modification time, the sink's
format and options, and the output URL. Storage options are left out: they hold credentials
and do not change the data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
from typing import Any

import cloudpickle
import polars as pl

SECRET_FIELDS = frozenset({"storage_options"})


def job_key(*parts: Any) -> str:
    """A short stable hash of ``parts`` (plan nodes, sinks, strings, numbers).

    >>> import polars as pl
    >>> job_key(pl.col("a") > 1, "out") == job_key(pl.col("a") > 1, "out")
    True
    >>> job_key(pl.col("a") > 1, "out") == job_key(pl.col("a") > 2, "out")
    False
    """
    text = json.dumps([_canonical(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _canonical(obj: Any) -> Any:
    """A JSON-able value that is equal exactly when two objects would do the same work."""
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    if isinstance(obj, bytes):
        return hashlib.sha256(obj).hexdigest()
    if isinstance(obj, pl.Expr):
        return {"expr": obj.meta.serialize(format="json")}
    if isinstance(obj, pl.Schema):
        return {"schema": [[name, str(dtype)] for name, dtype in obj.items()]}
    if isinstance(obj, pl.DataType | type):
        return str(obj)
    if isinstance(obj, pl.DataFrame):
        return {"frame": hashlib.sha256(obj.write_ipc(None).getvalue()).hexdigest()}
    if dataclasses.is_dataclass(obj):
        fields = {
            f.name: _canonical(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if f.name not in SECRET_FIELDS
        }
        return {type(obj).__qualname__: fields}
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, list | tuple):
        return [_canonical(v) for v in obj]
    if callable(obj):
        return _function(obj)
    return {type(obj).__qualname__: _canonical(vars(obj)) if hasattr(obj, "__dict__") else None}


def _function(fn: Any) -> dict[str, str]:
    """A function by its code: cloudpickle stores module-level functions by name only."""
    code = getattr(fn, "__code__", None)
    digest = hashlib.sha256(cloudpickle.dumps(fn))
    if code is not None:
        _hash_code(digest, code)
    name = f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', type(fn).__name__)}"
    return {"function": name, "code": digest.hexdigest()}


def _hash_code(digest: Any, code: types.CodeType) -> None:
    digest.update(code.co_code)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _hash_code(digest, const)  # its repr holds a memory address
        else:
            digest.update(repr(const).encode())
