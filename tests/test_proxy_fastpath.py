"""Proxy read fast paths: the own-name check, the per-thread read cache, VERSATILE
from a plain thread.  The compiled twin caches the last reader's thread dict;
these tests drive what could make such a cache stale (thread ends and a new
thread reuses its memory, threads reading in turn, ``_ret_obj``, a new binding,
tasks and greenlets in the same thread).  Every test runs on both twins."""

from __future__ import annotations

import asyncio
import itertools
import sys
import threading
from types import ModuleType
from typing import Any

import pytest

from ppp import proxy as proxy_module


@pytest.fixture
def Proxy(backend: ModuleType) -> Any:
    return proxy_module._for_twin(backend)


class Conn:
    def __init__(self, n: int) -> None:
        self.n = n
        self.reader = 0
        self.status = "ok"
        self.é = "accent"


def counting_fun() -> Any:
    counter = itertools.count()
    lock = threading.Lock()

    def fun(_: int) -> Conn:
        with lock:
            return Conn(next(counter))

    return fun


def run_thread(body: Any) -> None:
    errors: list[BaseException] = []

    def guarded() -> None:
        try:
            body()
        except BaseException as exc:  # reported in the test's thread
            errors.append(exc)

    t = threading.Thread(target=guarded)
    t.start()
    t.join(30)
    assert not t.is_alive(), "thread hung"
    if errors:
        raise errors[0]


@pytest.mark.parametrize("max_size", [None, 4])
def test_each_new_thread_reads_its_own_object(Proxy: Any, max_size: int | None) -> None:
    """Short threads one after the other (a new thread often reuses the memory of
    the one before): every thread reads a new object, never its predecessor's."""
    p = Proxy(fun=counting_fun(), max_size=max_size)
    seen: list[int] = []

    def body() -> None:
        first = p._get_obj()
        first.reader = threading.get_ident()
        for _ in range(20):
            assert p.reader == threading.get_ident()
            assert p.n == first.n
        seen.append(first.n)

    for _ in range(60):
        run_thread(body)
    if max_size is None:
        assert seen == list(range(60))  # a new object per thread
    else:  # objects come back when each thread ends: never more than one made at once
        assert max(seen) == 0


def test_threads_reading_in_turn(Proxy: Any) -> None:
    """Many threads reading in turn (the cache changes hands on every switch): each
    always reads its own object."""
    p = Proxy(fun=counting_fun(), max_size=8)
    nthreads, rounds = 8, 300
    barrier = threading.Barrier(nthreads)
    errors: list[str] = []

    def body() -> None:
        me = threading.get_ident()
        mine = p._get_obj()
        mine.reader = me
        barrier.wait(10)
        for i in range(rounds):
            if p.reader != me or p.n != mine.n:
                errors.append(f"round {i}: read another thread's object")
            if i % 50 == 0:
                p.status = f"round {i}"
                if p.status != f"round {i}" or mine.status != f"round {i}":
                    errors.append(f"round {i}: write went elsewhere")
        p._ret_obj()

    threads = [threading.Thread(target=body) for _ in range(nthreads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    stats = p._pool.stats()
    assert stats["nobjs"] <= 8


def test_ret_obj_then_read_takes_another(Proxy: Any) -> None:
    gets: list[int] = []
    p = Proxy(fun=counting_fun(), max_size=2, getter=lambda obj: gets.append(obj.n))
    assert p.n == 0
    p._ret_obj()
    assert not p._has_obj()
    assert p.n == 0  # taken again from the pool
    assert len(gets) == 2
    p._ret_obj()


def test_new_binding_is_read_at_once(Proxy: Any) -> None:
    p = Proxy(fun=lambda n: Conn(100 + n), max_size=None)
    assert p.n == 100
    p.set_fun(lambda n: Conn(200 + n))
    assert p.n == 200
    p.set_obj(Conn(300))
    assert p.n == 300
    p.set_fun(lambda n: Conn(400 + n))
    assert p.n == 400


def test_versatile_thread_task_greenlet(Proxy: Any) -> None:
    """VERSATILE: plain thread code, an asyncio task and a greenlet in one thread each
    read their own object, in any order."""
    p = Proxy(fun=counting_fun(), scope=Proxy.Scope.VERSATILE, max_size=None)
    in_thread = p.n

    async def task() -> int:
        first: int = p.n
        await asyncio.sleep(0)
        assert p.n == first
        return first

    async def main() -> list[int]:
        return list(await asyncio.gather(task(), task()))

    in_tasks = asyncio.run(main())
    assert len({in_thread, *in_tasks}) == 3
    assert p.n == in_thread
    greenlet = pytest.importorskip("greenlet")
    in_greenlet = greenlet.greenlet(lambda: p.n).switch()
    assert in_greenlet not in (in_thread, *in_tasks)
    assert p.n == in_thread


def test_own_names_and_odd_names(Proxy: Any) -> None:
    """Names sharing a first letter with the proxy's own ones, non-ASCII names, the
    empty name and a non-str name behave as on the object itself."""
    p = Proxy(obj=Conn(5))
    assert p.status == "ok"  # forwarded, though set/set_obj also start with "s"
    assert callable(p.set) and p.set.__func__ is Proxy.set  # own
    assert p.é == "accent"
    with pytest.raises(AttributeError):
        getattr(p, "")
    with pytest.raises(TypeError):
        type(p).__getattribute__(p, 1)  # type: ignore[call-arg]
    p.sélection = 3
    assert p._get_obj().sélection == 3


def test_names_read_often_and_many_names(Proxy: Any) -> None:
    """The compiled twin remembers names it found not own (a table of eight, by
    identity): reading the same names again, many names built at run time, a str
    subclass and a subclass's own names all keep their verdict, and the table
    lets its names go with the proxy."""

    class Sub(Proxy):  # type: ignore[misc]
        __slots__ = ()

        def helper(self) -> str:
            return "own"

    obj = Conn(5)
    p = Sub(obj=obj)
    names = ["".join(("attr", str(i))) for i in range(64)]  # built, not interned
    for name in names:
        setattr(obj, name, name.upper())
    for _ in range(3):
        assert p.n == 5
        assert p.helper() == "own"
        assert callable(p._get_obj) and p._get_obj() is obj
        for name in names:
            assert getattr(p, name) == name.upper()
            assert p.helper() == "own"
        assert getattr(p, type("S", (str,), {})("status")) == "ok"
    with pytest.raises(AttributeError, match="nope"):
        p.nope  # noqa: B018
    name = "".join(("attr", "x"))
    setattr(obj, name, 1)
    assert getattr(obj, name) == 1  # CPython's type attribute cache may keep one reference
    before = sys.getrefcount(name)
    assert getattr(p, name) == 1
    del p
    assert sys.getrefcount(name) <= before


# A fresh interpreter: asyncio and greenlet are imported only after the proxy was
# created and first read from plain thread code (the scope hooks start empty).
_LATE_IMPORTS = """
import sys
from ppp.proxy import _for_twin
assert "asyncio" not in sys.modules and "greenlet" not in sys.modules
Proxy = _for_twin(sys.argv[1])
made = []
p = Proxy(fun=lambda n: made.append(n) or n, scope=Proxy.Scope.VERSATILE, max_size=None)
in_thread = p.real
import asyncio
assert p.real == in_thread
async def task():
    return p.real
in_task = asyncio.run(task())
assert in_task != in_thread and p.real == in_thread
try:
    import greenlet
except ImportError:  # not installed (free-threaded builds)
    greenlet = None
if greenlet is not None:
    assert p.real == in_thread
    in_greenlet = greenlet.greenlet(lambda: p.real).switch()
    assert in_greenlet not in (in_thread, in_task) and p.real == in_thread
print("ok", len(made), greenlet is not None)
"""


def test_versatile_asyncio_and_greenlet_imported_later(backend: ModuleType) -> None:
    """A VERSATILE proxy created and read before asyncio and greenlet are imported
    tells tasks and greenlets apart once they are (the scope hooks are taken when
    their module first shows up)."""
    import subprocess

    twin = proxy_module._for_twin(backend)._ppp_pool_class._backend
    out = subprocess.run(
        [sys.executable, "-X", "dev", "-c", _LATE_IMPORTS, twin],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    ok, made, with_greenlet = out.stdout.split()
    assert (ok, made) == ("ok", "3" if with_greenlet == "True" else "2")


def test_versatile_loop_started_then_stopped(Proxy: Any) -> None:
    """Plain thread code reads the thread's object before, between and after event
    loops run in the same thread; a loop callback outside any task reads it too;
    tasks read their own."""
    p = Proxy(fun=counting_fun(), scope=Proxy.Scope.VERSATILE, max_size=None)
    in_thread = p.n
    loop = asyncio.new_event_loop()
    try:

        async def task() -> int:
            n: int = p.n
            return n

        in_task = loop.run_until_complete(task())
        assert in_task != in_thread
        assert p.n == in_thread  # the loop is stopped: plain thread code again
        seen: list[int] = []
        loop.call_soon(lambda: seen.append(p.n))  # a running loop, no task
        loop.call_soon(loop.stop)
        loop.run_forever()
        assert seen == [in_thread]
        assert p.n == in_thread
    finally:
        loop.close()
    assert p.n == in_thread
    assert asyncio.run(task()) not in (in_thread, in_task)
    assert p.n == in_thread


def test_versatile_greenlet_paused_and_finished(Proxy: Any) -> None:
    """A greenlet that pauses (switches back to the thread's main greenlet) keeps its
    object across the pause while the main greenlet reads the thread's; once the
    greenlet has finished, the main greenlet still reads the thread's; a new
    thread's main greenlet is plain thread code too."""
    greenlet = pytest.importorskip("greenlet")
    p = Proxy(fun=counting_fun(), scope=Proxy.Scope.VERSATILE, max_size=None)
    in_thread = p.n
    main = greenlet.getcurrent()

    def body() -> int:
        first: int = p.n
        main.switch(first)  # pause
        assert p.n == first
        return first

    g = greenlet.greenlet(body)
    in_greenlet = g.switch()
    assert in_greenlet != in_thread
    assert p.n == in_thread  # in main, the greenlet paused
    assert g.switch() == in_greenlet  # resumed, then finished
    assert g.dead
    assert p.n == in_thread
    other: list[int] = []
    run_thread(lambda: other.append(p.n))
    assert other[0] not in (in_thread, in_greenlet)


def test_versatile_plain_thread_read_skips_the_slow_path(
    backend: ModuleType, Proxy: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Compiled twin: with asyncio and greenlet imported, a plain thread's VERSATILE
    read answers the scope question from C and reads the thread's local directly,
    never through the VERSATILE local's own (slow) attribute lookup."""
    if backend.Pool._backend != "cython":
        pytest.skip("the pure twin always reads through the local")
    pytest.importorskip("greenlet")
    p = Proxy(fun=counting_fun(), scope=Proxy.Scope.VERSATILE, max_size=None)
    in_thread = p.n
    assert "asyncio" in sys.modules and "greenlet" in sys.modules

    def slow(self: Any, name: str) -> Any:
        raise AssertionError(f"slow path taken for {name!r}")

    monkeypatch.setattr(type(p._ppp_st.local), "__getattr__", slow)
    assert p.n == in_thread
    assert p.reader == 0
