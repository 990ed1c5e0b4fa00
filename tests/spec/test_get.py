"""Reading a session: ``GET`` / ``HEAD /_synapse/client/rendezvous/{id}``, conditional GETs,
and how unknown or malformed ids are answered on every method."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest
from support.http_client import (
    Response,
    create_session,
    delete,
    errcode,
    get,
    head,
    put,
    raw_request,
    request,
    session_url,
)
from support.http_client import etag as _etag

if TYPE_CHECKING:
    from devtools.synapse import SynapseServer


def _raw_body(server: SynapseServer, method: str, url: str, headers: dict[str, str]) -> bytes:
    """Everything the server sends after the header block, on a ``Connection: close`` request."""
    lines = [f"{method} {urlsplit(url).path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines += ["Connection: close", "", ""]
    raw = raw_request(server, "\r\n".join(lines).encode())
    _, sep, rest = raw.partition(b"\r\n\r\n")
    assert sep, f"no complete answer: {raw!r}"
    return rest


# -- GET --------------------------------------------------------------------------------------


def test_get_answers_200_with_payload(server: SynapseServer) -> None:
    url, _ = create_session(server, b"payload")
    resp = get(server, url)
    assert resp.status == 200, resp
    assert resp.body == b"payload"


def test_get_content_type_is_exactly_text_plain(server: SynapseServer) -> None:
    url, _ = create_session(server, b"payload", "TEXT/PLAIN")
    assert get(server, url).headers_all("Content-Type") == ["text/plain"]


@pytest.mark.semantic
@pytest.mark.improvement("Synapse refuses a PUT with a charset parameter")
def test_get_content_type_is_text_plain_after_put_with_charset(server: SynapseServer) -> None:
    url, _ = create_session(server)
    written = put(server, url, b"new", etag="*", content_type="text/plain; charset=utf-8")
    assert written.status == 202, written
    assert get(server, url).headers_all("Content-Type") == ["text/plain"]


@pytest.mark.semantic
def test_get_returns_non_utf8_bytes_unchanged(server: SynapseServer) -> None:
    payload = bytes(range(256))
    url, _ = create_session(server, payload)
    assert get(server, url).body == payload


def test_get_has_etag_expires_and_last_modified_of_the_session(server: SynapseServer) -> None:
    url, created = create_session(server)
    resp = get(server, url)
    for name in ("ETag", "Expires", "Last-Modified"):
        assert resp.header(name) == created.header(name), name


def test_get_has_content_length(server: SynapseServer) -> None:
    url, _ = create_session(server, b"12345")
    assert get(server, url).header("Content-Length") == "5"


def test_get_has_cache_and_cors_headers(server: SynapseServer) -> None:
    url, _ = create_session(server)
    resp = get(server, url)
    assert resp.header("Cache-Control") == "no-store, no-transform"
    assert resp.header("Pragma") == "no-cache"
    assert resp.header("Access-Control-Allow-Origin") == "*"
    exposed = ",".join(resp.headers_all("Access-Control-Expose-Headers"))
    assert "etag" in {h.strip().lower() for h in exposed.split(",")}, resp


# -- conditional GET --------------------------------------------------------------------------


def test_if_none_match_current_etag_is_304(server: SynapseServer) -> None:
    url, created = create_session(server)
    resp = get(server, url, headers=[("If-None-Match", _etag(created))])
    assert resp.status == 304, resp
    assert resp.body == b""


def test_304_sends_no_body_bytes(server: SynapseServer) -> None:
    url, created = create_session(server, b"not to be sent")
    assert _raw_body(server, "GET", url, {"If-None-Match": _etag(created)}) == b""


def test_304_carries_etag_expires_and_last_modified(server: SynapseServer) -> None:
    url, created = create_session(server)
    resp = get(server, url, headers=[("If-None-Match", _etag(created))])
    assert resp.status == 304, resp
    for name in ("ETag", "Expires", "Last-Modified"):
        assert resp.header(name) == created.header(name), name


def test_304_carries_cache_and_cors_headers(server: SynapseServer) -> None:
    url, created = create_session(server)
    resp = get(server, url, headers=[("If-None-Match", _etag(created))])
    assert resp.status == 304, resp
    assert resp.header("Cache-Control") == "no-store, no-transform"
    assert resp.header("Pragma") == "no-cache"
    assert resp.header("Access-Control-Allow-Origin") == "*"
    exposed = ",".join(resp.headers_all("Access-Control-Expose-Headers"))
    assert "etag" in {h.strip().lower() for h in exposed.split(",")}, resp


@pytest.mark.semantic
def test_if_none_match_star_is_304(server: SynapseServer) -> None:
    url, _ = create_session(server)
    assert get(server, url, headers=[("If-None-Match", "*")]).status == 304


@pytest.mark.semantic
def test_if_none_match_weak_etag_is_304(server: SynapseServer) -> None:
    url, created = create_session(server)
    resp = get(server, url, headers=[("If-None-Match", "W/" + _etag(created))])
    assert resp.status == 304, resp


@pytest.mark.semantic
def test_if_none_match_list_containing_current_etag_is_304(server: SynapseServer) -> None:
    url, created = create_session(server)
    resp = get(server, url, headers=[("If-None-Match", f'"other", {_etag(created)}')])
    assert resp.status == 304, resp


@pytest.mark.semantic
def test_if_none_match_stale_etag_is_200_with_payload(server: SynapseServer) -> None:
    url, created = create_session(server, b"old")
    assert put(server, url, b"new", etag=_etag(created)).status == 202
    resp = get(server, url, headers=[("If-None-Match", _etag(created))])
    assert resp.status == 200, resp
    assert resp.body == b"new"


# -- HEAD -------------------------------------------------------------------------------------


def test_head_answers_200_with_the_headers_of_get(server: SynapseServer) -> None:
    url, _ = create_session(server, b"payload")
    got = get(server, url)
    resp = head(server, url)
    assert resp.status == 200, resp
    ignore = {"date"}
    assert sorted((k.lower(), v) for k, v in resp.headers if k.lower() not in ignore) == sorted(
        (k.lower(), v) for k, v in got.headers if k.lower() not in ignore
    )


def test_head_sends_no_body_bytes(server: SynapseServer) -> None:
    url, _ = create_session(server, b"not to be sent")
    assert _raw_body(server, "HEAD", url, {}) == b""


# -- unknown and malformed ids ----------------------------------------------------------------

UNKNOWN_ID = "01HZZZZZZZZZZZZZZZZZZZZZZZ"


def _send(server: SynapseServer, method: str, url: str) -> Response:
    if method == "PUT":
        return put(server, url, b"x", etag="*")
    if method == "DELETE":
        return delete(server, url)
    return request(server, method, url)


METHODS = ["GET", "PUT", "DELETE"]


def _assert_not_found(resp: Response, method: str) -> None:
    assert resp.status == 404, resp
    if method != "HEAD":
        assert errcode(resp) == "M_NOT_FOUND", resp


@pytest.mark.parametrize("method", [*METHODS, "HEAD"])
def test_unknown_id_is_404(server: SynapseServer, method: str) -> None:
    _assert_not_found(_send(server, method, session_url(server, UNKNOWN_ID)), method)


@pytest.mark.improvement("Synapse parses ids case-insensitively")
@pytest.mark.parametrize("method", METHODS)
def test_lower_case_id_is_404(server: SynapseServer, method: str) -> None:
    url, _ = create_session(server)
    prefix, _, sid = url.rpartition("/")
    _assert_not_found(_send(server, method, f"{prefix}/{sid.lower()}"), method)


@pytest.mark.parametrize("method", METHODS)
def test_too_short_id_is_404(server: SynapseServer, method: str) -> None:
    url, _ = create_session(server)
    _assert_not_found(_send(server, method, url[:-1]), method)


@pytest.mark.improvement("Synapse answers 500 to a non-ASCII id")
@pytest.mark.parametrize("method", METHODS)
def test_percent_encoded_non_ascii_id_is_404(server: SynapseServer, method: str) -> None:
    _assert_not_found(_send(server, method, session_url(server, "%C3%A9")), method)


@pytest.mark.improvement("Synapse answers 400 M_UNRECOGNIZED to extra path segments")
@pytest.mark.parametrize("method", METHODS)
def test_id_with_extra_path_segment_is_404(server: SynapseServer, method: str) -> None:
    url, _ = create_session(server)
    resp = _send(server, method, url + "/extra")
    # Not a session path at all: "unknown endpoint" (M_UNRECOGNIZED) fits as well as M_NOT_FOUND.
    assert resp.status == 404, resp
    assert errcode(resp) in ("M_NOT_FOUND", "M_UNRECOGNIZED"), resp
