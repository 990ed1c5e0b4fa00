"""``python -m synapse_rendezvous check`` against real Synapse processes on loopback.

Directly against our module (takeover and delegation, as shipped), Synapse's built-in and an
idle module; and through `support.proxy.ReverseProxy`, a reverse proxy switched to each
misbehaviour seen in the wild: the check must name that fault, and only that fault.

Each Synapse boots once per module (module-scoped fixtures). Servers behind the proxy have
``public_baseurl`` pointing at the proxy, as in a real deployment, so that the session URLs
lead through it too.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import TYPE_CHECKING

import pytest
from http_client import get
from support.proxy import Faults, ReverseProxy

from synapse_rendezvous.__main__ import main
from synapse_rendezvous.cli.check import TargetError, parse_target, run_check
from synapse_rendezvous.cli.check_findings import format_finding
from synapse_rendezvous.devserver import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator

    from conftest import ServerFactory

    from synapse_rendezvous.cli.check_findings import Report
    from synapse_rendezvous.devserver import DevServer, Mode

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
)
#: The module as shipped, rate limits included: the check must pass within them. (The
#: servers behind the proxy run many checks from one address, so they keep the suite's
#: default of no rate limits.)
SHIPPED: dict[str, object] = {"rate_limit": {"enabled": True}}
ORIGIN = "https://app.element.io"
RENDEZVOUS_PREFIXES = (
    "/_matrix/client/unstable/org.matrix.msc4108/rendezvous",
    "/_synapse/client/rendezvous",
)


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
def takeover(server_factory: ServerFactory) -> Iterator[DevServer]:
    with server_factory("takeover", SHIPPED) as server:
        yield server


@pytest.fixture(scope="module")
def delegation(server_factory: ServerFactory) -> Iterator[DevServer]:
    with server_factory("delegation", SHIPPED) as server:
        yield server


@pytest.fixture(scope="module")
def builtin(server_factory: ServerFactory) -> Iterator[DevServer]:
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
    server: DevServer = request.getfixturevalue(mode)
    report = check(server.base_url)
    assert tuple(f.id for f in report.findings) == ALL_IDS, shown(report)
    assert not_ok(report) == {}, shown(report)
    assert report.exit_code == 0
    assert report.base_url == server.base_url
    assert "120 s" in summary(report, "lifetime")
    if mode == "delegation":
        assert "via 307" in summary(report, "create")
    assert_deleted(report)


def test_builtin_only_warns_about_its_60_s_lifetime(builtin: DevServer) -> None:
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
    takeover: DevServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["check", takeover.base_url])
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert code == 0, out
    assert err == ""
    assert lines[0].startswith(f"Checking the MSC4108 rendezvous of {takeover.base_url}")
    assert [line.split()[:2] for line in lines[1:-1]] == [["OK", i] for i in ALL_IDS], out
    assert lines[-1] == f"Result: OK ({len(ALL_IDS)} OK, 0 WARN, 0 FAIL)"


def test_cli_json_report(takeover: DevServer, capsys: pytest.CaptureFixture[str]) -> None:
    import json

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
    assert "no answer from 127.0.0.1" in out
    assert "within 0.5 s" in out
    assert elapsed < 5, elapsed


def test_tls_to_a_plain_http_port(takeover: DevServer, capsys: pytest.CaptureFixture[str]) -> None:
    """Twisted waits for a request line that the TLS ClientHello never completes."""
    code, out = _run_cli(["check", f"https://127.0.0.1:{takeover.port}/", "--timeout", "1"], capsys)
    assert code == 1
    assert f"the TLS handshake with 127.0.0.1:{takeover.port} got no answer within 1 s" in out
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
