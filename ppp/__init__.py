"""ppp: a generic Proxy and thread-safe object Pool.

``ppp.Pool`` is the compiled twin (``ppp._pool``) when it imports and
``PPP_NO_EXTENSIONS`` does not forbid it, else the pure twin (``ppp._pool_py``).
``ppp.BACKEND`` says which: ``"cython"`` or ``"python"``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import _backend
from ._errors import PoolException, PPPException, ProxyException, TimeOut
from ._version import __version__

_impl, BACKEND = _backend.load()
if TYPE_CHECKING:  # both twins have one API; type checkers read the pure one
    from ._pool_py import Pool
else:
    Pool = _impl.Pool

from .proxy import Proxy  # noqa: E402  (Proxy builds on the active Pool)

__all__ = [
    "BACKEND",
    "PPPException",
    "Pool",
    "PoolException",
    "Proxy",
    "ProxyException",
    "TimeOut",
    "__version__",
]
