"""Hostile and malformed input against the standalone server: the request suite of
`test_hostile_input` (imported below, so pytest runs those very tests here, against this
module's ``server``), plus the standalone server's own bounds.

Where a request never reaches the rendezvous core, what answers it is hyper here, not
Twisted, so a few expectations differ; those tests are rewritten below with the standalone
server's answer, and the property that matters is the same: a 4xx (or a closed connection),
never a 5xx, never a hang, the server still serving afterwards. The differences:

- identical repeated ``Content-Length`` lines are accepted (RFC 9110 allows it; the core
  already tolerates agreeing lines), where Twisted refuses them;
- raw non-ASCII bytes in a session id reach the core, which answers 404 (Twisted: bare 400);
- header lines are bounded in number (100) and in size (``max_header_bytes``, 16 KiB by
  default, for the request line and every header together): beyond either, hyper answers 431
  and closes, where Twisted takes up to 500 lines of 16 KiB each;
- a ``multipart/form-data`` create is refused by the core (400 ``M_INVALID_PARAM``), not by
  Synapse's guard (415).

The server runs in both stores, with ``metrics_listen``, so that the last test can check from
its counters that no request was answered 5xx.
"""

from __future__ import annotations

import re
import socket
import time
from typing import TYPE_CHECKING, cast

import pytest
import test_hostile_input as suite
from support.http_client import SESSION_ROOT, get
from support.raw_http import build_request, connect, read_until_close

# The requests of the hostile suite whose expected answers hold here unchanged. Imported by
# name, pytest collects and runs them in this module, with this module's `server` fixture.
from test_hostile_input import (  # noqa: F401
    test_body_longer_than_content_length_is_cut_at_the_length,
    test_body_shorter_than_content_length_is_awaited,
    test_chunked_upload_with_length_is_refused,
    test_chunked_upload_without_length_is_missing_param,
    test_connect_authority_form_is_not_served,
    test_empty_id_is_not_a_session,
    test_expect_100_continue_is_honoured,
    test_head_on_every_path,
    test_huge_content_length_waits_for_the_body,
    test_invalid_utf8_bodies_are_stored_byte_for_byte,
    test_lower_case_id_of_a_live_session_is_not_found,
    test_megabyte_body_is_too_large,
    test_nul_in_a_header_value_is_refused_by_twisted,
    test_odd_content_type,
    test_odd_if_match,
    test_odd_if_none_match,
    test_options_on_every_path_is_a_cors_preflight,
    test_slow_client_is_answered,
    test_stalled_clients_do_not_block_others,
    test_thousands_of_headers_are_refused_cleanly,
    test_unknown_methods_are_not_allowed,
)

from devtools.standalone import StandaloneServer
from devtools.synapse import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator

    from devtools.redis import RedisServer
    from devtools.synapse import SynapseServer

#: The ``request_timeout`` of `impatient`, short so that the tests of it stay short.
REQUEST_TIMEOUT_S = 1.5


class _Served:
    """The standalone server as the hostile suite sees it. ``mode`` is ``"delegation"``:
    what the suite means by it (the session root is the create endpoint) is this server's
    layout, and the standard create path is served too."""

    mode = "delegation"

    def __init__(self, server: StandaloneServer, metrics_port: int) -> None:
        self.server = server
        self.metrics_port = metrics_port

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def running(self) -> bool:
        return self.server.running

    def log_text(self) -> str:
        return self.server.log_text()

    def metrics(self) -> str:
        resp = get(f"http://127.0.0.1:{self.metrics_port}/", "metrics")
        assert resp.status == 200, resp
        return resp.body.decode()


@pytest.fixture(scope="module", params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def server(request: pytest.FixtureRequest) -> Iterator[SynapseServer]:
    config: dict[str, object] = {"rate_limit": {"enabled": False}}
    if request.param == "redis":
        # The session's redis-server, started only when a redis case runs.
        redis: RedisServer = request.getfixturevalue("session_redis")
        config.update({"store": "redis", "redis": {"url": redis.url, "key_prefix": "hostile:"}})
    metrics_port = free_port()
    server = StandaloneServer(config, server_config={"metrics_listen": f"127.0.0.1:{metrics_port}"})
    try:
        server.start()
        # The suite's helpers and tests take a SynapseServer: they use the part _Served has.
        yield cast("SynapseServer", _Served(server, metrics_port))
    finally:
        server.stop()


@pytest.fixture(scope="module")
def impatient() -> Iterator[SynapseServer]:
    """A server with a short ``request_timeout``."""
    with StandaloneServer(
        {"rate_limit": {"enabled": False}},
        server_config={"request_timeout": f"{int(REQUEST_TIMEOUT_S * 1000)}ms"},
    ) as server:
        yield cast("SynapseServer", server)


# -- the suite's requests, with the standalone server's answers -------------------------------


@pytest.mark.parametrize("method", ["POST", "PUT"])
@pytest.mark.parametrize(
    "lengths", list(suite.MALFORMED_LENGTHS.values()), ids=list(suite.MALFORMED_LENGTHS)
)
def test_malformed_content_length(server: SynapseServer, method: str, lengths: list[str]) -> None:
    """hyper refuses every malformed length (bare 400, closed); repeated identical lengths
    are one length, and the upload goes through."""
    headers = [suite.TEXT, *(("Content-Length", value) for value in lengths)]
    data, _ = suite._upload(server, method, headers, b"hi")
    ex = suite._send(server, data)
    if lengths == ["2", "2"]:
        resp = suite._answered(ex, "repeated identical lengths")
        assert resp.status == (201 if method == "POST" else 202), resp
    else:
        suite._refused_by_twisted(ex, f"{method} Content-Length {lengths}")
        assert ex.status == 400, ex
    suite._assert_serving(server)


@pytest.mark.parametrize("method", suite.SESSION_METHODS)
@pytest.mark.parametrize("case", list(suite.ODD_IDS.values()), ids=list(suite.ODD_IDS))
def test_odd_ids(server: SynapseServer, method: str, case: tuple[bytes, int, str | None]) -> None:
    """As in the suite, except that raw bytes the HTTP parser lets through reach the core as
    an id it never issued: 404, or hyper's bare 400 for bytes it refuses."""
    segment, status, errcode = case
    target = SESSION_ROOT.encode() + b"/" + segment
    ex = suite._send(server, suite._session_request(method, target))
    if errcode is None:
        assert ex.closed, ex
        assert not ex.timed_out, ex
        assert ex.status in (400, 404), ex
    else:
        suite._check_odd_id_answer(ex, method, status, errcode, f"{method} {target!r}")
    suite._assert_serving(server)


@pytest.mark.parametrize(
    ("method", "header"), [("PUT", "If-Match"), ("GET", "If-None-Match")], ids=["PUT", "GET"]
)
def test_huge_precondition_header_is_431(server: SynapseServer, method: str, header: str) -> None:
    """A 64 KiB header line is over ``max_header_bytes``: 431, closed; nothing changed."""
    path, _ = suite._session(server, b"payload")
    body = b"after" if method == "PUT" else None
    headers = (
        [suite.TEXT, (header, suite.HUGE_TAG)] if method == "PUT" else [(header, suite.HUGE_TAG)]
    )
    ex = suite._send(server, build_request(method, path, headers, body))
    assert ex.closed, ex
    assert ex.status == 431, ex
    assert suite._payload(server, path) == b"payload"
    suite._assert_serving(server)


def test_multipart_create_is_invalid_content_type(server: SynapseServer) -> None:
    """No Synapse guard in front: the core refuses a multipart create like any type that is
    not text/plain."""
    multipart = [("Content-Type", "multipart/form-data; boundary=x"), ("Content-Length", "4")]
    for method in ("POST", "PUT"):
        data, _ = suite._upload(server, method, multipart, b"data")
        resp = suite._answered(suite._send(server, data), f"{method} multipart")
        suite._assert_error(resp, 400, "M_INVALID_PARAM", f"{method} multipart")


def test_more_than_100_header_lines_are_431(server: SynapseServer) -> None:
    """At most 100 header lines reach the core; 400 lines are refused with 431, and 90 go
    through."""
    path, _ = suite._session(server, b"payload")
    many = [(f"X-Filler-{i}", "v" * 20) for i in range(400)]
    ex = suite._send(server, build_request("GET", path, many))
    assert ex.closed, ex
    assert ex.status == 431, ex
    some = [(f"X-Filler-{i}", "v" * 20) for i in range(90)]
    resp = suite._answered(suite._send(server, build_request("GET", path, some)), "GET")
    assert (resp.status, resp.body) == (200, b"payload"), resp


def test_overlong_request_line_is_refused(server: SynapseServer) -> None:
    """A 20 KiB request line is over ``max_header_bytes``: refused (431) and closed."""
    ex = suite._send(server, build_request("GET", f"{SESSION_ROOT}/{'A' * 20_000}"))
    assert ex.closed, ex
    assert not ex.timed_out, ex
    assert ex.data == b"" or ex.status in (400, 414, 431), ex
    suite._assert_serving(server)


# -- the server's own bounds ------------------------------------------------------------------


def test_headers_that_never_end_are_dropped(impatient: SynapseServer) -> None:
    """Slowloris: a request whose headers trickle in is closed ``request_timeout`` after it
    started, answered or not; the server serves others meanwhile."""
    with connect(impatient, timeout=REQUEST_TIMEOUT_S * 4) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /_synapse/client/rendezvous/x HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        closed = False
        while time.monotonic() - started < REQUEST_TIMEOUT_S * 3:
            try:
                sock.sendall(b"X-Slow: 1\r\n")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            sock.settimeout(0.2)
            try:
                if sock.recv(65536) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
            except ConnectionResetError:
                closed = True
                break
            suite._assert_serving(impatient)
        elapsed = time.monotonic() - started
    assert closed, f"still open after {elapsed:.1f} s"
    assert REQUEST_TIMEOUT_S * 0.8 <= elapsed <= REQUEST_TIMEOUT_S * 3, elapsed


def test_idle_connections_are_closed(impatient: SynapseServer) -> None:
    """A kept-alive connection with no next request closes after ``request_timeout``."""
    path, _ = suite._session(impatient, b"payload")
    with connect(impatient, timeout=REQUEST_TIMEOUT_S * 4) as sock:
        sock.sendall(build_request("GET", path, close=False))
        started = time.monotonic()
        received, closed, _ = read_until_close(sock, REQUEST_TIMEOUT_S * 4)
        elapsed = time.monotonic() - started
    assert received.startswith(b"HTTP/1.1 200"), received
    assert closed
    assert REQUEST_TIMEOUT_S * 0.8 <= elapsed <= REQUEST_TIMEOUT_S * 3, elapsed


def test_body_that_never_arrives_is_dropped(impatient: SynapseServer) -> None:
    """A write whose body stops halfway is dropped unanswered after ``request_timeout``, and
    changes nothing."""
    path, etag = suite._session(impatient, b"payload")
    upload = build_request("PUT", path, [suite.TEXT, ("If-Match", etag)], b"0123456789")
    with connect(impatient, timeout=REQUEST_TIMEOUT_S * 4) as sock:
        sock.sendall(upload[:-5])
        started = time.monotonic()
        received, closed, _ = read_until_close(sock, REQUEST_TIMEOUT_S * 4)
        elapsed = time.monotonic() - started
    assert (received, closed) == (b"", True)
    assert REQUEST_TIMEOUT_S * 0.8 <= elapsed <= REQUEST_TIMEOUT_S * 3, elapsed
    assert suite._payload(impatient, path) == b"payload"


def test_connections_beyond_max_connections_wait() -> None:
    """With ``max_connections: 3``, a fourth client is answered only once one of the three
    closes: the server's memory and descriptors stay bounded."""
    with StandaloneServer(
        {"rate_limit": {"enabled": False}}, server_config={"max_connections": 3}
    ) as server:
        held = [connect(server, timeout=5) for _ in range(3)]
        try:
            time.sleep(0.2)
            with connect(server, timeout=5) as fourth:
                fourth.sendall(build_request("GET", "/health"))
                fourth.settimeout(0.7)
                with pytest.raises(TimeoutError):
                    fourth.recv(1)
                held.pop().close()
                received, closed, _ = read_until_close(fourth, 5)
            assert received.startswith(b"HTTP/1.1 200"), received
            assert closed
        finally:
            for sock in held:
                sock.close()


def test_header_block_bound_is_configurable() -> None:
    """``max_header_bytes`` bounds the request line and headers together."""
    with StandaloneServer(
        {"rate_limit": {"enabled": False}}, server_config={"max_header_bytes": 8192}
    ) as server:
        fits = build_request("GET", "/health", [("X-Pad", "p" * 7000)])
        over = build_request("GET", "/health", [("X-Pad", "p" * 9000)])
        for data, status in ((fits, 200), (over, 431)):
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
                sock.sendall(data)
                received, closed, _ = read_until_close(sock, 5)
            assert closed
            assert received.startswith(f"HTTP/1.1 {status}".encode()), received


# -- afterwards -------------------------------------------------------------------------------

_FIVE_XX = re.compile(r'^synapse_rendezvous_responses_total\{method="\w+",status="5\d\d"\} (\d+)')


def test_zz_server_survived_without_panic_or_5xx(server: SynapseServer) -> None:
    """Runs last in this module: the server still runs and serves, nothing above made the
    core panic, and its counters show no rendezvous request answered 5xx."""
    assert server.running
    suite._assert_serving(server)
    log = server.log_text()
    assert "panicked at" not in log, log[-5000:]
    assert "panic while handling" not in log, log[-5000:]
    assert " ERROR " not in log, log[-5000:]
    metrics = cast("_Served", server).metrics()
    answered = [
        line for line in metrics.splitlines() if line.startswith("synapse_rendezvous_responses")
    ]
    assert answered, metrics
    five_xx = [line for line in answered if _FIVE_XX.match(line) and not line.endswith(" 0")]
    assert not five_xx, five_xx
