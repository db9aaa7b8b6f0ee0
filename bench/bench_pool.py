"""Pool benchmarks: ppp's two twins beside the peers, one group per case.

Every group holds ``queue.SimpleQueue`` as its floor (``ref``): the cheapest
thread-safe hand-over Python has.  Each ppp case runs on both twins through the
tests' ``backend`` fixture; each peer skips with a note when it is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from benchkit import (
    PEERS,
    WORKS,
    Face,
    contended_round,
    measure_loop,
    pair_loop,
    ppp_face,
    run_contended,
    scaled,
    simplequeue_face,
    tag,
    try_finally_loop,
    with_loop,
)

SIZE = 8  # max_size of the single-thread cases


@pytest.fixture(params=list(PEERS))
def peer(request: pytest.FixtureRequest) -> Callable[[int], Face]:
    """A peer's pool maker (the ``SimpleQueue`` floor first)."""
    maker: Callable[[int], Face] = PEERS[request.param]
    return maker


def _measure_pairs(benchmark: Any, face: Face, group: str, **info: Any) -> None:
    ref = face.impl == "SimpleQueue"
    floor = simplequeue_face(SIZE)  # timed before each round: see measure_loop
    paired = None if ref else (pair_loop, (floor.get, floor.ret))
    try:
        measure_loop(
            benchmark,
            pair_loop,
            (face.get, face.ret),
            group,
            face.impl,
            face.label,
            ref,
            paired,
            **info,
        )
        face.check()
    finally:
        face.close()


# ------------------------------------------------------------ get+ret, 1 thread


def test_pair_ppp(benchmark: Any, backend: ModuleType) -> None:
    _measure_pairs(benchmark, ppp_face(backend.Pool, SIZE), "pool-pair")


def test_pair_peer(benchmark: Any, peer: Callable[[int], Face]) -> None:
    _measure_pairs(benchmark, peer(SIZE), "pool-pair")


# --------------------------------------------------------- with pool.obj(), 1 thread


def _measure_with(benchmark: Any, face: Face) -> None:
    try:
        if face.impl == "SimpleQueue":
            label = "SimpleQueue get, try/finally put"
            args: tuple[Any, ...] = (face.get, face.ret)
            measure_loop(benchmark, try_finally_loop, args, "pool-with", face.impl, label, True)
        else:
            floor = simplequeue_face(SIZE)
            paired = (try_finally_loop, (floor.get, floor.ret))
            measure_loop(
                benchmark, with_loop, (face.ctx,), "pool-with", face.impl, face.label, False, paired
            )
        face.check()
    finally:
        face.close()


def test_with_ppp(benchmark: Any, backend: ModuleType) -> None:
    _measure_with(benchmark, ppp_face(backend.Pool, SIZE))


def test_with_peer(benchmark: Any, peer: Callable[[int], Face]) -> None:
    _measure_with(benchmark, peer(SIZE))


# ------------------------------------------------ options switched on, 1 thread


def _noop(obj: Any) -> None:
    pass


OPTIONS: dict[str, dict[str, Any]] = {
    "no option": {},
    "max_size=0": {"max_size": 0},
    "timeout=30": {"timeout": 30.0},
    "max_use=10**9": {"max_use": 10**9},
    "max_avail_delay=60": {"max_avail_delay": 60.0},
    "max_lifetime=3600": {"max_lifetime": 3600.0},
    "getter+retter": {"getter": _noop, "retter": _noop},
    "leak_trace": {"leak_trace": True},
}


@pytest.mark.parametrize("option", list(OPTIONS))
def test_option_ppp(benchmark: Any, backend: ModuleType, option: str) -> None:
    """What each option costs on the hot path when it is on (off, it must cost nothing)."""
    face = ppp_face(backend.Pool, SIZE, **OPTIONS[option])
    face.impl = f"{face.impl}:{option}"
    face.label = f"{face.label}, {option}"
    _measure_pairs(benchmark, face, "pool-options", option=option)


def test_option_floor(benchmark: Any) -> None:
    _measure_pairs(benchmark, simplequeue_face(SIZE), "pool-options")


# ------------------------------------------------------------ contended, N threads

CONTENDED_PAIRS = 20_000  # pairs per round, over all threads
CONTENDED_ROUNDS = 9


def _measure_contended(
    benchmark: Any, make: Callable[[int], Face], work: str, nthreads: int
) -> None:
    size = max(1, nthreads // 2)
    face = make(size)
    pairs = scaled(benchmark, CONTENDED_PAIRS, 2 * nthreads) // nthreads * nthreads
    group = f"pool-contended-{work}-{nthreads}"
    tag(benchmark, group, face.impl, face.label, pairs, ref=face.impl == "SimpleQueue")
    try:
        benchmark.pedantic(
            run_contended,
            setup=lambda: contended_round(face, nthreads, pairs, WORKS[work]),
            rounds=CONTENDED_ROUNDS,
            warmup_rounds=1,
        )
        if face.impl.startswith("ppp-"):  # waits, the longest, fallbacks to hand-off
            s = face.pool.stats()
            longest = (s["longest_wait"] or 0.0) * 1e3
            benchmark.extra_info["longest_wait"] = s["longest_wait"]
            benchmark.extra_info["note"] = (
                f"{s['nwaits'] / max(s['nuses'], 1):.0%} of gets waited, longest wait "
                f"{longest:.2f} ms, {s['nhandoffs']} fallbacks to hand-off"
            )
    finally:
        face.close()


@pytest.mark.parametrize("nthreads", [2, 8, 32])
@pytest.mark.parametrize("work", list(WORKS))
def test_contended_ppp(benchmark: Any, backend: ModuleType, work: str, nthreads: int) -> None:
    """Pairs per second over all threads; no object twice, no TimeOut (asserted)."""
    _measure_contended(
        benchmark, lambda size: ppp_face(backend.Pool, size, timeout=30.0), work, nthreads
    )


@pytest.mark.parametrize("nthreads", [2, 8, 32])
@pytest.mark.parametrize("work", list(WORKS))
def test_contended_peer(
    benchmark: Any, peer: Callable[[int], Face], work: str, nthreads: int
) -> None:
    _measure_contended(benchmark, peer, work, nthreads)
