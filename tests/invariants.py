"""A shared checker of a pool's invariants, used after interrupts and hostile hooks.

``check_pool(pool, held)`` is called with no thread inside the pool.  Using only the
public API it checks that:

- the pool's lock is free: ``stats()`` and then a ``get(0)``/``ret`` pair, run
  from another thread, complete within a deadline (else every thread's stack is
  dumped and the check fails);
- the counts are exact: ``nobjs == navail + nusing + nborrowed`` with nothing
  borrowed, pending or waiting, ``nusing`` equal to the objects the caller holds,
  ``nobjs == ncreated - ndestroys``, the ``avail``/``using`` lists match the counts;
- with a :class:`Maker` (``fun`` and ``closer``), every object ever made is in the
  pool, held by the caller, or closed exactly once -- never closed and still in the
  pool, never forgotten without being closed (handed to nobody);
- every slot is usable: ``max_size`` minus the held objects can be taken at once
  (with a timeout), all distinct, none closed, none held by the caller; they are
  then given back and the counts are checked again.

Every failure is an ``AssertionError`` (so the checker also runs in the storm
subprocesses, outside pytest).
"""

from __future__ import annotations

import faulthandler
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")

LOCK_DEADLINE = 5.0  # seconds a stats() or get(0)/ret from another thread may take
THREADS_DEADLINE = 90.0  # seconds the threads of one run_threads() round may take


class Res:
    """A pooled object that knows whether it was closed (and how many times)."""

    __slots__ = ("__weakref__", "closed", "n", "value")

    def __init__(self, n: int) -> None:
        self.n = n
        self.closed = 0
        self.value = n  # an attribute for Proxy forwarding

    def __repr__(self) -> str:
        return f"Res({self.n}{', closed' if self.closed else ''})"


class Maker:
    """``fun`` and ``closer`` of a test pool: every object made, every close counted."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.made: dict[int, Res] = {}
        self.closes: list[int] = []

    def fun(self, n: int) -> Res:
        # recorded by the last store before the return (a dict store is atomic):
        # no point where an interrupt could land between recording and returning
        res = Res(n)
        self.made[n] = res
        return res

    def closer(self, res: Res) -> None:
        with self.lock:
            res.closed += 1
            self.closes.append(res.n)

    def snapshot(self) -> dict[int, Res]:
        """The objects made so far, copied in one step: ``fun`` records without
        the lock (see above), so iterating ``made`` itself while the pool creates
        in another thread (a refill, a housekeeping round) can raise "dictionary
        changed size during iteration" -- seen on the free-threaded build.  A
        dict's copy is one C call, atomic under the GIL and under the dict's own
        lock without it."""
        return self.made.copy()

    def closed(self) -> set[int]:
        with self.lock:
            return {n for n, r in self.snapshot().items() if r.closed}


class Hang(AssertionError):
    """A pool call from another thread did not complete within the deadline."""


def dump_all(what: str) -> None:
    """Every thread's stack on stderr (faulthandler: works even with a lock held)."""
    sys.stderr.write(f"\n=== {what}: stacks of all threads ===\n")
    sys.stderr.flush()
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)


def all_stacks() -> str:
    """Every thread's Python stack, as text (for a failure's message)."""
    frames = sys._current_frames()
    out = []
    for thread in threading.enumerate():
        frame = frames.get(thread.ident or -1)
        if frame is not None:
            out.append(f"--- {thread.name}\n" + "".join(traceback.format_stack(frame)))
    return "\n".join(out)


def run_threads(
    targets: list[Callable[[], None]], errors: list[str], deadline: float = THREADS_DEADLINE
) -> None:
    """Run every target in its own thread, all started before any is joined; what
    one raises is appended to ``errors`` (its traceback).  A thread that does not
    finish within ``deadline`` seconds (for all of them) is a hang: every stack is
    dumped (faulthandler, and in the failure) and ``Hang`` raised."""
    threads = [
        threading.Thread(target=_guarded(target, errors), name=f"w{i}", daemon=True)
        for i, target in enumerate(targets)
    ]
    for thread in threads:
        thread.start()
    end = time.monotonic() + deadline
    for thread in threads:
        thread.join(max(0.0, end - time.monotonic()))
    hung = [t.name for t in threads if t.is_alive()]
    if hung:
        faulthandler.dump_traceback(all_threads=True)
        raise Hang(f"hang: {len(hung)} thread(s) still running: {hung}\n{all_stacks()}")


def _guarded(target: Callable[[], None], errors: list[str]) -> Callable[[], None]:
    def body() -> None:
        try:
            target()
        except BaseException:
            errors.append(traceback.format_exc())

    return body


def call_with_deadline(
    fn: Callable[[], T], what: str, deadline: float = LOCK_DEADLINE, dump: bool = True
) -> T:
    """Run ``fn`` in a daemon thread; fail with a stack dump when it does not end in time.

    A pool whose lock was left held blocks the thread for good: it is left behind
    (daemon) and the caller must not touch the pool again."""
    result: list[Any] = []
    error: list[BaseException] = []

    def body() -> None:
        try:
            result.append(fn())
        except BaseException as exc:  # handed to the caller
            error.append(exc)

    thread = threading.Thread(target=body, name=f"check:{what}", daemon=True)
    thread.start()
    thread.join(deadline)
    if thread.is_alive():
        if dump:
            dump_all(f"{what} still blocked after {deadline} s")
        raise Hang(f"{what} did not complete within {deadline} s: the pool's lock is held for good")
    if error:
        raise error[0]
    return result[0]  # type: ignore[no-any-return]


def _probe(pool: Any) -> Any:
    """A get(0)/ret pair: proves the lock is free (a TimeOut is fine: the pool is full).
    Returns the object it got, if any."""
    from ppp import PPPException

    try:
        obj = pool.get(0)
    except PPPException:
        return None
    pool.ret(obj)
    return obj


def brief(s: dict[str, Any]) -> str:
    """The counts of a stats() dict, on one line (for failure messages)."""
    keys = ("nobjs", "navail", "nusing", "nborrowed", "npending", "nwaiting", "ncreated")
    counts = " ".join(f"{key}={s.get(key)}" for key in keys + ("ndestroys", "shutdown"))
    idle = [item["n"] for item in s.get("avail", [])]
    using = [item["n"] for item in s.get("using", [])]
    return f"{counts} idle={idle} using={using}"


def check_counts(
    pool: Any,
    held: Iterable[Any] = (),
    maker: Maker | None = None,
    deadline: float = LOCK_DEADLINE,
    dump: bool = True,
) -> dict[str, Any]:
    """The count invariants (lock-free check included); returns the stats read."""
    held = list(held)
    s: dict[str, Any] = call_with_deadline(pool.stats, "stats()", deadline, dump)
    problems = []
    if s["nwaiting"] != 0:
        problems.append(f"{s['nwaiting']} waiter(s) still queued")
    if s.get("npending", 0) != 0:
        problems.append(f"npending={s['npending']}: a creation slot reserved for nobody")
    if s["nusing"] != len(held):
        problems.append(f"nusing={s['nusing']} but the test holds {len(held)} object(s)")
    if s["nborrowed"] != 0:
        problems.append(f"nborrowed={s['nborrowed']} with no housekeeping running")
    if s["nobjs"] != s["navail"] + s["nusing"] + s["nborrowed"]:
        problems.append("nobjs != navail + nusing + nborrowed")
    if s["navail"] != len(s["avail"]):
        problems.append(f"navail={s['navail']} but {len(s['avail'])} listed idle")
    if s["nusing"] + s["nborrowed"] != len(s["using"]):
        problems.append(
            f"nusing+nborrowed={s['nusing'] + s['nborrowed']}, {len(s['using'])} listed"
        )
    if s["nobjs"] != s["ncreated"] - s["ndestroys"]:
        problems.append(
            f"nobjs={s['nobjs']} != ncreated {s['ncreated']} - ndestroys {s['ndestroys']}"
        )
    if s["nusing"] < 0 or s["navail"] < 0:
        problems.append(f"negative count: nusing={s['nusing']} navail={s['navail']}")
    if s["max_size"] and s["nobjs"] > s["max_size"]:
        problems.append(f"{s['nobjs']} objects > max_size {s['max_size']}")
    idle_ns = [item["n"] for item in s["avail"]]
    using_ns = [item["n"] for item in s["using"]]
    if len(set(idle_ns)) != len(idle_ns):
        problems.append(f"an object is idle twice: {sorted(idle_ns)}")
    if set(idle_ns) & set(using_ns):
        problems.append(f"objects both idle and in use: {set(idle_ns) & set(using_ns)}")
    held_ns: set[int] = {obj.n for obj in held if isinstance(getattr(obj, "n", None), int)}
    if maker is not None:
        if set(using_ns) != held_ns:
            problems.append(
                f"in use by the pool's count: {sorted(using_ns)}, held: {sorted(held_ns)}"
            )
        with maker.lock:
            made = maker.snapshot()
        pooled = set(idle_ns) | set(using_ns)
        # forgotten objects wait in the pool's close queue for the next closing pass
        # (the next retirement, housekeeping round, shutdown or exit): not lost
        queued = {id(obj) for obj in list(getattr(pool, "_closing", ()))}
        for n, res in sorted(made.items()):
            if id(res) in queued and not res.closed:
                continue
            if res.closed > 1:
                problems.append(f"{res} closed {res.closed} times")
            if res.closed and n in pooled:
                problems.append(f"{res} closed but still in the pool")
            if not res.closed and n not in pooled:
                problems.append(f"{res} neither in the pool nor closed (handed to nobody)")
    assert not problems, "pool invariants broken:\n  " + "\n  ".join(problems) + f"\n  ({brief(s)})"
    return s


def check_pool(
    pool: Any,
    held: Iterable[Any] = (),
    maker: Maker | None = None,
    *,
    usable: bool = True,
    get_timeout: float = 5.0,
    spare: int = 3,
    deadline: float = LOCK_DEADLINE,
    dump: bool = True,
) -> None:
    """All the invariants of the module docstring; ``held`` are the objects the
    caller holds (in use).  ``usable=False`` skips taking every slot (a pool
    that is shut down serves nothing)."""
    held = list(held)
    s = check_counts(pool, held, maker, deadline, dump)  # before anything changes them
    probed = call_with_deadline(lambda: _probe(pool), "get(0)/ret", deadline, dump)
    assert not getattr(probed, "closed", False), f"get(0) handed out a closed object: {probed}"
    # the probe's thread parked what it returned in its own bucket (thread
    # affinity); a locked step such as stats() puts it back on top of the idle
    # stack, so that what is handed out next does not depend on which bucket that
    # thread's id fell in (the differential tests' model knows no buckets)
    pool.stats()
    if not usable or s["shutdown"]:
        return
    want = s["max_size"] - len(held) if s["max_size"] else max(s["navail"], spare)
    held_ids = {id(obj) for obj in held}

    def take_all() -> list[str]:
        from ppp import PPPException

        got: list[Any] = []
        problems: list[str] = []
        try:
            for i in range(want):
                try:
                    got.append(pool.get(get_timeout))
                except PPPException as exc:
                    problems.append(f"slot lost: got {i} of {want} objects, then {exc!r}")
                    break
            if len({id(o) for o in got}) != len(got):
                problems.append(f"an object handed out twice at once: {got}")
            if any(id(o) in held_ids for o in got):
                problems.append("an object the test holds was handed out again")
            closed = [o for o in got if getattr(o, "closed", False)]
            if closed:
                problems.append(f"closed object(s) handed out: {closed}")
        finally:
            for obj in got:
                pool.ret(obj)
        return problems

    problems = call_with_deadline(take_all, f"taking all {want} slots", get_timeout * 2 + 5.0, dump)
    assert not problems, "pool not fully usable:\n  " + "\n  ".join(problems)
    check_counts(pool, held, maker, deadline, dump)


def wait_for(
    condition: Callable[[], object], what: str, timeout: float = 30.0, step: float = 0.005
) -> None:
    """Wait for an asynchronous effect (never a fixed sleep): fail with stacks on timeout."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            dump_all(f"timed out waiting for {what}")
            raise AssertionError(f"timed out after {timeout} s waiting for: {what}")
        time.sleep(step)


#: pools whose lock was left held: kept alive for good so that no finalizer (or a
#: later ``__del__`` closing idle objects) ever blocks a thread on their lock
WEDGED: list[Any] = []
