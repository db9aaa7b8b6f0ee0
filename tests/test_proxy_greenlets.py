"""Proxy with greenlets, for real: GEVENT and EVENTLET scopes, VERSATILE greenlets,
and the clear error when the package of a scope is missing.  No monkey-patching:
greenlets switch on gevent.sleep / eventlet.sleep.

Every test runs on both twins (``Proxy`` is ``ppp.proxy._for_twin(backend)``).
"""

from __future__ import annotations

import gc
import sys
import threading
import warnings
from types import ModuleType
from typing import Any

import pytest

from ppp import proxy as proxy_module
from ppp._errors import ProxyException

# Not installed on the free-threaded build (`make test-ft`): no wheels there, and
# importing greenlet turns the GIL back on.  The whole module skips then.
gevent = pytest.importorskip("gevent")
pytest.importorskip("gevent.local")
greenlet = pytest.importorskip("greenlet")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # eventlet warns on import that it is deprecated
    eventlet = pytest.importorskip("eventlet")
    pytest.importorskip("eventlet.corolocal")


@pytest.fixture
def Proxy(backend: ModuleType) -> Any:
    return proxy_module._for_twin(backend)


class Conn:
    def __init__(self, n: int) -> None:
        self.n = n


class Ledger:
    """Counts gets and returns through the pool's hooks; no object in two hands."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.held: set[int] = set()
        self.gets = self.rets = 0
        self.errors: list[str] = []

    def getter(self, obj: Conn) -> None:
        with self.lock:
            self.gets += 1
            if id(obj) in self.held:
                self.errors.append(f"{obj.n} handed out twice")
            self.held.add(id(obj))

    def retter(self, obj: Conn) -> None:
        with self.lock:
            self.rets += 1
            if id(obj) not in self.held:
                self.errors.append(f"{obj.n} returned while not held")
            self.held.discard(id(obj))


def pooled(Proxy: Any, scope: Any, ledger: Ledger, max_size: int) -> Any:
    return Proxy(
        fun=Conn,
        scope=scope,
        max_size=max_size,
        min_size=0,
        timeout=0,  # a missing return shows as TimeOut, never as a hang of the hub
        getter=ledger.getter,
        retter=ledger.retter,
    )


def assert_all_back(db: Any, ledger: Ledger) -> None:
    stats = db._pool.stats()
    assert ledger.errors == []
    assert stats["nusing"] == 0
    assert ledger.gets == ledger.rets == stats["nuses"]


# ------------------------------------------------------------ GEVENT


def test_gevent_scope_uses_gevent_local(Proxy: Any) -> None:
    db = Proxy(fun=Conn, scope=Proxy.Scope.GEVENT, max_size=None)
    assert db._scope is Proxy.Scope.GEVENT
    assert isinstance(db._ppp_st.local, gevent.local.local)


def test_gevent_one_object_per_greenlet(Proxy: Any) -> None:
    db = Proxy(fun=Conn, scope=Proxy.Scope.GEVENT, max_size=None)
    main = db._get_obj()

    def work() -> int:
        first = db._get_obj()
        n: int = first.n
        gevent.sleep(0)  # the others run in between
        assert db._get_obj() is first
        db.n = -n - 1  # attribute writes land on this greenlet's object
        gevent.sleep(0)
        assert db.n == first.n == -n - 1
        return n

    jobs = [gevent.spawn(work) for _ in range(8)]
    gevent.joinall(jobs, raise_error=True)
    ids = [j.value for j in jobs]
    assert len(set(ids)) == 8 and main.n not in ids
    assert db._get_obj() is main


def test_gevent_greenlet_end_returns(Proxy: Any) -> None:
    ledger = Ledger()
    db = pooled(Proxy, Proxy.Scope.GEVENT, ledger, 3)

    def work(i: int) -> int:
        n: int = db.n
        gevent.sleep(0)
        if i == 0:
            db._ret_obj()
        return n

    for wave in range(10):
        jobs = [gevent.spawn(work, i) for i in range(3)]
        gevent.joinall(jobs, raise_error=True)
        gevent.sleep(0)  # the hub runs the ended greenlets' links
        assert db._pool.stats()["nusing"] == 0, f"wave {wave}"
        assert ledger.rets == 3 * (wave + 1)
    assert_all_back(db, ledger)


# ------------------------------------------------------------ EVENTLET


def test_eventlet_scope_uses_corolocal(Proxy: Any) -> None:
    db = Proxy(fun=Conn, scope=Proxy.Scope.EVENTLET, max_size=None)
    assert db._scope is Proxy.Scope.EVENTLET
    assert isinstance(db._ppp_st.local, eventlet.corolocal.local)


def test_eventlet_one_object_per_greenthread(Proxy: Any) -> None:
    db = Proxy(fun=Conn, scope=Proxy.Scope.EVENTLET, max_size=None)
    main = db._get_obj()

    def work() -> int:
        first = db._get_obj()
        n: int = first.n  # creation numbers are unique, ids of freed objects are not
        eventlet.sleep(0)
        assert db._get_obj() is first
        return n

    threads = [eventlet.spawn(work) for _ in range(8)]
    ids = [gt.wait() for gt in threads]
    assert len(set(ids)) == 8 and main.n not in ids
    assert db._get_obj() is main


def test_eventlet_greenthread_end_returns(Proxy: Any) -> None:
    ledger = Ledger()
    db = pooled(Proxy, Proxy.Scope.EVENTLET, ledger, 3)

    def work(i: int) -> int:
        n: int = db.n
        eventlet.sleep(0)
        if i == 1:
            with db._obj():
                pass
        return n

    for wave in range(10):
        threads = [eventlet.spawn(work, i) for i in range(3)]
        for gt in threads:
            gt.wait()
        assert db._pool.stats()["nusing"] == 0, f"wave {wave}"
        assert ledger.rets == 3 * (wave + 1)
    assert_all_back(db, ledger)


# ------------------------------------------------------------ VERSATILE greenlets


def test_versatile_one_object_per_gevent_greenlet(Proxy: Any) -> None:
    db = Proxy(fun=Conn, scope=Proxy.Scope.VERSATILE, max_size=None)
    main = db._get_obj()

    def work() -> int:
        first = db._get_obj()
        n: int = first.n
        gevent.sleep(0)
        assert db._get_obj() is first
        return n

    jobs = [gevent.spawn(work) for _ in range(6)]
    gevent.joinall(jobs, raise_error=True)
    ids = [j.value for j in jobs]
    assert len(set(ids)) == 6 and main.n not in ids
    assert db._get_obj() is main


def test_versatile_gevent_greenlet_end_returns(Proxy: Any) -> None:
    ledger = Ledger()
    db = pooled(Proxy, Proxy.Scope.VERSATILE, ledger, 2)

    def work() -> None:
        db.n  # noqa: B018
        gevent.sleep(0)

    for wave in range(10):
        jobs = [gevent.spawn(work) for _ in range(2)]
        gevent.joinall(jobs, raise_error=True)
        gevent.sleep(0)
        assert db._pool.stats()["nusing"] == 0, f"wave {wave}"
    assert_all_back(db, ledger)


def test_versatile_eventlet_greenthread_end_returns(Proxy: Any) -> None:
    ledger = Ledger()
    db = pooled(Proxy, Proxy.Scope.VERSATILE, ledger, 2)

    def work() -> int:
        n: int = db.n
        eventlet.sleep(0)
        return n

    for wave in range(10):
        threads = [eventlet.spawn(work) for _ in range(2)]
        assert len({gt.wait() for gt in threads}) == 2
        assert db._pool.stats()["nusing"] == 0, f"wave {wave}"
    assert_all_back(db, ledger)


def test_versatile_bare_greenlets(Proxy: Any) -> None:
    """Bare greenlets have no end hook: their objects go back when they are freed."""
    ledger = Ledger()
    db = pooled(Proxy, Proxy.Scope.VERSATILE, ledger, 2)
    seen: list[int] = []

    def work() -> None:
        seen.append(id(db._get_obj()))
        greenlet.getcurrent().parent.switch()  # pause, still holding it
        seen.append(id(db._get_obj()))

    a, b = greenlet.greenlet(work), greenlet.greenlet(work)
    a.switch()
    b.switch()
    assert seen[0] != seen[1] and db._pool.stats()["nusing"] == 2
    a.switch()
    b.switch()
    assert seen[2:] == seen[:2] and a.dead and b.dead
    del a, b
    gc.collect()
    assert_all_back(db, ledger)


# ------------------------------------------------------------ missing packages


@pytest.mark.parametrize(
    ("scope", "modules", "package"),
    [
        ("GEVENT", ("gevent", "gevent.local"), "gevent"),
        ("EVENTLET", ("eventlet", "eventlet.corolocal"), "eventlet"),
    ],
)
def test_missing_package_is_named(
    Proxy: Any,
    monkeypatch: pytest.MonkeyPatch,
    scope: str,
    modules: tuple[str, ...],
    package: str,
) -> None:
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)  # makes the import fail
    with pytest.raises(ProxyException, match=f"scope {scope} needs the {package} package") as info:
        Proxy(fun=Conn, scope=Proxy.Scope[scope])
    assert isinstance(info.value.__cause__, ImportError)
    p = Proxy(scope=Proxy.Scope[scope])  # nothing set yet: no import, no error
    with pytest.raises(ProxyException, match=f"needs the {package} package"):
        p.set_fun(Conn)
    with pytest.raises(ProxyException, match="not initialised"):
        p.n  # noqa: B018
