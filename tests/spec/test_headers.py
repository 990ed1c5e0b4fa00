"""Protocol-wide behaviour: error format, methods, dates and TTL, CORS preflight, /versions."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING

import pytest
from support.http_client import (
    CREATE_PATH,
    Response,
    create_session,
    get,
    post_create,
    put,
    request,
    session_url,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from devtools.synapse import SynapseServer

UNKNOWN_ID = "01HZZZZZZZZZZZZZZZZZZZZZZZ"
DEFAULT_TTL_S = 120


# -- errors -----------------------------------------------------------------------------------


def _get_unknown(server: SynapseServer) -> Response:
    return get(server, session_url(server, UNKNOWN_ID))


def _create_without_content_type(server: SynapseServer) -> Response:
    return post_create(server, b"x", content_type=None)


def _create_too_large(server: SynapseServer) -> Response:
    return post_create(server, b"x" * 5000)


def _put_without_if_match(server: SynapseServer) -> Response:
    url, _ = create_session(server)
    return put(server, url, b"x")


def _put_stale(server: SynapseServer) -> Response:
    url, _ = create_session(server)
    return put(server, url, b"x", etag='"stale"')


def _patch_session(server: SynapseServer) -> Response:
    url, _ = create_session(server)
    return request(server, "PATCH", url, body=b"x", headers=[("Content-Type", "text/plain")])


ERRORS: dict[str, tuple[Callable[[SynapseServer], Response], int]] = {
    "get-unknown": (_get_unknown, 404),
    "create-without-content-type": (_create_without_content_type, 400),
    "create-too-large": (_create_too_large, 413),
    "put-without-if-match": (_put_without_if_match, 400),
    "put-stale": (_put_stale, 412),
    "patch": (_patch_session, 405),
}


@pytest.mark.semantic
@pytest.mark.parametrize("case", list(ERRORS))
def test_errors_are_matrix_json(server: SynapseServer, case: str) -> None:
    send, status = ERRORS[case]
    resp = send(server)
    assert resp.status == status, resp
    body = resp.json_dict()
    assert isinstance(body.get("errcode"), str), body
    assert str(body["errcode"]).startswith("M_"), body
    assert isinstance(body.get("error"), str), body


@pytest.mark.parametrize("case", list(ERRORS))
def test_errors_have_json_content_type_and_cors_origin(server: SynapseServer, case: str) -> None:
    send, status = ERRORS[case]
    resp = send(server)
    assert resp.status == status, resp
    assert resp.header("Content-Type") == "application/json", resp
    assert resp.header("Access-Control-Allow-Origin") == "*", resp


# -- methods ----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["PATCH", "POST"])
def test_other_methods_on_a_session_are_405_unrecognized(
    server: SynapseServer, method: str
) -> None:
    url, _ = create_session(server)
    resp = request(server, method, url, body=b"x", headers=[("Content-Type", "text/plain")])
    assert resp.status == 405, resp
    assert resp.json_dict().get("errcode") == "M_UNRECOGNIZED", resp
    assert get(server, url).body == b"hello"


@pytest.mark.parametrize("path", ["create", "session"])
def test_cors_preflight_allows_rendezvous_methods_and_headers(
    server: SynapseServer, path: str
) -> None:
    if path == "create":
        target = CREATE_PATH
    else:
        target, _ = create_session(server)
    resp = request(
        server,
        "OPTIONS",
        target,
        headers=[
            ("Origin", "https://app.element.io"),
            ("Access-Control-Request-Method", "PUT"),
            ("Access-Control-Request-Headers", "content-type,if-match,if-none-match"),
        ],
    )
    assert resp.status in (200, 204), resp
    assert resp.header("Access-Control-Allow-Origin") == "*"
    methods = {m.strip() for m in (resp.header("Access-Control-Allow-Methods") or "").split(",")}
    assert {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"} <= methods, resp
    allowed = {
        h.strip().lower() for h in (resp.header("Access-Control-Allow-Headers") or "").split(",")
    }
    assert {"content-type", "if-match", "if-none-match"} <= allowed, resp


# -- dates and TTL ----------------------------------------------------------------------------


@pytest.mark.parametrize("request_kind", ["create", "get"])
def test_date_header_is_accurate(server: SynapseServer, request_kind: str) -> None:
    before = datetime.now(timezone.utc)
    url, resp = create_session(server)
    if request_kind == "get":
        resp = get(server, url)
    after = datetime.now(timezone.utc)
    date = resp.date_header("Date")
    # HTTP dates have whole seconds; allow a little slack on top.
    assert before.timestamp() - 3 <= date.timestamp() <= after.timestamp() + 2, (before, date)


@pytest.mark.semantic
@pytest.mark.improvement("Synapse's TTL is fixed at 60 s")
def test_default_ttl_is_120_seconds(server: SynapseServer) -> None:
    _, resp = create_session(server)
    ttl = (resp.date_header("Expires") - resp.date_header("Date")).total_seconds()
    assert DEFAULT_TTL_S - 2 <= ttl <= DEFAULT_TTL_S + 1, ttl


@pytest.mark.semantic
def test_last_modified_of_a_new_session_is_its_creation_time(server: SynapseServer) -> None:
    _, resp = create_session(server)
    delta = (resp.date_header("Last-Modified") - resp.date_header("Date")).total_seconds()
    assert abs(delta) <= 1, delta


# -- discovery --------------------------------------------------------------------------------


@pytest.mark.homeserver
def test_versions_advertises_msc4108(server: SynapseServer) -> None:
    resp = get(server, "/_matrix/client/versions")
    assert resp.status == 200, resp
    unstable = resp.json_dict().get("unstable_features")
    assert isinstance(unstable, dict), resp
    assert unstable.get("org.matrix.msc4108") is True
