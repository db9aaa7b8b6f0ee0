"""Soak: long runs on both twins, with memory that must stay flat.

``make soak`` runs this script (CI does too), with warnings as errors but not
under ``-X dev``, whose debug allocator and asyncio debug mode would make it
slow and blur the memory figures (``make test`` runs under ``-X dev``); it is
kept out of ``make test`` because it takes a few minutes.  Each phase warms
up, then measures, around a long run:

- memory traced by ``tracemalloc`` that is still held afterwards,
- the process's resident memory (RSS),
- live GC-tracked objects (``len(gc.get_objects())``) and allocated blocks,

and fails when one grows more than a leak-free run can explain (one leaked
object per call would add megabytes).  Phases, each on the compiled and the
pure twin:

- ``pairs``: a million ``get``/``ret`` pairs;
- ``pairs+hooks``: 20,000 pairs with getter, retter, timed slots and leak traces;
- ``threads``: 300,000 pairs from 8 threads on 4 objects (waiting, grants);
- ``errors``: timeouts, failed creations and ignored returns;
- ``proxy-threads``: a hundred thousand threads (20,000 on the pure twin when
  the compiled one is active) that each take a pooled object through a
  ``Proxy`` and end without giving it back (the thread-end return);
- ``proxy-tasks``: 100,000 asyncio tasks doing the same with the ``VERSATILE`` scope.

``python tests/soak/soak.py --quick`` runs every phase at a tenth of its size;
``--phase NAME`` (repeatable) picks phases.  Exit status 1 on any failure.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import logging
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import ppp
from ppp import TimeOut
from ppp._backend import extensions_disabled
from ppp.proxy import _for_twin

# growth allowed after a phase (a leak of one small object per operation is
# 50+ bytes per operation: tens of megabytes here)
MAX_TRACED = 256 * 1024  # bytes still held that were allocated during the phase
MAX_RSS = 8 * 1024  # KiB
MAX_OBJECTS = 200
MAX_BLOCKS = 2000


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


@dataclass
class Figures:
    rss: int
    objects: int
    blocks: int

    @classmethod
    def now(cls) -> Figures:
        gc.collect()
        return cls(rss_kib(), len(gc.get_objects()), sys.getallocatedblocks())


@dataclass
class Result:
    phase: str
    twin: str
    ops: int
    seconds: float
    before: Figures
    after: Figures
    traced: int
    problems: list[str]


class Obj:
    __slots__ = ("n",)

    def __init__(self, n: int) -> None:
        self.n = n


def measure(phase: str, twin: str, ops: int, run: Callable[[int], Any], warm: int) -> Result:
    """Warm up, then run ``ops`` operations between two sets of figures."""
    run(warm)
    before = Figures.now()
    tracemalloc.start(1)
    start_snapshot = tracemalloc.take_snapshot()  # cheap: nothing is traced yet
    t0 = time.perf_counter()
    run(ops)
    seconds = time.perf_counter() - t0
    gc.collect()
    traced, _peak = tracemalloc.get_traced_memory()
    end_snapshot = tracemalloc.take_snapshot() if traced > MAX_TRACED else None
    tracemalloc.stop()
    after = Figures.now()
    problems = []
    if traced > MAX_TRACED:
        problems.append(f"{traced} bytes allocated during the phase are still held")
        if end_snapshot is not None:
            for stat in end_snapshot.compare_to(start_snapshot, "lineno")[:5]:
                problems.append(f"    {stat}")
    if after.rss - before.rss > MAX_RSS:
        problems.append(f"RSS grew by {after.rss - before.rss} KiB")
    if after.objects - before.objects > MAX_OBJECTS:
        problems.append(f"{after.objects - before.objects} more live objects")
    if after.blocks - before.blocks > MAX_BLOCKS:
        problems.append(f"{after.blocks - before.blocks} more allocated blocks")
    return Result(phase, twin, ops, seconds, before, after, traced, problems)


# --------------------------------------------------------------- the phases


def phase_pairs(twin: ModuleType, scale: float) -> Result:
    pool = twin.Pool(Obj, max_size=4, min_size=1, delay=0)
    get, ret = pool.get, pool.ret

    def run(n: int) -> None:
        for _ in range(n):
            ret(get())

    try:
        result = measure("pairs", twin.Pool._backend, int(1_000_000 * scale), run, 50_000)
        s = pool.stats()
        if (s["nobjs"], s["nusing"]) != (1, 0):
            result.problems.append(f"pool state after the run: {s['nobjs']=} {s['nusing']=}")
        return result
    finally:
        pool.shutdown()


def phase_pairs_hooks(twin: ModuleType, scale: float) -> Result:
    seen = [0]

    def hook(obj: Obj) -> None:
        seen[0] += 1

    pool = twin.Pool(
        Obj,
        max_size=4,
        getter=hook,
        retter=hook,
        max_lifetime=1e6,
        max_using_delay=1e6,
        leak_trace=True,
        delay=0,
    )

    def run(n: int) -> None:
        for _ in range(n):
            pool.ret(pool.get())

    try:
        return measure("pairs+hooks", twin.Pool._backend, int(20_000 * scale), run, 2_000)
    finally:
        pool.shutdown()


def phase_threads(twin: ModuleType, scale: float) -> Result:
    """Eight threads on four objects: most gets wait and are granted an object."""
    pool = twin.Pool(Obj, max_size=4, min_size=0, delay=0)
    nthreads = 8
    lost: list[str] = []

    def run(n: int) -> None:
        per = n // nthreads

        def body() -> None:
            held: set[int] = set()
            for _ in range(per):
                obj = pool.get()
                if id(obj) in held:
                    lost.append("an object handed out twice")
                pool.ret(obj)

        threads = [threading.Thread(target=body) for _ in range(nthreads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(600)
            if t.is_alive():
                lost.append("a thread hung")

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        result = measure("threads", twin.Pool._backend, int(300_000 * scale), run, 20_000)
    finally:
        sys.setswitchinterval(old)
        pool.shutdown()
    s = pool.stats()
    result.problems.extend(lost)
    if s["nusing"] or s["nwaiting"] or s["ncreated"] > 4:
        result.problems.append(f"pool state: {s['nusing']=} {s['nwaiting']=} {s['ncreated']=}")
    return result


def phase_errors(twin: ModuleType, scale: float) -> Result:
    """The error paths: TimeOut, a failing fun, ignored returns (logging muted)."""
    full = twin.Pool(Obj, max_size=1, min_size=0, delay=0)
    failing = twin.Pool(lambda n: 1 / 0, max_size=1, min_size=0, delay=0)
    held = full.get()
    logger = logging.getLogger("ppp")
    level = logger.level
    logger.setLevel(logging.CRITICAL)

    def run(n: int) -> None:
        for _ in range(n // 3):
            try:
                full.get(0)
            except TimeOut:
                pass
            try:
                failing.get()
            except ZeroDivisionError:
                pass
            full.ret(held)  # in use: returned ...
            full.ret(held)  # ... and once more: ignored
            full.get(0)

    try:
        return measure("errors", twin.Pool._backend, int(300_000 * scale), run, 3_000)
    finally:
        logger.setLevel(level)
        full.ret(held)
        full.shutdown()
        failing.shutdown()


def phase_proxy_threads(twin: ModuleType, scale: float) -> Result:
    """Threads that take a pooled object through a Proxy and just end."""
    proxy_class = _for_twin(twin)
    proxy = proxy_class(fun=Obj, max_size=8)
    pool = proxy._pool
    batch = 16

    def worker() -> None:
        proxy._get_obj()  # never returned by hand: the thread's end gives it back

    def run(n: int) -> None:
        for _ in range(n // batch):
            threads = [threading.Thread(target=worker) for _ in range(batch)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

    threads_before = threading.active_count()
    # a thread's life costs ~0.5 ms here: 100,000 on the active (compiled) twin,
    # 20,000 on the other one keep the soak to a few minutes
    lives = 100_000 if twin.Pool is ppp.Pool else 20_000
    try:
        result = measure("proxy-threads", twin.Pool._backend, int(lives * scale), run, 2_000)
        deadline = time.monotonic() + 30
        while pool.stats()["nusing"] and time.monotonic() < deadline:
            time.sleep(0.01)
        s = pool.stats()
        if s["nusing"] or s["nobjs"] > 8:
            result.problems.append(f"objects not given back: {s['nusing']=} {s['nobjs']=}")
        if s["nreturns"] != s["nuses"]:
            result.problems.append(f"{s['nuses']} gets but {s['nreturns']} returns")
        while threading.active_count() > threads_before and time.monotonic() < deadline:
            time.sleep(0.01)
        if threading.active_count() > threads_before:
            result.problems.append("threads left behind")
        return result
    finally:
        pool.shutdown()


def phase_proxy_tasks(twin: ModuleType, scale: float) -> Result:
    """asyncio tasks taking a pooled object through a VERSATILE proxy and ending."""
    proxy_class = _for_twin(twin)
    proxy = proxy_class(fun=Obj, max_size=0, scope=proxy_class.Scope.VERSATILE)
    pool = proxy._pool

    async def task() -> None:
        proxy._get_obj()

    async def main(n: int) -> None:
        for _ in range(n // 100):
            await asyncio.gather(*(task() for _ in range(100)))

    def run(n: int) -> None:
        asyncio.run(main(n))

    try:
        result = measure("proxy-tasks", twin.Pool._backend, int(100_000 * scale), run, 1_000)
        s = pool.stats()
        if s["nusing"] or s["nreturns"] != s["nuses"]:
            result.problems.append(f"not given back: {s['nusing']=} {s['nuses']=} {s['nreturns']=}")
        if s["nobjs"] > 100:
            result.problems.append(f"{s['nobjs']} objects for 100 tasks at a time")
        return result
    finally:
        pool.shutdown()


PHASES: dict[str, Callable[[ModuleType, float], Result]] = {
    "pairs": phase_pairs,
    "pairs+hooks": phase_pairs_hooks,
    "threads": phase_threads,
    "errors": phase_errors,
    "proxy-threads": phase_proxy_threads,
    "proxy-tasks": phase_proxy_tasks,
}


ROW = "{:<14} {:<7} {:>9} {:>6} {:>11} {:>9} {:>11} {:>9} {:>11} {:>9} {:>10}"
HEADER = ("phase", "twin", "ops", "s", "RSS KiB", "after", "objects", "after", "blocks", "after",
          "traced B")  # fmt: skip


def twins() -> list[ModuleType]:
    names = ["ppp._pool_py"] if extensions_disabled() else ["ppp._pool", "ppp._pool_py"]
    return [importlib.import_module(name) for name in names]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of every phase")
    parser.add_argument("--phase", action="append", choices=list(PHASES), help="phases to run")
    args = parser.parse_args()
    scale = 0.1 if args.quick else 1.0
    print(ROW.format(*HEADER))
    failed = False
    t0 = time.monotonic()
    for name in args.phase or list(PHASES):
        for twin in twins():
            r = PHASES[name](twin, scale)
            b, a = r.before, r.after
            cells = (b.rss, a.rss, b.objects, a.objects, b.blocks, a.blocks, r.traced)
            print(ROW.format(r.phase, r.twin, r.ops, f"{r.seconds:.1f}", *cells), flush=True)
            for problem in r.problems:
                print(f"  FAIL: {problem}")
            failed |= bool(r.problems)
    print(f"soak {'FAILED' if failed else 'passed'} in {time.monotonic() - t0:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
