"""Throughput of get+ret pairs by 1, 2, 4, 8 threads (issue 14: the free-threaded build).

Each case runs ``nthreads`` threads that each do get+ret pairs in a tight loop
on a pool of ``nthreads`` objects ("all": one each) or of half as many
("half": they wait for each other).  ppp runs on both twins through the tests'
``backend`` fixture; ``queue.SimpleQueue`` (get, put back) is the reference:
the fastest thread-safe hand-over CPython has, one C call each way.  A round
lasts about ``ROUND_S`` seconds; the figure is the median of ``ROUNDS`` rounds,
in pairs per second over all threads (the pairs the threads finished by the
time the last one stopped, over that time).  At the end the module prints a table
(and writes it to bench/results/ft-<interpreter>.md).

Run on the free-threaded build with the GIL off by ``make bench-ft``; it runs on
any build (``.venv/bin/python -m pytest bench/bench_ft.py -p no:cacheprovider``),
which gives the same table with the GIL.  Under ``--benchmark-disable`` (the
smoke run of ``make bench-smoke``) each case runs one short round.
"""

from __future__ import annotations

import platform
import queue
import statistics
import sys
import sysconfig
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

THREADS = (1, 2, 4, 8)
ROUNDS = 5
ROUND_S = 0.3  # target length of one round
UNROLL = 10  # pairs written out per loop iteration
RESULTS = Path(__file__).resolve().parent / "results"

#: (impl, nthreads, nobjs) -> median pairs/s
_measured: dict[tuple[str, int, int], float] = {}


def interpreter() -> str:
    """What runs the benchmark, e.g. ``CPython 3.13.15t, GIL off``."""
    ft = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    is_enabled = getattr(sys, "_is_gil_enabled", None)
    gil = True if is_enabled is None else bool(is_enabled())
    return (
        f"{platform.python_implementation()} {platform.python_version()}{'t' if ft else ''}, "
        f"GIL {'on' if gil else 'off'}"
    )


def _loop(get: Callable[[], Any], ret: Callable[[Any], None], stop: list[bool]) -> int:
    """Pairs done until ``stop[0]`` is set (checked every UNROLL pairs)."""
    n = 0
    while not stop[0]:
        o = get()
        ret(o)
        o = get()
        ret(o)
        o = get()
        ret(o)
        o = get()
        ret(o)
        o = get()
        ret(o)
        o = get()
        ret(o)
        o = get()
        ret(o)
        o = get()
        ret(o)
        o = get()
        ret(o)
        o = get()
        ret(o)
        n += UNROLL
    return n


Pair = tuple[Callable[[], Any], Callable[[Any], None]]


def run_round(methods: Callable[[], Pair], nthreads: int, seconds: float) -> float:
    """Pairs per second of ``nthreads`` threads, all started together and stopped
    after ``seconds``.  Bounded by time, not by a number of pairs: the waiting
    cases' speed moves by 10x or more between rounds (a count calibrated on a
    fast round once ran for minutes).

    Each thread calls bound methods of its own (``methods()``: e.g. ``pool.get``
    and ``pool.ret`` bound in that thread) and reads a stop flag of its own: on a
    free-threaded build every object the threads share and load in their loop
    (one bound method, one flag) has its reference count written by each of them
    at each load, and that cache line's moves between the cores would be measured
    instead of the pool."""
    barrier = threading.Barrier(nthreads + 1)
    errors: list[BaseException] = []
    counts: list[int] = []
    stops: list[list[bool]] = []

    def worker() -> None:
        try:
            get, ret = methods()
            stop = [False]
            stops.append(stop)
            barrier.wait(30)
            counts.append(_loop(get, ret, stop))  # list.append: atomic
        except BaseException as exc:  # reported below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=worker) for _ in range(nthreads)]
    for t in threads:
        t.start()
    barrier.wait(30)
    start = time.perf_counter()
    time.sleep(seconds)
    for stop in stops:
        stop[0] = True
    for t in threads:
        t.join(60)
        assert not t.is_alive(), "a benchmark thread did not stop within 60 s"
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return sum(counts) / elapsed


def measure(methods: Callable[[], Pair], nthreads: int, smoke: bool) -> float:
    """Median pairs/s over ROUNDS rounds of ROUND_S seconds each."""
    if smoke:
        run_round(methods, nthreads, 0.01)
        return 0.0
    run_round(methods, nthreads, ROUND_S / 10)  # warm-up
    return statistics.median(run_round(methods, nthreads, ROUND_S) for _ in range(ROUNDS))


CASES = [(t, t) for t in THREADS] + [(t, t // 2) for t in THREADS if t > 1]
IDS = [f"{t}threads-{o}objs" for t, o in CASES]


@pytest.fixture(scope="module", autouse=True)
def table(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print the module's results as one table once every case ran."""
    yield
    if not _measured:
        return
    text = render()
    RESULTS.mkdir(exist_ok=True)
    name = interpreter().split(",")[0].replace(" ", "-").lower()
    gil = "gil-off" if "GIL off" in interpreter() else "gil-on"
    (RESULTS / f"ft-{name}-{gil}.md").write_text(text + "\n")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():  # teardown output is captured else
            reporter.write_line("")
            for line in text.splitlines():
                reporter.write_line(line)


def render() -> str:
    """A markdown table: pairs/s per case and implementation, ratios to SimpleQueue."""
    impls = [i for i in ("SimpleQueue", "cython", "python") if any(k[0] == i for k in _measured)]
    head = "| threads | objects | " + " | ".join(impls) + " |"
    rule = "|---|---|" + "---|" * len(impls)
    lines = [f"get+ret pairs per second, all threads ({interpreter()}, median of {ROUNDS})", ""]
    lines += [head, rule]
    for t, o in CASES:
        ref = _measured.get(("SimpleQueue", t, o))
        cells = []
        for impl in impls:
            v = _measured.get((impl, t, o))
            if v is None:
                cells.append("")
            elif impl == "SimpleQueue" or not ref:
                cells.append(f"{v / 1e3:,.0f}k")
            else:
                cells.append(f"{v / 1e3:,.0f}k ({v / ref:.2f}×)")
        lines.append(f"| {t} | {o} | " + " | ".join(cells) + " |")
    lines.append("")
    for impl in impls:
        one, two = _measured.get((impl, 1, 1)), _measured.get((impl, 2, 2))
        if one and two:
            lines.append(f"- {impl}: 2 threads on 2 objects = {two / one:.2f}× 1 thread on 1")
    return "\n".join(lines)


def _smoke(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("benchmark_disable", default=False))


# bench/conftest.py runs the reference (``peer`` SimpleQueue) of each case first,
# then both twins, close together in time.
@pytest.mark.parametrize("peer", ["SimpleQueue"])
@pytest.mark.parametrize(("nthreads", "nobjs"), CASES, ids=IDS)
def test_ft_pairs_peer(
    request: pytest.FixtureRequest, peer: str, nthreads: int, nobjs: int
) -> None:
    q: queue.SimpleQueue[list[int]] = queue.SimpleQueue()
    objs = [[i] for i in range(nobjs)]
    for o in objs:
        q.put(o)
    rate = measure(lambda: (q.get, q.put), nthreads, _smoke(request))
    assert q.qsize() == nobjs  # nothing lost
    if rate:
        _measured["SimpleQueue", nthreads, nobjs] = rate


@pytest.mark.parametrize(("nthreads", "nobjs"), CASES, ids=IDS)
def test_ft_pairs_ppp(
    request: pytest.FixtureRequest, backend: ModuleType, nthreads: int, nobjs: int
) -> None:
    pool = backend.Pool(lambda n: [n], max_size=nobjs, min_size=nobjs)
    try:
        rate = measure(lambda: (pool.get, pool.ret), nthreads, _smoke(request))
        s = pool.stats()
        assert (s["nobjs"], s["nusing"], s["ncreated"]) == (nobjs, 0, nobjs), s
    finally:
        pool.shutdown()
    if rate:
        impl = "python" if backend.__name__.endswith("_py") else "cython"
        _measured[impl, nthreads, nobjs] = rate
