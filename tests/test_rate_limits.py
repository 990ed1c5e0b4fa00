"""Abuse resistance through a real Synapse: per-client rate limits, the per-client session
cap and the global capacity, with limits ON (the shared servers turn them off).

Clients are told apart by their address: Linux routes all of 127.0.0.0/8 to loopback, so a
socket bound to 127.0.0.N reaches the server on 127.0.0.1 and Synapse reports 127.0.0.N as
the client IP (``request.getClientAddress().host``), which is what the module limits by.
Every test runs once per server variant (memory, and Redis stores when conftest adds them),
on servers built from ``variant.config(...)``.
"""

from __future__ import annotations

import math
import socket
import threading
import time
from typing import TYPE_CHECKING

import pytest
from support.http_client import etag as _etag
from support.raw_http import (
    RawResponse,
    build_request,
    create,
    create_url,
    pipeline,
    request,
    target_of,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from conftest import ServerFactory, ServerVariant

    from devtools.synapse import SynapseServer

#: Never limited on `limited_server`.
EXEMPT_IP = "127.0.0.3"

#: Module config of `limited_server`: every limit at the module's default (creates: a burst
#: of 10, then 0.2/s; session requests: a burst of 50, then 10/s; 20 live sessions per
#: client), plus one exempt address.
DEFAULT_LIMITS: dict[str, object] = {"rate_limit": {"exempt": [EXEMPT_IP]}}
DEFAULT_CREATE_BURST = 10
DEFAULT_CREATE_PER_SECOND = 0.2

#: Module config of `small_server`: a capacity of 20 sessions and 3 live sessions per client;
#: the create bucket is large so that only the caps refuse anything there.
CAPACITY = 20
MAX_SESSIONS_PER_IP = 3
SMALL_LIMITS: dict[str, object] = {
    "capacity": CAPACITY,
    "rate_limit": {
        "max_sessions_per_ip": MAX_SESSIONS_PER_IP,
        "create": {"per_second": 50, "burst": 100},
        # Every test client is in 127.0.0.0/24, one prefix group: the fair share would stop
        # them at about half the capacity (tests/test_trust_boundaries.py tests that).
        "fair_share": False,
    },
}

TEXT = (("Content-Type", "text/plain"),)


def _skip_builtin(variant: ServerVariant) -> None:
    if not variant.uses_module:
        pytest.skip("Synapse's built-in implementation has no rate limits")


def _loopback_aliases_work() -> bool:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.2", 0))
    except OSError:
        return False
    return True


pytestmark = pytest.mark.skipif(
    not _loopback_aliases_work(), reason="needs 127.0.0.0/8 routed to loopback (Linux)"
)


@pytest.fixture(scope="module")
def limited_server(
    variant: ServerVariant, server_factory: ServerFactory
) -> Iterator[SynapseServer]:
    """A server with the module's default limits and `EXEMPT_IP` exempt."""
    _skip_builtin(variant)
    with server_factory(variant, DEFAULT_LIMITS) as srv:
        yield srv


@pytest.fixture(scope="module")
def small_server(variant: ServerVariant, server_factory: ServerFactory) -> Iterator[SynapseServer]:
    """A server with `CAPACITY` and `MAX_SESSIONS_PER_IP` small enough to reach."""
    _skip_builtin(variant)
    with server_factory(variant, SMALL_LIMITS) as srv:
        yield srv


# -- helpers ----------------------------------------------------------------------------------


def _assert_limited(resp: RawResponse) -> None:
    """A 429 ``M_LIMIT_EXCEEDED`` that says when to retry, readable by a browser."""
    assert resp.status == 429, resp
    body = resp.json_dict()
    assert body.get("errcode") == "M_LIMIT_EXCEEDED", resp
    retry_ms = body.get("retry_after_ms")
    assert isinstance(retry_ms, int), resp
    assert retry_ms > 0, resp
    retry_after = resp.header("Retry-After")
    assert retry_after is not None, resp
    assert retry_after.isdigit(), resp
    # Whole seconds, rounded up: never tells a client to come back before it may.
    assert int(retry_after) == max(1, math.ceil(retry_ms / 1000)), resp
    assert resp.header("Access-Control-Allow-Origin") == "*", resp
    exposed = (resp.header("Access-Control-Expose-Headers") or "").lower()
    assert "retry-after" in exposed, resp
    assert resp.header("Content-Type") == "application/json", resp


def _pipelined_gets(url: str, count: int) -> list[bytes]:
    """``count`` GETs of ``url`` for one keep-alive connection, the last one closing it."""
    target = target_of(url)
    return [build_request("GET", target, close=i == count - 1) for i in range(count)]


def _delete_all(server: SynapseServer, urls: list[str]) -> None:
    for url in urls:
        resp = request(server, "DELETE", url, source=EXEMPT_IP)
        assert resp.status in (204, 404), resp


# -- tests ------------------------------------------------------------------------------------


@pytest.mark.homeserver
def test_source_address_is_the_client_ip(limited_server: SynapseServer) -> None:
    """The premise of this module: Synapse sees a socket bound to 127.0.0.2 as 127.0.0.2."""
    url = create_url(limited_server, source="127.0.0.2")
    target = target_of(url)
    assert request(limited_server, "GET", url, source="127.0.0.2").status == 200
    deadline = time.monotonic() + 5
    while True:
        access = [
            r.message
            for r in limited_server.log_records()
            if r.name.startswith("synapse.access") and target in r.message
        ]
        if access or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert access, "no access log line for the GET"
    assert access[-1].startswith("127.0.0.2 "), access


def test_create_flood_is_limited_while_another_clients_exchange_completes(
    limited_server: SynapseServer,
) -> None:
    """127.0.0.2 floods creates: past the burst it gets 429 M_LIMIT_EXCEEDED with
    ``retry_after_ms``, ``Retry-After`` and CORS headers. Meanwhile 127.0.0.4, whose session
    was created before the flood, completes its whole exchange, and yet another address can
    still create."""
    flooder, honest = "127.0.0.2", "127.0.0.4"
    srv = limited_server
    url = create_url(srv, b"offer", source=honest)
    offer_etag = _etag(request(srv, "GET", url, source=honest))

    flood: list[RawResponse] = []
    stop = threading.Event()

    def run_flood() -> None:
        while not stop.is_set() and len(flood) < 80:
            flood.append(create(srv, b"flood", source=flooder))

    started = time.monotonic()
    thread = threading.Thread(target=run_flood, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while len(flood) < 2 * DEFAULT_CREATE_BURST and time.monotonic() < deadline:
            time.sleep(0.02)
        assert any(r.status == 429 for r in flood), flood
        # The honest pair's exchange, while the flood goes on.
        got = request(srv, "GET", url, source=honest)
        assert (got.status, got.body) == (200, b"offer"), got
        polled = request(srv, "GET", url, headers=[("If-None-Match", offer_etag)], source=honest)
        assert polled.status == 304, polled
        written = request(
            srv,
            "PUT",
            url,
            headers=[*TEXT, ("If-Match", offer_etag)],
            body=b"answer",
            source=honest,
        )
        assert written.status == 202, written
        answer_etag = _etag(written)
        seen = request(srv, "GET", url, headers=[("If-None-Match", offer_etag)], source=honest)
        assert (seen.status, seen.body) == (200, b"answer"), seen
        assert _etag(seen) == answer_etag
        assert request(srv, "DELETE", url, source=honest).status == 204
        assert request(srv, "GET", url, source=honest).status == 404
    finally:
        stop.set()
        thread.join(30)
    elapsed = time.monotonic() - started

    statuses = [r.status for r in flood]
    assert set(statuses) <= {201, 429}, statuses
    created = statuses.count(201)
    assert 1 <= created <= DEFAULT_CREATE_BURST + math.ceil(elapsed * DEFAULT_CREATE_PER_SECOND)
    limited = [r for r in flood if r.status == 429]
    assert len(limited) >= 5, statuses
    for resp in limited:
        _assert_limited(resp)
    # The flood is the flooder's problem only.
    assert create(srv, source="127.0.0.6").status == 201
    assert create(srv, source=flooder).status == 429


@pytest.mark.slow
def test_honest_polling_is_never_limited(limited_server: SynapseServer) -> None:
    """Two devices behind one address poll once a second with If-None-Match, as
    matrix-js-sdk and matrix-rust-sdk do, and write five times: never a 429."""
    ip, srv, rounds = "127.0.0.5", limited_server, 7
    url = create_url(srv, b"offer", source=ip)
    first = request(srv, "GET", url, source=ip)
    assert first.status == 200, first
    # What each device last saw.
    seen = {"a": _etag(first), "b": _etag(first)}
    statuses: list[int] = []
    started = time.monotonic()
    for n in range(rounds):
        for device in ("a", "b"):
            resp = request(srv, "GET", url, headers=[("If-None-Match", seen[device])], source=ip)
            statuses.append(resp.status)
            assert resp.status in (200, 304), resp
            if resp.status == 200:
                seen[device] = _etag(resp)
        if 1 <= n <= 5:
            writer = "a" if n % 2 else "b"
            resp = request(
                srv,
                "PUT",
                url,
                headers=[*TEXT, ("If-Match", seen[writer])],
                body=f"message {n}".encode(),
                source=ip,
            )
            statuses.append(resp.status)
            assert resp.status == 202, resp
            seen[writer] = _etag(resp)
        # Once a second, like the SDKs.
        time.sleep(max(0.0, started + n + 1 - time.monotonic()))
    assert request(srv, "DELETE", url, source=ip).status == 204
    assert 429 not in statuses
    assert statuses.count(202) == 5
    # The last write was seen by the other device.
    assert seen["a"] == seen["b"]


def test_exempt_address_is_never_limited(limited_server: SynapseServer) -> None:
    """``exempt: [127.0.0.3]``: more creates than the burst and the per-client cap, and more
    session requests than the session burst, all answered; the same burst of session
    requests from a non-exempt address is limited (so the load really exceeds the limits)."""
    srv = limited_server
    urls = [create_url(srv, f"s{i}".encode(), source=EXEMPT_IP) for i in range(25)]
    try:
        # The session bucket holds 50 and refills at 10/s: 100 pipelined GETs (all sent at
        # once, so they arrive within well under a second) are far more than it allows.
        burst = 100
        gets = _pipelined_gets(urls[0], burst)
        statuses = [r.status for r in pipeline(srv, gets, source=EXEMPT_IP)]
        assert statuses == [200] * burst

        control_ip = "127.0.0.7"
        control_url = create_url(srv, source=control_ip)
        control = pipeline(srv, _pipelined_gets(control_url, burst), source=control_ip)
        assert {r.status for r in control} == {200, 429}, [r.status for r in control]
        assert [r.status for r in control].count(200) < 70, [r.status for r in control]
        for resp in control:
            if resp.status == 429:
                _assert_limited(resp)
        urls.append(control_url)
    finally:
        _delete_all(srv, urls)


def test_max_sessions_per_ip(small_server: SynapseServer) -> None:
    """``max_sessions_per_ip: 3``: the 4th live session of one address is 429 while another
    address can still create; a DELETE frees a slot."""
    srv, ip, other = small_server, "127.0.0.2", "127.0.0.4"
    urls: list[str] = []
    try:
        urls += [create_url(srv, source=ip) for _ in range(MAX_SESSIONS_PER_IP)]
        fourth = create(srv, source=ip)
        _assert_limited(fourth)
        urls.append(create_url(srv, source=other))
        # The refused create left the first three alone.
        for url in urls:
            assert request(srv, "GET", url, source=other).status == 200
        assert request(srv, "DELETE", urls.pop(0), source=other).status == 204
        urls.append(create_url(srv, source=ip))
        _assert_limited(create(srv, source=ip))
    finally:
        _delete_all(srv, urls)


def test_capacity_flood_never_evicts_live_sessions(small_server: SynapseServer) -> None:
    """``capacity: 20``, filled by 20 addresses (one create each, within their own limits):
    the next creates get 429 M_LIMIT_EXCEEDED, and every one of the 20 sessions is still
    readable with its own payload (Synapse's built-in would have evicted the oldest). A
    DELETE makes room for one more."""
    srv = small_server
    urls: list[str] = []
    try:
        for i in range(CAPACITY):
            urls.append(create_url(srv, f"session {i}".encode(), source=f"127.0.0.{10 + i}"))
        for i in range(CAPACITY, CAPACITY + 10):
            _assert_limited(create(srv, b"extra", source=f"127.0.0.{10 + i}"))
        for i, url in enumerate(urls):
            got = request(srv, "GET", url, source="127.0.0.2")
            assert (got.status, got.body) == (200, f"session {i}".encode()), got
        assert request(srv, "DELETE", urls.pop(0), source="127.0.0.2").status == 204
        urls.append(create_url(srv, b"late", source="127.0.0.40"))
        _assert_limited(create(srv, b"extra", source="127.0.0.41"))
    finally:
        _delete_all(srv, urls)
