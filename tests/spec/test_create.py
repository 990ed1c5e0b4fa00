"""Creating a session: ``POST /_matrix/client/unstable/org.matrix.msc4108/rendezvous``."""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING

import pytest
from support.http_client import (
    CREATE_PATH,
    SESSION_PREFIX,
    ULID_RE,
    Response,
    create_session,
    errcode,
    get,
    post_create,
    request,
    session_id,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from conftest import ServerFactory, ServerVariant

    from devtools.synapse import SynapseServer

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _decode_base32(text: str) -> int:
    value = 0
    for char in text:
        value = value * 32 + CROCKFORD.index(char)
    return value


# -- success ----------------------------------------------------------------------------------


def test_create_answers_201_with_json_content_type(server: SynapseServer) -> None:
    _, resp = create_session(server)
    assert resp.status == 201
    assert resp.header("Content-Type") == "application/json"


def test_create_returns_absolute_session_url_under_public_baseurl(server: SynapseServer) -> None:
    url, resp = create_session(server)
    assert set(resp.json_dict()) == {"url"}
    assert url.startswith(server.base_url + SESSION_PREFIX.lstrip("/")), url
    assert "/" not in session_id(url)


@pytest.mark.semantic
def test_session_id_is_upper_case_crockford_ulid(server: SynapseServer) -> None:
    url, _ = create_session(server)
    assert ULID_RE.match(session_id(url)), session_id(url)


@pytest.mark.semantic
def test_session_id_timestamp_is_creation_time(server: SynapseServer) -> None:
    before_ms = int(time.time() * 1000)
    url, _ = create_session(server)
    after_ms = int(time.time() * 1000)
    timestamp_ms = _decode_base32(session_id(url)[:10])
    # Generous: only a ULID-shaped random string would be far off.
    assert before_ms - 5_000 <= timestamp_ms <= after_ms + 5_000


@pytest.mark.semantic
def test_two_creates_give_different_ids(server: SynapseServer) -> None:
    first, _ = create_session(server)
    second, _ = create_session(server)
    assert session_id(first) != session_id(second)


@pytest.mark.semantic
def test_session_id_random_parts_are_unrelated(server: SynapseServer) -> None:
    """Not a monotonic "previous + 1" ULID generator: the 80 random bits are fresh each time."""
    randoms = [_decode_base32(session_id(create_session(server)[0])[10:]) for _ in range(5)]
    for i, a in enumerate(randoms):
        for b in randoms[i + 1 :]:
            assert abs(a - b) > 2**32, [hex(r) for r in randoms]


def test_create_path_answers_directly_or_redirects_per_mode(server: SynapseServer) -> None:
    resp = request(
        server,
        "POST",
        CREATE_PATH,
        body=b"x",
        headers=[("Content-Type", "text/plain")],
    )
    if server.mode == "delegation":
        assert resp.status == 307, resp
        assert resp.header("Location") == f"{server.base_url}_synapse/client/rendezvous"
    else:
        assert resp.status == 201, resp


@pytest.mark.semantic
def test_create_response_has_strong_quoted_etag(server: SynapseServer) -> None:
    _, resp = create_session(server)
    etag = resp.header("ETag")
    assert etag is not None
    assert re.fullmatch(r'"[^"]+"', etag), etag


def test_create_response_has_expires_and_last_modified_dates(server: SynapseServer) -> None:
    _, resp = create_session(server)
    assert resp.date_header("Expires") > resp.date_header("Last-Modified")


def test_create_response_has_cache_headers(server: SynapseServer) -> None:
    _, resp = create_session(server)
    assert resp.header("Cache-Control") == "no-store, no-transform"
    assert resp.header("Pragma") == "no-cache"


def test_create_response_has_cors_headers(server: SynapseServer) -> None:
    _, resp = create_session(server)
    assert resp.header("Access-Control-Allow-Origin") == "*"
    exposed = ",".join(resp.headers_all("Access-Control-Expose-Headers"))
    assert "etag" in {h.strip().lower() for h in exposed.split(",")}, resp


def test_create_response_has_content_length(server: SynapseServer) -> None:
    _, resp = create_session(server)
    assert resp.header("Content-Length") == str(len(resp.body))


@pytest.mark.semantic
def test_created_payload_is_readable(server: SynapseServer) -> None:
    url, created = create_session(server, b"the payload")
    resp = get(server, url)
    assert resp.status == 200
    assert resp.body == b"the payload"
    assert resp.header("ETag") == created.header("ETag")


@pytest.mark.semantic
@pytest.mark.improvement("Synapse's ETag is a hash of the payload only")
def test_sessions_created_with_same_body_have_different_etags(server: SynapseServer) -> None:
    _, first = create_session(server, b"same body")
    _, second = create_session(server, b"same body")
    assert first.header("ETag") != second.header("ETag")


# -- request checks, in order -----------------------------------------------------------------


def _assert_error(resp: Response, status: int, code: str) -> None:
    assert resp.status == status, resp
    assert errcode(resp) == code, resp


def test_create_without_content_length_is_400_missing_param(server: SynapseServer) -> None:
    resp = post_create(server, b"hello", headers=[("Transfer-Encoding", "chunked")], chunked=True)
    _assert_error(resp, 400, "M_MISSING_PARAM")


def test_create_with_unparseable_content_length_is_400(server: SynapseServer) -> None:
    # Twisted refuses this before any resource sees it: a bare 400, no JSON body.
    resp = post_create(server, b"hello", headers=[("Content-Length", "lots")])
    assert resp.status == 400, resp


def test_create_with_4097_bytes_is_413_too_large(server: SynapseServer) -> None:
    _assert_error(post_create(server, b"x" * 4097), 413, "M_TOO_LARGE")


def test_create_with_4096_bytes_is_allowed(server: SynapseServer) -> None:
    url, _ = create_session(server, b"x" * 4096)
    assert get(server, url).body == b"x" * 4096


def test_create_with_empty_body_is_allowed(server: SynapseServer) -> None:
    url, _ = create_session(server, b"")
    resp = get(server, url)
    assert resp.status == 200
    assert resp.body == b""


def test_create_without_content_type_is_400_missing_param(server: SynapseServer) -> None:
    _assert_error(post_create(server, b"hello", content_type=None), 400, "M_MISSING_PARAM")


@pytest.mark.semantic
def test_create_with_json_content_type_is_400_invalid_param(server: SynapseServer) -> None:
    resp = post_create(server, b"hello", content_type="application/json")
    _assert_error(resp, 400, "M_INVALID_PARAM")


@pytest.mark.semantic
def test_create_content_type_is_case_insensitive(server: SynapseServer) -> None:
    create_session(server, b"hello", "TEXT/PLAIN")


@pytest.mark.semantic
@pytest.mark.improvement("Synapse refuses any Content-Type parameter")
def test_create_accepts_charset_utf8_parameter(server: SynapseServer) -> None:
    create_session(server, b"hello", "text/plain; charset=utf-8")


def test_create_size_is_checked_before_content_type(server: SynapseServer) -> None:
    resp = post_create(server, b"x" * 4097, content_type="application/json")
    _assert_error(resp, 413, "M_TOO_LARGE")


def test_create_content_length_is_checked_before_content_type(server: SynapseServer) -> None:
    resp = post_create(
        server,
        b"hello",
        content_type="application/json",
        headers=[("Transfer-Encoding", "chunked")],
        chunked=True,
    )
    _assert_error(resp, 400, "M_MISSING_PARAM")


# -- capacity ---------------------------------------------------------------------------------

CAPACITY = 5


@pytest.fixture(scope="module")
def full_server(
    variant: ServerVariant, server_factory: ServerFactory
) -> Iterator[tuple[SynapseServer, list[str], Response]]:
    """A server with capacity 5, filled with 5 live sessions, and the answer to a 6th create."""
    with server_factory(variant, {"capacity": CAPACITY}) as srv:
        urls = [create_session(srv, f"session {i}".encode())[0] for i in range(CAPACITY)]
        sixth = post_create(srv, b"one too many")
        yield srv, urls, sixth


@pytest.mark.improvement("Synapse evicts the oldest live sessions instead of refusing")
def test_create_beyond_capacity_is_429_limit_exceeded(
    full_server: tuple[SynapseServer, list[str], Response],
) -> None:
    _, _, sixth = full_server
    _assert_error(sixth, 429, "M_LIMIT_EXCEEDED")


@pytest.mark.semantic
@pytest.mark.improvement("Synapse evicts the oldest live sessions instead of refusing")
def test_create_beyond_capacity_carries_retry_after_ms(
    full_server: tuple[SynapseServer, list[str], Response],
) -> None:
    _, _, sixth = full_server
    retry_after_ms = sixth.json_dict().get("retry_after_ms")
    assert isinstance(retry_after_ms, int), sixth
    assert retry_after_ms > 0


@pytest.mark.improvement("Synapse evicts the oldest live sessions instead of refusing")
def test_create_beyond_capacity_carries_retry_after_header(
    full_server: tuple[SynapseServer, list[str], Response],
) -> None:
    _, _, sixth = full_server
    retry_after = sixth.header("Retry-After")
    assert retry_after is not None, sixth
    assert retry_after.isdigit(), retry_after


@pytest.mark.semantic
def test_live_sessions_are_not_evicted_at_capacity(
    full_server: tuple[SynapseServer, list[str], Response],
) -> None:
    srv, urls, _ = full_server
    for i, url in enumerate(urls):
        resp = get(srv, url)
        assert resp.status == 200, resp
        assert resp.body == f"session {i}".encode()
