"""Trust boundaries through a real Synapse: who a client is behind proxies, how the capacity is
shared among prefix groups, which listeners serve the API, and the takeover staying ours.

Loopback gives the tests many client addresses (all of 127.0.0.0/8 reaches 127.0.0.1, see
`raw_http`), a real reverse proxy (`support.proxy.ReverseProxy` with ``forwarded_for``, which
appends the client's address to ``X-Forwarded-For`` like HAProxy's ``option forwardfor``), and
the test itself playing a trusted proxy that names IPv6 clients.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING

import pytest
from support.http_client import CREATE_PATH, SESSION_ROOT
from support.proxy import ReverseProxy
from support.raw_http import RawResponse, create, request

from devtools.synapse import SynapseServer, SynapseStartError, free_port

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from devtools.synapse import Mode

pytestmark = pytest.mark.usefixtures("needs_module")

UNKNOWN_ID = "01HZZZZZZZZZZZZZZZZZZZZZZZ"
#: Two creates, then one every 1000 s: the third create of a client is limited.
TIGHT = {"create": {"per_second": 0.001, "burst": 2}}


class ListenersServer(SynapseServer):
    """A `SynapseServer` whose client listener may have ``x_forwarded``, beside a federation-only
    and a replication-only listener."""

    def __init__(
        self, *, mode: Mode, module_config: Mapping[str, object], x_forwarded: bool = False
    ) -> None:
        super().__init__(mode=mode, module_config=module_config)
        self.x_forwarded = x_forwarded
        self.federation_port = free_port()
        self.replication_port = free_port()

    def listeners(self) -> list[dict[str, object]]:
        client, *rest = super().listeners()
        other = [
            {
                "port": port,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "resources": [{"names": [names]}],
            }
            for port, names in (
                (self.federation_port, "federation"),
                (self.replication_port, "replication"),
            )
        ]
        return [{**client, "x_forwarded": self.x_forwarded}, *rest, *other]


@pytest.fixture
def start() -> Iterator[list[SynapseServer]]:
    started: list[SynapseServer] = []
    try:
        yield started
    finally:
        for server in started:
            server.stop()


def _run(
    started: list[SynapseServer],
    config: Mapping[str, object],
    *,
    mode: Mode = "takeover",
    x_forwarded: bool = False,
) -> ListenersServer:
    server = ListenersServer(mode=mode, module_config=config, x_forwarded=x_forwarded)
    started.append(server)
    try:
        server.start(60)
    except SynapseStartError as exc:
        pytest.fail(f"Synapse failed to start:\n{exc}", pytrace=False)
    return server


TEXT = ("Content-Type", "text/plain")


def _create(
    server: SynapseServer | ReverseProxy,
    forwarded_for: str | None = None,
    source: str | None = None,
) -> RawResponse:
    headers = [TEXT] + ([("X-Forwarded-For", forwarded_for)] if forwarded_for else [])
    return create(server, headers=headers, source=source)


def _creates(
    server: SynapseServer | ReverseProxy,
    n: int,
    forwarded_for: str | None = None,
    source: str | None = None,
) -> list[int]:
    return [_create(server, forwarded_for, source).status for _ in range(n)]


def _warnings(server: SynapseServer) -> list[str]:
    return [
        record.message
        for record in server.log_records()
        if record.level == "WARNING" and "synapse_rendezvous" in record.message
    ]


# -- client addresses ---------------------------------------------------------------------------


def test_without_trusted_proxies_a_client_can_name_itself_and_the_module_says_so(
    start: list[SynapseServer],
) -> None:
    """Synapse's own behaviour, kept when ``trusted_proxies`` is unset: on an ``x_forwarded``
    listener the first X-Forwarded-For value is the client. Two WARNINGs say what that
    allows, with the docs' own exempt example."""
    config = {"rate_limit": {**TIGHT, "exempt": ["10.0.0.0/8"]}}
    server = _run(start, config, x_forwarded=True)
    assert _creates(server, 5, "10.9.9.9") == [201] * 5
    warnings = _warnings(server)
    assert any("x_forwarded" in w and "trusted_proxies" in w for w in warnings), warnings
    assert any("10.0.0.0/8" in w for w in warnings), warnings


def test_a_peer_that_is_not_a_trusted_proxy_is_the_client_whatever_it_claims(
    start: list[SynapseServer],
) -> None:
    config = {"rate_limit": {**TIGHT, "exempt": ["10.0.0.0/8"], "trusted_proxies": ["127.0.0.1"]}}
    server = _run(start, config, x_forwarded=True)
    assert _creates(server, 3, "10.9.9.9", "127.0.0.2") == [201, 201, 429]
    # Naming a victim does not drain the victim's bucket either.
    assert _creates(server, 2, "127.0.0.3", "127.0.0.4") == [201, 201]
    assert _creates(server, 2, source="127.0.0.3") == [201, 201]
    assert not any("trusted_proxies" in w for w in _warnings(server))


def test_behind_a_trusted_proxy_each_client_counts_as_itself(start: list[SynapseServer]) -> None:
    """Through a real proxy that appends (as ``option forwardfor`` does): a forged entry on
    the left is not believed, and clients behind one proxy keep separate budgets."""
    config = {"rate_limit": {**TIGHT, "exempt": ["10.0.0.0/8"], "trusted_proxies": ["127.0.0.1"]}}
    server = _run(start, config)
    with ReverseProxy(server.base_url, forwarded_for=True) as proxy:
        assert _creates(proxy, 3, "10.9.9.9", "127.0.0.2") == [201, 201, 429]
        assert _creates(proxy, 2, source="127.0.0.3") == [201, 201]
        assert proxy.seen[0].header("X-Forwarded-For") == "10.9.9.9"  # as the client sent it


def test_without_trusted_proxies_every_client_behind_a_proxy_is_the_proxy(
    start: list[SynapseServer],
) -> None:
    """The other face of the same fault, documented: one client's creates use up the budget
    of everyone behind the same proxy (hence ``trusted_proxies``)."""
    server = _run(start, {"rate_limit": TIGHT})
    with ReverseProxy(server.base_url, forwarded_for=True) as proxy:
        assert _creates(proxy, 2, source="127.0.0.2") == [201, 201]
        assert _creates(proxy, 1, source="127.0.0.3") == [429]


# -- fair capacity ------------------------------------------------------------------------------


def test_one_slash_48_cannot_fill_the_capacity(start: list[SynapseServer]) -> None:
    """Many /64s of one /48, named by a trusted proxy (the test plays it), stop at a little
    over half of ``capacity``; a client from another /48 still creates, and with
    ``fair_share: false`` the flood fills the store."""
    limits = {"create": {"per_second": 1, "burst": 100}, "trusted_proxies": ["127.0.0.1"]}
    fair = _run(start, {"capacity": 20, "rate_limit": limits})

    def flood(server: SynapseServer) -> int:
        statuses = [_create(server, f"2001:db8:1:{n:x}::1").status for n in range(20)]
        assert set(statuses) <= {201, 429}, statuses
        return statuses.count(201)

    assert flood(fair) == 11
    other = _create(fair, "2001:db8:2::1")
    assert other.status == 201, other
    unfair = _run(start, {"capacity": 20, "rate_limit": {**limits, "fair_share": False}})
    assert flood(unfair) == 20


# -- listeners ----------------------------------------------------------------------------------


def _on_port(port: int, method: str, target: str, **kwargs: object) -> RawResponse:
    return request(port, method, target, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["takeover", "delegation"])
def test_only_client_listeners_serve_the_api(start: list[SynapseServer], mode: Mode) -> None:
    server = _run(start, {"rate_limit": {"enabled": False}}, mode=mode)
    created = create(server)
    assert created.status == 201, created
    url = str(created.json_dict()["url"])
    target = url.split("127.0.0.1", 1)[1].split("/", 1)[1]
    session = "/" + target
    text = [("Content-Type", "text/plain")]
    for port in (server.federation_port, server.replication_port):
        for method, path, headers in (
            ("GET", session, []),
            ("PUT", session, [*text, ("If-Match", "*")]),
            ("DELETE", session, []),
            ("POST", SESSION_ROOT, text),
            ("GET", f"{SESSION_ROOT}/{UNKNOWN_ID}", []),
        ):
            resp = _on_port(port, method, path, headers=headers, body=b"x" if headers else None)
            assert (resp.status, resp.errcode()) == (404, "M_UNRECOGNIZED"), (port, method, resp)
    # Still there, and still served on the client listener.
    assert request(server, "GET", session).status == 200
    assert create(server).status == 201
    assert CREATE_PATH  # the standard create path is Synapse's client servlet: client only


# -- takeover -----------------------------------------------------------------------------------


def test_synapse_stops_when_its_handler_is_no_longer_ours(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Another module (loaded after ours) replaces Synapse's rendezvous handler: creates would
    reach the built-in while our log says takeover mode, so the module stops Synapse."""
    package = tmp_path_factory.mktemp("replacer")
    (package / "handler_replacer.py").write_text(
        "class HandlerReplacer:\n"
        "    def __init__(self, config, api):\n"
        "        api._hs._rendezvous_handler = object()\n"
        "    @staticmethod\n"
        "    def parse_config(config):\n"
        "        return config\n",
        encoding="utf-8",
    )

    class Replaced(SynapseServer):
        def module_entries(self) -> list[dict[str, object]]:
            return [*super().module_entries(), {"module": "handler_replacer.HandlerReplacer"}]

        def environment(self) -> dict[str, str]:
            env = super().environment()
            env["PYTHONPATH"] = f"{package}:{env.get('PYTHONPATH', '')}"
            return env

    server = Replaced(mode="takeover", module_config={})
    try:
        # It may answer its readiness probe before the reactor's first turn stops it.
        with contextlib.suppress(SynapseStartError):
            server.start(30)
        deadline = time.monotonic() + 15
        while server.running and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not server.running, "Synapse kept running with a handler that is not ours"
        errors = [r.message for r in server.log_records() if r.level == "ERROR"]
        assert any("not the module's any more" in e for e in errors), errors
    finally:
        server.stop()
