"""``python -m synapse_rendezvous check`` against real Synapse processes on loopback.

Directly against our module (takeover and delegation, as shipped), Synapse's built-in and an
idle module; and through `support.proxy.ReverseProxy`, a reverse proxy switched to each
misbehaviour seen in the wild: the check must name that fault, and only that fault.

Each Synapse boots once per module (module-scoped fixtures). Servers behind the proxy have
``public_baseurl`` pointing at the proxy, as in a real deployment, so that the session URLs
lead through it too.

The last part plays a hostile homeserver (`support.hostile.HostileServer`, on loopback) against
the check's own defences: session URLs and redirects to other origins, https to http, a
trickling server against ``--timeout``, and decompression bombs.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import zlib
from typing import TYPE_CHECKING

import pytest
from support.hostile import (
    SESSION_PATH,
    HostileServer,
    LoopbackTls,
    Trickle,
    created,
    endless_body,
    gzip_bomb,
    loopback_tls,
    redirect,
)
from support.http_client import CREATE_PATH, SESSION_ROOT, get
from support.proxy import Faults, ReverseProxy

from devtools.synapse import free_port
from synapse_rendezvous.__main__ import main
from synapse_rendezvous.cli.check import TargetError, parse_target, run_check
from synapse_rendezvous.cli.check_exchange import MAX_REDIRECTS
from synapse_rendezvous.cli.check_findings import format_finding
from synapse_rendezvous.cli.check_http import MAX_BODY_BYTES

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from conftest import ServerFactory

    from devtools.synapse import Mode, SynapseServer
    from synapse_rendezvous.cli.check_findings import Report

#: Every finding of a complete exchange, in the order they are reported.
ALL_IDS = (
    "versions",
    "create",
    "session-url",
    "conditional-get",
    "put",
    "poll-after-write",
    "stale-put",
    "headers",
    "etag",
    "compression",
    "cache-control",
    "content-type",
    "cors",
    "lifetime",
    "clock",
    "delete",
    "msc4388",  # not served by these servers: an OK saying so
)
#: The module as shipped, rate limits included: the check must pass within them. (The
#: servers behind the proxy run many checks from one address, so they keep the suite's
#: default of no rate limits.)
SHIPPED: dict[str, object] = {"rate_limit": {"enabled": True}}
ORIGIN = "https://app.element.io"
RENDEZVOUS_PREFIXES = (CREATE_PATH, SESSION_ROOT)


def check(url: str) -> Report:
    return run_check(parse_target(url), timeout=5.0)


def shown(report: Report) -> str:
    return "\n".join(format_finding(f) for f in report.findings)


def not_ok(report: Report) -> dict[str, str]:
    """``{id: verdict}`` of every finding that is not OK."""
    return {f.id: f.verdict for f in report.findings if f.verdict != "OK"}


def summary(report: Report, finding_id: str) -> str:
    finding = report.get(finding_id)
    assert finding is not None, shown(report)
    return finding.summary


def assert_deleted(report: Report) -> None:
    """The check left nothing behind: its session answers 404."""
    assert report.session_url is not None
    assert get(report.session_url, report.session_url).status == 404


# -- servers ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def takeover(server_factory: ServerFactory) -> Iterator[SynapseServer]:
    with server_factory("takeover", SHIPPED) as server:
        yield server


@pytest.fixture(scope="module")
def delegation(server_factory: ServerFactory) -> Iterator[SynapseServer]:
    with server_factory("delegation", SHIPPED) as server:
        yield server


@pytest.fixture(scope="module")
def builtin(server_factory: ServerFactory) -> Iterator[SynapseServer]:
    with server_factory("builtin") as server:
        yield server


def _behind_proxy(server_factory: ServerFactory, mode: Mode) -> Iterator[ReverseProxy]:
    with (
        ReverseProxy() as proxy,
        server_factory(mode, extra_config={"public_baseurl": proxy.base_url}) as server,
    ):
        proxy.upstream = server.base_url
        yield proxy


@pytest.fixture(scope="module")
def proxied_module(server_factory: ServerFactory) -> Iterator[ReverseProxy]:
    """Our module (takeover) behind the test proxy."""
    yield from _behind_proxy(server_factory, "takeover")


@pytest.fixture(scope="module")
def proxied_builtin(server_factory: ServerFactory) -> Iterator[ReverseProxy]:
    """Synapse's built-in behind the test proxy."""
    yield from _behind_proxy(server_factory, "builtin")


@pytest.fixture
def proxy(proxied_module: ReverseProxy) -> Iterator[ReverseProxy]:
    """The proxy in front of our module, passing through and with a fresh request log."""
    proxied_module.faults = Faults()
    proxied_module.well_known = None
    proxied_module.clear()
    try:
        yield proxied_module
    finally:
        proxied_module.faults = Faults()
        proxied_module.well_known = None


# -- directly against Synapse -----------------------------------------------------------------


@pytest.mark.parametrize("mode", ["takeover", "delegation"])
def test_our_module_passes_everything(mode: str, request: pytest.FixtureRequest) -> None:
    server: SynapseServer = request.getfixturevalue(mode)
    report = check(server.base_url)
    assert tuple(f.id for f in report.findings) == ALL_IDS, shown(report)
    assert not_ok(report) == {}, shown(report)
    assert report.exit_code == 0
    assert report.base_url == server.base_url
    assert "120 s" in summary(report, "lifetime")
    if mode == "delegation":
        assert "via 307" in summary(report, "create")
    assert_deleted(report)


def test_builtin_only_warns_about_its_60_s_lifetime(builtin: SynapseServer) -> None:
    """Synapse's built-in (1.163) passes everything but its fixed 60 s lifetime."""
    report = check(builtin.base_url)
    assert tuple(f.id for f in report.findings) == ALL_IDS, shown(report)
    assert not_ok(report) == {"lifetime": "WARN"}, shown(report)
    assert "60 s" in summary(report, "lifetime")
    assert report.exit_code == 0
    assert_deleted(report)


def test_idle_module_fails_versions_and_create(server_factory: ServerFactory) -> None:
    """Neither MSC4108 setting: what Element X reports as 'Your account provider doesn't
    support signing in with a QR code'."""
    with server_factory("idle") as server:
        report = check(server.base_url)
    assert not_ok(report) == {"versions": "FAIL", "create": "FAIL"}, shown(report)
    assert [f.id for f in report.findings] == ["versions", "create"]
    assert "does not advertise org.matrix.msc4108" in summary(report, "versions")
    assert report.exit_code == 1


# -- the command line -------------------------------------------------------------------------


def test_cli_prints_one_line_per_finding(
    takeover: SynapseServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["check", takeover.base_url])
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert code == 0, out
    assert err == ""
    assert lines[0].startswith(f"Checking the MSC4108 rendezvous of {takeover.base_url}")
    assert [line.split()[:2] for line in lines[1:-1]] == [["OK", i] for i in ALL_IDS], out
    assert lines[-1] == f"Result: OK ({len(ALL_IDS)} OK, 0 WARN, 0 FAIL)"


def test_cli_json_report(takeover: SynapseServer, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["check", takeover.base_url.rstrip("/"), "--json", "--timeout", "5"])
    out, err = capsys.readouterr()
    assert code == 0, out
    assert err == ""
    report = json.loads(out)
    assert report["verdict"] == "OK"
    assert report["base_url"] == takeover.base_url
    assert report["session_url"].startswith(f"{takeover.base_url}_synapse/client/rendezvous/")
    assert [f["id"] for f in report["findings"]] == list(ALL_IDS)
    for finding in report["findings"]:
        assert set(finding) == {"id", "verdict", "summary", "fix"}
        assert finding["verdict"] == "OK"
        assert finding["fix"] is None
        assert finding["summary"]


@pytest.mark.parametrize(
    "argv",
    [
        ["check"],
        ["check", "ftp://matrix.example.org"],
        ["check", "not a server name"],
        ["check", "https://matrix.example.org/?x=1"],
        ["check", "https://matrix.example.org", "--timeout", "0"],
        ["check", "https://matrix.example.org", "--timeout", "soon"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_parse_target() -> None:
    assert parse_target("https://matrix.example.org").base_url == "https://matrix.example.org/"
    assert parse_target("http://127.0.0.1:8008/").base_url == "http://127.0.0.1:8008/"
    assert parse_target("https://example.org/matrix").base_url == "https://example.org/matrix/"
    assert parse_target("example.org").server_name == "example.org"
    assert parse_target("example.org:8448/").server_name == "example.org:8448"
    assert parse_target("[::1]:8448").server_name == "[::1]:8448"
    for bad in ("", "example.org/path", "user@example.org", "https://"):
        with pytest.raises(TargetError):
            parse_target(bad)


# -- network errors: a FAIL finding, never a traceback ----------------------------------------


def _run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    assert err == "", err
    return code, out


def test_connection_refused(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()  # nothing listens there
    code, out = _run_cli(["check", f"http://127.0.0.1:{port}/"], capsys)
    assert code == 1
    assert f"FAIL  versions          cannot reach http://127.0.0.1:{port}/" in out
    assert "refused" in out
    assert "fix: check that the homeserver or its reverse proxy listens" in out


def test_timeout_is_bounded(capsys: pytest.CaptureFixture[str]) -> None:
    """A server that accepts connections but never answers."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        started = time.monotonic()
        code, out = _run_cli(["check", f"http://127.0.0.1:{port}/", "--timeout", "0.5"], capsys)
        elapsed = time.monotonic() - started
    assert code == 1
    assert "no complete answer from 127.0.0.1" in out
    assert "within the check's time limit (--timeout 0.5 s, for the whole run)" in out
    assert elapsed < 5, elapsed


def test_tls_to_a_plain_http_port(
    takeover: SynapseServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Twisted waits for a request line that the TLS ClientHello never completes."""
    code, out = _run_cli(["check", f"https://127.0.0.1:{takeover.port}/", "--timeout", "1"], capsys)
    assert code == 1
    assert (
        f"the TLS handshake with 127.0.0.1:{takeover.port} got no answer within the check's "
        "time limit (--timeout 1 s" in out
    )
    assert "plain HTTP" in out


def test_dns_failure(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def unresolvable(*args: object, **kwargs: object) -> object:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", unresolvable)
    code, out = _run_cli(["check", "https://matrix.example.invalid/"], capsys)
    assert code == 1
    assert "cannot resolve matrix.example.invalid" in out


def test_discovery_network_error() -> None:
    port = free_port()
    report = run_check(parse_target(f"127.0.0.1:{port}"), timeout=2, discovery_scheme="http")
    assert not_ok(report) == {"discovery": "FAIL"}, shown(report)
    assert "refused" in summary(report, "discovery")


# -- through a reverse proxy ------------------------------------------------------------------


def test_pass_through_proxy_is_all_ok(proxy: ReverseProxy) -> None:
    report = check(proxy.base_url)
    assert tuple(f.id for f in report.findings) == ALL_IDS, shown(report)
    assert not_ok(report) == {}, shown(report)
    assert report.session_url is not None
    assert report.session_url.startswith(proxy.base_url)
    # The check asked like a browser: Origin and compression on every rendezvous request,
    # a preflight before the cross-origin ones.
    rendezvous = [s for s in proxy.seen if s.path.startswith(RENDEZVOUS_PREFIXES)]
    assert {s.method for s in rendezvous} == {"OPTIONS", "POST", "GET", "PUT", "DELETE"}
    for seen in rendezvous:
        assert seen.header("Origin") == ORIGIN
        if seen.method == "OPTIONS":
            assert seen.header("Access-Control-Request-Method") in ("POST", "PUT")
        else:
            assert seen.header("Accept-Encoding") == "gzip, deflate, br"
    assert_deleted(report)


@pytest.mark.parametrize(
    ("faults", "expected", "words"),
    [
        pytest.param(
            Faults(gzip=True),
            {"compression": "WARN", "etag": "WARN"},
            {"compression": "gzip", "etag": "weak"},
            id="gzip-weakens-etag",
        ),
        pytest.param(
            Faults(strip_etag=True),
            {"headers": "FAIL"},
            {"headers": "no ETag on create and GET"},
            id="strip-etag",
        ),
        pytest.param(
            Faults(drop_cors=True),
            {"cors": "FAIL"},
            {"cors": "no Access-Control-Allow-Origin"},
            id="drop-cors",
        ),
        pytest.param(
            Faults(date_skew=-90),
            {"clock": "WARN"},
            {"clock": "90 s behind this machine's clock"},
            id="date-90s-behind",
        ),
    ],
)
def test_proxy_fault_is_named_alone(
    proxy: ReverseProxy, faults: Faults, expected: dict[str, str], words: dict[str, str]
) -> None:
    proxy.faults = faults
    report = check(proxy.base_url)
    assert not_ok(report) == expected, shown(report)
    for finding_id, word in words.items():
        assert word in summary(report, finding_id), shown(report)
    assert report.exit_code == (1 if "FAIL" in expected.values() else 0)
    if faults.strip_etag:
        # Without an ETag the conditional steps cannot be played, and are not reported.
        skipped = {"conditional-get", "put", "poll-after-write", "stale-put", "etag"}
        assert tuple(f.id for f in report.findings) == tuple(i for i in ALL_IDS if i not in skipped)
        assert "not checked without an ETag" in summary(report, "headers")
    else:
        assert tuple(f.id for f in report.findings) == ALL_IDS, shown(report)
    assert_deleted(report)


def test_gzip_proxy_weak_if_match_accepted_by_our_module(proxy: ReverseProxy) -> None:
    """Behind nginx-style gzip the login still works with our module: say so."""
    proxy.faults = Faults(gzip=True)
    report = check(proxy.base_url)
    assert "weak If-Match was accepted" in summary(report, "put")
    assert "Synapse's built-in answers every such write with 412" in summary(report, "etag")


def test_date_ahead_is_harmless(proxy: ReverseProxy) -> None:
    """A server clock ahead only lengthens what matrix-js-sdk counts down: OK, with the skew
    reported (only a clock behind shortens the session)."""
    proxy.faults = Faults(date_skew=90)
    report = check(proxy.base_url)
    assert not_ok(report) == {}, shown(report)
    assert "90 s ahead of this machine's clock" in summary(report, "clock")


def test_builtin_behind_gzip_proxy_fails_every_write(proxied_builtin: ReverseProxy) -> None:
    """The most reported QR-login failure: Synapse's built-in compares If-Match strongly, so
    once a compressing proxy weakens the ETag every PUT is 412."""
    proxied_builtin.faults = Faults(gzip=True)
    report = check(proxied_builtin.base_url)
    assert not_ok(report) == {
        "put": "FAIL",
        "etag": "FAIL",
        "compression": "WARN",
        "lifetime": "WARN",
    }, shown(report)
    put = summary(report, "put")
    assert "412" in put
    assert "weak" in put
    assert "every write fails with 412" in summary(report, "etag")
    # No successful write: nothing to poll for, nothing to be stale against.
    assert report.get("poll-after-write") is None
    assert report.get("stale-put") is None
    assert_deleted(report)


def test_cleanup_after_a_failure_midway(proxy: ReverseProxy) -> None:
    """The proxy drops the PUT: FAIL with the reason, and the session is still deleted."""
    proxy.faults = Faults(drop_methods=frozenset({"PUT"}))
    report = check(proxy.base_url)
    assert [f.id for f in report.findings] == [
        "versions",
        "create",
        "session-url",
        "conditional-get",
        "put",
    ], shown(report)
    assert not_ok(report) == {"put": "FAIL"}
    assert "closed the connection without answering" in summary(report, "put")
    methods = [(s.method, s.status) for s in proxy.seen if s.path.startswith(RENDEZVOUS_PREFIXES)]
    assert methods[-2:] == [("PUT", 0), ("DELETE", 204)]
    proxy.faults = Faults()
    assert_deleted(report)


def test_discovery_through_well_known(proxy: ReverseProxy) -> None:
    proxy.well_known = {"m.homeserver": {"base_url": proxy.base_url}}
    name = f"127.0.0.1:{proxy.port}"
    report = run_check(parse_target(name), timeout=5, discovery_scheme="http")
    assert tuple(f.id for f in report.findings) == ("discovery", *ALL_IDS), shown(report)
    assert not_ok(report) == {}, shown(report)
    assert report.base_url == proxy.base_url
    assert f"points at {proxy.base_url}" in summary(report, "discovery")


def test_discovery_falls_back_without_well_known(proxy: ReverseProxy) -> None:
    """No .well-known/matrix/client (404): clients then use https://<server name>/, and so
    does the check."""
    proxy.well_known = 404
    report = run_check(parse_target(f"127.0.0.1:{proxy.port}"), timeout=5, discovery_scheme="http")
    assert not_ok(report) == {}, shown(report)
    assert "(404)" in summary(report, "discovery")
    assert report.base_url == proxy.base_url


def test_discovery_error_status(proxy: ReverseProxy) -> None:
    """Anything but 200 or 404 makes clients give up (FAIL_PROMPT in the spec). The test Synapse
    itself answers 500 there, because its authentication service is a dummy."""
    proxy.well_known = 500
    report = run_check(parse_target(f"127.0.0.1:{proxy.port}"), timeout=5, discovery_scheme="http")
    assert not_ok(report) == {"discovery": "FAIL"}, shown(report)
    assert "answered 500" in summary(report, "discovery")


def test_proxy_stops_its_threads() -> None:
    before = {t.ident for t in threading.enumerate()}
    with ReverseProxy() as proxy:
        assert get(proxy.base_url, "/anything").status == 502  # no upstream yet
    proxy.stop()  # idempotent
    leftover = [t for t in threading.enumerate() if t.ident not in before]
    assert leftover == []


# -- a hostile homeserver ---------------------------------------------------------------------
#
# What a homeserver answers decides where the check sends its requests and how long and how
# much it reads: none of it may be trusted.

CREATE = f"POST {CREATE_PATH}"


def paths(server: HostileServer) -> list[tuple[str, str]]:
    return [(s.method, s.path) for s in server.seen]


@pytest.fixture
def tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LoopbackTls:
    """A certificate for 127.0.0.1 that the check trusts (through ``SSL_CERT_FILE``)."""
    made = loopback_tls(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(made.ca_file))
    return made


def test_session_url_on_another_origin_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """A create whose session URL leads to another server (here another port): nothing is sent
    there, unless the admin says so with --allow-other-origin."""
    with HostileServer() as server, HostileServer() as other:
        session_url = other.url(SESSION_PATH)
        server.routes[CREATE] = created(session_url)
        code, out = _run_cli(["check", server.base_url, "--json"], capsys)
        report = json.loads(out)
        assert code == 1
        assert [(f["id"], f["verdict"]) for f in report["findings"]] == [
            ("versions", "OK"),
            ("create", "OK"),
            ("session-url", "FAIL"),
        ], out
        refusal = report["findings"][-1]
        assert session_url in refusal["summary"]
        assert "--allow-other-origin" in refusal["summary"]
        assert "--allow-other-origin" in refusal["fix"]
        assert report["session_url"] == session_url
        assert other.seen == []  # no preflight, no GET, no cleanup DELETE

        code, out = _run_cli(["check", server.base_url, "--allow-other-origin"], capsys)
        assert code == 1
        assert "--allow-other-origin" not in out
        assert f"the new session is 404 at its URL {session_url}" in out
        assert paths(other) == [
            ("OPTIONS", SESSION_PATH),
            ("GET", SESSION_PATH),
            ("DELETE", SESSION_PATH),  # the cleanup
        ]


def test_synapse_checked_through_a_proxy_it_does_not_know(takeover: SynapseServer) -> None:
    """The real case: a Synapse whose public_baseurl is not the URL checked gives session URLs
    on its own origin. Refused (the session is left to expire), then, allowed, all OK."""
    with ReverseProxy(takeover.base_url) as proxy:
        report = check(proxy.base_url)
        assert not_ok(report) == {"session-url": "FAIL"}, shown(report)
        assert report.session_url is not None
        assert report.session_url.startswith(takeover.base_url)
        assert f"on another origin ({takeover.base_url.rstrip('/')})" in summary(
            report, "session-url"
        )
        assert get(report.session_url, report.session_url).status == 200  # not even deleted

        report = run_check(parse_target(proxy.base_url), timeout=5, allow_other_origin=True)
        assert tuple(f.id for f in report.findings) == ALL_IDS, shown(report)
        assert not_ok(report) == {}, shown(report)
        assert_deleted(report)


def test_delegation_redirect_to_another_origin_is_followed() -> None:
    """Delegation mode: the create's 307 may lead to another origin, which may then serve the
    sessions; a second hop to yet another origin is not followed."""
    with HostileServer() as server, HostileServer() as delegate, HostileServer() as third:
        server.routes[CREATE] = redirect(delegate.url(CREATE_PATH))
        delegate.routes[CREATE] = created(delegate.url(SESSION_PATH))
        report = check(server.base_url)
        assert f"via 307 to {delegate.url(CREATE_PATH)}" in summary(report, "create")
        assert "the new session is 404" in summary(report, "session-url")  # it was asked
        assert ("GET", SESSION_PATH) in paths(delegate)

        delegate.routes[CREATE] = redirect(third.url(CREATE_PATH), 308)
        report = check(server.base_url)
        assert not_ok(report) == {"create": "FAIL"}, shown(report)
        assert f"a redirect to another origin ({third.url(CREATE_PATH)}), not followed" in (
            summary(report, "create")
        )
        assert third.seen == []


def test_redirects_are_bounded() -> None:
    with HostileServer() as server:
        server.routes[CREATE] = redirect(CREATE_PATH)  # to itself, forever
        report = check(server.base_url)
        assert not_ok(report) == {"create": "FAIL"}, shown(report)
        assert f"one redirect too many (after {MAX_REDIRECTS}" in summary(report, "create")
        assert paths(server).count(("POST", CREATE_PATH)) == MAX_REDIRECTS + 1


@pytest.mark.parametrize("step", ["discovery", "create"])
def test_no_redirect_from_https_to_http(step: str, tls: LoopbackTls) -> None:
    with HostileServer(tls=tls) as server, HostileServer() as plain:
        if step == "discovery":
            path = "/.well-known/matrix/client"
            target = f"127.0.0.1:{server.port}"  # a server name: discovery over https
        else:
            path, target = CREATE_PATH, server.base_url
        server.routes[path] = redirect(plain.url(path), 302 if step == "discovery" else 307)
        report = run_check(parse_target(target), timeout=5)
        assert not_ok(report) == {step: "FAIL"}, shown(report)
        assert f"a redirect from https to http ({plain.url(path)}), not followed" in summary(
            report, step
        )
        assert plain.seen == []
        if step == "create":
            assert report.get("versions") is not None  # https itself worked


def test_discovery_redirect_to_another_origin_is_not_followed() -> None:
    with HostileServer() as server, HostileServer() as other:
        path = "/.well-known/matrix/client"
        server.routes[path] = redirect(other.url(path), 301)
        report = run_check(parse_target(f"127.0.0.1:{server.port}"), discovery_scheme="http")
        assert not_ok(report) == {"discovery": "FAIL"}, shown(report)
        assert f"a redirect to another origin ({other.url(path)}), not followed" in summary(
            report, "discovery"
        )
        assert other.seen == []


def test_trickled_headers_end_at_the_time_limit(capsys: pytest.CaptureFixture[str]) -> None:
    """A server that sends its headers one byte every 0.5 s: every read gets a byte in time,
    but the whole check still ends at --timeout."""
    with HostileServer() as server:
        server.routes["/_matrix/client/versions"] = Trickle(
            b"HTTP/1.1 200 OK\r\nX-Trickle: " + b"." * 10_000, interval=0.5
        )
        started = time.monotonic()
        code, out = _run_cli(["check", server.base_url, "--timeout", "1.5"], capsys)
        elapsed = time.monotonic() - started
    assert code == 1
    assert "time limit 1.5 s for the whole check" in out.splitlines()[0]
    assert "FAIL  versions          cannot reach" in out
    assert "no complete answer from 127.0.0.1" in out
    assert 1.4 < elapsed < 1.5 + 1.0, elapsed


def test_time_limit_is_for_the_whole_run() -> None:
    """Two slow answers that would each fit in --timeout, but not together: the second one
    gets only what the first left, and fails."""
    body = json.dumps({"unstable_features": {"org.matrix.msc4108": True}}).encode()
    body = body.ljust(50)  # trickled in about 1 s
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    with HostileServer() as server:
        server.routes["/_matrix/client/versions"] = Trickle(body, 0.02, head.encode())
        # About 2 s for the status line and 200 bytes of a header: it never gets that long.
        server.routes[CREATE] = Trickle(b"HTTP/1.1 201 Created\r\nX-Slow: " + b"." * 200, 0.01)
        started = time.monotonic()
        report = run_check(parse_target(server.base_url), timeout=2.5)
        elapsed = time.monotonic() - started
    assert not_ok(report) == {"create": "FAIL"}, shown(report)
    assert "no complete answer" in summary(report, "create")
    assert elapsed < 2.5 + 1.0, elapsed


def test_control_characters_from_the_server_are_escaped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Findings quote what the server sent: no escape sequence reaches the terminal."""
    with HostileServer() as server:
        server.routes[CREATE] = created(server.url(SESSION_PATH + "\x1b[2J\x1b]0;owned\x07"))
        code, out = _run_cli(["check", server.base_url], capsys)
    assert code == 1
    assert "\x1b" not in out
    assert "\x07" not in out
    assert "rendezvous/01HOSTILE\\x1b[2J\\x1b]0;owned\\x07 is not reachable" in out, out


#: Runs the command line in a fresh interpreter and prints its peak memory (KiB) on stderr.
_MEASURED = """
import resource, sys
from synapse_rendezvous.__main__ import main
code = main(sys.argv[1:])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
sys.exit(code)
"""


def _run_measured(argv: list[str]) -> tuple[int, str, int]:
    """``python -m synapse_rendezvous`` in a subprocess: exit status, stdout, max RSS in MiB."""
    done = subprocess.run(
        [sys.executable, "-c", _MEASURED, *argv], capture_output=True, text=True, timeout=60
    )
    return done.returncode, done.stdout, int(done.stderr.strip().splitlines()[-1]) >> 10


@pytest.mark.parametrize(
    ("route", "wbits"),
    [(CREATE, 16 + zlib.MAX_WBITS), (CREATE, zlib.MAX_WBITS), ("/_matrix/client/versions", 0)],
    ids=["gzip-bomb", "deflate-bomb", "endless-body"],
)
def test_huge_bodies_are_not_read(route: str, wbits: int) -> None:
    """About 1 MB of gzip (or deflate) that decodes to about 1 GB of zeros, or a plain body
    that never ends: a FAIL finding, and the check's memory stays small."""
    with HostileServer() as server:
        if wbits:
            decoded, server.routes[route] = gzip_bomb(1_000_000, status=201, wbits=wbits)
            assert decoded > 900 << 20
            words = "that decodes to more than 1 MiB"
        else:
            server.routes[route] = endless_body()
            words = f"with a body of more than {MAX_BODY_BYTES >> 20} MiB"
        code, out, rss_mib = _run_measured(["check", server.base_url, "--json", "--timeout", "20"])
    report = json.loads(out)
    failed = [f for f in report["findings"] if f["verdict"] != "OK"]
    assert code == 1
    assert [f["id"] for f in failed] == ["create" if route == CREATE else "versions"], out
    assert words in failed[0]["summary"]
    assert rss_mib < 200, rss_mib


def test_hostile_server_stops_its_threads() -> None:
    """Stopping ends a trickle in progress at once, and no thread is left behind."""
    before = {t.ident for t in threading.enumerate()}
    with HostileServer({"/slow": Trickle(b"HTTP/1.1 200 OK\r\n" * 100, interval=0.5)}) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as client:
            client.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            assert client.recv(1) == b"H"
            started = time.monotonic()
            server.stop()
            assert time.monotonic() - started < 2
        assert paths(server) == [("GET", "/slow")]
    leftover = [t for t in threading.enumerate() if t.ident not in before]
    assert leftover == []
