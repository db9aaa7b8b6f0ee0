"""Where a get+ret pair's time goes, on whatever interpreter runs this (issue 14).

One thread does get+ret pairs on a pool of one object; the figure is the
fastest of many short rounds, in ns per pair (on this shared, noisy machine the
minimum is the steadiest estimate of what an operation costs).  The cases
differ only in which thread created the pool and its object before the
measuring thread starts:

- ``same``: the measuring thread itself;
- ``other-alive``: another thread that stays alive (blocked) meanwhile;
- ``other-exited``: another thread that has ended.

On the free-threaded build an object's reference count is "biased" to the
thread that created it: that thread counts with plain increments, every other
thread with atomic operations on a shared field, and a shared count that drops
below zero queues the object to its owner for merging.  The lines after the
pool cases isolate the pieces a pure-Python pair is made of (a lock, a list
pop/append, attribute reads, a ``threading.local`` read), each on objects made
by the same thread and by another one.

    PYTHON_GIL=0 .venv-ft/bin/python tools/ft_pair_costs.py          # GIL off
    PYTHON_GIL=1 .venv-ft/bin/python tools/ft_pair_costs.py          # same build, GIL on
    PPP_NO_EXTENSIONS=1 PYTHONPATH=. python3.13 tools/ft_pair_costs.py --pure-only
"""

from __future__ import annotations

import argparse
import importlib
import platform
import sys
import sysconfig
import threading
import time
from collections.abc import Callable
from typing import Any

N = 5_000  # operations per round
ROUNDS = 25


def interpreter() -> str:
    ft = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    is_enabled = getattr(sys, "_is_gil_enabled", None)
    gil = True if is_enabled is None else bool(is_enabled())
    return f"{platform.python_version()}{'t' if ft else ''} GIL {'on' if gil else 'off'}"


def made_by(where: str, make: Callable[[], Any]) -> tuple[Callable[[], Any], Callable[[], None]]:
    """A function that gives ``make()``'s result, made by the thread that calls it
    (``same``) or beforehand by another thread; and a cleanup."""
    if where == "same":
        return make, lambda: None
    box: list[Any] = []
    release = threading.Event()

    def maker() -> None:
        box.append(make())
        if where == "other-alive":
            release.wait(600)

    t = threading.Thread(target=maker)
    t.start()
    while not box:
        time.sleep(0.001)
    if where == "other-exited":
        t.join()

    def cleanup() -> None:
        release.set()
        t.join()

    return lambda: box[0], cleanup


def per_op_ns(build: Callable[[], Callable[[int], None]]) -> float:
    """Fewest ns per operation over ROUNDS rounds of N operations, run (and set up:
    ``build``) in a fresh thread."""
    result: list[float] = []

    def measure() -> None:
        run = build()
        run(N // 10)  # warm up
        samples = []
        for _ in range(ROUNDS):
            t0 = time.perf_counter_ns()
            run(N)
            samples.append((time.perf_counter_ns() - t0) / N)
        result.append(min(samples))

    t = threading.Thread(target=measure)
    t.start()
    t.join()
    return result[0]


def pool_case(module: str, where: str) -> float:
    mod = importlib.import_module(module)
    pools: list[Any] = []
    get_pool, cleanup = made_by(where, lambda: mod.Pool(lambda n: [n], max_size=1, min_size=1))

    def build() -> Callable[[int], None]:
        pool = get_pool()
        pools.append(pool)
        get, ret = pool.get, pool.ret

        def run(n: int) -> None:
            for _ in range(n):
                ret(get())

        return run

    try:
        return per_op_ns(build)
    finally:
        for pool in pools:
            pool.shutdown()
        cleanup()


class Box:
    __slots__ = ("a", "b", "c", "lock", "items")

    def __init__(self) -> None:
        self.a = [1]
        self.b: dict[str, Any] = {"k": 1}
        self.c = 3.5
        self.lock = threading.Lock()
        self.items = [[0]]


def piece_cases() -> dict[str, Callable[[Any], Callable[[int], None]]]:
    def lock(box: Any) -> Callable[[int], None]:
        def run(n: int) -> None:
            lk = box.lock
            for _ in range(n):
                lk.acquire()
                lk.release()

        return run

    def with_lock(box: Any) -> Callable[[int], None]:
        def run(n: int) -> None:
            lk = box.lock
            for _ in range(n):
                with lk:
                    pass

        return run

    def pop_append(box: Any) -> Callable[[int], None]:
        def run(n: int) -> None:
            items = box.items
            for _ in range(n):
                items.append(items.pop())

        return run

    def attrs(box: Any) -> Callable[[int], None]:
        def run(n: int) -> None:
            for _ in range(n):
                _ = box.a
                _ = box.b
                _ = box.c
                _ = box.items
                _ = box.lock

        return run

    def local(box: Any) -> Callable[[int], None]:
        loc = box.b["local"]

        def run(n: int) -> None:
            loc.x = 1
            for _ in range(n):
                _ = loc.x

        return run

    return {
        "lock acquire+release": lock,
        "with lock": with_lock,
        "list pop+append": pop_append,
        "5 attribute reads": attrs,
        "threading.local read": local,
    }


def make_box() -> Box:
    box = Box()
    box.b["local"] = threading.local()
    return box


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pure-only", action="store_true", help="only the pure twin")
    args = parser.parse_args()
    wheres = ("same", "other-alive", "other-exited")
    print(f"# {interpreter()}: ns per operation, 1 thread (fastest of {ROUNDS} x {N})")
    print("| case | " + " | ".join(f"made by {w}" for w in wheres) + " |")
    print("|---|" + "---|" * len(wheres))
    modules = ["ppp._pool_py"] if args.pure_only else ["ppp._pool", "ppp._pool_py"]
    for module in modules:
        cells = [f"{pool_case(module, w):,.0f}" for w in wheres]
        print(f"| get+ret {module} | " + " | ".join(cells) + " |")
    for name, case in piece_cases().items():
        cells = []
        for w in wheres:
            get_box, cleanup = made_by(w, make_box)
            try:
                cells.append(f"{per_op_ns(lambda: case(get_box())):,.1f}")  # noqa: B023
            finally:
                cleanup()
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
