"""Writing a session: ``PUT /_synapse/client/rendezvous/{id}`` with ``If-Match``."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest
from support.http_client import (
    Response,
    create_session,
    errcode,
    get,
    put,
    session_url,
)
from support.http_client import etag as _etag

if TYPE_CHECKING:
    from devtools.synapse import SynapseServer

UNKNOWN_ID = "01HZZZZZZZZZZZZZZZZZZZZZZZ"


def _assert_error(resp: Response, status: int, code: str) -> None:
    assert resp.status == status, resp
    assert errcode(resp) == code, resp


# -- success ----------------------------------------------------------------------------------


def test_put_answers_202_with_empty_body(server: SynapseServer) -> None:
    url, created = create_session(server)
    resp = put(server, url, b"new", etag=_etag(created))
    assert resp.status == 202, resp
    assert resp.body == b""


def test_put_answers_text_plain_with_content_length_0(server: SynapseServer) -> None:
    url, created = create_session(server)
    resp = put(server, url, b"new", etag=_etag(created))
    assert resp.status == 202, resp
    assert resp.headers_all("Content-Type") == ["text/plain"]
    assert resp.headers_all("Content-Length") == ["0"]


@pytest.mark.semantic
def test_put_returns_a_new_strong_etag(server: SynapseServer) -> None:
    url, created = create_session(server)
    resp = put(server, url, b"new", etag=_etag(created))
    etag = _etag(resp)
    assert etag != _etag(created)
    assert re.fullmatch(r'"[^"]+"', etag), etag


@pytest.mark.semantic
def test_put_returns_last_modified_not_before_create(server: SynapseServer) -> None:
    url, created = create_session(server)
    resp = put(server, url, b"new", etag=_etag(created))
    assert resp.date_header("Last-Modified") >= created.date_header("Last-Modified")


@pytest.mark.semantic
def test_put_does_not_extend_expires(server: SynapseServer) -> None:
    url, created = create_session(server)
    resp = put(server, url, b"new", etag=_etag(created))
    assert resp.header("Expires") == created.header("Expires")
    assert get(server, url).header("Expires") == created.header("Expires")


def test_put_response_has_cache_and_cors_headers(server: SynapseServer) -> None:
    url, created = create_session(server)
    resp = put(server, url, b"new", etag=_etag(created))
    assert resp.header("Cache-Control") == "no-store, no-transform"
    assert resp.header("Pragma") == "no-cache"
    assert resp.header("Access-Control-Allow-Origin") == "*"
    exposed = ",".join(resp.headers_all("Access-Control-Expose-Headers"))
    assert "etag" in {h.strip().lower() for h in exposed.split(",")}, resp


@pytest.mark.semantic
def test_get_after_put_returns_new_bytes_and_etag(server: SynapseServer) -> None:
    url, created = create_session(server, b"old")
    written = put(server, url, b"new", etag=_etag(created))
    resp = get(server, url)
    assert resp.body == b"new"
    assert resp.header("ETag") == written.header("ETag")
    assert resp.header("Last-Modified") == written.header("Last-Modified")


@pytest.mark.semantic
def test_if_match_star_succeeds(server: SynapseServer) -> None:
    url, _ = create_session(server)
    assert put(server, url, b"new", etag="*").status == 202
    assert get(server, url).body == b"new"


@pytest.mark.semantic
@pytest.mark.improvement("Synapse compares If-Match strongly only")
def test_if_match_weak_form_of_current_etag_succeeds(server: SynapseServer) -> None:
    url, created = create_session(server)
    resp = put(server, url, b"new", etag="W/" + _etag(created))
    assert resp.status == 202, resp
    assert get(server, url).body == b"new"


@pytest.mark.semantic
@pytest.mark.improvement("Synapse's ETag is a hash of the payload only")
def test_rewriting_identical_bytes_gives_a_new_etag(server: SynapseServer) -> None:
    url, created = create_session(server, b"same")
    resp = put(server, url, b"same", etag=_etag(created))
    assert resp.status == 202, resp
    assert _etag(resp) != _etag(created)


@pytest.mark.semantic
@pytest.mark.improvement("Synapse's ETag is a hash of the payload only")
def test_rewriting_identical_bytes_is_seen_by_a_polling_peer(server: SynapseServer) -> None:
    url, created = create_session(server, b"same")
    assert put(server, url, b"same", etag=_etag(created)).status == 202
    resp = get(server, url, headers=[("If-None-Match", _etag(created))])
    assert resp.status == 200, resp


# -- concurrent writes: 412 -------------------------------------------------------------------


def _stale_write(server: SynapseServer) -> tuple[str, Response, Response]:
    """Create, write once, then write again with the creation ETag: (url, first write, 412)."""
    url, created = create_session(server, b"v1")
    written = put(server, url, b"v2", etag=_etag(created))
    assert written.status == 202, written
    return url, written, put(server, url, b"v3", etag=_etag(created))


@pytest.mark.semantic
def test_put_with_stale_etag_is_412(server: SynapseServer) -> None:
    _, _, resp = _stale_write(server)
    assert resp.status == 412, resp


@pytest.mark.semantic
def test_412_body_is_concurrent_write_error(server: SynapseServer) -> None:
    _, _, resp = _stale_write(server)
    assert resp.status == 412, resp
    body = resp.json_dict()
    assert body.get("errcode") == "M_UNKNOWN", body
    assert body.get("org.matrix.msc4108.errcode") == "M_CONCURRENT_WRITE", body
    assert isinstance(body.get("error"), str), body
    assert resp.header("Content-Type") == "application/json"


def test_412_carries_headers_of_current_version(server: SynapseServer) -> None:
    url, written, resp = _stale_write(server)
    assert resp.status == 412, resp
    current = get(server, url)
    for name in ("ETag", "Expires", "Last-Modified"):
        assert resp.header(name) == current.header(name) == written.header(name), name


@pytest.mark.improvement("Synapse sends its 412 chunked, without Content-Length")
def test_412_has_content_length(server: SynapseServer) -> None:
    _, _, resp = _stale_write(server)
    assert resp.status == 412, resp
    assert resp.header("Content-Length") == str(len(resp.body)), resp


@pytest.mark.semantic
def test_412_leaves_session_unchanged(server: SynapseServer) -> None:
    url, _, resp = _stale_write(server)
    assert resp.status == 412, resp
    assert get(server, url).body == b"v2"


# -- request checks, in order -----------------------------------------------------------------


def test_put_without_content_length_is_400_missing_param(server: SynapseServer) -> None:
    url, _ = create_session(server)
    resp = put(
        server, url, b"new", etag="*", headers=[("Transfer-Encoding", "chunked")], chunked=True
    )
    _assert_error(resp, 400, "M_MISSING_PARAM")


def test_put_with_4097_bytes_is_413_too_large(server: SynapseServer) -> None:
    url, _ = create_session(server)
    _assert_error(put(server, url, b"x" * 4097, etag="*"), 413, "M_TOO_LARGE")
    assert get(server, url).body == b"hello"


def test_put_with_4096_bytes_is_allowed(server: SynapseServer) -> None:
    url, _ = create_session(server)
    assert put(server, url, b"x" * 4096, etag="*").status == 202
    assert get(server, url).body == b"x" * 4096


def test_put_with_empty_body_is_allowed(server: SynapseServer) -> None:
    url, _ = create_session(server)
    assert put(server, url, b"", etag="*").status == 202
    resp = get(server, url)
    assert resp.status == 200, resp
    assert resp.body == b""


@pytest.mark.semantic
def test_put_without_content_type_is_400_missing_param(server: SynapseServer) -> None:
    url, _ = create_session(server)
    _assert_error(put(server, url, b"new", etag="*", content_type=None), 400, "M_MISSING_PARAM")


@pytest.mark.semantic
def test_put_with_json_content_type_is_400_invalid_param(server: SynapseServer) -> None:
    url, _ = create_session(server)
    resp = put(server, url, b"new", etag="*", content_type="application/json")
    _assert_error(resp, 400, "M_INVALID_PARAM")


@pytest.mark.semantic
def test_put_content_type_is_case_insensitive(server: SynapseServer) -> None:
    url, _ = create_session(server)
    assert put(server, url, b"new", etag="*", content_type="TEXT/PLAIN").status == 202


@pytest.mark.semantic
@pytest.mark.improvement("Synapse refuses any Content-Type parameter")
def test_put_accepts_charset_utf8_parameter(server: SynapseServer) -> None:
    url, _ = create_session(server)
    resp = put(server, url, b"new", etag="*", content_type="text/plain; charset=utf-8")
    assert resp.status == 202, resp


@pytest.mark.semantic
def test_put_without_if_match_is_400_missing_param(server: SynapseServer) -> None:
    url, _ = create_session(server)
    _assert_error(put(server, url, b"new"), 400, "M_MISSING_PARAM")


@pytest.mark.semantic
def test_put_to_unknown_id_is_404(server: SynapseServer) -> None:
    _assert_error(put(server, session_url(server, UNKNOWN_ID), b"x", etag="*"), 404, "M_NOT_FOUND")


def test_put_too_large_to_unknown_id_is_413_not_404(server: SynapseServer) -> None:
    resp = put(server, session_url(server, UNKNOWN_ID), b"x" * 4097, etag="*")
    _assert_error(resp, 413, "M_TOO_LARGE")


def test_put_without_content_length_to_unknown_id_is_400_not_404(server: SynapseServer) -> None:
    resp = put(
        server,
        session_url(server, UNKNOWN_ID),
        b"x",
        etag="*",
        headers=[("Transfer-Encoding", "chunked")],
        chunked=True,
    )
    _assert_error(resp, 400, "M_MISSING_PARAM")


@pytest.mark.semantic
def test_put_with_bad_content_type_to_unknown_id_is_400_not_404(server: SynapseServer) -> None:
    resp = put(
        server, session_url(server, UNKNOWN_ID), b"x", etag="*", content_type="application/json"
    )
    _assert_error(resp, 400, "M_INVALID_PARAM")


@pytest.mark.semantic
def test_put_without_if_match_to_unknown_id_is_400_not_404(server: SynapseServer) -> None:
    _assert_error(put(server, session_url(server, UNKNOWN_ID), b"x"), 400, "M_MISSING_PARAM")


def test_put_size_is_checked_before_content_type(server: SynapseServer) -> None:
    url, _ = create_session(server)
    resp = put(server, url, b"x" * 4097, etag="*", content_type="application/json")
    _assert_error(resp, 413, "M_TOO_LARGE")


@pytest.mark.semantic
def test_put_content_type_is_checked_before_if_match(server: SynapseServer) -> None:
    url, _ = create_session(server)
    resp = put(server, url, b"x", content_type="application/json")
    _assert_error(resp, 400, "M_INVALID_PARAM")


@pytest.mark.semantic
def test_put_content_type_is_checked_before_etag_match(server: SynapseServer) -> None:
    url, _ = create_session(server)
    resp = put(server, url, b"x", etag='"stale"', content_type="application/json")
    _assert_error(resp, 400, "M_INVALID_PARAM")


def test_put_size_is_checked_before_etag_match(server: SynapseServer) -> None:
    url, _ = create_session(server)
    _assert_error(put(server, url, b"x" * 4097, etag='"stale"'), 413, "M_TOO_LARGE")
