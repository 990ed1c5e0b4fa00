"""The standalone server (``synapse-rendezvous-server``) with Synapse and on its own.

The spec suite, the rate-limit tests and the SIGTERM test run against it through the
``standalone`` variants of conftest; the hostile input in `test_standalone_hostile`. Here:

- Synapse (without the module) in delegation mode pointed at it: a whole exchange through
  Synapse's 307, as Element clients make it;
- sessions, capacity and rate limits shared with the module (takeover and delegation mode,
  Redis store, one key prefix) and between two servers, both ways;
- SIGTERM under load: every request answered 2xx kept its effect (the memory store through its
  snapshot, Redis by itself), the server exits within its drain bound, requests in flight are
  finished and new connections refused;
- configuration errors (exit status 2, naming the key), the docs' examples, the metrics,
  JSON logs, IPv6, trusted proxies, and a Redis outage.
"""

from __future__ import annotations

import http.client
import itertools
import json
import re
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from support.http_client import (
    CREATE_PATH,
    SESSION_PREFIX,
    Response,
    create_session,
    delete,
    errcode,
    get,
    post_create,
    put,
    request,
    session_id,
    session_url,
)
from support.http_client import etag as _etag
from support.raw_http import build_request, connect, read_until_close
from support.raw_http import create as raw_create

from devtools.standalone import StandaloneServer, binary
from devtools.synapse import free_port

if TYPE_CHECKING:
    from collections.abc import Mapping

    from conftest import RedisFactory, ServerFactory

    from devtools.redis import RedisServer
    from devtools.synapse import Mode, SynapseServer

DOCS = Path(__file__).resolve().parent.parent / "docs"
NO_LIMITS: Mapping[str, object] = {"rate_limit": {"enabled": False}}
TEXT = [("Content-Type", "text/plain")]

_prefixes = itertools.count()


def _shared(redis: RedisServer, **extra: object) -> dict[str, object]:
    """A module config on ``redis`` under a key prefix of its own, for everyone sharing it."""
    return {
        "store": "redis",
        "redis": {"url": redis.url, "key_prefix": f"standalone-test:{next(_prefixes)}:"},
        "rate_limit": {"enabled": False},
        **extra,
    }


# -- through Synapse's 307 --------------------------------------------------------------------


@pytest.mark.parametrize("store", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
def test_a_whole_exchange_through_synapses_307(
    store: str, server_factory: ServerFactory, request: pytest.FixtureRequest
) -> None:
    """Synapse's own MSC4108 support with ``msc4108_delegation_endpoint`` pointed at the
    server: the create POST is redirected (307) there, and the whole QR login exchange goes
    on there, as Element Web and Element X make it."""
    config: dict[str, object] = dict(NO_LIMITS)
    if store == "redis":
        config = _shared(request.getfixturevalue("session_redis"))
    with StandaloneServer(config) as standalone:
        endpoint = f"{standalone.base_url}{SESSION_PREFIX.strip('/')}"
        extra = {"experimental_features": {"msc4108_delegation_endpoint": endpoint}}
        with server_factory("builtin", extra_config=extra) as synapse:
            versions = get(synapse, "/_matrix/client/versions").json_dict()
            unstable = versions.get("unstable_features")
            assert isinstance(unstable, dict)
            assert unstable.get("org.matrix.msc4108") is True
            redirect = request_create(synapse, b"offer")
            assert redirect.status == 307, redirect
            assert redirect.header("Location") == endpoint
            # A browser re-POSTs cross-origin: its preflight is answered there.
            preflight = request_options(standalone, endpoint)
            assert preflight.status == 204, preflight
            assert "If-Match" in (preflight.header("Access-Control-Allow-Headers") or "")
            # The new device creates (following the 307) and shows the URL in its QR code.
            url, created = create_session(synapse, b"offer")
            assert url.startswith(endpoint + "/"), url
            _exchange(url, created)


def request_create(server: SynapseServer, body: bytes) -> Response:
    return request(server, "POST", CREATE_PATH, body=body, headers=TEXT)


def request_options(server: StandaloneServer, url: str) -> Response:
    return request(
        server,
        "OPTIONS",
        url,
        headers=[
            ("Origin", "https://app.element.io"),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "content-type"),
        ],
    )


def _exchange(url: str, created: Response) -> None:
    """The rest of a QR login on the session at ``url``: the signed-in device reads the
    offer, answers; the new device polls until it sees the answer, replies; the other reads
    it and deletes the session."""
    new_etag = _etag(created)
    offer = get(url, url)
    assert (offer.status, offer.body) == (200, b"offer"), offer
    answered = put(url, url, b"answer", etag=_etag(offer))
    assert answered.status == 202, answered
    stale = put(url, url, b"late", etag=new_etag)
    assert stale.status == 412, stale
    polled = get(url, url, headers=[("If-None-Match", new_etag)])
    assert (polled.status, polled.body) == (200, b"answer"), polled
    unchanged = get(url, url, headers=[("If-None-Match", _etag(polled))])
    assert unchanged.status == 304, unchanged
    replied = put(url, url, b"reply", etag=_etag(polled))
    assert replied.status == 202, replied
    assert get(url, url).body == b"reply"
    assert delete(url, url).status == 204
    assert get(url, url).status == 404


# -- shared with the module -------------------------------------------------------------------


def _assert_same_session(one: Response, other: Response) -> None:
    assert (one.status, other.status) == (200, 200), (one, other)
    assert one.body == other.body
    for name in ("ETag", "Expires", "Last-Modified"):
        assert one.header(name) == other.header(name), name


@pytest.mark.redis
@pytest.mark.usefixtures("needs_module")
@pytest.mark.parametrize("mode", ["takeover", "delegation"])
def test_sessions_are_shared_with_the_module_both_ways(
    mode: Mode, server_factory: ServerFactory, session_redis: RedisServer
) -> None:
    """One Redis, one key prefix: a session created through Synapse is read, written and
    deleted through standalone servers (two of them), and one created through a standalone
    server through Synapse."""
    config = _shared(session_redis)
    with (
        server_factory(mode, config) as synapse,
        StandaloneServer(config) as one,
        StandaloneServer(config) as two,
    ):
        # Synapse -> standalone servers.
        url, created = create_session(synapse, b"from synapse")
        sid = session_id(url)
        on_one, on_two = session_url(one, sid), session_url(two, sid)
        _assert_same_session(get(one, on_one), get(synapse, url))
        written = put(one, on_one, b"from the server", etag=_etag(created))
        assert written.status == 202, written
        back = get(synapse, url)
        assert (back.body, _etag(back)) == (b"from the server", _etag(written))
        _assert_same_session(get(two, on_two), back)
        assert put(synapse, url, b"stale", etag=_etag(created)).status == 412
        assert get(one, on_one, headers=[("If-None-Match", _etag(written))]).status == 304
        assert delete(two, on_two).status == 204
        for server, where in ((synapse, url), (one, on_one)):
            assert get(server, where).status == 404
            assert errcode(delete(server, where)) == "M_NOT_FOUND"

        # A standalone server -> Synapse.
        url, created = create_session(one, b"from the server")
        assert url.startswith(one.base_url), url
        on_synapse = session_url(synapse, session_id(url))
        _assert_same_session(get(synapse, on_synapse), get(one, url))
        written = put(synapse, on_synapse, b"from synapse", etag=_etag(created))
        assert written.status == 202, written
        assert get(one, url).body == b"from synapse"
        assert put(one, url, b"stale", etag=_etag(created)).status == 412
        assert delete(synapse, on_synapse).status == 204
        assert get(one, url).status == 404


@pytest.mark.redis
@pytest.mark.usefixtures("needs_module")
def test_capacity_and_rate_limits_are_shared_with_the_module(
    server_factory: ServerFactory, session_redis: RedisServer
) -> None:
    """The capacity and the per-client limits are counted in Redis, for Synapse and the
    servers together (the same client: 127.0.0.1, as both see it)."""
    capacity = _shared(
        session_redis,
        capacity=3,
        rate_limit={"fair_share": False, "create": {"per_second": 100, "burst": 100}},
    )
    with server_factory("takeover", capacity) as synapse, StandaloneServer(capacity) as server:
        first, _ = create_session(synapse, b"1")
        create_session(synapse, b"2")
        create_session(server, b"3")
        for full in (post_create(server, b"4"), post_create(synapse, b"4")):
            assert full.status == 429, full
            assert errcode(full) == "M_LIMIT_EXCEEDED", full
        assert delete(server, session_url(server, session_id(first))).status == 204
        assert post_create(server, b"4").status == 201

    burst = _shared(
        session_redis, rate_limit={"create": {"per_second": 0.001, "burst": 2}, "fair_share": False}
    )
    with server_factory("takeover", burst) as synapse, StandaloneServer(burst) as server:
        assert post_create(synapse, b"1").status == 201
        assert post_create(server, b"2").status == 201
        for limited in (post_create(server, b"3"), post_create(synapse, b"3")):
            assert limited.status == 429, limited
            body = limited.json_dict()
            assert body.get("errcode") == "M_LIMIT_EXCEEDED", limited
            assert isinstance(body.get("retry_after_ms"), int), limited


# -- SIGTERM ----------------------------------------------------------------------------------


@dataclass
class _Writer:
    """One client thread's view of what the server acknowledged."""

    #: Session URL to (last acknowledged payload, payload of a write whose answer was lost).
    sessions: dict[str, tuple[bytes, bytes | None]] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    acknowledged: int = 0
    failures: list[str] = field(default_factory=list)


def _load(server: StandaloneServer, writer: _Writer, name: int, stop: threading.Event) -> None:
    """Creates, writes and now and then deletes its own sessions over one kept-alive
    connection, as fast as it can, until the server goes away."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    step = 0
    try:
        while not stop.is_set():
            step += 1
            payload = f"{name}-{step}".encode()
            urls = list(writer.sessions)
            if step % 5 == 1 or not urls:
                conn.request("POST", CREATE_PATH, body=payload, headers=dict(TEXT))
                resp = conn.getresponse()
                body = resp.read()
                if resp.status != 201:
                    writer.failures.append(f"create: {resp.status} {body!r}")
                    return
                writer.sessions[json.loads(body)["url"]] = (payload, None)
            elif step % 23 == 0:
                url = urls[step % len(urls)]
                acked, _ = writer.sessions.pop(url)
                writer.sessions[url] = (acked, b"")  # a delete in flight: b"" marks it
                conn.request("DELETE", url)
                resp = conn.getresponse()
                resp.read()
                if resp.status != 204:
                    writer.failures.append(f"delete: {resp.status}")
                    return
                del writer.sessions[url]
                writer.deleted.add(url)
            else:
                url = urls[step % len(urls)]
                acked, _ = writer.sessions[url]
                writer.sessions[url] = (acked, payload)
                headers = {**dict(TEXT), "If-Match": "*"}
                conn.request("PUT", url, body=payload, headers=headers)
                resp = conn.getresponse()
                resp.read()
                if resp.status != 202:
                    writer.failures.append(f"put: {resp.status}")
                    return
                writer.sessions[url] = (payload, None)
            writer.acknowledged += 1
    except (OSError, http.client.HTTPException):
        return  # the server stopped: what was in flight may or may not have happened
    finally:
        conn.close()


@pytest.mark.parametrize("store", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
def test_sigterm_under_load_keeps_every_acknowledged_effect(
    store: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Eight clients create, write and delete as fast as they can; SIGTERM. The server
    exits 0 within its drain bound, and once started again every session a client saw
    created (and not deleted) is there with the last payload it saw written, or with the
    payload of a write it sent but never saw answered; no session it saw deleted is."""
    drain_s = 5.0
    config: dict[str, object] = dict(NO_LIMITS)
    if store == "memory":
        config["snapshot_path"] = str(tmp_path / "sessions.snapshot")
    else:
        config = _shared(request.getfixturevalue("session_redis"))
    server = StandaloneServer(
        config, server_config={"drain_timeout": f"{drain_s:g}s"}, workdir=tmp_path / "server"
    )
    server.start()
    try:
        writers = [_Writer() for _ in range(8)]
        stop = threading.Event()
        threads = [
            threading.Thread(target=_load, args=(server, w, i, stop), daemon=True)
            for i, w in enumerate(writers)
        ]
        for thread in threads:
            thread.start()
        time.sleep(1.5)
        server.signal(signal.SIGTERM)
        signalled = time.monotonic()
        code = server.wait(timeout=drain_s + 10)
        elapsed = time.monotonic() - signalled
        stop.set()
        for thread in threads:
            thread.join(10)
        assert code == 0, server.log_text()[-3000:]
        assert elapsed < drain_s + 1, f"exited {elapsed:.1f} s after SIGTERM"
        assert all(not w.failures for w in writers), [w.failures for w in writers]
        acknowledged = sum(w.acknowledged for w in writers)
        assert acknowledged > 500, acknowledged
        if store == "memory":
            assert "saved the session snapshot" in server.log_text()

        server.start()
        if store == "memory":
            assert re.search(r"restored (\d+) of \1 live sessions", server.log_text())
        live = 0
        for writer in writers:
            for url, (acked, pending) in writer.sessions.items():
                got = get(server, url)
                if pending == b"":  # a delete in flight
                    assert got.status in (200, 404), got
                    continue
                assert got.status == 200, (url, got)
                assert got.body in (acked, pending), (url, got.body, acked, pending)
                live += 1
            for url in writer.deleted:
                assert get(server, url).status == 404, url
        assert live > 0
    finally:
        server.stop()


def test_sigterm_finishes_requests_in_flight_within_the_drain_bound(tmp_path: Path) -> None:
    """After SIGTERM the listener closes at once; a write whose body is still arriving is
    finished and kept (in the snapshot); one that never completes is cut off when the drain
    bound is up, and the server exits then."""
    drain_s = 2.0
    config = {**NO_LIMITS, "snapshot_path": str(tmp_path / "sessions.snapshot")}
    server = StandaloneServer(
        config,
        server_config={"drain_timeout": f"{drain_s:g}s", "request_timeout": "30s"},
        workdir=tmp_path / "server",
    )
    server.start()
    try:
        url, created = create_session(server, b"before")
        path = url[len(server.base_url) - 1 :]
        upload = build_request("PUT", path, [*TEXT, ("If-Match", _etag(created))], b"0123456789")
        slow = connect(server, timeout=10)
        stuck = connect(server, timeout=10)
        try:
            slow.sendall(upload[:-5])
            stuck.sendall(upload[:-5])
            time.sleep(0.3)
            server.signal(signal.SIGTERM)
            signalled = time.monotonic()
            time.sleep(0.5)
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
            slow.sendall(upload[-5:])
            answer, closed, _ = read_until_close(slow, 5)
            assert answer.startswith(b"HTTP/1.1 202"), answer
            assert closed
            code = server.wait(timeout=drain_s + 10)
            elapsed = time.monotonic() - signalled
            cut, closed, _ = read_until_close(stuck, 5)
            assert (cut, closed) == (b"", True)
        finally:
            slow.close()
            stuck.close()
        assert code == 0, server.log_text()[-3000:]
        assert drain_s - 0.2 <= elapsed < drain_s + 1.5, elapsed
        assert "still in flight when the drain ended" in server.log_text()
        server.start()
        assert get(server, url).body == b"0123456789"
    finally:
        server.stop()


# -- configuration ----------------------------------------------------------------------------

#: Configurations the server refuses, and the key its error names.
BAD_CONFIGS: dict[str, tuple[str, str]] = {
    "no-base-url": ("listen: ['127.0.0.1:1']\n", "public_base_url"),
    "module-key": ("public_base_url: http://x/\nttl: 3\n", "ttl"),
    "misspelt": ("public_base_url: http://x/\ncapcity: 3\n", "capcity"),
    "nested": (
        "public_base_url: http://x/\nrate_limit: {create: {per_second: 0}}\n",
        "rate_limit.create.per_second",
    ),
    "listen": ("public_base_url: http://x/\nlisten: ['localhost']\n", "listen[0]"),
    "redis-url": ("public_base_url: http://x/\nstore: redis\n", "redis.url"),
    "drain": ("public_base_url: http://x/\ndrain_timeout: forever\n", "drain_timeout"),
    "tls-file": (
        "public_base_url: http://x/\nstore: redis\nredis: {url: 'rediss://127.0.0.1:1'}\n"
        "redis_tls: {ca_file: /nonexistent/ca.pem}\n",
        "redis_tls.ca_file",
    ),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS.values()), ids=list(BAD_CONFIGS))
def test_bad_configuration_exits_2_naming_the_key(tmp_path: Path, case: tuple[str, str]) -> None:
    text, key = case
    path = tmp_path / "server.yaml"
    path.write_text(text, encoding="utf-8")
    result = subprocess.run(
        [str(binary()), "--config", str(path)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2, result
    assert key in result.stderr, result.stderr
    assert str(path) in result.stderr, result.stderr


def test_command_line_errors_exit_2() -> None:
    for args in ([], ["--config"], ["--nope"]):
        result = subprocess.run([str(binary()), *args], capture_output=True, text=True, timeout=30)
        assert result.returncode == 2, (args, result)
        assert "usage:" in result.stderr, result.stderr


def _doc_examples() -> list[tuple[str, str]]:
    text = (DOCS / "standalone.md").read_text(encoding="utf-8")
    blocks = re.finditer(r"```yaml\n(.*?)```", text, re.DOTALL)
    return [
        (f"standalone.md:{text.count(chr(10), 0, m.start())}", m[1])
        for m in blocks
        if "public_base_url" in m[1]
    ]


@pytest.mark.parametrize(("where", "body"), _doc_examples(), ids=[w for w, _ in _doc_examples()])
def test_every_configuration_in_the_docs_is_accepted(tmp_path: Path, where: str, body: str) -> None:
    path = tmp_path / "server.yaml"
    path.write_text(body, encoding="utf-8")
    result = subprocess.run(
        [str(binary()), "--check-config", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, f"{where}: {result.stderr}"


def test_the_docs_have_configuration_examples() -> None:
    assert len(_doc_examples()) >= 4


# -- metrics and logs -------------------------------------------------------------------------


def _documented_metrics(page: str) -> dict[str, tuple[str, frozenset[str]]]:
    text = (DOCS / page).read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(synapse_rendezvous_\w+)` \| (\w+) \| ([^|]*) \|", text, re.MULTILINE)
    return {name: (kind, frozenset(re.findall(r"`(\w+)`", labels))) for name, kind, labels in rows}


def _scrape(port: int) -> dict[str, set[frozenset[str]]]:
    resp = get(f"http://127.0.0.1:{port}/", "metrics")
    assert (resp.header("Content-Type") or "").startswith("text/plain; version=0.0.4"), resp
    text = resp.body.decode()
    scraped: dict[str, set[frozenset[str]]] = {}
    for line in text.splitlines():
        match = re.match(r"^(\w+)(?:\{(.*)\})? \S+$", line)
        if match is None:
            continue
        labels = frozenset(re.findall(r'(\w+)="', match[2] or ""))
        scraped.setdefault(match[1], set()).add(labels)
    return scraped


@pytest.mark.slow
@pytest.mark.parametrize("store", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
def test_metrics_are_the_modules_without_server_name(
    store: str, request: pytest.FixtureRequest
) -> None:
    """The module's metrics table (docs/integration.md) minus its ``server_name`` label, plus
    the server's own (docs/standalone.md), with exactly the documented labels."""
    config: dict[str, object] = dict(NO_LIMITS)
    if store == "redis":
        config = _shared(request.getfixturevalue("session_redis"))
    port = free_port()
    with StandaloneServer(config, server_config={"metrics_listen": f"127.0.0.1:{port}"}) as srv:
        url, _ = create_session(srv, b"counted")
        assert get(srv, url).status == 200
        documented = {
            **_documented_metrics("integration.md"),
            **_documented_metrics("standalone.md"),
        }
        expected: dict[str, frozenset[str]] = {}
        for name, (kind, labels) in documented.items():
            if store == "memory" and name.endswith("redis_connections_up"):
                continue
            if kind == "histogram":
                expected[f"{name}_bucket"] = labels | {"le"}
                expected[f"{name}_count"] = labels
                expected[f"{name}_sum"] = labels
            else:
                expected[name] = labels
        deadline = time.monotonic() + 8  # the Redis gauge waits for the first count
        while True:
            scraped = _scrape(port)
            if set(expected) <= set(scraped) or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        assert set(scraped) == set(expected), set(scraped) ^ set(expected)
        for name, label_sets in scraped.items():
            assert label_sets == {expected[name]}, (name, label_sets)
        health = get(f"http://127.0.0.1:{port}/", "health")
        assert health.status == 200, health


def test_json_logs_are_one_object_per_line(tmp_path: Path) -> None:
    server = StandaloneServer(NO_LIMITS, server_config={"log_format": "json"}, workdir=tmp_path)
    with server:
        create_session(server)
        server.stop()
        lines = [line for line in server.log_text().splitlines() if line.strip()]
    assert lines
    records = [json.loads(line) for line in lines]
    assert all({"timestamp", "level", "fields"} <= set(r) for r in records), records
    messages = [str(r["fields"].get("message", "")) for r in records]
    assert any("serving MSC4108 rendezvous" in m for m in messages), messages
    assert any(m == "stopped" for m in messages), messages


# -- addresses --------------------------------------------------------------------------------


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")
def test_listens_on_ipv4_and_ipv6() -> None:
    server = StandaloneServer(NO_LIMITS)
    server.server_config["listen"] = [f"127.0.0.1:{server.port}", f"[::1]:{server.port}"]
    with server:
        url, _ = create_session(server, b"both")
        path = url[len(server.base_url) - 1 :]
        conn = http.client.HTTPConnection("::1", server.port, timeout=5)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            assert (resp.status, resp.read()) == (200, b"both")
        finally:
            conn.close()


def test_trusted_proxies_decide_the_client() -> None:
    """Behind a trusted proxy, the client is the right-most untrusted ``X-Forwarded-For``
    entry; from any other peer, the peer itself, whatever the header says."""
    limits = {
        "rate_limit": {
            "trusted_proxies": ["127.0.0.1"],
            "create": {"per_second": 0.001, "burst": 1},
        }
    }
    with StandaloneServer(limits) as server:

        def create_as(forwarded: str, source: str = "127.0.0.1") -> int:
            headers = [*TEXT, ("X-Forwarded-For", forwarded)]
            return raw_create(server, b"x", headers=headers, source=source).status

        assert create_as("192.0.2.1") == 201
        assert create_as("192.0.2.1") == 429
        assert create_as("203.0.113.9, 192.0.2.2") == 201
        assert create_as("192.0.2.2") == 429
        # Not a trusted proxy: counted as itself, its header ignored.
        assert create_as("192.0.2.3", source="127.0.0.2") == 201
        assert create_as("192.0.2.4", source="127.0.0.2") == 429


# -- Redis outage -----------------------------------------------------------------------------


@pytest.mark.redis
def test_redis_outage_gives_quick_503_then_service_resumes(redis_factory: RedisFactory) -> None:
    """Redis stopped: every request is answered 503 ``M_UNKNOWN`` within the timeout and
    ``/health`` says so; Redis back on its port: service resumes by itself."""
    with redis_factory() as redis:
        config = _shared(redis)
        config["redis"] = {**config["redis"], "timeout": "500ms"}  # type: ignore[dict-item]
        with StandaloneServer(config) as server:
            url, _ = create_session(server, b"before")
            redis.stop()
            for _ in range(3):
                started = time.monotonic()
                resp = get(server, url)
                assert resp.status == 503, resp
                assert errcode(resp) == "M_UNKNOWN", resp
                assert resp.header("Retry-After") == "1", resp
                assert time.monotonic() - started < 2.0
            unhealthy = get(server, "health")
            assert unhealthy.status == 503, unhealthy
            redis.start()
            deadline = time.monotonic() + 10
            while post_create(server, b"after").status != 201:
                assert time.monotonic() < deadline, "service did not resume"
                time.sleep(0.1)
