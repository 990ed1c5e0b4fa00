"""Prometheus metrics, read from the core's counters when Synapse's metrics listener is scraped.

The core counts in atomics, so the request path pays nothing here. One collector serves every
homeserver of the process (Synapse can run several in one process; its test harness builds one
per test): each registers its handler under its ``server_name``, which labels every sample,
and unregisters it when it stops.
"""

from __future__ import annotations

import threading
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
    from collections.abc import Iterator

    from synapse_rendezvous._core import Metrics, RendezvousHandler

PREFIX = "synapse_rendezvous"

#: Counted per protocol (label ``protocol``: ``msc4108``, ``msc4388``).
_PROTOCOL_COUNTERS = (
    ("sessions_created", "Rendezvous sessions created"),
    ("sessions_deleted", "Rendezvous sessions completed by DELETE"),
    ("conflicts", "Writes refused as concurrent: 412 (MSC4108, stale If-Match) or 409 (MSC4388)"),
    ("rate_limited", "Requests refused with 429 by a per-client limit"),
    ("retries", "MSC4388 writes answered as idempotent retries (stale token, same data)"),
)


class RendezvousCollector(Collector):
    """The counters of every registered handler, labelled by homeserver and store."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handlers: dict[str, tuple[RendezvousHandler, str]] = {}

    def add(self, server_name: str, handler: RendezvousHandler, store: str) -> None:
        with self._lock:
            self._handlers[server_name] = (handler, store)

    def remove(self, server_name: str) -> bool:
        """Forgets a homeserver's handler; whether any is left."""
        with self._lock:
            self._handlers.pop(server_name, None)
            return bool(self._handlers)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            readings = [
                (server_name, store, handler.metrics())
                for server_name, (handler, store) in self._handlers.items()
            ]
        yield from _families(readings)


def _families(readings: list[tuple[str, str, Metrics]]) -> Iterator[Metric]:
    labels = ["server_name", "store"]
    live = GaugeMetricFamily(
        f"{PREFIX}_live_sessions", "Rendezvous sessions alive now", labels=labels
    )
    for server_name, store, reading in readings:
        if reading.live_sessions is not None:
            live.add_metric([server_name, store], reading.live_sessions)
    yield live

    expired = CounterMetricFamily(
        f"{PREFIX}_sessions_expired",
        "Rendezvous sessions removed after they expired",
        labels=labels,
    )
    for server_name, store, reading in readings:
        expired.add_metric([server_name, store], reading.sessions_expired)
    yield expired

    for name, text in _PROTOCOL_COUNTERS:
        counter = CounterMetricFamily(f"{PREFIX}_{name}", text, labels=[*labels, "protocol"])
        for server_name, store, reading in readings:
            for share in reading.by_protocol:
                counter.add_metric([server_name, store, share.protocol], getattr(share, name))
        yield counter

    responses = CounterMetricFamily(
        f"{PREFIX}_responses",
        "Rendezvous responses by protocol, request method and status code",
        labels=["server_name", "protocol", "method", "status"],
    )
    for server_name, _, reading in readings:
        for share in reading.by_protocol:
            for method, status, count in share.responses:
                code = str(status) if status else "other"
                responses.add_metric([server_name, share.protocol, method, code], count)
    yield responses

    errors = CounterMetricFamily(
        f"{PREFIX}_store_errors", "Failed store calls by kind", labels=[*labels, "kind"]
    )
    for server_name, store, reading in readings:
        for kind, count in reading.store_errors:
            errors.add_metric([server_name, store, kind], count)
    yield errors

    latency = HistogramMetricFamily(
        f"{PREFIX}_store_latency_seconds", "Duration of store calls", labels=labels
    )
    for server_name, store, reading in readings:
        buckets = [(str(upper), count) for upper, count in reading.store_latency_buckets]
        buckets.append(("+Inf", reading.store_latency_count))
        latency.add_metric([server_name, store], buckets, reading.store_latency_sum)
    yield latency


_collector: RendezvousCollector | None = None
_registration = threading.Lock()


def register(server_name: str, handler: RendezvousHandler, store: str) -> None:
    """Exposes ``handler``'s counters in the default registry that Synapse serves."""
    global _collector
    with _registration:
        if _collector is None:
            _collector = RendezvousCollector()
            REGISTRY.register(_collector)
        _collector.add(server_name, handler, store)


def unregister(server_name: str) -> None:
    """Stops exposing the handler of ``server_name``; the collector goes with the last one."""
    global _collector
    with _registration:
        if _collector is not None and not _collector.remove(server_name):
            REGISTRY.unregister(_collector)
            _collector = None
