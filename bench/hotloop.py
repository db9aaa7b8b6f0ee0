"""Run one benchmark case as a bare loop, outside pytest, for a profiler to look at.

Usage::

    python bench/hotloop.py CASE TWIN [N]
    perf record -g python bench/hotloop.py pair cython 20000000
    python -m cProfile -s tottime bench/hotloop.py options:max_use=1000000000 python
    valgrind --tool=callgrind python bench/hotloop.py read-pooled cython 200000

CASE is ``pair``, ``with``, ``options:NAME=VALUE`` (one Pool keyword, e.g.
``options:max_lifetime=3600``), ``read-SCOPE`` or ``call-SCOPE`` (SCOPE one of
shared, thread, pooled, versatile), ``contended-WORK-THREADS`` (WORK cpu or
nogil), ``churn-ret``, ``churn-noret`` or ``churn-bare`` (N short threads through a
``Proxy(fun, max_size=16)``, at most 16 alive), or ``scan`` (housekeeping rounds
over N idle objects).  TWIN is
``cython``, ``python`` or ``floor`` (``queue.SimpleQueue``, or a direct read for
the proxy cases).  It prints the time per operation of the whole run.
"""

from __future__ import annotations

import ast
import importlib
import sys
import time
from typing import Any

import benchkit
from bench_proxy import CHURN_ALIVE, LOOPS, POOL_SIZE, churn


def _pool_class(twin: str) -> Any:
    return importlib.import_module({"cython": "ppp._pool", "python": "ppp._pool_py"}[twin]).Pool


def _proxy(twin: str, scope: str) -> Any:
    if twin == "floor":
        return benchkit.Conn(7)
    from ppp.proxy import _for_twin

    Proxy = _for_twin(twin)

    def fun(n: int) -> benchkit.Conn:
        return benchkit.Conn(7)

    if scope == "shared":
        return Proxy(obj=benchkit.Conn(7))
    if scope == "thread":
        return Proxy(fun=fun, max_size=None)
    if scope == "pooled":
        return Proxy(fun=fun, max_size=POOL_SIZE)
    return Proxy(fun=fun, scope=Proxy.Scope.VERSATILE, max_size=POOL_SIZE)


def run(case: str, twin: str, n: int) -> float:
    """Run ``case`` ``n`` times; return the seconds per operation."""
    start = time.perf_counter()
    if case in ("pair", "with") or case.startswith("options:"):
        kwargs: dict[str, Any] = {}
        if case.startswith("options:"):
            name, _, value = case.partition(":")[2].partition("=")
            kwargs[name] = ast.literal_eval(value)
        face = (
            benchkit.simplequeue_face(8)
            if twin == "floor"
            else benchkit.ppp_face(_pool_class(twin), 8, **kwargs)
        )
        start = time.perf_counter()
        if case == "with" and twin != "floor":
            benchkit.with_loop(face.ctx, n)
        elif case == "with":
            benchkit.try_finally_loop(face.get, face.ret, n)
        else:
            benchkit.pair_loop(face.get, face.ret, n)
    elif case.startswith(("read-", "call-")):
        op, scope = case.split("-", 1)
        p = _proxy(twin, scope)
        LOOPS[op](p, 100)
        start = time.perf_counter()
        LOOPS[op](p, n)
    elif case.startswith("contended-"):
        _, work, threads = case.split("-")
        nthreads = int(threads)
        size = max(1, nthreads // 2)
        face = (
            benchkit.simplequeue_face(size)
            if twin == "floor"
            else benchkit.ppp_face(_pool_class(twin), size, timeout=30.0)
        )
        args, _ = benchkit.contended_round(face, nthreads, n, benchkit.WORKS[work])
        start = time.perf_counter()
        benchkit.run_contended(*args)
    elif case.startswith("churn-"):
        errors: list[str] = []
        if twin == "floor" or case == "churn-bare":
            obj = benchkit.Conn(7)

            def body() -> None:
                assert obj.x == 7

        else:
            from ppp.proxy import _for_twin

            p = _for_twin(twin)(fun=benchkit.Maker(), max_size=CHURN_ALIVE, timeout=30.0)
            returns = case == "churn-ret"

            def body() -> None:
                assert p.x >= 0
                if returns:
                    p._ret_obj()

        start = time.perf_counter()
        churn(body, n, errors)
        assert not errors, errors[:3]
    elif case == "scan":
        pool = _pool_class(twin)(
            benchkit.Maker(), max_size=0, min_size=0, max_avail_delay=60.0, delay=1e9
        )
        objs = [pool.get() for _ in range(n)]
        for obj in objs:
            pool.ret(obj)
        start = time.perf_counter()
        for _ in range(10):
            pool._hk_round()
        n *= 10
    else:
        raise SystemExit(f"unknown case {case!r}\n\n{__doc__}")
    return (time.perf_counter() - start) / n


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    case, twin = argv[0], argv[1]
    n = int(argv[2]) if len(argv) == 3 else 1_000_000
    per_op = run(case, twin, n)
    print(f"{case} {twin}: {per_op * 1e9:,.1f} ns per operation over {n:,}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
