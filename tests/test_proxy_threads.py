"""Proxy under threads and asyncio: thread-end return under churn, VERSATILE scope.

Every test runs on both twins (``Proxy`` is ``ppp.proxy._for_twin(backend)``).
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from types import ModuleType
from typing import Any

import pytest

from ppp import proxy as proxy_module
from ppp._errors import TimeOut


@pytest.fixture
def Proxy(backend: ModuleType) -> Any:
    return proxy_module._for_twin(backend)


class Conn:
    """Stands for a database connection."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.autocommit = False


class Ledger:
    """Checks through the pool's hooks that no object is ever in two hands."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.holder: dict[int, int] = {}  # id(obj) -> ident of the thread holding it
        self.gets = 0
        self.rets = 0
        self.ret_threads: list[int] = []
        self.errors: list[str] = []

    def getter(self, obj: Conn) -> None:
        with self.lock:
            self.gets += 1
            if id(obj) in self.holder:
                self.errors.append(f"object {obj.n} handed out while held")
            self.holder[id(obj)] = threading.get_ident()

    def retter(self, obj: Conn) -> None:
        with self.lock:
            self.rets += 1
            self.ret_threads.append(threading.get_ident())
            if self.holder.pop(id(obj), None) is None:
                self.errors.append(f"object {obj.n} returned while not held")


def check_idle(pool: Any, ledger: Ledger, max_size: int) -> dict[str, Any]:
    """Invariants once every thread has ended: all returned, nothing lost."""
    stats: dict[str, Any] = pool.stats()
    assert ledger.errors == []
    assert stats["nusing"] == 0
    assert stats["navail"] == stats["nobjs"] <= max_size
    assert ledger.gets == ledger.rets == stats["nuses"] == stats["nreturns"]
    assert ledger.holder == {}
    assert stats["ntimeouts"] == 0
    return stats


# ------------------------------------------------------------ thread-end return


def test_thread_end_returns_promptly(Proxy: Any) -> None:
    """A thread that forgets _ret_obj gives its object back by the time join returns."""
    ledger = Ledger()
    db = Proxy(
        fun=Conn, max_size=1, min_size=0, getter=ledger.getter, retter=ledger.retter, timeout=0
    )
    idents: list[int] = []
    for i in range(200):

        def work() -> None:
            idents.append(threading.get_ident())
            assert db._has_obj() is False
            db.autocommit = True  # a forwarded write takes the pool's only object
            assert db._has_obj() is True

        t = threading.Thread(target=work)
        t.start()
        t.join()
        stats = db._pool.stats()
        assert stats["nusing"] == 0, f"round {i}: object not back after join"
        assert ledger.rets == i + 1
        assert ledger.ret_threads[-1] == idents[-1]  # retter ran in the ending thread
    # timeout=0: any delay would have raised TimeOut in the next thread
    check_idle(db._pool, ledger, 1)
    assert db._pool.stats()["ncreated"] == 1


def test_thread_end_returns_after_exception(Proxy: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    ledger = Ledger()
    db = Proxy(fun=Conn, max_size=1, min_size=0, retter=ledger.retter, getter=ledger.getter)
    crashed: list[type[BaseException]] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: crashed.append(args.exc_type))

    def work() -> None:
        db.n  # noqa: B018
        raise RuntimeError("request failed")

    for _ in range(20):
        t = threading.Thread(target=work)
        t.start()
        t.join()
        assert db._pool.stats()["nusing"] == 0
    assert crashed == [RuntimeError] * 20
    check_idle(db._pool, ledger, 1)


@pytest.mark.parametrize("max_size", [1, 3])
def test_thread_end_return_under_churn(Proxy: Any, max_size: int) -> None:
    """Hundreds of short threads on a small pool: a third return explicitly, a third
    use _obj(), a third forget; waiters are served by the ending threads."""
    ledger = Ledger()
    db = Proxy(
        fun=Conn,
        max_size=max_size,
        min_size=0,
        timeout=30.0,
        getter=ledger.getter,
        retter=ledger.retter,
    )
    failures: list[str] = []
    rounds, per_round = 5, 80

    def work(i: int) -> None:
        try:
            if i % 3 == 1:
                with db._obj() as conn:
                    assert db.n == conn.n
                    time.sleep(0.0005)
                return
            conn = db._get_obj()
            for _ in range(3):
                if db.n != conn.n or db._get_obj() is not conn:
                    failures.append(f"thread {i} saw another object")
                time.sleep(0.0002)
            if i % 3 == 0:
                db._ret_obj()
                if db._has_obj():
                    failures.append(f"thread {i} still holds after _ret_obj")
            # i % 3 == 2: ends holding it
        except Exception as exc:  # pragma: no cover - reported below
            failures.append(f"thread {i}: {exc!r}")

    waited = 0
    for r in range(rounds):
        threads = [threading.Thread(target=work, args=(i,)) for i in range(per_round)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert failures == [], failures
        stats = check_idle(db._pool, ledger, max_size)
        assert stats["nuses"] == (r + 1) * per_round
        waited = stats["max_waiting"]
    assert waited > 0  # the pool really was contended


def test_per_thread_objects_are_distinct_while_alive(Proxy: Any) -> None:
    ledger = Ledger()
    db = Proxy(fun=Conn, max_size=8, getter=ledger.getter, retter=ledger.retter)
    barrier = threading.Barrier(8)
    seen: list[int] = []
    lock = threading.Lock()

    def work() -> None:
        barrier.wait()
        with lock:
            seen.append(id(db._get_obj()))
        barrier.wait()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen)) == 8
    check_idle(db._pool, ledger, 8)


def test_timeout_when_no_thread_gives_back(Proxy: Any) -> None:
    db = Proxy(fun=Conn, max_size=1, min_size=0, timeout=0.05)
    hold = threading.Event()
    done = threading.Event()

    def holder() -> None:
        db.n  # noqa: B018
        hold.set()
        done.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    assert hold.wait(10)
    with pytest.raises(TimeOut):
        db.n  # noqa: B018
    done.set()
    t.join()
    assert db.n == 0  # back once the holder ended


# ------------------------------------------------------------ VERSATILE: threads


def test_versatile_one_object_per_thread(Proxy: Any) -> None:
    db = Proxy(fun=Conn, scope=Proxy.Scope.VERSATILE, max_size=None)
    main = db._get_obj()
    seen: dict[int, set[int]] = {}

    def work(i: int) -> None:
        seen[i] = {db._get_obj().n for _ in range(5)}  # creation numbers: unique

    threads = [threading.Thread(target=work, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [next(iter(s)) for s in seen.values()]
    assert all(len(s) == 1 for s in seen.values())
    assert len(set(ids) | {main.n}) == 11
    assert db._get_obj() is main


def test_versatile_never_shares_across_threads_with_inherited_context(Proxy: Any) -> None:
    """Threads that run in a copy of the creator's context (as with
    sys.flags.thread_inherit_context) still get their own objects."""
    marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker")
    marker.set("creator")
    db = Proxy(fun=Conn, scope=Proxy.Scope.VERSATILE, max_size=None)
    main = db._get_obj()
    got: list[int] = []
    inherited: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(6)

    def work() -> None:
        barrier.wait()
        obj = db._get_obj()
        with lock:
            got.append(obj.n)
            inherited.append(marker.get())
        barrier.wait()

    threads = [
        threading.Thread(target=contextvars.copy_context().run, args=(work,)) for _ in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert inherited == ["creator"] * 6  # the context really was inherited
    assert len(set(got)) == 6 and main.n not in got


def test_versatile_pooled_thread_end_returns(Proxy: Any) -> None:
    ledger = Ledger()
    db = Proxy(
        fun=Conn,
        scope=Proxy.Scope.VERSATILE,
        max_size=2,
        min_size=0,
        timeout=10.0,
        getter=ledger.getter,
        retter=ledger.retter,
    )
    threads = [threading.Thread(target=lambda: db.n) for _ in range(60)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check_idle(db._pool, ledger, 2)


# ------------------------------------------------------------ VERSATILE: asyncio


def test_versatile_one_object_per_task(Proxy: Any) -> None:
    db = Proxy(fun=Conn, scope=Proxy.Scope.VERSATILE, max_size=None)
    outside = db._get_obj()

    async def task() -> int:
        first = db._get_obj()
        await asyncio.sleep(0)
        assert db._get_obj() is first
        db.autocommit = True  # on this task's object only
        await asyncio.sleep(0)
        assert db.autocommit is True
        n: int = first.n
        return n

    async def main() -> tuple[int, list[int], bool]:
        parent = db._get_obj()  # set before the children exist: they inherit the context
        parent.autocommit = False
        ids = await asyncio.gather(*(task() for _ in range(10)))
        return parent.n, list(ids), db.autocommit

    parent, ids, parent_autocommit = asyncio.run(main())
    assert len(set(ids)) == 10
    assert parent not in ids and outside.n not in ids and parent != outside.n
    assert parent_autocommit is False
    assert db._get_obj() is outside and outside.autocommit is False


def test_versatile_task_end_returns_promptly(Proxy: Any) -> None:
    ledger = Ledger()
    db = Proxy(
        fun=Conn,
        scope=Proxy.Scope.VERSATILE,
        max_size=3,
        min_size=0,
        timeout=0,
        getter=ledger.getter,
        retter=ledger.retter,
    )

    async def task(i: int) -> int:
        n: int = db.n  # takes an object, never gives it back
        await asyncio.sleep(0)
        if i % 2:
            db._ret_obj()
        return n

    async def main() -> None:
        for wave in range(10):
            await asyncio.gather(*(task(i) for i in range(3)))
            stats = db._pool.stats()
            assert stats["nusing"] == 0, f"wave {wave}: objects not back after the tasks ended"
            assert ledger.rets == 3 * (wave + 1)

    asyncio.run(main())
    check_idle(db._pool, ledger, 3)


def test_versatile_tasks_in_many_threads(Proxy: Any) -> None:
    ledger = Ledger()
    db = Proxy(
        fun=Conn,
        scope=Proxy.Scope.VERSATILE,
        max_size=40,
        timeout=10.0,
        getter=ledger.getter,
        retter=ledger.retter,
    )
    ids: list[int] = []
    lock = threading.Lock()
    all_held = threading.Barrier(4)

    async def many() -> None:
        held = 0
        ready, go = asyncio.Event(), asyncio.Event()

        async def task() -> None:
            nonlocal held
            obj = db._get_obj()
            held += 1
            if held == 10:
                ready.set()
            await go.wait()
            assert db._get_obj() is obj
            with lock:
                ids.append(id(obj))

        tasks = [asyncio.create_task(task()) for _ in range(10)]
        await ready.wait()
        all_held.wait(10)  # blocks this loop while its ten tasks hold their objects
        go.set()
        await asyncio.gather(*tasks)

    threads = [threading.Thread(target=asyncio.run, args=(many(),)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ids) == 40 and len(set(ids)) == 40  # all alive together: all distinct
    check_idle(db._pool, ledger, 40)


def test_thread_scope_shares_within_a_thread_under_asyncio(Proxy: Any) -> None:
    db = Proxy(fun=Conn, scope=Proxy.Scope.THREAD, max_size=None)

    async def task() -> int:
        return id(db._get_obj())

    async def main() -> list[int]:
        return list(await asyncio.gather(*(task() for _ in range(5))))

    ids = asyncio.run(main())
    assert set(ids) == {id(db._get_obj())}
