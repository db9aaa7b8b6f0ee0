"""Pick the Pool twin: the compiled one unless told otherwise or unavailable."""

from __future__ import annotations

import os
import platform
from types import ModuleType

FALSY = frozenset({"", "0", "false", "no", "off"})


def extensions_disabled(environ: os._Environ[str] | dict[str, str] = os.environ) -> bool:
    """Whether ``PPP_NO_EXTENSIONS`` asks for the pure twin (strict parsing)."""
    return environ.get("PPP_NO_EXTENSIONS", "").strip().lower() not in FALSY


def load() -> tuple[ModuleType, str]:
    """Return the active twin module and its name, ``"cython"`` or ``"python"``."""
    if not extensions_disabled() and platform.python_implementation() == "CPython":
        try:
            from . import _pool
        except ImportError:
            pass
        else:
            return _pool, "cython"
    from . import _pool_py

    return _pool_py, "python"


def load_proxy_base(backend: str) -> ModuleType:
    """The Proxy forwarding base to pair with the ``backend`` Pool twin: the compiled
    ``_proxy`` with ``"cython"`` (the pure ``_proxy_py`` if it does not import)."""
    if backend == "cython":
        try:
            from . import _proxy
        except ImportError:
            pass
        else:
            return _proxy
    from . import _proxy_py

    return _proxy_py
