"""Stub of the compiled Pool twin (``ppp/_pool.pyx``); checked by mypy's stubtest."""

from contextlib import AbstractContextManager
from typing import Any, final

from typing_extensions import disjoint_base

from ._common import PoolBase

__all__ = ["Pool"]

@disjoint_base
class _Slot:
    obj: Any
    holder: Any
    stack: Any
    n: int
    uses: int
    seq: int
    pos: int
    state: int
    created: float
    last_get: float
    last_ret: float
    warned: bool
    def __init__(self, obj: Any, n: int, now: float) -> None: ...

@disjoint_base
class _Core:
    _slots: dict[int, _Slot]
    _avail: list[_Slot]
    _waiters: Any
    _nusing: int
    _nuses: int
    _nreturns: int
    _max_use: int
    _max_lifetime: float
    _shutdown: bool
    _timed: bool
    _leak_trace: bool
    _clock: Any
    _getter: Any
    _retter: Any
    def _acquire(self) -> None: ...
    def _release(self) -> None: ...
    def _now(self) -> float: ...
    def get(self, /, timeout: float | None = None) -> Any: ...
    def obj(self, timeout: float | None = None) -> AbstractContextManager[Any]: ...

@final
class _Lease:
    def __enter__(self) -> Any: ...
    def __exit__(self, exc_type: object, exc: object, tb: object) -> None: ...

class Pool(_Core, PoolBase):
    _Slot: type[_Slot]
    _backend: str
    def ret(self, /, obj: Any) -> None: ...
    def _init_core(self) -> None: ...
