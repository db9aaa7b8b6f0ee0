"""Prometheus metrics for ppp pools (``pip install "ppp-pool[prometheus]"``).

``PoolCollector`` is a prometheus-client collector that reads ``pool.stats()``
at each scrape: nothing is counted twice and the pool's hot path pays nothing::

    from prometheus_client import REGISTRY, start_http_server
    from ppp.prometheus import PoolCollector

    REGISTRY.register(PoolCollector({"db": db}))  # a Pool, or a pooled Proxy
    start_http_server(9100)

Every metric has a ``pool`` label, so one collector exports several pools and
each metric family appears once.  A pooled ``Proxy`` is read through its
current pool at each scrape (none yet: no samples for it), so the collector can
be registered before the proxy is set.  prometheus-client is imported when a
collector is made, not with ``ppp``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

__all__ = ["COUNTERS", "GAUGES", "WAIT_QUANTILES", "PoolCollector"]

#: counters: metric name (exposed with ``_total``) -> (``stats()`` key, help)
COUNTERS: dict[str, tuple[str, str]] = {
    "ppp_pool_created": ("ncreated", "Objects created by the pool's fun."),
    "ppp_pool_closed": ("ndestroys", "Objects the pool dropped (closer called)."),
    "ppp_pool_gets": ("nuses", "Objects handed out by get."),
    "ppp_pool_returns": ("nreturns", "Objects given back by ret."),
    "ppp_pool_bad_returns": ("nbad_returns", "Returns ignored: twice, killed or foreign."),
    "ppp_pool_waits": ("nwaits", "Gets that had to wait for an object."),
    "ppp_pool_timeouts": ("ntimeouts", "Gets that gave up with TimeOut."),
    "ppp_pool_killed": ("nkilled", "Objects dropped after max_using_delay_kill."),
    "ppp_pool_expired": ("nexpired", "Objects retired after max_lifetime."),
    "ppp_pool_recycled": ("nrecycled", "Idle objects retired after max_avail_delay."),
    "ppp_pool_worn_out": ("nwornout", "Objects retired after max_use uses."),
    "ppp_pool_bad_health": ("bad_health", "Objects found unhealthy and closed."),
    "ppp_pool_housekeeping_errors": ("hk_errors", "Housekeeping rounds that failed."),
}

#: gauges: metric name -> (``stats()`` key, help)
GAUGES: dict[str, tuple[str, str]] = {
    "ppp_pool_objects": ("nobjs", "Objects the pool holds now (idle and in use)."),
    "ppp_pool_idle": ("navail", "Idle objects, ready to hand out."),
    "ppp_pool_in_use": ("nusing", "Objects handed out and not yet returned."),
    "ppp_pool_waiting": ("nwaiting", "Threads waiting in get now."),
    "ppp_pool_max_waiting": ("max_waiting", "Most threads ever waiting at once."),
    "ppp_pool_max_size": ("max_size", "Most objects allowed (0: unlimited)."),
    "ppp_pool_min_size": ("min_size", "Objects kept available."),
}

#: the summary ``ppp_pool_wait_seconds``: quantile label -> ``stats()["wait_time"]`` key
WAIT_QUANTILES: dict[str, str] = {"0.5": "median", "0.95": "p95", "1": "max"}

WAIT_METRIC = "ppp_pool_wait_seconds"
WAIT_HELP = (
    "Seconds gets waited for an object: quantiles over the recent waits (1 is the "
    "maximum), count of all waits."
)

_MISSING = (
    "ppp.prometheus needs prometheus-client, which is not installed: "
    'pip install "ppp-pool[prometheus]" (or pip install prometheus-client)'
)


def _families() -> Any:
    try:
        from prometheus_client import metrics_core
    except ImportError as exc:
        raise ImportError(_MISSING, name=exc.name) from exc
    return metrics_core


def _is_proxy(source: Any) -> bool:
    # asked of the class: a proxy's instance attributes are its object's
    return hasattr(type(source), "_ret_obj")


def _pool_of(source: Any) -> Any:
    """The Pool to read: ``source`` itself, or a proxy's current pool (or None)."""
    return source._pool if _is_proxy(source) else source


class PoolCollector:
    """A prometheus-client collector for ppp pools, each exported under a ``pool``
    label: ``PoolCollector({"db": pool_or_pooled_proxy, ...})``."""

    def __init__(self, pools: Mapping[str, Any] | None = None) -> None:
        self._core = _families()  # fails here, clearly, without prometheus-client
        self._lock = threading.Lock()
        self._pools: dict[str, Any] = {}
        for name, source in (pools or {}).items():
            self.add(name, source)

    def add(self, name: str, pool: Any) -> None:
        """Export ``pool`` (a Pool, or a pooled Proxy) under ``pool=name``; a name is
        used once."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"a pool's name must be a non-empty str, got {name!r}")
        if not _is_proxy(pool) and not callable(getattr(pool, "stats", None)):
            raise TypeError(f"expected a ppp Pool or Proxy, got {type(pool).__name__}")
        with self._lock:
            if name in self._pools:
                raise ValueError(f"a pool named {name!r} is already exported")
            self._pools[name] = pool

    def remove(self, name: str) -> None:
        """Stop exporting the pool named ``name`` (``KeyError`` if there is none)."""
        with self._lock:
            del self._pools[name]

    def describe(self) -> list[Metric]:
        """The metric families, without reading any pool (registration checks names)."""
        return list(self._metrics([]))

    def collect(self) -> Iterator[Metric]:
        """One snapshot of every pool's ``stats()``, as metric families."""
        with self._lock:
            sources = list(self._pools.items())
        snapshots = []
        for name, source in sources:
            pool = _pool_of(source)
            if pool is not None:
                snapshots.append((name, pool.stats()))
        return self._metrics(snapshots)

    def _metrics(self, snapshots: list[tuple[str, dict[str, Any]]]) -> Iterator[Metric]:
        core = self._core
        for metric, (key, doc) in COUNTERS.items():
            counter = core.CounterMetricFamily(metric, doc, labels=["pool"])
            for name, stats in snapshots:
                counter.add_metric([name], float(stats[key]))
            yield counter
        for metric, (key, doc) in GAUGES.items():
            gauge = core.GaugeMetricFamily(metric, doc, labels=["pool"])
            for name, stats in snapshots:
                gauge.add_metric([name], float(stats[key] or 0))
            yield gauge
        waits = core.Metric(WAIT_METRIC, WAIT_HELP, "summary")
        for name, stats in snapshots:
            times = stats["wait_time"]
            for quantile, key in WAIT_QUANTILES.items():
                value = times[key]
                waits.add_sample(
                    WAIT_METRIC,
                    {"pool": name, "quantile": quantile},
                    float("nan") if value is None else float(value),
                )
            waits.add_sample(f"{WAIT_METRIC}_count", {"pool": name}, float(stats["nwaits"]))
            total = times.get("total")  # the sum of waited seconds, where stats() has it
            if total is not None:
                waits.add_sample(f"{WAIT_METRIC}_sum", {"pool": name}, float(total))
        yield waits
