"""Prometheus metrics, read from the core's counters when Synapse's metrics listener is scraped.

The core counts in atomics, so the request path pays nothing here; this collector only
turns a snapshot into metric families, in the default registry that Synapse exposes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import REGISTRY
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from synapse_rendezvous._core import RendezvousHandler

PREFIX = "synapse_rendezvous"


class RendezvousCollector(Collector):
    """Exposes one handler's counters as Prometheus metrics."""

    def __init__(
        self,
        handler: RendezvousHandler,
        store: str,
        live_sessions: Callable[[], int | None],
    ) -> None:
        self._handler = handler
        self._store = store
        self._live_sessions = live_sessions

    def collect(self) -> Iterator[Metric]:
        snapshot = self._handler.metrics()
        store = [self._store]

        live = GaugeMetricFamily(
            f"{PREFIX}_live_sessions", "Rendezvous sessions alive now", labels=["store"]
        )
        count = self._live_sessions()
        if count is not None:
            live.add_metric(store, count)
        yield live

        for name, key, text in (
            ("sessions_created", "sessions_created", "Rendezvous sessions created"),
            ("sessions_deleted", "sessions_deleted", "Rendezvous sessions completed by DELETE"),
            ("sessions_expired", "sessions_expired", "Rendezvous sessions reclaimed on expiry"),
            ("conflicts", "conflicts", "Writes refused with 412 because If-Match was stale"),
            ("rate_limited", "rate_limited", "Requests refused with 429 by a per-client limit"),
        ):
            counter = CounterMetricFamily(f"{PREFIX}_{name}", text, labels=["store"])
            counter.add_metric(store, snapshot[key])
            yield counter

        responses = CounterMetricFamily(
            f"{PREFIX}_responses",
            "Rendezvous responses by request method and status code",
            labels=["method", "status"],
        )
        for method, status, count in snapshot["responses"]:
            responses.add_metric([method, str(status) if status else "other"], count)
        yield responses

        errors = CounterMetricFamily(
            f"{PREFIX}_store_errors", "Failed store calls by kind", labels=["store", "kind"]
        )
        for kind, count in snapshot["store_errors"].items():
            errors.add_metric([self._store, kind], count)
        yield errors

        latency = HistogramMetricFamily(
            f"{PREFIX}_store_latency_seconds", "Duration of store calls", labels=["store"]
        )
        buckets = [(str(upper), count) for upper, count in snapshot["store_latency_buckets"]]
        buckets.append(("+Inf", snapshot["store_latency_count"]))
        latency.add_metric(store, buckets, snapshot["store_latency_sum"])
        yield latency


def register(
    handler: RendezvousHandler,
    store: str,
    live_sessions: Callable[[], int | None],
) -> RendezvousCollector:
    """Adds the handler's metrics to the default registry that Synapse exposes;
    ``live_sessions`` gives the gauge's value (None when unknown)."""
    collector = RendezvousCollector(handler, store, live_sessions)
    REGISTRY.register(collector)
    return collector
