"""Cancelling a session: ``DELETE /_synapse/client/rendezvous/{id}``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from support.http_client import create_session, delete, errcode, get, head, put

if TYPE_CHECKING:
    from support.http_client import Response

    from devtools.synapse import SynapseServer


def test_delete_answers_204_with_empty_body(server: SynapseServer) -> None:
    url, _ = create_session(server)
    resp = delete(server, url)
    assert resp.status == 204, resp
    assert resp.body == b""


def test_delete_answers_with_cors_origin_and_content_length_0(server: SynapseServer) -> None:
    url, _ = create_session(server)
    resp = delete(server, url)
    assert resp.status == 204, resp
    assert resp.header("Access-Control-Allow-Origin") == "*"
    assert resp.headers_all("Content-Length") == ["0"]


def _after_delete(server: SynapseServer, method: str, url: str) -> Response:
    if method == "GET":
        return get(server, url)
    if method == "HEAD":
        return head(server, url)
    if method == "PUT":
        return put(server, url, b"x", etag="*")
    return delete(server, url)


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "DELETE"])
def test_deleted_session_is_404_on_every_method(server: SynapseServer, method: str) -> None:
    url, _ = create_session(server)
    assert delete(server, url).status == 204
    resp = _after_delete(server, method, url)
    assert resp.status == 404, resp
    if method != "HEAD":
        assert errcode(resp) == "M_NOT_FOUND", resp


@pytest.mark.semantic
def test_deleted_session_is_404_even_with_its_etag(server: SynapseServer) -> None:
    url, created = create_session(server)
    etag = created.header("ETag")
    assert etag is not None
    assert delete(server, url).status == 204
    assert get(server, url, headers=[("If-None-Match", etag)]).status == 404
    assert put(server, url, b"x", etag=etag).status == 404


@pytest.mark.semantic
def test_delete_leaves_other_sessions_alone(server: SynapseServer) -> None:
    doomed, _ = create_session(server, b"doomed")
    kept, _ = create_session(server, b"kept")
    assert delete(server, doomed).status == 204
    resp = get(server, kept)
    assert resp.status == 200, resp
    assert resp.body == b"kept"
