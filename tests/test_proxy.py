"""Proxy: setting, errors, scopes, pooling API and forwarding, on both twins.

``Proxy`` (the fixture) is ``ppp.proxy._for_twin(backend)``: the Proxy class over
that twin's Pool and forwarding base.
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import operator
import pickle
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

import ppp
from ppp import proxy as proxy_module
from ppp._errors import ProxyException, TimeOut

NOT_INIT = "not initialised"


@pytest.fixture
def Proxy(backend: ModuleType) -> Any:
    return proxy_module._for_twin(backend)


class Thing:
    """A plain object with attributes."""

    def __init__(self, n: int = 0) -> None:
        self.n = n
        self.autocommit = False

    def hello(self, who: str) -> str:
        return f"hello {who} from {self.n}"


# ------------------------------------------------------------ classes and twins


def test_proxy_class_pairs_pool_twin_and_base(backend: ModuleType, Proxy: Any) -> None:
    assert Proxy._ppp_pool_class is backend.Pool
    base = "ppp._proxy" if backend.__name__ == "ppp._pool" else "ppp._proxy_py"
    assert any(k.__module__ == base and k.__name__ == "ProxyBase" for k in Proxy.__mro__)
    assert Proxy.__name__ == "Proxy" and Proxy.__module__ == "ppp.proxy"
    assert Proxy is proxy_module._for_twin(
        "python" if backend.__name__.endswith("_py") else "cython"
    )


def test_active_proxy_matches_backend() -> None:
    assert ppp.Proxy is proxy_module._for_twin(ppp.BACKEND)
    base = "ppp._proxy" if ppp.BACKEND == "cython" else "ppp._proxy_py"
    assert ppp.Proxy.__mro__[2].__module__ == base
    assert ppp.Proxy._ppp_pool_class is ppp.Pool


def test_for_twin_rejects_unknown() -> None:
    with pytest.raises(ValueError, match="twin must be"):
        proxy_module._for_twin("rust")


@pytest.mark.cython
def test_twins_have_the_same_names() -> None:
    compiled = proxy_module._for_twin("cython")
    pure = proxy_module._for_twin("python")
    assert compiled._ppp_own == pure._ppp_own - {"_ppp_g"}
    forwarded = {n for n in dir(pure) if n.startswith("__")} - {"__slots__", "__weakref__"}
    missing = {n for n in forwarded if not hasattr(compiled, n)}
    assert not missing


def test_own_names_are_few_and_underscored(Proxy: Any) -> None:
    own = Proxy._ppp_own
    assert {n for n in own if not n.startswith("_")} == {"set", "set_obj", "set_fun"}
    public = {n for n in own if not n.startswith(("_ppp", "__"))}
    assert public == {
        "set",
        "set_obj",
        "set_fun",
        "_set",
        "_set_obj",
        "_set_fun",
        "_set_pool",
        "_get_obj",
        "_ret_obj",
        "_has_obj",
        "_obj",
        "_pool",
        "_scope",
    }
    assert {n for n in own if n.startswith("__")} == {"__class__", "__reduce__", "__reduce_ex__"}


# ------------------------------------------------------------ setting


def test_set_variants(Proxy: Any) -> None:
    a, b = Thing(1), Thing(2)
    p = Proxy()
    assert p.set(a) is p and p.n == 1
    assert p.set_obj(b) is p and p.n == 2
    assert p._set(obj=a) is p and p.n == 1
    assert p._set_obj(b) is p and p.n == 2
    assert p.set(fun=lambda n: Thing(10 + n)) is p and p.n == 10
    assert p.set_fun(lambda n: Thing(20 + n)) is p and p.n == 20
    assert p._set_fun(lambda n: Thing(30 + n)) is p and p.n == 30
    assert p._set(fun=lambda n: Thing(40 + n)) is p and p.n == 40


def test_constructor_sets(Proxy: Any) -> None:
    assert Proxy(Thing(3)).n == 3
    assert Proxy(obj=Thing(4)).n == 4
    assert Proxy(fun=lambda n: Thing(5)).n == 5


def test_set_name_renames_setters(Proxy: Any) -> None:
    p = Proxy(set_name="init")
    assert isinstance(p, Proxy) and type(p).__name__ == "Proxy"
    p.init(Thing(1))
    assert p.n == 1
    p.init_obj(Thing(2))
    assert p.n == 2
    p.init_fun(lambda n: Thing(3))
    assert p.n == 3
    # "set" is no longer the proxy's: it is forwarded to the object
    d = Proxy(set_name="init")
    d.init({"set": "forwarded"})
    assert d.get("set") == "forwarded"
    s = Proxy(set_name="init")
    s.init(obj=Thing())
    with pytest.raises(AttributeError):
        _ = s.set
    s.init(obj=type("HasSet", (), {"set": "the object's"})())
    assert s.set == "the object's"
    # the same renamed class is reused
    assert type(Proxy(set_name="init")) is type(p)


@pytest.mark.parametrize("set_name", [None, "", "_set"])
def test_set_name_none_keeps_only_underscored_setters(Proxy: Any, set_name: Any) -> None:
    class Redis:
        def set(self, key: str, value: int) -> str:
            return f"SET {key} {value}"

    r = Proxy(set_name=set_name)
    r._set(obj=Redis())
    assert r.set("k", 1) == "SET k 1"
    assert "set" not in type(r)._ppp_own


def test_set_name_errors(Proxy: Any) -> None:
    with pytest.raises(ValueError, match="would hide the proxy's own '_get_obj'"):
        Proxy(set_name="_get")
    with pytest.raises(ValueError, match="plain identifier"):
        Proxy(set_name="not valid")
    with pytest.raises(TypeError, match="set_name must be a str"):
        Proxy(set_name=3)


def test_set_errors_exact_messages(Proxy: Any) -> None:
    p = Proxy()
    with pytest.raises(ProxyException) as both:
        p.set(obj=Thing(), fun=lambda n: Thing())
    assert str(both.value) == "Proxy cannot set both obj and fun"
    with pytest.raises(ProxyException) as neither:
        p.set()
    assert str(neither.value) == "Proxy must set either obj or fun"
    with pytest.raises(ProxyException) as both_init:
        Proxy(obj=Thing(), fun=lambda n: Thing())
    assert str(both_init.value) == "Proxy cannot set both obj and fun"
    with pytest.raises(ProxyException, match="cannot wrap None"):
        p.set_obj(None)
    with pytest.raises(TypeError, match="fun must be callable"):
        p.set_fun(42)


def test_set_fun_on_shared_scope_is_refused(Proxy: Any) -> None:
    p = Proxy(scope=Proxy.Scope.SHARED)
    with pytest.raises(ProxyException, match="scope SHARED wraps one object"):
        p.set_fun(lambda n: Thing())
    p.set_obj(Thing(7))
    assert p.n == 7 and p._scope is Proxy.Scope.SHARED


# ------------------------------------------------------------ not initialised


NEVER = [
    ("getattr", lambda p: p.anything),
    ("setattr", lambda p: setattr(p, "anything", 1)),
    ("delattr", lambda p: delattr(p, "anything")),
    ("str", str),
    ("bool", bool),
    ("len", len),
    ("iter", iter),
    ("in", lambda p: 1 in p),
    ("getitem", lambda p: p[0]),
    ("setitem", lambda p: operator.setitem(p, 0, 1)),
    ("call", lambda p: p()),
    ("eq", lambda p: p == 1),
    ("hash", hash),
    ("add", lambda p: p + 1),
    ("radd", lambda p: 1 + p),
    ("format", lambda p: f"{p:>3}"),
    ("with", lambda p: p.__enter__()),
    ("get_obj", lambda p: p._get_obj()),
]


@pytest.mark.parametrize(("what", "use"), NEVER, ids=[n for n, _ in NEVER])
def test_unset_proxy_raises_proxy_exception(
    Proxy: Any, what: str, use: Callable[[Any], Any]
) -> None:
    p = Proxy()
    with pytest.raises(ProxyException, match=NOT_INIT):
        use(p)


def test_unset_proxy_is_safe_to_inspect(Proxy: Any) -> None:
    p = Proxy()
    assert repr(p) == "<ppp.proxy.Proxy: not initialised>"
    assert p._has_obj() is False
    assert p._scope is Proxy.Scope.AUTO
    assert p._pool is None
    p._ret_obj()  # no pool, no object: nothing to do
    assert isinstance(p, Proxy) and p.__class__ is type(p)


def test_none_does_not_set(Proxy: Any) -> None:
    p = Proxy(None)
    with pytest.raises(ProxyException, match=NOT_INIT):
        p.x  # noqa: B018


# ------------------------------------------------------------ falsy objects


@pytest.mark.parametrize("value", [0, "", [], {}, False, 0.0, set(), ()])
def test_falsy_objects_are_wrapped(Proxy: Any, value: Any) -> None:
    p = Proxy(value)
    assert p._scope is Proxy.Scope.SHARED
    assert p._has_obj() is True
    assert p._get_obj() is value
    assert bool(p) is False
    assert p == value
    assert str(p) == str(value)
    q = Proxy()
    q.set(value)
    assert q._get_obj() is value
    r = Proxy()
    r.set_obj(value)
    assert r._get_obj() is value


def test_falsy_arithmetic(Proxy: Any) -> None:
    assert Proxy(0) + 1 == 1
    assert Proxy("") + "x" == "x"
    assert Proxy([]) + [1] == [1]
    assert len(Proxy([])) == 0


# ------------------------------------------------------------ scopes


def test_scope_values(Proxy: Any) -> None:
    S = Proxy.Scope
    assert S is ppp.proxy.Scope
    assert [(s.name, s.value) for s in S] == [
        ("AUTO", 0),
        ("SHARED", 1),
        ("THREAD", 2),
        ("VERSATILE", 3),
        ("GEVENT", 4),
        ("EVENTLET", 5),
    ]
    assert S["WERKZEUG"] is S["VERSATILE"] and S(3) is S.VERSATILE


def test_auto_scope_resolution(Proxy: Any) -> None:
    assert Proxy(Thing())._scope is Proxy.Scope.SHARED
    assert Proxy(fun=lambda n: Thing())._scope is Proxy.Scope.THREAD
    assert Proxy(fun=lambda n: Thing(), scope=3)._scope is Proxy.Scope.VERSATILE
    p = Proxy(scope=Proxy.Scope.THREAD)
    p.set_obj(Thing())  # an object is always shared
    assert p._scope is Proxy.Scope.SHARED
    p.set_fun(lambda n: Thing())
    assert p._scope is Proxy.Scope.THREAD


def test_scope_errors(Proxy: Any) -> None:
    with pytest.raises(ValueError, match="scope must be a Proxy.Scope or its value 0 to 5"):
        Proxy(scope=9)
    with pytest.raises(TypeError, match="scope must be a Proxy.Scope"):
        Proxy(scope="THREAD")


def test_thread_scope_one_object_per_thread(Proxy: Any) -> None:
    made: list[int] = []
    lock = threading.Lock()

    def fun(n: int) -> Thing:
        with lock:
            made.append(n)
        return Thing(n)

    for max_size in (None, 0):
        made.clear()
        p = Proxy(fun=fun, max_size=max_size)
        seen: dict[int, list[int]] = {}
        barrier = threading.Barrier(8)

        def work(
            i: int,
            p: Any = p,
            seen: dict[int, list[int]] = seen,
            barrier: threading.Barrier = barrier,
        ) -> None:
            barrier.wait()
            first = id(p._get_obj())
            seen[i] = [id(p._get_obj()), id(p._get_obj()), first]
            barrier.wait()  # all alive at once: nobody reuses another's object

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(len(set(ids)) == 1 for ids in seen.values())
        assert len({ids[0] for ids in seen.values()}) == 8
        assert sorted(made) == list(range(len(made))) and len(made) >= 8


# ------------------------------------------------------------ pooling


def test_pool_built_from_max_size_and_kwargs(backend: ModuleType, Proxy: Any) -> None:
    p = Proxy(fun=lambda n: Thing(n), max_size=3, min_size=0, timeout=0.5, max_use=7)
    pool = p._pool
    assert type(pool) is backend.Pool
    stats = pool.stats()
    assert (stats["max_size"], stats["min_size"], stats["timeout"], stats["max_use"]) == (
        3,
        0,
        0.5,
        7,
    )
    assert Proxy(fun=lambda n: Thing(), max_size=None)._pool is None
    assert Proxy(Thing(), max_size=3)._pool is None


def test_unknown_pool_parameter(Proxy: Any) -> None:
    with pytest.raises(TypeError, match="unknown pool parameter.*max_sise"):
        Proxy(max_sise=3)
    p = Proxy()
    with pytest.raises(TypeError, match="unknown pool parameter.*colser"):
        p._set_pool(colser=print)


def test_bad_max_size(Proxy: Any) -> None:
    with pytest.raises(ValueError, match="max_size must be >= 0"):
        Proxy(max_size=-1)
    with pytest.raises(TypeError, match="max_size must be an int or None"):
        Proxy(max_size="3")


def test_bad_log_level(Proxy: Any) -> None:
    with pytest.raises(ValueError, match="log_level: Unknown level: 'LOUD'"):
        Proxy(log_level="LOUD")
    with pytest.raises(TypeError, match="log_level"):
        Proxy(log_level=1.5)


@pytest.mark.thread_unsafe(reason="sets the level of the process-wide 'ppp' logger")
def test_log_level_sets_ppp_logger(Proxy: Any) -> None:
    logger = logging.getLogger("ppp")
    old = logger.level
    try:
        Proxy(log_level=logging.DEBUG)
        assert logger.level == logging.DEBUG
    finally:
        logger.setLevel(old)


def test_set_pool_before_and_after(Proxy: Any) -> None:
    p = Proxy(max_size=8)
    p._set_pool(max_size=2, min_size=0, timeout=0.25)
    p.set(fun=lambda n: Thing(n))
    stats = p._pool.stats()
    assert (stats["max_size"], stats["min_size"], stats["timeout"]) == (2, 0, 0.25)
    with pytest.raises(ProxyException, match="cannot override"):
        p._set_pool(max_size=5)
    assert p._pool.stats()["max_size"] == 2
    q = Proxy()
    q._set_pool(max_size=None)
    q.set_fun(lambda n: Thing())
    assert q._pool is None


def test_get_ret_has_obj(Proxy: Any) -> None:
    returned: list[Any] = []
    p = Proxy(fun=lambda n: Thing(n), max_size=1, min_size=0, retter=returned.append)
    assert p._has_obj() is False
    obj = p._get_obj()
    assert p._has_obj() is True and p._get_obj() is obj and p.n == obj.n
    assert p._pool.stats()["nusing"] == 1
    p._ret_obj()
    assert returned == [obj]
    assert p._has_obj() is False
    assert p._pool.stats()["nusing"] == 0
    p._ret_obj()  # nothing held: nothing happens
    assert returned == [obj]
    assert p._get_obj() is obj  # the pool's only object comes back


def test_get_obj_timeout(Proxy: Any) -> None:
    p = Proxy(fun=lambda n: Thing(n), max_size=1, min_size=0)
    held = threading.Event()
    release = threading.Event()

    def holder() -> None:
        p._get_obj()
        held.set()
        release.wait(10)
        p._ret_obj()

    t = threading.Thread(target=holder)
    t.start()
    try:
        assert held.wait(10)
        with pytest.raises(TimeOut, match="timeout after"):
            p._get_obj(timeout=0.05)
        with pytest.raises(TimeOut):
            p._get_obj(timeout=0)
        assert p._has_obj() is False
    finally:
        release.set()
        t.join()
    assert p._get_obj(timeout=1).n == 0


def test_obj_context_returns_even_on_error(Proxy: Any) -> None:
    returned: list[Any] = []
    p = Proxy(fun=lambda n: Thing(n), max_size=2, retter=returned.append)
    with p._obj() as obj:
        assert obj is p._get_obj()
    assert returned == [obj] and not p._has_obj()
    with pytest.raises(RuntimeError, match="boom"):
        with p._obj(timeout=1) as obj2:
            raise RuntimeError("boom")
    assert returned == [obj, obj2]
    assert p._pool.stats()["nusing"] == 0


def test_ret_obj_without_pool_keeps_object(Proxy: Any) -> None:
    p = Proxy(fun=lambda n: Thing(n), max_size=None)
    obj = p._get_obj()
    p._ret_obj()
    assert p._get_obj() is obj
    with p._obj() as same:
        assert same is obj
    shared = Proxy(Thing())
    with shared._obj() as o:
        assert o is shared._get_obj()


def test_no_pool_creation_numbers(Proxy: Any) -> None:
    ns: list[int] = []
    lock = threading.Lock()

    def fun(n: int) -> Thing:
        with lock:
            ns.append(n)
        return Thing(n)

    p = Proxy(fun=fun, max_size=None)
    threads = [threading.Thread(target=lambda: p.n) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(ns) == list(range(20))


def test_reset_shuts_old_pool_down(Proxy: Any) -> None:
    closed: list[Any] = []
    p = Proxy(fun=lambda n: Thing(n), max_size=2, closer=closed.append)
    old_pool = p._pool
    first = p._get_obj()
    p._ret_obj()
    p.set_obj(Thing(99))
    assert p._pool is None and p.n == 99
    assert old_pool.stats()["shutdown"] is True
    assert closed == [first]
    p.set_fun(lambda n: Thing(100 + n))
    assert p._pool is not old_pool and p.n == 100


def test_fun_error_reaches_caller(Proxy: Any) -> None:
    def fun(n: int) -> Thing:
        raise OSError("cannot connect")

    for max_size in (None, 2):
        p = Proxy(max_size=max_size, min_size=0) if max_size else Proxy(max_size=None)
        p.set_fun(fun)
        with pytest.raises(OSError, match="cannot connect"):
            p.n  # noqa: B018
        assert p._has_obj() is False


# ------------------------------------------------------------ attribute forwarding


def test_attribute_get_set_delete(Proxy: Any) -> None:
    t = Thing(5)
    p = Proxy(t)
    assert p.n == 5 and p.hello("me") == "hello me from 5"
    p.autocommit = True
    assert t.autocommit is True
    p.extra = "new"
    assert t.extra == "new"  # type: ignore[attr-defined]
    del p.extra
    assert not hasattr(t, "extra")
    with pytest.raises(AttributeError):
        del p.extra
    with pytest.raises(AttributeError):
        _ = p.missing
    assert getattr(p, "missing", "default") == "default"
    assert hasattr(p, "hello") and not hasattr(p, "missing")


def test_underscored_and_dunder_attributes_are_forwarded(Proxy: Any) -> None:
    t = Thing(1)
    t._private = "mine"  # type: ignore[attr-defined]
    p = Proxy(t)
    assert p._private == "mine"
    p._other = 2
    assert t._other == 2  # type: ignore[attr-defined]
    assert p.__dict__ is t.__dict__
    assert p.__doc__ == Thing.__doc__
    assert p.__class__ is type(p)  # own: isinstance checks stay honest


def test_attribute_assignment_per_thread(Proxy: Any) -> None:
    p = Proxy(fun=lambda n: Thing(n), max_size=4)
    p.autocommit = True
    result: list[bool] = []
    t = threading.Thread(target=lambda: result.append(p.autocommit))
    t.start()
    t.join()
    assert p.autocommit is True and result == [False]


def test_own_attributes_stay_on_proxy(Proxy: Any) -> None:
    t = Thing()
    p = Proxy(t)
    with pytest.raises(AttributeError):
        p._pool = "x"  # read-only property of the proxy
    assert not hasattr(t, "_pool")


def test_subclass_keeps_its_own_names(Proxy: Any) -> None:
    class DB(Proxy):  # type: ignore[misc]
        __slots__ = ("queries",)

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.queries = 0

        def query(self, sql: str) -> str:
            self.queries += 1
            return f"{self.hello(sql)}"

    db = DB(fun=lambda n: Thing(n))
    assert db.query("x") == "hello x from 0" and db.queries == 1
    assert {"query", "queries"} <= DB._ppp_own
    db.n = 5  # not its own: forwarded
    assert db._get_obj().n == 5
    renamed = DB(set_name="init")
    renamed.init(Thing(3))
    assert renamed.query("y") == "hello y from 3" and renamed.queries == 1


def test_weakref_and_no_pickle(Proxy: Any) -> None:
    import weakref

    p = Proxy([1, 2])
    assert weakref.ref(p)() is p
    with pytest.raises(TypeError, match="cannot be pickled or copied"):
        pickle.dumps(p)
    with pytest.raises(TypeError, match="cannot be pickled or copied"):
        copy.copy(p)
    with pytest.raises(TypeError, match="cannot be pickled or copied"):
        copy.deepcopy(p)


# ------------------------------------------------------------ operator forwarding


class Recorder:
    """Each special method records its call and answers something recognisable."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []


def _recording(name: str, result: Callable[..., Any]) -> Callable[..., Any]:
    def method(self: Recorder, *args: Any) -> Any:
        self.calls.append((name, args))
        return result(self, *args)

    method.__name__ = name
    return method


BINARY = [
    "add",
    "sub",
    "mul",
    "matmul",
    "truediv",
    "floordiv",
    "mod",
    "divmod",
    "pow",
    "lshift",
    "rshift",
    "and",
    "xor",
    "or",
]
for _op in BINARY:
    for _prefix in ("", "r"):
        _name = f"__{_prefix}{_op}__"
        setattr(Recorder, _name, _recording(_name, lambda self, *a, _n=_name: (_n, a)))
    if _op != "divmod":
        _name = f"__i{_op}__"
        setattr(Recorder, _name, _recording(_name, lambda self, *a: self))
_RESULTS: dict[str, Callable[..., Any]] = {
    "__str__": lambda self: "recorder-str",
    "__repr__": lambda self: "recorder-repr",
    "__bytes__": lambda self: b"recorder",
    "__format__": lambda self, spec: f"fmt[{spec}]",
    "__eq__": lambda self, o: ("eq", o),
    "__ne__": lambda self, o: ("ne", o),
    "__lt__": lambda self, o: ("lt", o),
    "__le__": lambda self, o: ("le", o),
    "__gt__": lambda self, o: ("gt", o),
    "__ge__": lambda self, o: ("ge", o),
    "__hash__": lambda self: 12345,
    "__bool__": lambda self: False,
    "__len__": lambda self: 42,
    "__iter__": lambda self: iter([1, 2, 3]),
    "__reversed__": lambda self: iter([3, 2, 1]),
    "__contains__": lambda self, item: item == "inside",
    "__getitem__": lambda self, key: ("item", key),
    "__setitem__": lambda self, key, value: None,
    "__delitem__": lambda self, key: None,
    "__call__": lambda self, *a: ("called", a),
    "__enter__": lambda self: "entered",
    "__exit__": lambda self, *exc: True,
    "__neg__": lambda self: "neg",
    "__pos__": lambda self: "pos",
    "__abs__": lambda self: "abs",
    "__invert__": lambda self: "invert",
    "__int__": lambda self: 7,
    "__float__": lambda self: 7.5,
    "__complex__": lambda self: 7j,
    "__index__": lambda self: 3,
    "__round__": lambda self, *nd: ("round", nd),
    "__trunc__": lambda self: "trunc",
    "__floor__": lambda self: "floor",
    "__ceil__": lambda self: "ceil",
    "__dir__": lambda self: ["a", "b"],
}
for _name, _result in _RESULTS.items():
    setattr(Recorder, _name, _recording(_name, _result))


def _pow3(x: Any) -> Any:
    return pow(x, 2, 5)


OPERATIONS: list[tuple[str, Callable[[Any], Any], str, tuple[Any, ...]]] = [
    ("str", str, "__str__", ()),
    ("repr", repr, "__repr__", ()),
    ("bytes", bytes, "__bytes__", ()),
    ("format", lambda x: f"{x:>9}", "__format__", (">9",)),
    ("format-builtin", lambda x: format(x, "x"), "__format__", ("x",)),
    ("eq", lambda x: x == 1, "__eq__", (1,)),
    ("ne", lambda x: x != 1, "__ne__", (1,)),
    ("lt", lambda x: x < 1, "__lt__", (1,)),
    ("le", lambda x: x <= 1, "__le__", (1,)),
    ("gt", lambda x: x > 1, "__gt__", (1,)),
    ("ge", lambda x: x >= 1, "__ge__", (1,)),
    ("hash", hash, "__hash__", ()),
    ("bool", bool, "__bool__", ()),
    ("len", len, "__len__", ()),
    ("iter", lambda x: list(iter(x)), "__iter__", ()),
    ("reversed", lambda x: list(reversed(x)), "__reversed__", ()),
    ("in", lambda x: "inside" in x, "__contains__", ("inside",)),
    ("not-in", lambda x: "outside" not in x, "__contains__", ("outside",)),
    ("getitem", lambda x: x["k"], "__getitem__", ("k",)),
    ("getitem-slice", lambda x: x[1:2], "__getitem__", (slice(1, 2),)),
    ("setitem", lambda x: operator.setitem(x, "k", 9), "__setitem__", ("k", 9)),
    ("delitem", lambda x: operator.delitem(x, "k"), "__delitem__", ("k",)),
    ("call", lambda x: x(1, 2), "__call__", (1, 2)),
    ("neg", operator.neg, "__neg__", ()),
    ("pos", operator.pos, "__pos__", ()),
    ("abs", abs, "__abs__", ()),
    ("invert", operator.invert, "__invert__", ()),
    ("int", int, "__int__", ()),
    ("float", float, "__float__", ()),
    ("complex", complex, "__complex__", ()),
    ("index", operator.index, "__index__", ()),
    ("round", round, "__round__", ()),
    ("round-ndigits", lambda x: round(x, 2), "__round__", (2,)),
    ("trunc", math.trunc, "__trunc__", ()),
    ("floor", math.floor, "__floor__", ()),
    ("ceil", math.ceil, "__ceil__", ()),
    ("dir", dir, "__dir__", ()),
    ("pow3", _pow3, "__pow__", (2, 5)),
]
for _op in BINARY:
    _fn = getattr(operator, f"{_op}_" if _op in ("and", "or") else _op, divmod)
    OPERATIONS.append((_op, functools.partial(lambda f, x: f(x, 3), _fn), f"__{_op}__", (3,)))
    OPERATIONS.append(
        (f"r{_op}", functools.partial(lambda f, x: f(3, x), _fn), f"__r{_op}__", (3,))
    )


@pytest.mark.parametrize(
    ("what", "use", "method", "args"), OPERATIONS, ids=[o[0] for o in OPERATIONS]
)
def test_operator_is_forwarded(
    Proxy: Any, what: str, use: Callable[[Any], Any], method: str, args: tuple[Any, ...]
) -> None:
    direct = Recorder()
    expected = use(direct)
    assert direct.calls == [(method, args)]
    rec = Recorder()
    p = Proxy(rec)
    assert use(p) == expected
    assert rec.calls == [(method, args)]


@pytest.mark.parametrize("op", [o for o in BINARY if o != "divmod"])
def test_inplace_operator_is_forwarded(Proxy: Any, op: str) -> None:
    rec = Recorder()
    p = Proxy(rec)
    q = p
    q = getattr(operator, f"i{op}")(q, 3)
    assert q is p  # changed in place: the name still holds the proxy
    assert rec.calls == [(f"__i{op}__", (3,))]


def test_with_statement(Proxy: Any) -> None:
    rec = Recorder()
    p = Proxy(rec)
    with p as entered:
        assert entered == "entered"
        raise KeyError("swallowed by __exit__ returning True")
    assert [c[0] for c in rec.calls] == ["__enter__", "__exit__"]
    assert rec.calls[1][1][0] is KeyError


def test_real_objects(Proxy: Any) -> None:
    lst = Proxy([3, 1, 2])
    assert sorted(lst) == [1, 2, 3] and 2 in lst and lst[0] == 3 and len(lst) == 3
    lst[0] = 5
    del lst[1]
    assert lst == [5, 2] and list(reversed(lst)) == [2, 5]
    ref = lst
    ref += [7]
    assert ref is lst and lst._get_obj() == [5, 2, 7]
    num = Proxy(10)
    total = num
    total += 5  # immutable: the new value, as Python does without __iadd__
    assert total == 15 and type(total) is int and num == 10
    assert num * 2 == 20 and 2**num == 1024 and num**2 == 100 and -num == -10
    assert divmod(num, 3) == (3, 1) and divmod(23, num) == (2, 3)
    assert f"{Proxy(3.14159):.2f}" == "3.14" and f"{num:04d}" == "0010"
    assert hash(Proxy("key")) == hash("key")
    assert {Proxy("a"): 1}[Proxy("a")] == 1
    assert Proxy(5) < Proxy(6) and Proxy(6) == Proxy(6) and Proxy(1) != Proxy(2)
    assert Proxy(len)("abc") == 3
    assert [10, 20, 30][Proxy(1)] == 20
    assert math.isclose(float(Proxy(2.5)), 2.5) and int(Proxy(2.5)) == 2
    dct = Proxy({"a": 1})
    dct["b"] = 2
    del dct["a"]
    assert dict(dct) == {"b": 2} and "b" in dct and dct.get("b") == 2


def test_proxies_of_proxies_compare(Proxy: Any) -> None:
    assert Proxy(3) + Proxy(4) == 7
    assert Proxy([1]) == Proxy([1])
    assert Proxy(Proxy(Thing(8))).n == 8


def test_subclass_may_define_getattribute(Proxy: Any) -> None:
    class Traced(Proxy):  # type: ignore[misc]
        __slots__ = ()

        def __getattribute__(self, name: str) -> Any:
            if name == "magic":
                return 42
            return super().__getattribute__(name)

    t = Traced([1, 1])
    assert t.magic == 42 and t.count(1) == 2 and len(t) == 2
    assert Traced.__getattribute__ is vars(Traced)["__getattribute__"]
