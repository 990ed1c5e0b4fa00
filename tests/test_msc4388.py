"""MSC4388 (the 2025 rendezvous) through a real Synapse with the module, in Synapse's
``experimental_features.msc4388_mode`` ``open`` and ``authenticated``, on the memory and the
Redis store; beside the 2024 API; across a restart; shared with the standalone server.

``authenticated`` mode checks access tokens through Synapse's MAS delegation, so those tests
run a small stand-in for MAS's token introspection endpoint on loopback (`FakeMas`): it is not
Synapse or Redis, and it answers what MAS documents (``active``, ``scope``, ``username``).
The rules themselves (tokens, idempotent retry, expiry arithmetic) are specified in
``rust/core/tests/msc4388.rs``; what is checked here is what the glue can break: routing in
Synapse's client resource, discovery and creates with and without a token, JSON framing,
headers, the body bound, the store behind it, and a restart.
"""

from __future__ import annotations

import contextlib
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, ClassVar

import pytest
from support.http_client import (
    HasBaseUrl,
    Response,
    create_session,
    errcode,
    get,
    request,
    session_id,
)

from synapse.config._base import ConfigError

from devtools.standalone import StandaloneServer
from synapse_rendezvous import RendezvousModule
from synapse_rendezvous.cli.check import parse_target, run_check

if TYPE_CHECKING:
    from collections.abc import Iterator

    from conftest import DeploymentFactory, RedisFactory, ServerFactory

    from devtools.redis import RedisServer
    from devtools.synapse import SynapseServer as DevServer

PREFIX = "/_matrix/client/unstable/io.element.msc4388/rendezvous"
VALID_TOKEN = "mas-valid-token"
USER = "alice"

STORES = ["memory", pytest.param("redis", marks=pytest.mark.redis)]
MODES = ["open", "authenticated"]


# -- a stand-in for MAS's introspection endpoint ---------------------------------------------


class _Introspection(BaseHTTPRequestHandler):
    active_tokens: ClassVar[set[str]] = {VALID_TOKEN}

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        form = urllib.parse.parse_qs(self.rfile.read(min(length, 65536)).decode())
        token = (form.get("token") or [""])[0]
        if token in self.active_tokens:
            body = {"active": True, "scope": "urn:matrix:client:api:*", "username": USER}
        else:
            body = {"active": False}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def fake_mas() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Introspection)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


# -- servers -----------------------------------------------------------------------------------


def _config(store: str) -> dict[str, object]:
    config: dict[str, object] = {"rate_limit": {"enabled": False}}
    if store == "redis":
        config["store"] = "redis"
    return config


@contextlib.contextmanager
def synapse(
    server_factory: ServerFactory,
    store: str,
    msc4388_mode: str,
    *,
    mas: str | None = None,
    module_config: dict[str, object] | None = None,
) -> Iterator[DevServer]:
    with server_factory(
        "takeover", {**_config(store), **(module_config or {})}, start=False
    ) as srv:
        srv.extra_config["experimental_features"] = {
            **srv.experimental_features(),
            "msc4388_mode": msc4388_mode,
        }
        if mas is not None:
            srv.extra_config["matrix_authentication_service"] = {
                "enabled": True,
                "endpoint": mas,
                "secret": "mas-shared-secret",
            }
        srv.start()
        yield srv


def _provision(srv: HasBaseUrl) -> None:
    """Creates ``USER``, whom the stand-in MAS vouches for, through MAS's provisioning API."""
    provisioned = request(
        srv,
        "POST",
        "/_synapse/mas/provision_user",
        body=json.dumps({"localpart": USER}).encode(),
        headers=(
            ("Content-Type", "application/json"),
            ("Authorization", "Bearer mas-shared-secret"),
        ),
    )
    assert provisioned.status in (200, 201), provisioned


@contextlib.contextmanager
def creating_device(
    server_factory: ServerFactory,
    store: str,
    mode: str,
    module_config: dict[str, object] | None = None,
) -> Iterator[tuple[DevServer, tuple[tuple[str, str], ...]]]:
    """Synapse with MSC4388 in ``mode``, and the headers of a device that may create: none in
    ``open`` mode, a valid access token in ``authenticated`` mode."""
    if mode == "open":
        with synapse(server_factory, store, "open", module_config=module_config) as srv:
            yield srv, ()
        return
    with (
        fake_mas() as mas,
        synapse(
            server_factory, store, "authenticated", mas=mas, module_config=module_config
        ) as srv,
    ):
        _provision(srv)
        yield srv, (("Authorization", f"Bearer {VALID_TOKEN}"),)


def call(
    srv: HasBaseUrl,
    method: str,
    path: str,
    body: object = None,
    *,
    headers: tuple[tuple[str, str], ...] = (),
    raw: bytes | None = None,
) -> Response:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    extra = (("Content-Type", "application/json"),) if data is not None else ()
    return request(srv, method, path, body=data, headers=extra + headers)


def create(srv: HasBaseUrl, data: str = "hello", **kwargs: Any) -> dict[str, Any]:
    resp = call(srv, "POST", PREFIX, {"data": data}, **kwargs)
    assert resp.status == 200, resp
    return resp.json_dict()


# -- every rule, both modes, both stores -------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("store", STORES)
def test_every_rule_through_synapse(server_factory: ServerFactory, store: str, mode: str) -> None:
    """Every rule of MSC4388, as a device that may create meets them: in ``authenticated``
    mode it sends its access token to discovery and creates (the session paths need none)."""
    with creating_device(server_factory, store, mode) as (srv, auth):
        resp = call(srv, "GET", PREFIX, headers=auth)
        assert (resp.status, resp.json()) == (200, {"create_available": True}), resp
        assert resp.header("Content-Type") == "application/json", resp
        assert resp.header("Access-Control-Allow-Origin") == "*", resp
        assert resp.header("Cache-Control") == "no-cache, no-store, must-revalidate", resp
        assert f"and MSC4388 rendezvous ({mode})" in srv.log_text()

        created = create(srv, "first", headers=auth)
        assert set(created) == {"id", "sequence_token", "expires_in_ms"}, created
        assert 0 < created["expires_in_ms"] <= 120_000
        url = f"{PREFIX}/{created['id']}"
        first = created["sequence_token"]

        resp = call(srv, "GET", url)
        assert resp.status == 200, resp
        got = resp.json_dict()
        assert (got["data"], got["sequence_token"]) == ("first", first)
        assert resp.header("ETag") is None, resp

        # A write with the current token: a new token.
        resp = call(srv, "PUT", url, {"sequence_token": first, "data": "second"})
        assert resp.status == 200, resp
        second = resp.json_dict()["sequence_token"]
        assert second != first
        # Identical data again: the token still changes.
        resp = call(srv, "PUT", url, {"sequence_token": second, "data": "second"})
        third = resp.json_dict()["sequence_token"]
        assert resp.status == 200, resp
        assert third not in (first, second)
        # A retry with a stale token and the stored data: the current token, no change.
        for stale in (first, second, "never-issued"):
            resp = call(srv, "PUT", url, {"sequence_token": stale, "data": "second"})
            assert (resp.status, resp.json()) == (200, {"sequence_token": third}), resp
        # A stale token with other data: 409.
        resp = call(srv, "PUT", url, {"sequence_token": second, "data": "other"})
        assert resp.status == 409, resp
        assert errcode(resp) == "IO_ELEMENT_MSC4388_CONCURRENT_WRITE", resp
        assert call(srv, "GET", url).json_dict()["sequence_token"] == third

        # 4096 bytes of data (UTF-8) fit, 4097 do not, counted in bytes not characters.
        resp = call(srv, "PUT", url, {"sequence_token": third, "data": "é" * 2048})
        assert resp.status == 200, resp
        resp = call(srv, "POST", PREFIX, {"data": "é" * 2048 + "a"}, headers=auth)
        assert (resp.status, errcode(resp)) == (413, "M_TOO_LARGE"), resp

        for bad in (b"{", b"[]", b'{"data": 5}', b"{}"):
            resp = call(srv, "POST", PREFIX, raw=bad, headers=auth)
            assert (resp.status, errcode(resp)) == (400, "M_INVALID_PARAM"), (bad, resp)
        resp = call(srv, "PUT", url, raw=b'{"data": "x"}')
        assert (resp.status, errcode(resp)) == (400, "M_INVALID_PARAM"), resp

        for header in (
            ("Sec-Fetch-Mode", "navigate"),
            ("Sec-Fetch-Dest", "document"),
            ("Sec-Fetch-User", "?1"),
            ("Sec-Fetch-Site", "none"),
        ):
            resp = call(srv, "GET", url, headers=(header,))
            assert (resp.status, errcode(resp)) == (403, "M_FORBIDDEN"), (header, resp)
        resp = call(srv, "GET", url, headers=(("Sec-Fetch-Dest", "empty"),))
        assert resp.status == 200, resp

        resp = call(srv, "DELETE", url)
        assert (resp.status, resp.json()) == (200, {}), resp
        for method in ("GET", "PUT", "DELETE"):
            body = {"sequence_token": third, "data": "x"} if method == "PUT" else None
            resp = call(srv, method, url, body)
            assert (resp.status, errcode(resp)) == (404, "M_NOT_FOUND"), (method, resp)
        resp = call(srv, "GET", f"{PREFIX}/not-an-id")
        assert (resp.status, errcode(resp)) == (404, "M_NOT_FOUND"), resp


@pytest.mark.parametrize("store", STORES)
def test_both_apis_side_by_side_and_apart(server_factory: ServerFactory, store: str) -> None:
    with synapse(server_factory, store, "open") as srv:
        old_url, _ = create_session(srv, b"2024 payload")
        new = create(srv, "2025 data")
        # Each protocol's session through its own paths.
        assert get(srv, old_url).body == b"2024 payload"
        assert call(srv, "GET", f"{PREFIX}/{new['id']}").json_dict()["data"] == "2025 data"
        # And not through the other's.
        resp = call(srv, "GET", f"{PREFIX}/{session_id(old_url)}")
        assert (resp.status, errcode(resp)) == (404, "M_NOT_FOUND"), resp
        resp = get(srv, f"/_synapse/client/rendezvous/{new['id']}")
        assert resp.status == 404, resp

        # The check CLI plays both.
        report = run_check(parse_target(srv.base_url), timeout=20.0)
        assert report.exit_code == 0, report.to_json()
        found = report.get("msc4388")
        assert found is not None, report.to_json()
        assert (found.verdict, "works" in found.summary) == ("OK", True), found
        assert report.get("msc4388-retry") is None, report.to_json()


def test_check_reports_msc4388_not_served(server: DevServer) -> None:
    report = run_check(parse_target(server.base_url), timeout=20.0)
    found = report.get("msc4388")
    assert found is not None, report.to_json()
    assert (found.verdict, "not served" in found.summary) == ("OK", True), found


def test_ttl_outside_120_to_300_s_stops_synapse(server_factory: ServerFactory) -> None:
    with synapse_not_started(server_factory, {"ttl": "60s"}) as srv:
        with pytest.raises(Exception):  # noqa: B017, PT011 — the start error names the key
            srv.start()
        assert "ttl" in srv.log_text()


@contextlib.contextmanager
def synapse_not_started(
    server_factory: ServerFactory, module_config: dict[str, object]
) -> Iterator[DevServer]:
    with server_factory("takeover", {**_config("memory"), **module_config}, start=False) as srv:
        srv.extra_config["experimental_features"] = {
            **srv.experimental_features(),
            "msc4388_mode": "open",
        }
        yield srv


# -- authenticated mode ------------------------------------------------------------------------


@pytest.mark.parametrize("store", STORES)
def test_authenticated_mode_needs_a_token_to_create_only(
    server_factory: ServerFactory, store: str
) -> None:
    with fake_mas() as mas, synapse(server_factory, store, "authenticated", mas=mas) as srv:
        _provision(srv)
        bearer = (("Authorization", f"Bearer {VALID_TOKEN}"),)

        # Signed out: discovery says so (not 401), creates are forbidden.
        resp = call(srv, "GET", PREFIX)
        assert (resp.status, resp.json()) == (200, {"create_available": False}), resp
        resp = call(srv, "POST", PREFIX, {"data": "x"})
        assert (resp.status, errcode(resp)) == (403, "M_FORBIDDEN"), resp
        # A token MAS does not know: Synapse's own 401.
        bad = (("Authorization", "Bearer not-a-token"),)
        resp = call(srv, "GET", PREFIX, headers=bad)
        assert (resp.status, errcode(resp)) == (401, "M_UNKNOWN_TOKEN"), resp

        resp = call(srv, "GET", PREFIX, headers=bearer)
        assert (resp.status, resp.json()) == (200, {"create_available": True}), resp
        created = create(srv, "signed in", headers=bearer)
        # The rest needs no token, as MSC4388 says.
        url = f"{PREFIX}/{created['id']}"
        resp = call(srv, "PUT", url, {"sequence_token": created["sequence_token"], "data": "y"})
        assert resp.status == 200, resp
        assert call(srv, "GET", url).json_dict()["data"] == "y"
        assert call(srv, "DELETE", url).status == 200


# -- the Redis store: restarts and the standalone server -------------------------------------


@pytest.mark.redis
def test_a_session_survives_a_restart_with_the_same_data_and_token(
    server_factory: ServerFactory,
) -> None:
    with synapse(server_factory, "redis", "open") as srv:
        created = create(srv, "kept")
        url = f"{PREFIX}/{created['id']}"
        srv.restart()
        resp = call(srv, "GET", url)
        assert resp.status == 200, resp
        got = resp.json_dict()
        assert (got["data"], got["sequence_token"]) == ("kept", created["sequence_token"])


@pytest.mark.redis
def test_sessions_are_shared_with_the_standalone_server_token_for_token(
    server_factory: ServerFactory, session_redis: RedisServer
) -> None:
    """One Redis, one key prefix: the same session through Synapse and the standalone server
    hands out byte-identical tokens, and the stale side gets the 409."""
    config: dict[str, object] = {
        "store": "redis",
        "redis": {"url": session_redis.url, "key_prefix": "msc4388-shared:"},
        "rate_limit": {"enabled": False},
    }
    with (
        synapse(server_factory, "redis", "open", module_config=config) as srv,
        StandaloneServer({**config, "msc4388": "open"}) as standalone,
    ):
        created = create(srv, "from synapse")
        url = f"{PREFIX}/{created['id']}"
        on_synapse, on_server = call(srv, "GET", url), call(standalone, "GET", url)
        assert on_synapse.status == on_server.status == 200, (on_synapse, on_server)
        assert on_synapse.json_dict()["sequence_token"] == created["sequence_token"]
        assert on_server.json_dict()["sequence_token"] == created["sequence_token"]
        assert on_server.json_dict()["data"] == "from synapse"

        written = call(
            standalone, "PUT", url, {"sequence_token": created["sequence_token"], "data": "b"}
        )
        assert written.status == 200, written
        token = written.json_dict()["sequence_token"]
        assert call(srv, "GET", url).json_dict() | {"expires_in_ms": 0} == {
            "data": "b",
            "sequence_token": token,
            "expires_in_ms": 0,
        }
        # Synapse's side is stale now.
        stale = call(srv, "PUT", url, {"sequence_token": created["sequence_token"], "data": "c"})
        assert (stale.status, errcode(stale)) == (409, "IO_ELEMENT_MSC4388_CONCURRENT_WRITE")
        # And the other way round.
        again = call(srv, "PUT", url, {"sequence_token": token, "data": "d"})
        assert again.status == 200, again
        stale = call(standalone, "PUT", url, {"sequence_token": token, "data": "e"})
        assert (stale.status, errcode(stale)) == (409, "IO_ELEMENT_MSC4388_CONCURRENT_WRITE")

        # Created on the server, deleted through Synapse.
        made = create(standalone, "from the server")
        assert call(srv, "DELETE", f"{PREFIX}/{made['id']}").status == 200
        assert call(standalone, "GET", f"{PREFIX}/{made['id']}").status == 404


@pytest.mark.redis
@pytest.mark.workers
def test_workers_serve_msc4388_from_the_shared_store(
    deployment_factory: DeploymentFactory, redis_factory: RedisFactory
) -> None:
    """Synapse registers its MSC4388 servlets on the main process only; the module adds the
    routes to every client resource, so with the Redis store a session created on one
    process is served by all of them, token for token."""
    features = {"msc4108_enabled": True, "msc4388_mode": "open"}
    with (
        redis_factory() as redis,
        deployment_factory(
            "takeover",
            {"store": "redis"},
            redis=redis,
            workers=2,
            extra_config={"experimental_features": features},
        ) as dep,
    ):
        main, first, second = dep.processes
        for process in dep.processes:
            resp = call(process, "GET", PREFIX)
            assert (resp.status, resp.json()) == (200, {"create_available": True}), resp
        created = create(first, "from a worker")
        url = f"{PREFIX}/{created['id']}"
        got = call(main, "GET", url).json_dict()
        assert (got["data"], got["sequence_token"]) == ("from a worker", created["sequence_token"])
        written = call(second, "PUT", url, {"sequence_token": got["sequence_token"], "data": "b"})
        assert written.status == 200, written
        stale = call(main, "PUT", url, {"sequence_token": got["sequence_token"], "data": "c"})
        assert (stale.status, errcode(stale)) == (409, "IO_ELEMENT_MSC4388_CONCURRENT_WRITE")
        assert call(main, "DELETE", url).status == 200
        assert call(first, "GET", url).status == 404


def test_the_module_block_has_no_msc4388_key() -> None:
    """Synapse's switch decides; a key in the module's block would say otherwise."""
    with pytest.raises(ConfigError) as refused:
        RendezvousModule.parse_config({"msc4388": "open"})
    assert "experimental_features.msc4388_mode" in str(refused.value)
    assert refused.value.path == ["msc4388"]


def test_the_standalone_server_checks_no_tokens() -> None:
    """``msc4388: authenticated`` on the standalone server: nobody is signed in there (it
    checks no tokens), so discovery says no and creates are forbidden, whatever the request
    carries; with ``msc4388`` off the paths are unknown."""
    with StandaloneServer({"rate_limit": {"enabled": False}, "msc4388": "authenticated"}) as srv:
        resp = call(srv, "GET", PREFIX, headers=(("Authorization", "Bearer anything"),))
        assert (resp.status, resp.json()) == (200, {"create_available": False}), resp
        resp = call(srv, "POST", PREFIX, {"data": "x"}, headers=(("Authorization", "Bearer x"),))
        assert (resp.status, errcode(resp)) == (403, "M_FORBIDDEN"), resp
    with StandaloneServer({"rate_limit": {"enabled": False}}) as off:
        resp = call(off, "GET", PREFIX)
        assert (resp.status, errcode(resp)) == (404, "M_UNRECOGNIZED"), resp


@pytest.mark.parametrize("store", STORES)
@pytest.mark.parametrize("mode", MODES)
def test_capacity_and_rate_limits_cover_msc4388(
    server_factory: ServerFactory, store: str, mode: str
) -> None:
    """One capacity for both protocols, never evicting; the session bucket shared with
    MSC4108's requests, with 429 M_LIMIT_EXCEEDED and Retry-After."""
    limits = {
        "capacity": 2,
        "rate_limit": {
            "enabled": True,
            "create": {"per_second": 0.001, "burst": 3},
            "session": {"per_second": 0.001, "burst": 3},
            "max_sessions_per_ip": 100,
        },
    }
    with creating_device(server_factory, store, mode, limits) as (srv, auth):
        old_url, _ = create_session(srv, b"2024")
        new = create(srv, "2025", headers=auth)
        full = call(srv, "POST", PREFIX, {"data": "third"}, headers=auth)
        assert (full.status, errcode(full)) == (429, "M_LIMIT_EXCEEDED"), full
        assert full.header("Retry-After") is not None, full
        # Nothing was evicted to make room.
        assert get(srv, old_url).status == 200
        url = f"{PREFIX}/{new['id']}"
        # The session bucket: 3 requests, the 4th is limited (the GET above was MSC4108's,
        # from the same client: the bucket is shared).
        assert call(srv, "GET", url).status == 200
        assert call(srv, "GET", url).status == 200
        limited = call(srv, "GET", url)
        assert (limited.status, errcode(limited)) == (429, "M_LIMIT_EXCEEDED"), limited
        assert limited.header("Retry-After") is not None, limited


@pytest.mark.parametrize("store", STORES)
@pytest.mark.parametrize("mode", MODES)
def test_create_rate_limit_covers_msc4388(
    server_factory: ServerFactory, store: str, mode: str
) -> None:
    """The create bucket on its own, with capacity far out of reach: the third create is
    429 M_LIMIT_EXCEEDED, told to wait for the bucket's refill (not for a session to end,
    as a full store says), the bucket is the one MSC4108's creates take from, and the
    sessions that exist go on working."""
    limits = {
        "capacity": 10_000,
        "rate_limit": {
            "enabled": True,
            "create": {"per_second": 0.001, "burst": 2},
            "session": {"per_second": 1000, "burst": 1000},
            "max_sessions_per_ip": 100,
        },
    }
    with creating_device(server_factory, store, mode, limits) as (srv, auth):
        first = create(srv, "first", headers=auth)
        create(srv, "second", headers=auth)
        limited = call(srv, "POST", PREFIX, {"data": "third"}, headers=auth)
        assert (limited.status, errcode(limited)) == (429, "M_LIMIT_EXCEEDED"), limited
        # One token per 1000 s: the wait is the refill's, far beyond any session's ttl.
        retry_after = int(limited.header("Retry-After") or 0)
        assert 900 <= retry_after <= 1000, limited
        assert 900_000 <= int(str(limited.json_dict()["retry_after_ms"])) <= 1_000_000, limited
        # The 2024 API's creates draw on the same bucket.
        old = request(
            srv,
            "POST",
            "/_matrix/client/unstable/org.matrix.msc4108/rendezvous",
            body=b"x",
            headers=(("Content-Type", "text/plain"),),
        )
        assert (old.status, errcode(old)) == (429, "M_LIMIT_EXCEEDED"), old
        url = f"{PREFIX}/{first['id']}"
        read = call(srv, "GET", url)
        assert read.status == 200, read
        written = call(
            srv, "PUT", url, {"sequence_token": read.json_dict()["sequence_token"], "data": "2"}
        )
        assert written.status == 200, written
