"""ppp: a generic Proxy and thread-safe object Pool.

``ppp.Pool`` is the compiled twin (``ppp._pool``) when it imports and
``PPP_NO_EXTENSIONS`` does not forbid it, else the pure twin (``ppp._pool_py``).
``ppp.BACKEND`` says which: ``"cython"`` or ``"python"``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import _backend
from ._errors import PoolException, PPPException, ProxyException, TimeOut
from ._version import __version__

_impl, BACKEND = _backend.load()
if TYPE_CHECKING:  # both twins have one API; type checkers read the pure one
    from ._pool_py import Pool
else:
    Pool = _impl.Pool

from .proxy import Proxy  # noqa: E402  (Proxy builds on the active Pool)

#: The logger ppp writes to (``"ppp"``), as ProxyPatternPool's ``log``.
log = logging.getLogger("ppp")

# The hook types of ProxyPatternPool 11.6, under its names, for annotations.
#: ``fun(n)``: makes the n-th object (``n`` = 0, 1, 2, ...).
FunHook = Callable[[int], Any]
#: ``opener``, ``getter``, ``retter``, ``closer``: take the object; the result is ignored.
PoolHook = Callable[[Any], Any]
#: ``tracer``: the text used for an object in logs.
TraceHook = Callable[[Any], str]
#: ``stats``: per-object JSON-compatible data for ``Pool.stats()``.
StatsHook = Callable[[Any], dict[str, Any]]
#: ``health``: false (or an exception) retires the idle object.
HealthHook = Callable[[Any], bool]

__all__ = [
    "BACKEND",
    "FunHook",
    "HealthHook",
    "PPPException",
    "Pool",
    "PoolException",
    "PoolHook",
    "Proxy",
    "ProxyException",
    "StatsHook",
    "TimeOut",
    "TraceHook",
    "__version__",
    "log",
]
