"""Proxy benchmarks: attribute reads and method calls per scope, and thread churn.

Each read or call group has a direct access to the plain object as its
reference.  ppp's cases run on both twins through the tests' ``backend``
fixture: the Proxy class over that twin's Pool and forwarding base comes from
``ppp.proxy._for_twin``.  While ``ppp/proxy.py`` is still a placeholder, ppp's
cases skip with a note and the peers are measured alone.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from benchkit import (
    UNROLL,
    Conn,
    Maker,
    fresh,
    measure_loop,
    paired_ratio,
    scaled,
    tag,
)

import ppp

SCOPES = ("shared", "thread", "pooled", "versatile")
POOL_SIZE = 16


def ppp_proxy(backend: ModuleType) -> Any:
    """The Proxy class over ``backend`` (a Pool twin module), or a skip with the reason."""
    if not callable(getattr(ppp, "Proxy", None)):
        pytest.skip("ppp.Proxy is still a placeholder (ppp/proxy.py): ppp's proxy cases skipped")
    import importlib

    for_twin = getattr(importlib.import_module("ppp.proxy"), "_for_twin", None)
    if for_twin is not None:
        return for_twin(backend)
    if ppp.Pool is not backend.Pool:
        pytest.skip(f"ppp.proxy has no _for_twin: only the active twin ({ppp.BACKEND}) measured")
    return ppp.Proxy


def ppp_impl(backend: ModuleType) -> tuple[str, str]:
    twin = backend.Pool._backend
    return f"ppp-{twin}", "ppp compiled" if twin == "cython" else "ppp pure"


def read_loop(p: Any, n: int) -> Any:
    """``n`` reads of attribute ``x`` through ``p``."""
    v = None
    for _ in range(n // UNROLL):
        v = p.x
        v = p.x
        v = p.x
        v = p.x
        v = p.x
        v = p.x
        v = p.x
        v = p.x
        v = p.x
        v = p.x
    return v


def call_loop(p: Any, n: int) -> Any:
    """``n`` calls of method ``m`` through ``p``."""
    v = None
    for _ in range(n // UNROLL):
        v = p.m()
        v = p.m()
        v = p.m()
        v = p.m()
        v = p.m()
        v = p.m()
        v = p.m()
        v = p.m()
        v = p.m()
        v = p.m()
    return v


LOOPS: dict[str, Callable[[Any, int], Any]] = {"read": read_loop, "call": call_loop}


def _measure(benchmark: Any, p: Any, op: str, scope: str, impl: str, label: str) -> None:
    group, ref = f"proxy-{op}-{scope}", impl == "direct"
    paired = None if ref else (LOOPS[op], (Conn(7),))  # the direct access, before each round
    assert measure_loop(benchmark, LOOPS[op], (p,), group, impl, label, ref, paired) == 7


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("op", list(LOOPS))
def test_direct(benchmark: Any, op: str, scope: str) -> None:
    """The reference: the plain object, no proxy."""
    _measure(benchmark, Conn(7), op, scope, "direct", "direct access (no proxy)")


def _ppp_proxy_for(backend: ModuleType, scope: str) -> tuple[Any, Callable[[], None]]:
    Proxy = ppp_proxy(backend)
    maker = Maker()

    def fun(n: int) -> Conn:
        obj = maker(n)
        obj.x = 7
        return obj

    if scope == "shared":
        p = Proxy(obj=Conn(7))
    elif scope == "thread":
        p = Proxy(fun=fun, max_size=None)
    elif scope == "pooled":
        p = Proxy(fun=fun, max_size=POOL_SIZE)
    else:
        p = Proxy(fun=fun, scope=Proxy.Scope.VERSATILE, max_size=POOL_SIZE)

    def done() -> None:
        assert maker.count <= 1, f"{maker.count} objects made in one thread"
        p._ret_obj()

    return p, done


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("op", list(LOOPS))
def test_ppp(benchmark: Any, backend: ModuleType, op: str, scope: str) -> None:
    p, done = _ppp_proxy_for(backend, scope)
    impl, label = ppp_impl(backend)
    try:
        _measure(benchmark, p, op, scope, impl, label)
    finally:
        done()


def _peer_proxy(peer: str, scope: str) -> tuple[Any, str]:
    """A peer's proxy over an object whose ``x`` is 7, and the peer's label."""
    note = f"peer {peer} is not installed (pip install .[bench])"
    if peer == "ProxyPatternPool":
        ppp11 = pytest.importorskip("ProxyPatternPool", reason=note)

        def fun(n: int) -> Conn:
            return Conn(7)

        label = "ProxyPatternPool 11.6"
        if scope == "shared":
            return ppp11.Proxy(obj=Conn(7)), label
        if scope == "thread":
            return ppp11.Proxy(fun=fun, max_size=None), label
        if scope == "pooled":
            return ppp11.Proxy(fun=fun, max_size=POOL_SIZE), label
        return ppp11.Proxy(fun=fun, scope=ppp11.Proxy.Scope.VERSATILE, max_size=POOL_SIZE), label
    if peer == "wrapt":
        wrapt = pytest.importorskip("wrapt", reason=note)
        return wrapt.ObjectProxy(Conn(7)), "wrapt ObjectProxy (C)"
    if peer == "lazy-object-proxy":
        pytest.importorskip("lazy_object_proxy", reason=note)
        from lazy_object_proxy.cext import Proxy as LazyProxy  # type: ignore[import-untyped]

        obj = Conn(7)
        p = LazyProxy(lambda: obj)
        p.x  # noqa: B018  (resolve the factory once: what is timed is the forwarding)
        return p, "lazy-object-proxy (C)"
    assert peer == "werkzeug"
    pytest.importorskip("werkzeug", reason=note)
    from werkzeug.local import Local, LocalProxy

    if scope == "shared":
        obj = Conn(7)
        return LocalProxy(lambda: obj), "werkzeug LocalProxy"
    local = Local()
    local.obj = Conn(7)
    return LocalProxy(local, "obj"), "werkzeug LocalProxy over Local"


PEER_CASES = [
    *(("ProxyPatternPool", s) for s in SCOPES),
    ("wrapt", "shared"),
    ("lazy-object-proxy", "shared"),
    ("werkzeug", "shared"),
    ("werkzeug", "thread"),
    ("werkzeug", "versatile"),
]


@pytest.mark.parametrize(("peer", "scope"), PEER_CASES)
@pytest.mark.parametrize("op", list(LOOPS))
def test_peer(benchmark: Any, op: str, peer: str, scope: str) -> None:
    p, label = _peer_proxy(peer, scope)
    _measure(benchmark, p, op, scope, peer, label)


# ------------------------------------------------------------------ thread churn

CHURN_THREADS = 2000
CHURN_ALIVE = 16
CHURN_ROUNDS = 11


def churn(body: Callable[[], None], nthreads: int, errors: list[str]) -> None:
    """Run ``nthreads`` short threads of ``body``, at most ``CHURN_ALIVE`` alive at once."""

    def guarded() -> None:
        try:
            body()
        except BaseException as exc:
            errors.append(f"{type(exc).__name__}: {exc}")

    alive: collections.deque[threading.Thread] = collections.deque()
    for _ in range(nthreads):
        if len(alive) == CHURN_ALIVE:
            alive.popleft().join()
        t = threading.Thread(target=guarded)
        t.start()
        alive.append(t)
    while alive:
        alive.popleft().join()


_BARE = Conn(7)


def bare_body() -> None:
    """The reference thread: reads one attribute of a plain object and ends."""
    assert _BARE.x == 7


def _measure_churn(benchmark: Any, body: Callable[[], None], impl: str, label: str) -> None:
    """Time rounds of ``n`` short threads; unless this is the reference, a round of
    bare threads runs before each one, for a paired ratio (see ``measure_loop``)."""
    n = scaled(benchmark, CHURN_THREADS, 2 * CHURN_ALIVE + 8)
    ref = impl == "bare-thread"
    tag(benchmark, "proxy-churn", impl, label, n, ref=ref)
    errors: list[str] = []
    bare_per_thread: list[float] = []

    run, run_bare = fresh(churn), fresh(churn)

    def time_bare() -> None:
        start = time.perf_counter()
        run_bare(bare_body, n, errors)
        bare_per_thread.append((time.perf_counter() - start) / n)

    benchmark.pedantic(
        run,
        args=(body, n, errors),
        setup=None if ref else time_bare,
        rounds=CHURN_ROUNDS,
        warmup_rounds=1,
    )
    assert not errors, errors[:5]
    if not ref and not benchmark.disabled:
        benchmark.extra_info["paired_ratio"] = paired_ratio(benchmark, n, bare_per_thread, 1)


def test_churn_bare(benchmark: Any) -> None:
    """The reference: a thread that reads one attribute of a plain object and ends."""
    _measure_churn(benchmark, bare_body, "bare-thread", "bare thread (start, read, end)")


@pytest.mark.parametrize("returns", [True, False], ids=["ret", "noret"])
def test_churn_ppp(benchmark: Any, backend: ModuleType, returns: bool) -> None:
    """Each thread reads through ``Proxy(fun, max_size=16)``; with ``noret`` it never
    calls ``_ret_obj()``, and the object must come back when the thread ends."""
    Proxy = ppp_proxy(backend)
    maker = Maker()
    p = Proxy(fun=maker, max_size=CHURN_ALIVE, timeout=30.0)

    def body() -> None:
        assert p.x >= 0
        if returns:
            p._ret_obj()

    impl, label = ppp_impl(backend)
    suffix = "ret" if returns else "noret"
    what = "_ret_obj() at the end" if returns else "no _ret_obj()"
    _measure_churn(benchmark, body, f"{impl}:{suffix}", f"{label}, {what}")
    assert maker.count <= CHURN_ALIVE, f"{maker.count} objects created for max_size={CHURN_ALIVE}"


def test_churn_proxypatternpool(benchmark: Any) -> None:
    """ProxyPatternPool only with ``_ret_obj()``: without it, its slots are lost for good
    and the 17th thread times out."""
    ppp11 = pytest.importorskip(
        "ProxyPatternPool", reason="peer ProxyPatternPool is not installed (pip install .[bench])"
    )
    maker = Maker()
    p = ppp11.Proxy(fun=maker, max_size=CHURN_ALIVE, timeout=30.0)

    def body() -> None:
        assert p.x >= 0
        p._ret_obj()

    _measure_churn(
        benchmark, body, "ProxyPatternPool:ret", "ProxyPatternPool 11.6, _ret_obj() at the end"
    )
    assert maker.count <= CHURN_ALIVE
