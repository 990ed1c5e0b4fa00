"""Hostile and malformed input, sent byte for byte over raw sockets to a real Synapse.

Every expectation below was measured on matrix-synapse 1.163.2 (Twisted 25) and is the one
a client can rely on. Some requests never reach our module: Twisted's HTTP parser answers
them first (a bare ``400 Bad Request`` without headers, then it closes the connection), or
Synapse does (its create servlet in takeover mode, its OPTIONS handling, its multipart
guard). For those the test states what actually happens and checks that it is reasonable: a
4xx, never a 5xx, never a hang, and the server still serves a normal request afterwards.

Every read is bounded by a timeout (`raw_http`). After the whole module the server must still
run, and its log must hold no Rust panic and no Python traceback from our module.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
from support.http_client import CREATE_PATH, SESSION_ROOT
from support.raw_http import (
    Exchange,
    RawResponse,
    build_request,
    connect,
    create,
    create_url,
    exchange,
    parse_responses,
    read_until_close,
    request,
    target_of,
)

if TYPE_CHECKING:
    import socket

    from devtools.synapse import SynapseServer

#: Bound on the answer to a request the server can answer at once.
PROMPT_S = 2.0
#: How long a test waits before concluding that the server is waiting for more bytes.
STALL_S = 1.5

TEXT = ("Content-Type", "text/plain")
#: Bytes that are not UTF-8 at all (lone continuation bytes, 0xFE/0xFF, a truncated
#: sequence), plus NUL and CRLF.
NOT_UTF8 = bytes(range(0x80, 0x100)) + b"\x00\r\n\xc3\x28\xe2\x82"
#: An id this server could have issued but never did.
UNKNOWN_ID = "01HZZZZZZZZZZZZZZZZZZZZZZZ"
#: The status and target of a line of Synapse's access log, such as
#: ``... 86B 201 "POST /_matrix/client/... HTTP/1.1" "-" [0 dbevts]``.
ACCESS_LINE = re.compile(r' \d+B (\d{3}) "\S+ (\S+)')


@pytest.fixture(autouse=True)
def _module_only(server: SynapseServer) -> None:
    if server.mode == "builtin":
        pytest.skip("tests our module, not Synapse's built-in implementation")


# -- helpers ----------------------------------------------------------------------------------


def _create_target(server: SynapseServer) -> str:
    """Where a create POST reaches our module: the standard path in takeover mode; in
    delegation mode Synapse answers that with a 307 to the session root, served by us."""
    return SESSION_ROOT if server.mode == "delegation" else CREATE_PATH


def _send(
    server: SynapseServer, data: bytes, *, head: bool = False, timeout: float = PROMPT_S * 2
) -> Exchange:
    return exchange(server, data, head=head, timeout=timeout)


def _answered(ex: Exchange, what: str) -> RawResponse:
    """The one response to a request our module answers: not a 5xx, connection closed."""
    assert ex.closed, f"{what}: {ex!r}"
    assert not ex.timed_out, f"{what}: {ex!r}"
    resp = ex.response
    assert resp.status < 500, f"{what}: {resp!r}"
    return resp


def _refused_by_twisted(ex: Exchange, what: str) -> None:
    """What Twisted does with a request it cannot parse: a bare 400 (or, for an over-long
    line, nothing at all), then it closes. Never a 5xx, never a hang."""
    assert ex.closed, f"{what}: {ex!r}"
    assert not ex.timed_out, f"{what}: {ex!r}"
    assert ex.data == b"" or ex.status == 400, f"{what}: {ex!r}"


def _assert_error(resp: RawResponse, status: int, errcode: str, what: str = "") -> None:
    assert resp.status == status, f"{what}: {resp!r}"
    assert resp.errcode() == errcode, f"{what}: {resp!r}"
    assert resp.header("Content-Type") == "application/json", f"{what}: {resp!r}"
    assert resp.header("Access-Control-Allow-Origin") == "*", f"{what}: {resp!r}"


def _assert_serving(server: SynapseServer) -> None:
    """A normal create and read are answered promptly."""
    started = time.monotonic()
    url = create_url(server, b"still here", timeout=PROMPT_S)
    got = request(server, "GET", url, timeout=PROMPT_S)
    assert (got.status, got.body) == (200, b"still here"), got
    assert time.monotonic() - started < 2 * PROMPT_S


def _session(server: SynapseServer, body: bytes = b"hello") -> tuple[str, str]:
    """A new session: its path and current ETag."""
    resp = create(server, body)
    assert resp.status == 201, resp
    url = resp.json_dict()["url"]
    assert isinstance(url, str)
    etag = resp.header("ETag")
    assert etag is not None, resp
    return target_of(url), etag


def _payload(server: SynapseServer, path: str) -> bytes:
    got = request(server, "GET", path)
    assert got.status == 200, got
    return got.body


def _upload(
    server: SynapseServer, method: str, headers: list[tuple[str, str]], body: bytes
) -> tuple[bytes, str]:
    """The raw bytes of a POST (create) or PUT (to a new session, ``If-Match: *``) with the
    given headers and body and no automatic Content-Length; and the target used."""
    if method == "POST":
        target = _create_target(server)
    else:
        target, _ = _session(server)
        headers = [("If-Match", "*"), *headers]
    return build_request(method, target, headers, body, content_length=False), target


# -- Content-Length and framing ---------------------------------------------------------------

#: Content-Length lines Twisted refuses itself (bare 400, connection closed) before any
#: resource sees the request. Our core would answer 400 M_INVALID_PARAM; it never gets them.
MALFORMED_LENGTHS = {
    "non-numeric": ["abc"],
    "negative": ["-1"],
    "decimal": ["1.0"],
    "with-space-inside": ["1 1"],
    "list": ["2, 2"],
    "duplicate-same": ["2", "2"],
    "duplicate-different": ["2", "3"],
}


@pytest.mark.parametrize("method", ["POST", "PUT"])
@pytest.mark.parametrize("lengths", list(MALFORMED_LENGTHS.values()), ids=list(MALFORMED_LENGTHS))
def test_malformed_content_length_is_refused(
    server: SynapseServer, method: str, lengths: list[str]
) -> None:
    headers = [TEXT, *(("Content-Length", value) for value in lengths)]
    data, _ = _upload(server, method, headers, b"hi")
    ex = _send(server, data)
    _refused_by_twisted(ex, f"{method} Content-Length {lengths}")
    assert ex.status == 400, ex
    _assert_serving(server)


@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_huge_content_length_waits_for_the_body(server: SynapseServer, method: str) -> None:
    """``Content-Length: 99999999999999999999``: Twisted accepts any digit string and waits
    for that many bytes (Synapse would refuse an over-large body only once it has arrived, or
    drop the connection once more than its ``max_request_body_size`` arrived). So: no answer
    while the body is missing (or a 4xx), the connection can be dropped, nothing breaks."""
    headers = [TEXT, ("Content-Length", "99999999999999999999")]
    data, _ = _upload(server, method, headers, b"hi")
    ex = _send(server, data, timeout=STALL_S)
    if ex.data:
        assert ex.status is not None, ex
        assert 400 <= ex.status < 500, ex
    else:
        assert ex.timed_out, ex
    _assert_serving(server)


@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_body_longer_than_content_length_is_cut_at_the_length(
    server: SynapseServer, method: str
) -> None:
    """HTTP framing: the body is exactly Content-Length bytes; with ``Connection: close`` the
    rest is ignored. The session holds the first two bytes."""
    data, target = _upload(server, method, [TEXT, ("Content-Length", "2")], b"hello")
    resp = _answered(_send(server, data), "longer body")
    assert resp.status == (201 if method == "POST" else 202), resp
    if method == "POST":
        url = resp.json_dict()["url"]
        assert isinstance(url, str)
        target = target_of(url)
    assert _payload(server, target) == b"he"


@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_body_shorter_than_content_length_is_awaited(server: SynapseServer, method: str) -> None:
    """The server waits for the rest of the body (it cannot know it will not come); the
    client gives up, closes, and the server is fine. A PUT that never completed changed
    nothing."""
    data, target = _upload(server, method, [TEXT, ("Content-Length", "10")], b"hello")
    ex = _send(server, data, timeout=STALL_S)
    assert ex.timed_out, ex
    assert ex.data == b"", ex
    _assert_serving(server)
    if method == "PUT":
        assert _payload(server, target) == b"hello"


@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_chunked_upload_without_length_is_missing_param(server: SynapseServer, method: str) -> None:
    """MSC4108 requires a Content-Length: Twisted de-chunks the body, our module sees no
    length and answers 400 M_MISSING_PARAM."""
    headers = [TEXT, ("Transfer-Encoding", "chunked")]
    data, _ = _upload(server, method, headers, b"2\r\nhi\r\n0\r\n\r\n")
    resp = _answered(_send(server, data), "chunked")
    _assert_error(resp, 400, "M_MISSING_PARAM", "chunked")


@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_chunked_upload_with_length_is_refused(server: SynapseServer, method: str) -> None:
    """Both Transfer-Encoding and Content-Length (the request-smuggling shape): Twisted
    refuses it with a bare 400 and closes."""
    headers = [TEXT, ("Transfer-Encoding", "chunked"), ("Content-Length", "2")]
    data, _ = _upload(server, method, headers, b"2\r\nhi\r\n0\r\n\r\n")
    ex = _send(server, data)
    _refused_by_twisted(ex, "chunked with length")
    assert ex.status == 400, ex
    _assert_serving(server)


@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_megabyte_body_is_too_large(server: SynapseServer, method: str) -> None:
    """A 1 MiB body, well framed: Synapse reads it (it is under its own request size limit),
    our module refuses it as 413 M_TOO_LARGE (the default maximum is 4096 bytes)."""
    body = b"x" * 1_048_576
    data, _ = _upload(server, method, [TEXT, ("Content-Length", str(len(body)))], body)
    _assert_error(_answered(_send(server, data), "1 MiB"), 413, "M_TOO_LARGE")


def test_expect_100_continue_is_honoured(server: SynapseServer) -> None:
    """``Expect: 100-continue`` (curl sends it for larger uploads): an interim 100, then the
    real answer."""
    path, etag = _session(server)
    data = build_request("PUT", path, [TEXT, ("If-Match", etag), ("Expect", "100-continue")], b"x")
    ex = _send(server, data)
    assert [r.status for r in ex.responses] == [100, 202], ex
    assert _payload(server, path) == b"x"


def test_nul_in_a_header_value_is_refused_by_twisted(server: SynapseServer) -> None:
    """A NUL byte inside a header value: Twisted refuses the request (bare 400)."""
    path, _ = _session(server)
    data = build_request("GET", path, [("If-None-Match", '"a\x00b"')])
    ex = _send(server, data)
    _refused_by_twisted(ex, "NUL in If-None-Match")
    assert ex.status == 400, ex
    _assert_serving(server)


# -- session ids ------------------------------------------------------------------------------

#: Raw path segments, and the expected status and errcode (None: Twisted's bare 400, since
#: its parser refuses raw non-ASCII bytes in the request line before Synapse routes it).
ODD_IDS: dict[str, tuple[bytes, int, str | None]] = {
    "raw-utf8": ("é".encode(), 400, None),
    "raw-latin1": (b"\xe9\xff", 400, None),
    "raw-control-byte": (b"\x01", 400, None),
    # Synapse's own session resource would answer 500 here (it decodes the id as ASCII).
    "percent-encoded-non-ascii": (b"%C3%A9", 404, "M_NOT_FOUND"),
    "overlong": (b"A" * 1000, 404, "M_NOT_FOUND"),
    "path-traversal": (b"../../_matrix/client/versions", 404, "M_UNRECOGNIZED"),
    "encoded-path-traversal": (
        b"%2e%2e%2f%2e%2e%2f_matrix%2fclient%2fversions",
        404,
        "M_NOT_FOUND",
    ),
    "percent-nul": (b"%00", 404, "M_NOT_FOUND"),
    "broken-escape": (b"%zz", 404, "M_NOT_FOUND"),
    "unknown-ulid": (UNKNOWN_ID.encode(), 404, "M_NOT_FOUND"),
    "sub-path": (UNKNOWN_ID.encode() + b"/x", 404, "M_UNRECOGNIZED"),
}

SESSION_METHODS = ["GET", "HEAD", "PUT", "DELETE"]


def _session_request(method: str, target: bytes) -> bytes:
    if method == "PUT":
        return build_request(method, target, [TEXT, ("If-Match", "*")], b"x")
    return build_request(method, target)


def _check_odd_id_answer(
    ex: Exchange, method: str, status: int, errcode: str | None, what: str
) -> None:
    if errcode is None:
        _refused_by_twisted(ex, what)
        assert ex.status == status, f"{what}: {ex!r}"
        return
    resp = _answered(ex, what)
    assert resp.status == status, f"{what}: {resp!r}"
    if method == "HEAD":
        assert resp.body == b"", f"{what}: {resp!r}"
    else:
        _assert_error(resp, status, errcode, what)


@pytest.mark.parametrize("method", SESSION_METHODS)
@pytest.mark.parametrize("case", list(ODD_IDS.values()), ids=list(ODD_IDS))
def test_odd_ids_are_not_found(
    server: SynapseServer, method: str, case: tuple[bytes, int, str | None]
) -> None:
    """Odd ids on every session method: 404 (or Twisted's 400), never a 5xx. For PUT every
    check before the id passes (length, type, If-Match), so the id decides."""
    segment, status, errcode = case
    target = SESSION_ROOT.encode() + b"/" + segment
    # HEAD: parse without skipping the body, to see that none is sent.
    ex = _send(server, _session_request(method, target))
    _check_odd_id_answer(ex, method, status, errcode, f"{method} {target!r}")
    if errcode is None:
        _assert_serving(server)


@pytest.mark.parametrize("method", SESSION_METHODS)
def test_empty_id_is_not_a_session(server: SynapseServer, method: str) -> None:
    """``/_synapse/client/rendezvous/`` (empty id): in takeover mode nothing lives there
    (404 M_UNRECOGNIZED); in delegation mode it is the create endpoint, where only POST is
    allowed (405 M_UNRECOGNIZED)."""
    status = 405 if server.mode == "delegation" else 404
    for target in (SESSION_ROOT + "/", SESSION_ROOT):
        ex = _send(server, _session_request(method, target.encode()))
        _check_odd_id_answer(ex, method, status, "M_UNRECOGNIZED", f"{method} {target}")


@pytest.mark.parametrize("method", SESSION_METHODS)
def test_lower_case_id_of_a_live_session_is_not_found(server: SynapseServer, method: str) -> None:
    """Ids are canonical upper-case ULIDs: the lower-case spelling of a live session's id is
    another, unknown id (404), and the session itself is untouched, even by PUT/DELETE."""
    path, _ = _session(server, b"untouched")
    lower = (path[:-26] + path[-26:].lower()).encode()
    ex = _send(server, _session_request(method, lower))
    _check_odd_id_answer(ex, method, 404, "M_NOT_FOUND", f"{method} lower-case id")
    assert _payload(server, path) == b"untouched"


# -- bodies -----------------------------------------------------------------------------------


def test_invalid_utf8_bodies_are_stored_byte_for_byte(server: SynapseServer) -> None:
    """Payloads are opaque bytes: invalid UTF-8, NUL and CRLF come back exactly, on create
    and on write."""
    created = _answered(
        _send(server, build_request("POST", _create_target(server), [TEXT], NOT_UTF8)), "create"
    )
    assert created.status == 201, created
    url = created.json_dict()["url"]
    assert isinstance(url, str)
    path = target_of(url)
    got = request(server, "GET", path)
    assert got.body == NOT_UTF8, got
    assert got.header("Content-Length") == str(len(NOT_UTF8))
    reversed_body = NOT_UTF8[::-1]
    written = request(server, "PUT", path, headers=[TEXT, ("If-Match", "*")], body=reversed_body)
    assert written.status == 202, written
    assert _payload(server, path) == reversed_body


# -- If-Match and If-None-Match ---------------------------------------------------------------

#: A well-formed tag of 15 KiB: under Twisted's 16 KiB line limit, so it reaches our code.
BIG_TAG = '"' + "a" * 15_000 + '"'
#: 64 KiB: over Twisted's line limit, which drops the connection without an answer.
HUGE_TAG = '"' + "a" * 65_536 + '"'

HeaderMaker = Callable[[str], list[tuple[str, str]]]

#: If-Match variants (built from the current ETag), and the status of the PUT. A malformed
#: If-Match cannot be compared, so it is refused as 400 M_INVALID_PARAM, changing nothing.
IF_MATCH_CASES: dict[str, tuple[HeaderMaker, int]] = {
    "malformed": (lambda etag: [("If-Match", "abc")], 400),
    "unquoted-current": (lambda etag: [("If-Match", etag.strip('"'))], 400),
    "empty": (lambda etag: [("If-Match", "")], 400),
    "weak-star": (lambda etag: [("If-Match", "W/*")], 400),
    "list-with-weak-current": (lambda etag: [("If-Match", f'"x", "y", W/{etag}')], 202),
    "list-without-current": (lambda etag: [("If-Match", '"x", "y"')], 412),
    "big-non-matching": (lambda etag: [("If-Match", BIG_TAG)], 412),
    "repeated-with-current": (lambda etag: [("If-Match", '"x"'), ("If-Match", etag)], 202),
    "repeated-current-first": (lambda etag: [("If-Match", etag), ("If-Match", '"x"')], 202),
    "repeated-stale": (lambda etag: [("If-Match", '"x"'), ("If-Match", '"y"')], 412),
}


@pytest.mark.parametrize("case", list(IF_MATCH_CASES.values()), ids=list(IF_MATCH_CASES))
def test_odd_if_match(server: SynapseServer, case: tuple[HeaderMaker, int]) -> None:
    make_headers, status = case
    path, etag = _session(server, b"before")
    data = build_request("PUT", path, [TEXT, *make_headers(etag)], b"after")
    resp = _answered(_send(server, data), "PUT")
    assert resp.status == status, resp
    if status == 202:
        assert _payload(server, path) == b"after"
        return
    if status == 400:
        _assert_error(resp, 400, "M_INVALID_PARAM")
    else:
        assert resp.json_dict().get("org.matrix.msc4108.errcode") == "M_CONCURRENT_WRITE", resp
        assert resp.header("ETag") == etag, resp
    assert _payload(server, path) == b"before"


#: If-None-Match variants, and the status of the GET. A malformed If-None-Match cannot name
#: the current version, so the payload is sent in full.
IF_NONE_MATCH_CASES: dict[str, tuple[HeaderMaker, int]] = {
    "malformed": (lambda etag: [("If-None-Match", "abc")], 200),
    "unquoted-current": (lambda etag: [("If-None-Match", etag.strip('"'))], 200),
    "list-with-weak-current": (lambda etag: [("If-None-Match", f'"x", "y", W/{etag}')], 304),
    "list-without-current": (lambda etag: [("If-None-Match", '"x", "y"')], 200),
    "big-non-matching": (lambda etag: [("If-None-Match", BIG_TAG)], 200),
    "repeated-with-current": (
        lambda etag: [("If-None-Match", '"x"'), ("If-None-Match", etag)],
        304,
    ),
    "repeated-stale": (lambda etag: [("If-None-Match", '"x"'), ("If-None-Match", '"y"')], 200),
    "star": (lambda etag: [("If-None-Match", "*")], 304),
}


@pytest.mark.parametrize("case", list(IF_NONE_MATCH_CASES.values()), ids=list(IF_NONE_MATCH_CASES))
def test_odd_if_none_match(server: SynapseServer, case: tuple[HeaderMaker, int]) -> None:
    make_headers, status = case
    path, etag = _session(server, b"payload")
    resp = _answered(_send(server, build_request("GET", path, make_headers(etag))), "GET")
    assert resp.status == status, resp
    assert resp.header("ETag") == etag, resp
    assert resp.body == (b"payload" if status == 200 else b""), resp


@pytest.mark.parametrize(
    ("method", "header"), [("PUT", "If-Match"), ("GET", "If-None-Match")], ids=["PUT", "GET"]
)
def test_huge_precondition_header_is_dropped_by_twisted(
    server: SynapseServer, method: str, header: str
) -> None:
    """A 64 KiB If-Match / If-None-Match line is longer than Twisted accepts: it closes the
    connection without an answer. The session is unchanged and the server fine."""
    path, _ = _session(server, b"payload")
    body = b"after" if method == "PUT" else None
    headers = [TEXT, (header, HUGE_TAG)] if method == "PUT" else [(header, HUGE_TAG)]
    ex = _send(server, build_request(method, path, headers, body))
    _refused_by_twisted(ex, f"{method} with a 64 KiB {header}")
    assert _payload(server, path) == b"payload"
    _assert_serving(server)


# -- Content-Type -----------------------------------------------------------------------------

#: Content-Type values and whether the upload is accepted. ``text/plain`` compared as a MIME
#: type, case-insensitively; a ``charset=utf-8`` parameter (quoted or not) is accepted as an
#: improvement over Synapse; anything else is 400 M_INVALID_PARAM.
CONTENT_TYPES: dict[str, tuple[str, bool]] = {
    "charset-no-space": ("text/plain;charset=utf-8", True),
    "upper-case": ("TEXT/PLAIN", True),
    "quoted-charset": ('text/plain; charset="utf-8"', True),
    "charset-upper-case": ("text/plain; charset=UTF-8", True),
    "latin1": ("text/plain; charset=latin1", False),
    "other-parameter": ("text/plain; format=flowed", False),
    "list": ("text/plain,application/json", False),
    "empty": ("", False),
    "semicolons": (";;;", False),
    "json": ("application/json", False),
    "prefix": ("text/plainx", False),
}


@pytest.mark.parametrize("method", ["POST", "PUT"])
@pytest.mark.parametrize("case", list(CONTENT_TYPES.values()), ids=list(CONTENT_TYPES))
def test_odd_content_type(server: SynapseServer, method: str, case: tuple[str, bool]) -> None:
    content_type, accepted = case
    data, target = _upload(
        server, method, [("Content-Type", content_type), ("Content-Length", "4")], b"data"
    )
    resp = _answered(_send(server, data), f"{method} Content-Type {content_type!r}")
    if not accepted:
        _assert_error(resp, 400, "M_INVALID_PARAM", content_type)
        return
    assert resp.status == (201 if method == "POST" else 202), resp
    if method == "POST":
        url = resp.json_dict()["url"]
        assert isinstance(url, str)
        target = target_of(url)
    got = request(server, "GET", target)
    assert got.body == b"data", got
    # Whatever was uploaded, both SDKs compare the GET's type exactly.
    assert got.headers_all("Content-Type") == ["text/plain"], got


def test_multipart_create_is_refused_by_synapse(server: SynapseServer) -> None:
    """Synapse drops every ``multipart/form-data`` POST before routing it (its guard against
    GHSA-rfq8-j7rh-8hf2): 415, empty body. A multipart PUT reaches us: 400 M_INVALID_PARAM."""
    multipart = [("Content-Type", "multipart/form-data; boundary=x"), ("Content-Length", "4")]
    post, _ = _upload(server, "POST", multipart, b"data")
    ex = _send(server, post)
    assert ex.closed, ex
    assert ex.status == 415, ex
    put, _ = _upload(server, "PUT", multipart, b"data")
    _assert_error(_answered(_send(server, put), "PUT multipart"), 400, "M_INVALID_PARAM")


# -- methods ----------------------------------------------------------------------------------

ODD_METHODS = ["PATCH", "FOO", "TRACE", "CONNECT", "PROPFIND", "get"]


@pytest.mark.parametrize("method", ODD_METHODS)
def test_unknown_methods_are_not_allowed(server: SynapseServer, method: str) -> None:
    """On a session URL and on the standard create path: 405 M_UNRECOGNIZED (ours on the
    session, Synapse's servlet on the create path). On the session root: the create endpoint
    in delegation mode (405), nothing in takeover mode (404 M_UNRECOGNIZED)."""
    path, _ = _session(server)
    root_status = 405 if server.mode == "delegation" else 404
    for target, status in ((path, 405), (CREATE_PATH, 405), (SESSION_ROOT, root_status)):
        resp = _answered(_send(server, build_request(method, target)), f"{method} {target}")
        _assert_error(resp, status, "M_UNRECOGNIZED", f"{method} {target}")
    assert _payload(server, path) == b"hello"


def test_connect_authority_form_is_not_served(server: SynapseServer) -> None:
    """``CONNECT host:port`` (a proxy request): Twisted finds no such resource, 404."""
    ex = _send(server, build_request("CONNECT", "127.0.0.1:443"))
    assert ex.closed, ex
    assert ex.status is not None, ex
    assert 400 <= ex.status < 500, ex
    _assert_serving(server)


def _every_path(server: SynapseServer) -> dict[str, str]:
    path, _ = _session(server, b"seven b")
    return {
        "create": CREATE_PATH,
        "session-root": SESSION_ROOT,
        "session-root-slash": SESSION_ROOT + "/",
        "live-session": path,
        "unknown-session": f"{SESSION_ROOT}/{UNKNOWN_ID}",
        "odd-id": f"{SESSION_ROOT}/%C3%A9",
    }


def test_options_on_every_path_is_a_cors_preflight(server: SynapseServer) -> None:
    """Synapse's root resource answers every OPTIONS itself: 204 with the CORS headers a
    browser needs for GET/PUT with If-Match/If-None-Match."""
    for name, target in _every_path(server).items():
        headers = [
            ("Origin", "https://app.element.io"),
            ("Access-Control-Request-Method", "PUT"),
            ("Access-Control-Request-Headers", "content-type, if-match"),
        ]
        resp = _answered(_send(server, build_request("OPTIONS", target, headers)), name)
        assert resp.status in (200, 204), f"{name}: {resp!r}"
        assert resp.header("Access-Control-Allow-Origin") == "*", f"{name}: {resp!r}"
        methods = {
            m.strip() for m in (resp.header("Access-Control-Allow-Methods") or "").split(",")
        }
        assert {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"} <= methods, f"{name}: {resp!r}"
        allowed = {
            h.strip().lower()
            for h in (resp.header("Access-Control-Allow-Headers") or "").split(",")
        }
        assert {"content-type", "if-match", "if-none-match"} <= allowed, f"{name}: {resp!r}"


def test_head_on_every_path(server: SynapseServer) -> None:
    """HEAD never carries a body. Live session: 200 with the payload's length and ETag.
    Unknown or odd id: 404. Create path: 405 (Synapse's servlet). Session root: the create
    endpoint in delegation mode (405), nothing in takeover mode (404)."""
    root = 405 if server.mode == "delegation" else 404
    expected = {
        "create": 405,
        "session-root": root,
        "session-root-slash": root,
        "live-session": 200,
        "unknown-session": 404,
        "odd-id": 404,
    }
    for name, target in _every_path(server).items():
        ex = _send(server, build_request("HEAD", target))
        assert ex.closed, f"{name}: {ex!r}"
        assert not ex.timed_out, f"{name}: {ex!r}"
        # Parsed as if it were not a HEAD: any body byte would show up here.
        (resp,) = parse_responses(ex.data)
        assert resp.status == expected[name], f"{name}: {resp!r}"
        assert resp.body == b"", f"{name}: {resp!r}"
        if name == "live-session":
            assert resp.header("Content-Length") == "7", resp
            assert resp.header("ETag"), resp


# -- header and line sizes --------------------------------------------------------------------


def test_thousands_of_headers_are_refused_cleanly(server: SynapseServer) -> None:
    """2 000 small headers: more than Twisted accepts (500), so it answers a bare 400 and
    closes (a 431, or closing without an answer, would be fine too)."""
    headers = [(f"X-Filler-{i}", "v") for i in range(2000)]
    ex = _send(server, build_request("GET", f"{SESSION_ROOT}/{UNKNOWN_ID}", headers))
    assert ex.closed, ex
    assert not ex.timed_out, ex
    assert ex.data == b"" or ex.status in (400, 431), ex
    _assert_serving(server)


def test_hundreds_of_headers_reach_the_module(server: SynapseServer) -> None:
    """400 headers (under Twisted's limit) are passed on; our module answers as usual."""
    path, _ = _session(server, b"payload")
    headers = [(f"X-Filler-{i}", "v" * 20) for i in range(400)]
    resp = _answered(_send(server, build_request("GET", path, headers)), "GET")
    assert (resp.status, resp.body) == (200, b"payload"), resp


def test_overlong_request_line_is_dropped(server: SynapseServer) -> None:
    """A 20 KiB request line: over Twisted's line limit, the connection is closed."""
    ex = _send(server, build_request("GET", f"{SESSION_ROOT}/{'A' * 20_000}"))
    _refused_by_twisted(ex, "20 KiB request line")
    _assert_serving(server)


# -- slow clients -----------------------------------------------------------------------------


def test_slow_client_is_answered(server: SynapseServer) -> None:
    """A create sent a few bytes at a time over about 2 s is answered correctly."""
    data = build_request("POST", _create_target(server), [TEXT], b"slowly")
    pieces = [data[i : i + 6] for i in range(0, len(data), 6)]
    delay = 2.0 / len(pieces)
    with connect(server, timeout=PROMPT_S * 2) as sock:
        for piece in pieces:
            sock.sendall(piece)
            time.sleep(delay)
        received, closed, _ = read_until_close(sock, PROMPT_S * 2)
    assert closed, received
    (resp,) = parse_responses(received)
    assert resp.status == 201, resp
    url = resp.json_dict()["url"]
    assert isinstance(url, str)
    assert _payload(server, target_of(url)) == b"slowly"


def test_stalled_clients_do_not_block_others(server: SynapseServer) -> None:
    """Two clients stall: one in the middle of its headers, one in the middle of its body.
    Meanwhile other clients' requests are answered promptly; and once the stallers give up,
    the server is fine."""
    path, etag = _session(server, b"payload")
    upload = build_request("PUT", path, [TEXT, ("If-Match", etag)], b"0123456789")
    stallers: list[socket.socket] = []
    try:
        for partial in (upload[:25], upload[:-5]):
            sock = connect(server, timeout=PROMPT_S)
            sock.sendall(partial)
            stallers.append(sock)
        time.sleep(0.2)
        for _ in range(3):
            started = time.monotonic()
            got = request(server, "GET", path, timeout=PROMPT_S)
            assert (got.status, got.body) == (200, b"payload"), got
            assert time.monotonic() - started < PROMPT_S
        _assert_serving(server)
        # The stallers are still waiting, unanswered.
        for sock in stallers:
            sock.settimeout(0.2)
            with pytest.raises(TimeoutError):
                sock.recv(1)
    finally:
        for sock in stallers:
            sock.close()
    # The half-sent PUT never happened.
    assert _payload(server, path) == b"payload"


# -- afterwards -------------------------------------------------------------------------------


def test_zz_server_survived_without_panic_or_traceback(server: SynapseServer) -> None:
    """Runs last in this module: Synapse still runs and serves, nothing above made the Rust
    core panic or our Python glue raise, and no rendezvous request was answered 5xx."""
    assert server.running
    _assert_serving(server)
    log = server.log_text()
    assert "panicked at" not in log, log[-5000:]
    assert "panic while handling" not in log, log[-5000:]
    answered = 0
    for record in server.log_records():
        access = ACCESS_LINE.search(record.message)
        if record.name.startswith("synapse.access") and access is not None:
            status, target = access.groups()
            if "rendezvous" in target:
                answered += 1
                assert not status.startswith("5"), record.message
        if "Traceback" in record.message:
            assert "synapse_rendezvous" not in record.message, record.message
        if record.name.startswith("synapse_rendezvous"):
            assert record.level not in ("ERROR", "CRITICAL"), record
    # The access log was read (it lists every request of this module).
    assert answered > 0
