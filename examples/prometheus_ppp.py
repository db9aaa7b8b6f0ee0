"""Export ppp pools' main figures as Prometheus metrics, with prometheus-client
(``pip install "ppp-pool[prometheus]"``).

A custom collector reads ``pool.stats()`` at each scrape, so nothing is counted
twice and the hot path pays nothing::

    from prometheus_client import REGISTRY, start_http_server
    from prometheus_ppp import PoolCollector

    REGISTRY.register(PoolCollector({"db": db._pool}))   # or pool=..., name=...
    start_http_server(9100)

Every metric has a ``pool`` label, so one collector serves several pools and
each metric family appears once in the exposition.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

#: counters: metric name (``_total`` is added) -> (stats key, help)
COUNTERS = {
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

#: gauges: metric name -> (stats key, help)
GAUGES = {
    "ppp_pool_objects": ("nobjs", "Objects the pool holds now (idle and in use)."),
    "ppp_pool_idle": ("navail", "Idle objects, ready to hand out."),
    "ppp_pool_in_use": ("nusing", "Objects handed out and not yet returned."),
    "ppp_pool_waiting": ("nwaiting", "Threads waiting in get now."),
    "ppp_pool_max_waiting": ("max_waiting", "Most threads ever waiting at once."),
    "ppp_pool_max_size": ("max_size", "Most objects allowed (0: unlimited)."),
    "ppp_pool_min_size": ("min_size", "Objects kept available."),
}

WAIT_QUANTILES = (("0.5", "median"), ("0.95", "p95"), ("1", "max"))


class PoolCollector(Collector):
    """A Prometheus collector for one or more ppp pools, labelled by name."""

    def __init__(self, pools: Mapping[str, Any] | None = None) -> None:
        self._lock = threading.Lock()
        self._pools: dict[str, Any] = dict(pools or {})

    def add(self, name: str, pool: Any) -> None:
        """Export ``pool`` under the label ``pool=name`` (a name is used once)."""
        with self._lock:
            if name in self._pools:
                raise ValueError(f"a pool named {name!r} is already exported")
            self._pools[name] = pool

    def remove(self, name: str) -> None:
        with self._lock:
            del self._pools[name]

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            pools = list(self._pools.items())
        snapshots = [(name, pool.stats()) for name, pool in pools]
        for metric, (key, doc) in COUNTERS.items():
            counter = CounterMetricFamily(metric, doc, labels=["pool"])
            for name, stats in snapshots:
                counter.add_metric([name], float(stats[key]))
            yield counter
        for metric, (key, doc) in GAUGES.items():
            gauge = GaugeMetricFamily(metric, doc, labels=["pool"])
            for name, stats in snapshots:
                gauge.add_metric([name], float(stats[key] or 0))
            yield gauge
        waits = GaugeMetricFamily(
            "ppp_pool_wait_seconds",
            "Time gets waited for an object over recent waits: median, 95th percentile, max.",
            labels=["pool", "quantile"],
        )
        for name, stats in snapshots:
            for quantile, key in WAIT_QUANTILES:
                value = stats["wait_time"][key]
                waits.add_metric([name, quantile], float("nan") if value is None else value)
        yield waits
