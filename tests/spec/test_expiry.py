"""Session lifetime: sessions expire TTL seconds after creation and are then gone everywhere."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest
from support.http_client import create_session, delete, errcode, get, post_create, put

if TYPE_CHECKING:
    from collections.abc import Iterator

    from conftest import ServerFactory, ServerVariant
    from support.http_client import Response

    from devtools.synapse import SynapseServer

TTL_S = 2
#: Sleep so long after the last create before expecting expiry (TTL plus a margin).
EXPIRY_WAIT_S = TTL_S + 1.0

fixed_ttl = pytest.mark.improvement("Synapse's TTL is fixed at 60 s")


@pytest.fixture(scope="module")
def ttl_server(variant: ServerVariant, server_factory: ServerFactory) -> Iterator[SynapseServer]:
    with server_factory(variant, {"ttl": f"{TTL_S}s"}) as srv:
        yield srv


@pytest.fixture(scope="module")
def expired_urls(ttl_server: SynapseServer) -> dict[str, str]:
    """One session per method below, created and then left to expire (a single sleep)."""
    urls = {m: create_session(ttl_server, b"short-lived")[0] for m in ("GET", "PUT", "DELETE")}
    time.sleep(EXPIRY_WAIT_S)
    return urls


@pytest.mark.semantic
@fixed_ttl
def test_expires_is_ttl_after_creation(ttl_server: SynapseServer) -> None:
    _, resp = create_session(ttl_server)
    ttl = (resp.date_header("Expires") - resp.date_header("Date")).total_seconds()
    assert TTL_S - 1 <= ttl <= TTL_S + 1, ttl


@pytest.mark.semantic
def test_session_is_readable_before_expiry(ttl_server: SynapseServer) -> None:
    url, _ = create_session(ttl_server, b"fresh")
    assert get(ttl_server, url).body == b"fresh"


def _assert_gone(resp: Response) -> None:
    assert resp.status == 404, resp
    assert errcode(resp) == "M_NOT_FOUND", resp


@pytest.mark.semantic
@fixed_ttl
def test_expired_session_is_404_on_get(
    ttl_server: SynapseServer, expired_urls: dict[str, str]
) -> None:
    _assert_gone(get(ttl_server, expired_urls["GET"]))


@pytest.mark.semantic
@fixed_ttl
def test_expired_session_is_404_on_put(
    ttl_server: SynapseServer, expired_urls: dict[str, str]
) -> None:
    _assert_gone(put(ttl_server, expired_urls["PUT"], b"late", etag="*"))


@pytest.mark.semantic
@fixed_ttl
def test_expired_session_is_404_on_delete(
    ttl_server: SynapseServer, expired_urls: dict[str, str]
) -> None:
    _assert_gone(delete(ttl_server, expired_urls["DELETE"]))


@pytest.mark.slow
@fixed_ttl
def test_expired_sessions_are_reclaimed_without_being_touched(
    variant: ServerVariant, server_factory: ServerFactory
) -> None:
    """Fill a fresh server to capacity, let the sessions expire untouched, create again."""
    capacity = 3
    with server_factory(variant, {"ttl": f"{TTL_S}s", "capacity": capacity}) as srv:
        for i in range(capacity):
            create_session(srv, f"filler {i}".encode())
        refused = post_create(srv, b"one too many")
        assert refused.status == 429, refused
        assert errcode(refused) == "M_LIMIT_EXCEEDED", refused
        time.sleep(EXPIRY_WAIT_S)
        for i in range(capacity):
            create_session(srv, f"after expiry {i}".encode())
