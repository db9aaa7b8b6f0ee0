"""Forwarding of the asynchronous protocols (``await``, ``async with``, ``async
for``), of ``isinstance(x, proxy)``, and the exact answers of ``callable`` and
the ``collections.abc`` checks, on both twins (``ppp.proxy._for_twin``)."""

from __future__ import annotations

import asyncio
import collections.abc as abc
from collections.abc import AsyncIterator, Generator
from types import ModuleType
from typing import Any

import pytest

import ppp
from ppp import proxy as proxy_module


@pytest.fixture
def Proxy(backend: ModuleType) -> Any:
    return proxy_module._for_twin(backend)


class AsyncConn:
    """An asynchronous connection: awaitable, an async context manager, async iterable."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.entered = 0
        self.exited: list[Any] = []

    def __await__(self) -> Generator[Any, None, tuple[str, int]]:
        yield from asyncio.sleep(0).__await__()
        return ("ready", self.n)

    async def __aenter__(self) -> AsyncConn:
        await asyncio.sleep(0)
        self.entered += 1
        return self

    async def __aexit__(self, *exc_info: Any) -> bool:
        await asyncio.sleep(0)
        self.exited.append(exc_info[0])
        return exc_info[0] is KeyError  # swallows KeyError only

    async def rows(self) -> AsyncIterator[int]:
        for i in range(3):
            await asyncio.sleep(0)
            yield self.n * 10 + i

    def __aiter__(self) -> AsyncIterator[int]:
        return self.rows()


def test_await_forwards(Proxy: Any) -> None:
    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    async def main() -> None:
        assert await Proxy(obj=answer()) == 42  # a coroutine
        future = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(future.set_result, "done")
        assert await Proxy(obj=future) == "done"  # a Future
        assert await Proxy(obj=AsyncConn(7)) == ("ready", 7)  # a class with __await__
        with pytest.raises(TypeError, match="can't be used in 'await' expression"):
            await Proxy(obj=1)
        with pytest.raises(ppp.ProxyException, match="not initialised"):
            await Proxy()

    asyncio.run(main())


def test_async_with_forwards(Proxy: Any) -> None:
    conn = AsyncConn(1)
    db = Proxy(obj=conn)

    async def main() -> None:
        async with db as got:
            assert got is conn
        async with db:
            raise KeyError("swallowed by the object's __aexit__")
        with pytest.raises(ValueError):
            async with db:
                raise ValueError("not swallowed")
        with pytest.raises(TypeError, match="asynchronous context manager"):
            async with Proxy(obj=1):
                pass

    asyncio.run(main())
    assert conn.entered == 3 and conn.exited == [None, KeyError, ValueError]


def test_async_for_forwards(Proxy: Any) -> None:
    async def numbers() -> AsyncIterator[int]:
        for i in range(4):
            yield i

    async def main() -> None:
        assert [i async for i in Proxy(obj=numbers())] == [0, 1, 2, 3]  # an async generator
        conn = Proxy(obj=AsyncConn(2))
        assert [i async for i in conn] == [20, 21, 22]
        assert [i async for i in conn] == [20, 21, 22]  # a new iterator each time
        with pytest.raises(TypeError, match="async"):
            async for _ in Proxy(obj=[1, 2]):
                pass

    asyncio.run(main())


def test_versatile_pool_one_object_per_task(Proxy: Any) -> None:
    """A pooled VERSATILE proxy of async connections under concurrent tasks: each
    task awaits, enters and iterates its own object, for many rounds."""
    made: list[AsyncConn] = []

    def fun(n: int) -> AsyncConn:
        conn = AsyncConn(n)
        made.append(conn)
        return conn

    db = Proxy(fun=fun, scope=Proxy.Scope.VERSATILE, max_size=0, min_size=0)
    holders: dict[int, int] = {}

    async def request(k: int) -> None:
        ready, n = await db
        holders[k] = n
        async with db as conn:
            assert conn.n == n
            rows = [row async for row in db]
            assert rows == [n * 10, n * 10 + 1, n * 10 + 2]
            await asyncio.sleep(0)
            assert db._get_obj() is conn
        db._ret_obj()

    async def main() -> None:
        for _ in range(10):
            holders.clear()
            await asyncio.gather(*(request(k) for k in range(8)))
            assert len(set(holders.values())) == 8  # one object per task at once
            assert db._pool.stats()["nusing"] == 0

    try:
        asyncio.run(main())
        assert len(made) <= 8
        assert sum(conn.entered for conn in made) == 80
    finally:
        db._pool.shutdown()


def test_isinstance_with_a_proxy_of_a_class(Proxy: Any) -> None:
    number = Proxy(obj=int)
    assert isinstance(3, number) and not isinstance("3", number)
    assert issubclass(bool, number) and not issubclass(str, number)
    assert isinstance(3, (str, number))
    sized = Proxy(obj=abc.Sized)  # an ABC: its own __instancecheck__ runs
    assert isinstance([], sized) and not isinstance(3, sized)
    with pytest.raises(TypeError):
        isinstance(3, Proxy(obj=3))  # as isinstance(3, 3)
    with pytest.raises(ppp.ProxyException, match="not initialised"):
        isinstance(3, Proxy())


# What Python decides from the proxy's type, never from the wrapped object: the
# README's list of what is not forwarded.  ``__class__`` is the proxy's own, so
# ``isinstance(proxy, C)`` asks about the proxy's class.
TRUE_WHATEVER_THE_OBJECT: tuple[Any, ...] = (
    abc.Hashable,
    abc.Iterable,
    abc.Reversible,
    abc.Sized,
    abc.Container,
    abc.Collection,
    abc.Callable,
    abc.Awaitable,
    abc.AsyncIterable,
)
FALSE_WHATEVER_THE_OBJECT: tuple[Any, ...] = (
    abc.Iterator,
    abc.Generator,
    abc.AsyncIterator,
    abc.Coroutine,
    abc.Sequence,
    abc.MutableSequence,
    abc.Mapping,
    abc.MutableMapping,
    abc.Set,
    getattr(abc, "Buffer", None) or abc.ByteString,
)


@pytest.mark.parametrize("obj", [1, "text", [1, 2], {"a": 1}, iter([1]), len, object()], ids=type)
def test_type_level_answers_are_exact(Proxy: Any, obj: Any) -> None:
    proxy = Proxy(obj=obj)
    assert callable(proxy)  # the type has __call__ (to forward calls)
    kind: Any
    for kind in TRUE_WHATEVER_THE_OBJECT:
        assert isinstance(proxy, kind), kind
    for kind in FALSE_WHATEVER_THE_OBJECT:
        assert not isinstance(proxy, kind), kind
    assert isinstance(proxy, proxy_module._ProxyCold)  # type(proxy) is the proxy's class
    if type(obj) is not object:
        assert not isinstance(proxy, type(obj))
    assert proxy.__class__ is type(proxy)
    # what the object itself says is one attribute read away
    assert callable(proxy._get_obj()) == callable(obj)


def test_protocols_python_looks_up_on_the_type_are_not_forwarded(Proxy: Any) -> None:
    """The README's "Not forwarded" list, item by item."""
    import copy
    import os
    import pathlib
    import pickle

    assert next(iter(Proxy(obj=iter([1])))) == 1  # the way round
    with pytest.raises(TypeError):
        next(Proxy(obj=iter([1])))
    with pytest.raises(TypeError):
        memoryview(Proxy(obj=b"bytes"))  # the buffer protocol
    assert bytes(Proxy(obj=b"bytes")) == b"bytes"  # __bytes__ is forwarded
    with pytest.raises(TypeError):
        os.fspath(Proxy(obj=pathlib.Path("x")))
    for clone in (copy.copy, copy.deepcopy, pickle.dumps):
        with pytest.raises(TypeError, match="cannot be pickled or copied"):
            clone(Proxy(obj=[1]))

    def method(self: Any) -> str:
        return "bound"

    class Holder:
        plain = method
        proxied = Proxy(obj=method)

    assert Holder().plain() == "bound"
    with pytest.raises(TypeError):
        Holder().proxied()  # no descriptor protocol: not bound to the instance
    obj = [1, 2, 3]
    proxy = Proxy(obj=obj)
    assert proxy is not obj and id(proxy) != id(obj) and proxy == obj

    async def main() -> None:
        async def gen() -> AsyncIterator[int]:
            yield 1

        with pytest.raises(TypeError):
            await anext(Proxy(obj=gen()))

    asyncio.run(main())
