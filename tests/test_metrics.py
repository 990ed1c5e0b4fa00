"""The module's Prometheus metrics, scraped from a real Synapse's metrics listener.

One Synapse per server variant, with ``enable_metrics`` and a ``metrics`` listener, a short
TTL and a tight create limit. A known sequence of requests must show up exactly in the
counters; sessions left alone must be counted as expired by the module's background
reclamation (every 5 s on every process) without any request touching them, and sessions a
create drops on the way must be counted too. With the Redis store the server gets a
redis-server of its own, so that the last test can stop it and see store errors counted.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.http_client import etag as _etag
from support.http_client import get
from support.raw_http import RawResponse, create, create_url, request
from test_msc4388 import PREFIX as MSC4388_PREFIX

from devtools.synapse import SynapseServer, SynapseStartError, free_port

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from conftest import RedisFactory, ServerVariant

    from devtools.redis import RedisServer
    from devtools.synapse import Mode

#: Session lifetime by store: short, so that expiry is quick, but longer than the sequence
#: below. With Redis the live-sessions gauge shows the count of the last background run
#: (so that a scrape never waits on Redis), so the sessions must outlive one interval.
TTL_S = {"memory": 3, "redis": 4}
#: The module's background reclamation interval here (5 s in production), set through its
#: test-only environment variable so that no test sleeps out five seconds.
RECLAIM_INTERVAL_S = 1
CREATE_BURST = 3
#: Every create comes from 127.0.0.1 unless said otherwise, whose create bucket holds
#: `CREATE_BURST` tokens and refills once in 1000 s: the create after them is rate limited.
RATE_LIMIT: dict[str, object] = {"create": {"per_second": 0.001, "burst": CREATE_BURST}}
PREFIX = "synapse_rendezvous_"
TEXT = ("Content-Type", "text/plain")
UNKNOWN_ID = "01HZZZZZZZZZZZZZZZZZZZZZZZ"
#: The ``server_name`` of every `SynapseServer`, which labels every sample.
SERVER_NAME = "localhost"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class MetricsServer(SynapseServer):
    """A `SynapseServer` that also serves Prometheus metrics on ``metrics_port``."""

    def __init__(
        self,
        *,
        mode: Mode,
        module_config: Mapping[str, object],
        extra_config: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(
            mode=mode,
            module_config=module_config,
            extra_config={"enable_metrics": True, **(extra_config or {})},
        )
        self.metrics_port = free_port()

    def environment(self) -> dict[str, str]:
        return {
            **super().environment(),
            "SYNAPSE_RENDEZVOUS_TEST_RECLAIM_INTERVAL_MS": str(RECLAIM_INTERVAL_S * 1000),
        }

    def listeners(self) -> list[dict[str, object]]:
        metrics: dict[str, object] = {
            "port": self.metrics_port,
            "type": "metrics",
            "bind_addresses": ["127.0.0.1"],
        }
        return [*super().listeners(), metrics]

    def scrape(self) -> Samples:
        """Every ``synapse_rendezvous_*`` sample, by name and labels."""
        resp = get(f"http://127.0.0.1:{self.metrics_port}/", "_synapse/metrics")
        assert resp.status == 200, resp
        text = resp.body.decode("utf-8")
        samples: Samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name.startswith(PREFIX):
                    key = (sample.name, frozenset(sample.labels.items()))
                    samples[key] = sample.value
        return samples


@dataclass
class Setup:
    server: MetricsServer
    store: str
    ttl_s: float
    redis: RedisServer | None


@pytest.fixture(scope="module")
def setup(variant: ServerVariant, redis_factory: RedisFactory) -> Iterator[Setup]:
    if not variant.uses_module:
        pytest.skip("Synapse's built-in implementation exports no metrics of ours")
    with contextlib.ExitStack() as stack:
        store = str(variant.config().get("store", "memory"))
        ttl_s = TTL_S[store]
        overrides: dict[str, object] = {"ttl": f"{ttl_s}s", "rate_limit": RATE_LIMIT}
        redis: RedisServer | None = None
        if store == "redis":
            redis = stack.enter_context(redis_factory())
            overrides["redis"] = {"url": redis.url, "timeout": "500ms"}
        config = variant.config(overrides)
        server = MetricsServer(mode=variant.mode, module_config=config)
        stack.callback(server.stop)
        try:
            server.start()
        except SynapseStartError as exc:
            pytest.fail(f"Synapse with metrics failed to start:\n{exc}", pytrace=False)
        yield Setup(server, store, ttl_s, redis)


# -- reading samples --------------------------------------------------------------------------


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The value of the sample ``synapse_rendezvous_<name>`` with exactly these labels and
    the homeserver's ``server_name``."""
    return samples.get((PREFIX + name, frozenset({**labels, "server_name": SERVER_NAME}.items())))


def responses(samples: Samples) -> dict[tuple[str, str], float]:
    """``synapse_rendezvous_responses_total`` of MSC4108 by (method, status)."""
    found: dict[tuple[str, str], float] = {}
    for (name, labels), count in samples.items():
        if name == PREFIX + "responses_total":
            label = dict(labels)
            assert label["server_name"] == SERVER_NAME, label
            assert label["protocol"] in ("msc4108", "msc4388"), label
            if label["protocol"] == "msc4108":
                found[(label["method"], label["status"])] = count
    return found


def scrape_until(
    server: MetricsServer, done: Callable[[Samples], bool], deadline: float
) -> Samples:
    """Scrapes until ``done`` holds or the ``time.monotonic()`` deadline has passed."""
    while True:
        samples = server.scrape()
        if done(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.25)


# -- tests ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_known_sequence_is_counted_exactly(setup: Setup) -> None:
    """Three creates, a rate-limited fourth, GET 200 and 304, a PUT and a stale PUT (412), a
    DELETE: every counter says exactly that. Then, with no request at all, the two sessions
    left expire and the background reclamation counts them (and the gauge drops to 0)."""
    srv, store, ttl_s = setup.server, setup.store, setup.ttl_s
    started = time.monotonic()
    urls = [create_url(srv, f"s{i}".encode()) for i in range(CREATE_BURST)]
    limited = create(srv)
    assert limited.status == 429, limited
    first, _, third = urls
    got = request(srv, "GET", first)
    assert got.status == 200, got
    etag = _etag(got)
    assert request(srv, "GET", first, headers=[("If-None-Match", etag)]).status == 304
    written = request(srv, "PUT", first, headers=[TEXT, ("If-Match", etag)], body=b"new")
    assert written.status == 202, written
    stale = request(srv, "PUT", first, headers=[TEXT, ("If-Match", etag)], body=b"stale")
    assert stale.status == 412, stale
    assert request(srv, "DELETE", third).status == 204
    # Memory: the gauge counts at scrape time. Redis: it shows the last background count.
    samples = scrape_until(
        srv,
        lambda s: value(s, "live_sessions", store=store) == 2,
        deadline=started + ttl_s - 0.5,
    )
    assert time.monotonic() - started < ttl_s, "too slow: sessions may have expired already"

    assert value(samples, "live_sessions", store=store) == 2
    assert value(samples, "sessions_created_total", store=store, protocol="msc4108") == 3
    assert value(samples, "sessions_deleted_total", store=store, protocol="msc4108") == 1
    assert value(samples, "sessions_expired_total", store=store) == 0
    assert value(samples, "conflicts_total", store=store, protocol="msc4108") == 1
    assert value(samples, "rate_limited_total", store=store, protocol="msc4108") == 1
    # Nothing of MSC4388 here (it is off): zero, not missing.
    for name in ("sessions_created_total", "conflicts_total", "retries_total"):
        assert value(samples, name, store=store, protocol="msc4388") == 0, name
    expected_responses = {
        ("POST", "201"): 3,
        ("POST", "429"): 1,
        ("GET", "200"): 1,
        ("GET", "304"): 1,
        ("PUT", "202"): 1,
        ("PUT", "412"): 1,
        ("DELETE", "204"): 1,
    }
    assert responses(samples) == expected_responses
    for kind in ("unavailable", "timeout", "overloaded", "corrupt"):
        assert value(samples, "store_errors_total", store=store, kind=kind) == 0
    calls = value(samples, "store_latency_seconds_count", store=store)
    assert calls is not None
    assert calls > 0
    buckets = [
        (float(dict(labels)["le"]), count)
        for (name, labels), count in samples.items()
        if name == PREFIX + "store_latency_seconds_bucket"
    ]
    buckets.sort()
    assert buckets[-1] == (float("inf"), calls), buckets
    assert all(a[1] <= b[1] for a, b in itertools.pairwise(buckets)), buckets

    # Expiry: no request and no scrape until the sessions have expired and a background
    # reclamation has run (a memory-store scrape counts live sessions, which also drops
    # expired ones: see the next test).
    time.sleep(max(0.0, started + ttl_s + RECLAIM_INTERVAL_S + 1.5 - time.monotonic()))
    after = srv.scrape()
    assert value(after, "sessions_expired_total", store=store) == 2
    assert value(after, "live_sessions", store=store) == 0
    assert value(after, "sessions_created_total", store=store, protocol="msc4108") == 3
    # Nothing touched the sessions: no response was added.
    assert responses(after) == expected_responses


@pytest.mark.slow
def test_expired_sessions_are_counted_even_when_a_create_drops_them(setup: Setup) -> None:
    """Two sessions expire; a create right after their expiry (before the next background
    run, which comes every 5 s and so wins this race only rarely) drops them from the store.
    They were still reclaimed on expiry, so they must still be counted."""
    if setup.server.mode != "takeover":
        pytest.skip("a property of the store: checked once per store, in takeover mode")
    srv, store, ttl_s = setup.server, setup.store, setup.ttl_s
    before = value(srv.scrape(), "sessions_expired_total", store=store) or 0
    started = time.monotonic()
    for i in range(2):
        create_url(srv, f"e{i}".encode(), source="127.0.0.2")
    time.sleep(max(0.0, started + ttl_s + 0.05 - time.monotonic()))
    # This create's own clean-up drops the two expired sessions; it is deleted at once,
    # so that it does not expire itself.
    late = create_url(srv, b"late", source="127.0.0.2")
    assert request(srv, "DELETE", late, source="127.0.0.2").status == 204
    time.sleep(RECLAIM_INTERVAL_S + 1)
    after = value(srv.scrape(), "sessions_expired_total", store=store)
    assert after == before + 2


def _documented_metrics() -> dict[str, tuple[str, frozenset[str]]]:
    """The metrics table of docs/integration.md: name to (type, labels)."""
    text = (Path(__file__).resolve().parent.parent / "docs/integration.md").read_text("utf-8")
    rows = re.findall(r"^\| `(synapse_rendezvous_\w+)` \| (\w+) \| ([^|]*) \|", text, re.MULTILINE)
    return {
        name: (kind, frozenset(re.findall(r"`(\w+)`", labels)) | {"server_name"})
        for name, kind, labels in rows
    }


def test_the_documented_metrics_are_the_scraped_ones(setup: Setup) -> None:
    """Every metric the table in docs/integration.md names is scraped with exactly the labels it
    lists (and ``server_name``), and nothing else is."""
    srv = setup.server
    url = create_url(srv, b"documented", source="127.0.0.5")
    assert request(srv, "GET", url, source="127.0.0.5").status == 200
    documented = _documented_metrics()
    assert len(documented) >= 9, documented
    expected: dict[str, frozenset[str]] = {}
    for name, (kind, labels) in documented.items():
        if kind == "histogram":
            expected[f"{name}_bucket"] = labels | {"le"}
            expected[f"{name}_count"] = labels
            expected[f"{name}_sum"] = labels
        else:
            expected[name] = labels
    scraped: dict[str, set[frozenset[str]]] = {}
    deadline = time.monotonic() + RECLAIM_INTERVAL_S + 3  # the Redis gauge waits for a run
    while True:
        scraped.clear()
        for name, pairs in srv.scrape():
            scraped.setdefault(name, set()).add(frozenset(key for key, _ in pairs))
        if set(expected) <= set(scraped) or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert set(scraped) == set(expected), set(scraped) ^ set(expected)
    for name, label_sets in scraped.items():
        assert label_sets == {expected[name]}, (name, label_sets)


def test_store_errors_are_counted_when_redis_is_down(setup: Setup) -> None:
    """Redis store only: with its Redis stopped, requests are answered 503 and every failed
    store call is counted under ``store_errors_total{store="redis"}``; scraping still works."""
    if setup.redis is None:
        pytest.skip("only the Redis store can fail")
    srv = setup.server
    before = srv.scrape()
    errors_before = sum(
        value(before, "store_errors_total", store="redis", kind=kind) or 0
        for kind in ("unavailable", "timeout", "overloaded", "corrupt")
    )
    setup.redis.stop()
    assert create(srv, source="127.0.0.3").status == 503
    unknown = f"{srv.base_url}_synapse/client/rendezvous/{UNKNOWN_ID}"
    assert request(srv, "GET", unknown, source="127.0.0.3").status == 503
    after = srv.scrape()
    errors_after = sum(
        value(after, "store_errors_total", store="redis", kind=kind) or 0
        for kind in ("unavailable", "timeout", "overloaded", "corrupt")
    )
    assert errors_after >= errors_before + 2
    counts = responses(after)
    assert counts.get(("POST", "503"), 0) >= 1
    assert counts.get(("GET", "503"), 0) >= 1


@pytest.mark.parametrize("store", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
def test_msc4388_is_counted_under_its_protocol_and_shares_the_quota(
    store: str, redis_factory: RedisFactory
) -> None:
    """With MSC4388 on, its creates, retries, conflicts, deletes and refusals are counted
    under ``protocol="msc4388"``, apart from MSC4108's; and one client's live sessions of
    both protocols count against one ``max_sessions_per_ip``."""
    limits = {
        "enabled": True,
        "create": {"per_second": 1000, "burst": 1000},
        "session": {"per_second": 1000, "burst": 1000},
        "max_sessions_per_ip": 2,
    }
    with contextlib.ExitStack() as stack:
        config: dict[str, object] = {"ttl": "120s", "rate_limit": limits}
        if store == "redis":
            redis = stack.enter_context(redis_factory())
            config.update({"store": "redis", "redis": {"url": redis.url}})
        srv = MetricsServer(
            mode="takeover",
            module_config=config,
            extra_config={
                "experimental_features": {"msc4108_enabled": True, "msc4388_mode": "open"}
            },
        )
        stack.callback(srv.stop)
        try:
            srv.start()
        except SynapseStartError as exc:
            pytest.fail(f"Synapse with metrics failed to start:\n{exc}", pytrace=False)

        def msc4388(method: str, path: str = "", body: object = None) -> RawResponse:
            data = None if body is None else json.dumps(body).encode()
            headers = [("Content-Type", "application/json")] if data is not None else []
            return request(srv, method, MSC4388_PREFIX + path, headers=headers, body=data)

        assert create(srv).status == 201
        made = msc4388("POST", body={"data": "a"})
        assert made.status == 200, made
        session, token = made.json_dict()["id"], made.json_dict()["sequence_token"]
        # A third live session for this client, of either protocol, is over the quota.
        over = msc4388("POST", body={"data": "b"})
        assert (over.status, over.errcode()) == (429, "M_LIMIT_EXCEEDED"), over
        assert create(srv).status == 429
        written = msc4388("PUT", f"/{session}", {"sequence_token": token, "data": "c"})
        assert written.status == 200, written
        retried = msc4388("PUT", f"/{session}", {"sequence_token": token, "data": "c"})
        assert retried.status == 200, retried
        conflict = msc4388("PUT", f"/{session}", {"sequence_token": token, "data": "d"})
        assert conflict.status == 409, conflict
        assert msc4388("DELETE", f"/{session}").status == 200

        samples = srv.scrape()
        counted = {
            name: value(samples, name, store=store, protocol="msc4388")
            for name in (
                "sessions_created_total",
                "retries_total",
                "conflicts_total",
                "sessions_deleted_total",
                "rate_limited_total",
            )
        }
        assert counted == {
            "sessions_created_total": 1,
            "retries_total": 1,
            "conflicts_total": 1,
            "sessions_deleted_total": 1,
            "rate_limited_total": 1,
        }, counted
        assert value(samples, "sessions_created_total", store=store, protocol="msc4108") == 1
        assert value(samples, "rate_limited_total", store=store, protocol="msc4108") == 1
