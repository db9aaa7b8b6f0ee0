"""A typed usage sample of ppp: ``mypy --strict`` must accept it against an installed wheel.

``make wheels-test`` copies this file out of the source tree, runs it with each
wheel's interpreter, and type-checks it with ``mypy --strict --warn-unused-ignores``
against that interpreter's site-packages (so the wheel's ``py.typed`` and
``_pool.pyi`` are what mypy reads).  The ``assert_type`` lines pin the public
types: an API typed as ``Any`` fails them.  Each ``# type: ignore[code]`` in
``_misuses`` marks a call mypy must reject: with ``--warn-unused-ignores``, a
misuse that type-checks is reported as an unused ignore, so the check fails.
"""

from __future__ import annotations

import sqlite3
import sys
from typing import TYPE_CHECKING, Any

import ppp
from ppp import _pool, _pool_py

if TYPE_CHECKING:
    from typing_extensions import assert_type
else:

    def assert_type(value: object, _expected: object) -> object:
        """Runtime stand-in: the check itself is mypy's."""
        return value


def connect(n: int) -> sqlite3.Connection:
    """Create the ``n``-th connection (the pool numbers its creations 0, 1, 2, ...)."""
    conn = sqlite3.connect(":memory:", check_same_thread=False)
    conn.execute("CREATE TABLE t (n INTEGER)")
    conn.execute("INSERT INTO t VALUES (?)", (n,))
    return conn


def close(conn: sqlite3.Connection) -> None:
    conn.close()


def use_pool() -> int:
    """The README's quick start, typed: get/ret, ``obj()``, ``stats()``, ``shutdown()``."""
    pool = ppp.Pool(connect, max_size=2, min_size=1, timeout=5.0, closer=close)
    conn: sqlite3.Connection = pool.get(timeout=1.0)
    try:
        (first,) = conn.execute("SELECT n FROM t").fetchone()
    finally:
        pool.ret(conn)
    with pool.obj(timeout=1.0) as again:
        assert again is conn, "LIFO: the connection just returned comes back first"
    stats = pool.stats()
    assert_type(stats, dict[str, Any])
    nobjs: int = stats["nobjs"]
    assert_type(str(pool), str)
    pool.shutdown()
    assert first == 0 and nobjs == 1, (first, nobjs)
    return nobjs


def use_errors() -> str:
    """The exception hierarchy, as ProxyPatternPool's: TimeOut is a PoolException."""
    with ppp.Pool(connect, max_size=1, min_size=0, closer=close) as pool:
        held = pool.get()
        try:
            pool.get(timeout=0)
        except ppp.TimeOut as exc:
            assert_type(exc, ppp.TimeOut)
            as_pool_error: ppp.PoolException = exc
            as_base: ppp.PPPException = as_pool_error
            message = str(as_base)
        else:
            raise AssertionError("get(timeout=0) on a full pool must raise TimeOut")
        finally:
            pool.ret(held)
    proxy_error: ppp.PPPException = ppp.ProxyException("not initialised")
    assert "timeout after" in message, message
    return f"{message[:13]}; {type(proxy_error).__name__}"


def use_proxy() -> int:
    """A Proxy over a pool: each thread gets its own connection, attributes forwarded."""
    db = ppp.Proxy(fun=connect, max_size=2, scope=ppp.Proxy.Scope.THREAD, closer=close)
    assert_type(db, ppp.Proxy)
    (n,) = db.execute("SELECT n FROM t").fetchone()  # forwarded to the connection
    assert_type(db._has_obj(), bool)
    with db._obj(timeout=1.0) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    db._ret_obj()
    shared = ppp.Proxy(obj=sqlite3.connect(":memory:", check_same_thread=False))
    shared.close()
    return int(n)


def use_twins() -> list[str]:
    """Both twins are typed: the compiled one through its stub ``ppp/_pool.pyi``."""
    backends = []
    for twin in (_pool.Pool(connect, min_size=0), _pool_py.Pool(connect, min_size=0)):
        assert_type(twin.stats(), dict[str, Any])
        backends.append(twin._backend)
        twin.shutdown()
    return backends


def _misuses() -> None:
    """Calls mypy must reject; never run."""
    ppp.Pool(connect, max_size="8")  # type: ignore[arg-type]
    ppp.Pool(connect, bogus=1)  # type: ignore[call-arg]
    ppp.Pool(42)  # type: ignore[arg-type]
    pool = ppp.Pool(connect)
    pool.get(timeout="soon")  # type: ignore[arg-type]
    pool.shutdown(delay=None)  # type: ignore[arg-type]
    _pool.Pool(connect).get(timeout="soon")  # type: ignore[arg-type]
    _pool_py.Pool(connect, health_freq="often")  # type: ignore[arg-type]
    ppp.Proxy(fun=42)  # type: ignore[arg-type]
    ppp.Proxy(fun=connect)._get_obj(timeout="soon")  # type: ignore[arg-type]


def main() -> int:
    backend: str = ppp.BACKEND
    version: str = ppp.__version__
    print(f"ppp {version} backend={backend}: {use_pool()} object(s)")
    print(f"errors: {use_errors()}")
    print(f"proxy: creation {use_proxy()}")
    print(f"twins: {', '.join(use_twins())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
