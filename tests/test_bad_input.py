"""Bad input everywhere: a clear error naming what is wrong, and nothing broken.

Every constructor parameter gets wrong types and wrong values; each must fail
at construction with the right exception type and the parameter's name in the
message, before any thread starts or ``fun`` runs.  Extreme but valid values
(infinite timeouts and delays, huge counts) must work on both twins alike.
Misuse of a live pool (bad timeouts, foreign, double and cross-pool returns,
a ``fun`` that returns the same object twice, a broken clock) gives a clear
error or a warning and leaves the pool serving with its counts intact.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from ppp import PoolException, ProxyException, TimeOut

COUNTS = ["max_size", "min_size", "max_use", "health_freq"]
DELAYS = ["max_avail_delay", "max_using_delay", "max_using_delay_kill", "delay", "max_lifetime"]
HOOKS = ["opener", "getter", "retter", "closer", "health", "stats", "tracer", "clock"]


class Made:
    """``fun`` that records its calls."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, n: int) -> list[int]:
        self.calls.append(n)
        return [n]


def bad_cases() -> list[Any]:
    """(parameter, value, exception type, text the message must hold)."""
    cases: list[tuple[str, Any, type[Exception], str]] = []
    value: Any
    for name in COUNTS:
        for value in ("3", 1.5, 2.0, True, [], Decimal(2), 1j):
            cases.append((name, value, TypeError, f"{name} must be an int"))
        low = 1 if name == "health_freq" else 0
        for value in (low - 1, -(2**70)):
            cases.append((name, value, ValueError, f"{name} must be >= {low}"))
        cases.append((name, 2**64, ValueError, f"{name} must be <= {sys.maxsize}"))
        if name != "max_size":  # max_size=None means unlimited
            cases.append((name, None, TypeError, f"{name} must be an int"))
    for name in [*DELAYS, "timeout"]:
        for value in ("1", True, [], Decimal(1), 1j, b"1"):
            cases.append((name, value, TypeError, f"{name} must be a number of seconds"))
        for value in (-0.001, -1, -math.inf):
            cases.append((name, value, ValueError, f"{name} must be >= 0"))
        cases.append((name, math.nan, ValueError, f"{name} must be >= 0"))
        cases.append((name, 10**400, ValueError, f"{name} is too large"))
        if name != "timeout":  # timeout=None means wait forever
            cases.append((name, None, TypeError, f"{name} must be a number of seconds"))
    for name in HOOKS:
        for value in (3, "print", object()):
            cases.append((name, value, TypeError, f"{name} must be callable"))
    for value in (None, 3, "make", [len]):
        cases.append(("fun", value, TypeError, "fun must be callable"))
    for value in (1, "yes", None, 0.0):
        cases.append(("leak_trace", value, TypeError, "leak_trace must be a bool"))
    for value in (1.5, True, [], b"INFO"):
        cases.append(("log_level", value, TypeError, "log_level must be a logging level"))
    for value in ("LOUD", "info "):
        cases.append(("log_level", value, ValueError, "log_level"))
    cases.append(("min_size", 5, ValueError, r"min_size \(5\) must not exceed max_size \(2\)"))
    return [
        pytest.param(name, value, exc, text, id=f"{name}={value!r}"[:60])
        for name, value, exc, text in cases
    ]


@pytest.mark.parametrize(("name", "value", "exc", "text"), bad_cases())
def test_bad_constructor_argument(Pool: Any, name: str, value: Any, exc: type, text: str) -> None:
    made = Made()
    kwargs: dict[str, Any] = {"max_size": 2} if name == "min_size" and value == 5 else {}
    if name == "fun":
        args: tuple[Any, ...] = (value,)
    else:
        args = (made,)
        kwargs[name] = value
    threads = threading.active_count()
    level = logging.getLogger("ppp").level
    with pytest.raises(exc, match=text) as info:
        Pool(*args, **kwargs)
    huge = isinstance(value, int) and abs(value) > 2**100  # too long to print
    if not huge and kwargs.get("max_size") != 2:
        assert repr(value) in str(info.value), f"the message does not show the value: {info.value}"
    assert made.calls == [], "fun ran although the pool was refused"
    assert threading.active_count() == threads, "a thread was left behind"
    assert logging.getLogger("ppp").level == level, "a refused pool changed the log level"


def test_unknown_and_surplus_arguments(Pool: Any) -> None:
    with pytest.raises(TypeError, match="max_sise"):
        Pool(Made(), max_sise=3)
    defaults = (0, 1, None, 0, 0.0, 0.0, 0.0, 1, 0.0, *[None] * 8, 0.0)  # max_size..max_lifetime
    Pool(Made(), *defaults).shutdown()
    with pytest.raises(TypeError, match="positional argument"):
        Pool(Made(), *defaults, False)  # leak_trace is keyword-only


# ------------------------------------------------------ extreme valid values


def blocked_get(pool: Any, timeout: Any = None) -> tuple[threading.Thread, list[Any]]:
    """Start a thread blocked in ``get`` on a full pool; wait until it waits."""
    got: list[Any] = []

    def get() -> None:
        try:
            got.append(pool.get(timeout))
        except PoolException as exc:
            got.append(exc)

    thread = threading.Thread(target=get, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while pool.stats()["nwaiting"] != 1:
        assert thread.is_alive() and time.monotonic() < deadline, f"not waiting: {got}"
        time.sleep(0.002)
    return thread, got


@pytest.mark.parametrize("where", ["get", "pool"])
@pytest.mark.parametrize("timeout", [math.inf, 1e10, float(2**63)])
def test_huge_timeout_waits_like_none(Pool: Any, where: str, timeout: float) -> None:
    """A timeout beyond what the OS can sleep (inf included) waits until served."""
    made = Made()
    pool = Pool(made, max_size=1, timeout=timeout if where == "pool" else None)
    try:
        held = pool.get()
        thread, got = blocked_get(pool, timeout if where == "get" else None)
        pool.ret(held)
        thread.join(30)
        assert not thread.is_alive() and len(got) == 1 and got[0] is held
        thread, got = blocked_get(pool, timeout if where == "get" else None)
        pool.shutdown()  # and a waiter with a huge timeout still wakes on shutdown
        thread.join(30)
        assert not thread.is_alive() and len(got) == 1
        assert isinstance(got[0], PoolException) and "shut down" in str(got[0])
        pool.ret(held)
    finally:
        pool.shutdown()


@pytest.mark.parametrize("name", DELAYS)
@pytest.mark.parametrize("value", [math.inf, 1e10, 10**300], ids=["inf", "1e10", "10**300"])
def test_huge_delays_are_accepted(Pool: Any, name: str, value: float) -> None:
    """Huge delays mean "never"; the housekeeper sleeps (the OS cannot sleep that long:
    it used to die with OverflowError) and shutdown still stops it."""
    pool = Pool(Made(), **{name: value})
    try:
        pool.ret(pool.get())
        key = name if name != "max_using_delay" else "max_using_delay_warn"
        assert pool.stats()[key] == float(value)
        time.sleep(0.01)  # the housekeeper would die here
        if pool._housekeeper is not None:
            assert pool._housekeeper.is_alive()
    finally:
        pool.shutdown(delay=math.inf)  # joins the housekeeper: no OverflowError either
    if pool._housekeeper is not None:
        assert not pool._housekeeper.is_alive()


@pytest.mark.parametrize("value", [sys.maxsize, 2**40])
def test_huge_counts_are_accepted_alike(Pool: Any, value: int) -> None:
    """Counts up to sys.maxsize work on both twins (the compiled one stores C integers)."""
    pool = Pool(Made(), max_size=value, max_use=value, min_size=1)
    try:
        obj = pool.get()
        pool.ret(obj)
        assert pool.get() is obj
        pool.ret(obj)
        s = pool.stats()
        assert (s["max_size"], s["max_use"], s["nobjs"]) == (value, value, 1)
    finally:
        pool.shutdown()


# ------------------------------------------------------------ a live pool


def assert_serving(pool: Any, expected: dict[str, int]) -> None:
    """The pool's counts are what they were, and it still hands out and takes back."""
    s = pool.stats()
    assert {k: s[k] for k in expected} == expected
    obj = pool.get(0)
    pool.ret(obj)
    assert pool.stats()["nuses"] == expected.get("nuses", 0) + 1


@pytest.mark.parametrize(
    ("timeout", "exc", "text"),
    [
        ("soon", TypeError, "timeout must be a number of seconds, got str"),
        (True, TypeError, "timeout must be a number of seconds, got bool"),
        ([1], TypeError, "timeout must be a number"),
        (1j, TypeError, "timeout must be a number"),
        (-1, ValueError, "timeout must be >= 0 seconds, got -1"),
        (-math.inf, ValueError, "timeout must be >= 0"),
        (math.nan, ValueError, "timeout must be >= 0 seconds, got nan"),
        (10**400, ValueError, "timeout is too large"),
    ],
    ids=["str", "bool", "list", "complex", "-1", "-inf", "nan", "10**400"],
)
def test_bad_get_timeout(Pool: Any, timeout: Any, exc: type, text: str) -> None:
    pool = Pool(Made(), max_size=1, min_size=1)
    try:
        held = pool.get()
        with pytest.raises(exc, match=text):
            pool.get(timeout)
        with pytest.raises(exc, match=text), pool.obj(timeout):
            pass
        s = pool.stats()
        assert (s["nusing"], s["nwaiting"], s["ntimeouts"], s["nuses"]) == (1, 0, 0, 1)
        pool.ret(held)
        assert_serving(pool, {"nuses": 1, "nreturns": 1, "nobjs": 1})
    finally:
        pool.shutdown()


class Lookalike:
    """Equal to everything, hashes like everything: identity is all that separates it."""

    def __eq__(self, other: object) -> bool:
        return True

    def __hash__(self) -> int:
        return 0


class Hostile:
    """An object whose str, repr, eq and hash all raise."""

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("eq")

    def __hash__(self) -> int:
        raise RuntimeError("hash")

    def __repr__(self) -> str:
        raise RuntimeError("repr")

    __str__ = __repr__


@pytest.mark.parametrize(
    "foreign",
    [None, 0, "", [], {}, Lookalike(), Hostile(), object(), Made()],
    ids=lambda v: type(v).__name__,
)
def test_ret_of_foreign_objects(Pool: Any, foreign: Any, pool_log: Any) -> None:
    """A foreign return is ignored with a warning that says why; counts do not move."""
    pool = Pool(lambda n: Lookalike(), max_size=2, min_size=1)
    try:
        held = pool.get()
        before = pool.stats()
        pool.ret(foreign)
        after = pool.stats()
        assert after["nbad_returns"] == before["nbad_returns"] + 1
        for key in ("nusing", "navail", "nobjs", "nreturns", "nuses", "ndestroys"):
            assert after[key] == before[key], key
        warnings = [r for r in pool_log.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "does not hold in use" in warnings[0].getMessage()
        pool.ret(held)
        assert_serving(pool, {"nusing": 0, "nreturns": 1, "nuses": 1, "nbad_returns": 1})
    finally:
        pool.shutdown()


def test_ret_to_the_wrong_pool_and_twice(Pool: Any, pool_log: Any) -> None:
    a = Pool(Made(), max_size=1)
    b = Pool(Made(), max_size=1, min_size=0)
    try:
        obj = a.get()
        b.ret(obj)  # not b's: ignored, and a still counts it in use
        assert (a.stats()["nusing"], b.stats()["nbad_returns"], b.stats()["nobjs"]) == (1, 1, 0)
        a.ret(obj)
        a.ret(obj)  # twice
        s = a.stats()
        assert (s["nreturns"], s["nbad_returns"], s["navail"], s["nusing"]) == (1, 1, 1, 0)
        assert a.get(0) is obj  # still served, exactly once
        with pytest.raises(TimeOut):
            a.get(0)
        a.ret(obj)
    finally:
        a.shutdown()
        b.shutdown()


def test_ret_after_shutdown(Pool: Any, pool_log: Any) -> None:
    closed: list[Any] = []
    pool = Pool(Made(), max_size=2, closer=closed.append)
    obj = pool.get()
    pool.shutdown()
    pool.ret([7])  # foreign after shutdown: still just a warning
    pool.ret(obj)  # the holder's return after shutdown: closed
    pool.ret(obj)  # and once more: ignored
    s = pool.stats()
    assert closed == [obj] and s["nobjs"] == 0 and s["nbad_returns"] == 2


@pytest.mark.parametrize(
    ("delay", "exc", "text"),
    [
        ("now", TypeError, "delay must be a number of seconds"),
        (-1, ValueError, "delay must be >= 0"),
        (math.nan, ValueError, "delay must be >= 0"),
    ],
)
def test_bad_shutdown_delay_leaves_the_pool_open(
    Pool: Any, delay: Any, exc: type, text: str
) -> None:
    pool = Pool(Made(), max_size=1)
    try:
        with pytest.raises(exc, match=text):
            pool.shutdown(delay)
        assert pool.stats()["shutdown"] is False
        assert_serving(pool, {"nobjs": 1})
    finally:
        pool.shutdown()


def test_fun_returning_the_same_object(Pool: Any) -> None:
    """A ``fun`` that hands back a pooled object is refused, clearly, and the
    pool keeps serving (the slot is freed, the object stays where it was)."""
    shared = ["shared"]
    pool = Pool(lambda n: shared, max_size=3, min_size=0)
    try:
        assert pool.get() is shared
        with pytest.raises(PoolException, match="fun returned an object the pool already holds"):
            pool.get()
        s = pool.stats()
        assert (s["nobjs"], s["nusing"], s["npending"], s["ncreated"]) == (1, 1, 0, 1)
        pool.ret(shared)
        assert pool.get(0) is shared
        pool.ret(shared)
    finally:
        pool.shutdown()


@pytest.mark.parametrize(
    ("clock", "text"),
    [
        (lambda: "now", "clock must return a number of seconds, got str"),
        (lambda: None, "clock must return a number of seconds, got NoneType"),
        (lambda: math.nan, "clock must return a number of seconds, got float: nan"),
        (lambda: 1 / 0, "clock failed"),
    ],
)
def test_broken_clock_refused_at_construction(Pool: Any, clock: Any, text: str) -> None:
    """A clock is called under the pool's lock: one that cannot tell the time must be
    refused up front, not deadlock or corrupt the pool on its first use."""
    with pytest.raises((TypeError, ValueError), match=text):
        Pool(Made(), clock=clock, max_lifetime=10)


def test_int_clock_reads_as_float(Pool: Any) -> None:
    """An int-returning clock gives the same (float) stats on both twins."""
    ticks = [5]
    pool = Pool(Made(), clock=lambda: ticks[0], max_lifetime=10, delay=1e9)
    try:
        obj = pool.get()
        ticks[0] = 8
        s = pool.stats()
        assert s["now"] == 8.0 and type(s["now"]) is float
        assert s["using"][0]["age"] == 3.0 and type(s["using"][0]["age"]) is float
        pool.ret(obj)
    finally:
        pool.shutdown()


# ---------------------------------------------------------------- Proxy misuse


@pytest.fixture
def Proxy(backend: Any) -> Any:
    """The Proxy class over the twin under test."""
    from ppp.proxy import _for_twin

    return _for_twin(backend)


NOT_SET = "Proxy is not initialised"

UNSET_USES: dict[str, Callable[[Any], Any]] = {
    "attribute": lambda p: p.anything,
    "setattr": lambda p: setattr(p, "x", 1),
    "delattr": lambda p: delattr(p, "x"),
    "str": str,
    "bool": bool,
    "len": len,
    "iter": iter,
    "call": lambda p: p(),
    "eq": lambda p: p == 1,
    "lt": lambda p: p < 1,
    "hash": hash,
    "getitem": lambda p: p[0],
    "contains": lambda p: 1 in p,
    "add": lambda p: p + 1,
    "format": lambda p: f"{p:>3}",
    "with": lambda p: p.__enter__(),
    "_get_obj": lambda p: p._get_obj(),
    "_obj": lambda p: p._obj().__enter__(),
}


@pytest.mark.parametrize("use", list(UNSET_USES), ids=list(UNSET_USES))
def test_unset_proxy_says_so(Proxy: Any, use: str) -> None:
    proxy = Proxy()
    with pytest.raises(ProxyException, match=NOT_SET):
        UNSET_USES[use](proxy)
    assert proxy._has_obj() is False
    assert "not initialised" in repr(proxy)  # repr never raises: debuggers call it
    proxy._ret_obj()  # nothing to give back: a no-op
    proxy.set(obj=[1, 2])  # and it can still be set and used
    assert len(proxy) == 2


@pytest.mark.parametrize(
    ("make", "exc", "text"),
    [
        (lambda P: P(obj=1, fun=lambda n: n), ProxyException, "Proxy cannot set both obj and fun"),
        (lambda P: P().set(), ProxyException, "Proxy must set either obj or fun"),
        (lambda P: P()._set(obj=1, fun=len), ProxyException, "cannot set both obj and fun"),
        (lambda P: P().set_obj(None), ProxyException, "Proxy cannot wrap None"),
        (lambda P: P().set_fun(3), TypeError, "fun must be callable, got int: 3"),
        (lambda P: P(fun="f"), TypeError, "fun must be callable"),
        (lambda P: P(scope="x"), TypeError, "scope must be a Proxy.Scope, got str"),
        (lambda P: P(scope=True), TypeError, "scope must be a Proxy.Scope, got bool"),
        (lambda P: P(scope=9), ValueError, "scope must be a Proxy.Scope or its value 0 to 5"),
        (lambda P: P(max_size=-1), ValueError, "max_size must be >= 0"),
        (lambda P: P(max_size=1.5), TypeError, "max_size must be an int or None, got float"),
        (lambda P: P(max_size="2"), TypeError, "max_size must be an int or None"),
        (lambda P: P(fun=len, max_sise=3), TypeError, "unknown pool parameter.*max_sise"),
        (lambda P: P(fun=len, timeout=-1), ValueError, "timeout must be >= 0"),
        (lambda P: P(fun=len, opener=3), TypeError, "opener must be callable"),
        (lambda P: P(fun=len, min_size=3, max_size=2), ValueError, "min_size .* max_size"),
        (lambda P: P(log_level=1.5), TypeError, "log_level must be a logging level"),
        (lambda P: P(set_name=3), TypeError, "set_name must be a str or None, got int"),
        (lambda P: P(set_name="a-b"), ValueError, "set_name must be a plain identifier"),
        (lambda P: P(set_name="_get"), ValueError, "would hide the proxy's own '_get_obj'"),
        (lambda P: P(fun=len, scope=P.Scope.SHARED), ProxyException, "scope SHARED"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_bad_proxy_arguments(Proxy: Any, make: Any, exc: type, text: str) -> None:
    threads = threading.active_count()
    with pytest.raises(exc, match=text):
        make(Proxy)
    assert threading.active_count() == threads


def test_proxy_unknown_log_level_names_the_parameter(Proxy: Any) -> None:
    with pytest.raises(ValueError, match="log_level: Unknown level: 'LOUD'"):
        Proxy(log_level="LOUD")


def test_proxy_missing_greenlet_library(Proxy: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("gevent", "gevent.local", "eventlet", "eventlet.corolocal"):
        monkeypatch.setitem(sys.modules, name, None)  # import now fails as if not installed
    with pytest.raises(ProxyException, match="needs the gevent package.*pip install gevent"):
        Proxy(fun=len, scope=Proxy.Scope.GEVENT)
    with pytest.raises(ProxyException, match="needs the eventlet package"):
        Proxy(fun=len, scope=Proxy.Scope.EVENTLET)


def test_failed_set_leaves_the_proxy_usable(Proxy: Any) -> None:
    """A refused ``set_fun`` (bad pool parameter) changes nothing; fixed, it works."""
    proxy = Proxy(max_size=2)
    proxy._set_pool(timeout=-1)  # only checked when the pool is built
    with pytest.raises(ValueError, match="timeout must be >= 0"):
        proxy.set_fun(lambda n: [n])
    with pytest.raises(ProxyException, match=NOT_SET):
        proxy._get_obj()
    assert proxy._pool is None
    proxy._set_pool(timeout=1)
    proxy.set_fun(lambda n: [n])
    assert proxy._get_obj() == [0]
    proxy._ret_obj()
    pool: Any = proxy._pool
    pool.shutdown()


def test_proxy_pool_misuse(Proxy: Any) -> None:
    """Too late to change the pool, timeouts, double returns: clear errors or no-ops,
    and the proxy keeps serving."""
    proxy = Proxy(fun=lambda n: [n], max_size=1)
    pool = proxy._pool
    try:
        obj = proxy._get_obj()
        with pytest.raises(ProxyException, match="cannot override pool parameters"):
            proxy._set_pool(max_size=3)
        errors: list[BaseException] = []

        def other() -> None:
            try:
                proxy._get_obj(0)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=other)
        thread.start()
        thread.join(30)
        assert len(errors) == 1 and isinstance(errors[0], TimeOut)
        assert "timeout after" in str(errors[0])
        proxy._ret_obj()
        proxy._ret_obj()  # twice: nothing more to give back
        s = pool.stats()
        assert (s["nreturns"], s["nbad_returns"], s["nusing"]) == (1, 0, 0)
        with proxy._obj(0) as again:
            assert again is obj
        taken, done = threading.Event(), threading.Event()

        def forgetful() -> None:  # takes the object and ends without _ret_obj()
            proxy._get_obj()
            taken.set()
            done.wait(30)

        thread = threading.Thread(target=forgetful)
        thread.start()
        assert taken.wait(30)
        with pytest.raises(TimeOut, match="timeout after 0 seconds"):
            proxy._get_obj(0)
        assert proxy._has_obj() is False  # the refused get left nothing behind
        done.set()
        thread.join(30)
        deadline = time.monotonic() + 30
        while pool.stats()["nusing"]:  # the ended thread's object comes back
            assert time.monotonic() < deadline, "a dead thread's object was never returned"
            time.sleep(0.005)
        assert proxy._get_obj(0) is obj
        proxy._ret_obj()
        s = pool.stats()
        assert (s["nreturns"], s["nbad_returns"], s["nusing"], s["nobjs"]) == (4, 0, 0, 1)
    finally:
        pool.shutdown()


def test_proxy_bad_timeout(Proxy: Any) -> None:
    proxy = Proxy(fun=lambda n: [n], max_size=1)
    try:
        with pytest.raises(TypeError, match="timeout must be a number of seconds, got str"):
            proxy._get_obj("soon")
        with pytest.raises(ValueError, match="timeout must be >= 0"):
            proxy._get_obj(-1)
        assert proxy._has_obj() is False and proxy._pool.stats()["nusing"] == 0
        assert proxy._get_obj(0) == [0]
        proxy._ret_obj()
    finally:
        proxy._pool.shutdown()


def test_forwarding_errors_come_from_the_object(Proxy: Any) -> None:
    """Misusing the wrapped object gives the object's own error, not a proxy error."""
    proxy = Proxy(obj=42)
    with pytest.raises(AttributeError, match="no_such"):
        proxy.no_such  # noqa: B018
    with pytest.raises(TypeError, match="not callable"):
        proxy()
    with pytest.raises(TypeError, match="len"):
        len(proxy)
    assert proxy + 1 == 43  # and it still works
