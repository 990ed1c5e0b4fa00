"""Synapse workers: with the Redis store every process serves every session.

Each deployment is a main process plus generic workers with client listeners (see
`deployment.Deployment`), sharing one redis-server of their own for Synapse's replication and
(``store: redis``) for the sessions. It boots once per module. Session URLs point at the main
process (``public_baseurl``), so the tests address each process explicitly by session id.

Routing, as Synapse wires it: the standard create path is served by the main process only (a
worker answers it 404 ``M_UNRECOGNIZED``), while the session path is served by every process
with a client listener. With the memory store each process has its own sessions, so a session
created on the main process is unknown to the workers: the reason for the Redis store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from support.http_client import (
    CREATE_PATH,
    SESSION_PREFIX,
    Response,
    create_session,
    delete,
    errcode,
    get,
    put,
    request,
    session_id,
    session_url,
)
from support.http_client import etag as _etag

if TYPE_CHECKING:
    from collections.abc import Iterator

    from conftest import DeploymentFactory, RedisFactory
    from support.deployment import Deployment

    from devtools.synapse import SynapseServer

pytestmark = [
    pytest.mark.workers,
    pytest.mark.redis,
    pytest.mark.usefixtures("needs_module"),
]


def _url_on(process: SynapseServer, url: str) -> str:
    """The URL of the session of ``url`` on ``process`` (its own listener)."""
    return session_url(process, session_id(url))


def _create_on(process: SynapseServer, body: bytes) -> Response:
    """Create a session with a POST to the session path of ``process`` (delegation mode)."""
    return request(
        process,
        "POST",
        SESSION_PREFIX.rstrip("/"),
        body=body,
        headers=[("Content-Type", "text/plain")],
    )


@pytest.fixture(scope="module")
def takeover(
    deployment_factory: DeploymentFactory, redis_factory: RedisFactory
) -> Iterator[Deployment]:
    """Takeover mode, ``store: redis`` without a URL: the module uses the homeserver's own
    ``redis:`` section, the Redis that Synapse's replication uses."""
    with (
        redis_factory() as redis,
        deployment_factory("takeover", {"store": "redis"}, redis=redis, workers=2) as dep,
    ):
        yield dep


@pytest.fixture(scope="module")
def delegation(
    deployment_factory: DeploymentFactory, redis_factory: RedisFactory
) -> Iterator[Deployment]:
    """Delegation mode, ``store: redis`` with an explicit URL and key prefix."""
    with redis_factory() as redis:
        config = {"store": "redis", "redis": {"url": redis.url, "key_prefix": "workers-test:"}}
        with deployment_factory("delegation", config, redis=redis, workers=2) as dep:
            yield dep


# -- takeover ---------------------------------------------------------------------------------


def test_create_path_is_served_by_the_main_process_only(takeover: Deployment) -> None:
    for worker in takeover.workers:
        resp = request(
            worker,
            "POST",
            CREATE_PATH,
            body=b"hello",
            headers=[("Content-Type", "text/plain")],
        )
        assert resp.status == 404, f"{worker.name}: {resp}"
        assert errcode(resp) == "M_UNRECOGNIZED", f"{worker.name}: {resp}"
    _, created = create_session(takeover.main, b"hello")
    assert created.status == 201


def test_session_urls_point_at_the_public_baseurl(takeover: Deployment) -> None:
    url, _ = create_session(takeover.main)
    assert url.startswith(takeover.main.base_url), url


def test_one_session_is_read_written_and_deleted_through_every_process(
    takeover: Deployment,
) -> None:
    main = takeover.main
    worker1, worker2 = takeover.workers[0], takeover.workers[1]
    url, created = create_session(main, b"offer")
    etag0 = _etag(created)

    read1 = get(worker1, _url_on(worker1, url))
    assert read1.status == 200, read1
    assert read1.body == b"offer"
    assert _etag(read1) == etag0
    assert read1.header("Expires") == created.header("Expires")
    assert read1.header("Last-Modified") == created.header("Last-Modified")

    written = put(worker2, _url_on(worker2, url), b"answer", etag=etag0)
    assert written.status == 202, written
    etag1 = _etag(written)
    assert etag1 != etag0

    read_main = get(main, url)
    assert read_main.status == 200, read_main
    assert read_main.body == b"answer"
    assert _etag(read_main) == etag1
    assert read_main.header("Expires") == created.header("Expires")

    deleted = delete(worker1, _url_on(worker1, url))
    assert deleted.status == 204, deleted

    for process in takeover.processes:
        gone = get(process, _url_on(process, url))
        assert gone.status == 404, f"{process!r}: {gone}"
        assert errcode(gone) == "M_NOT_FOUND", f"{process!r}: {gone}"


def test_if_none_match_is_answered_304_by_another_process(takeover: Deployment) -> None:
    url, created = create_session(takeover.main, b"offer")
    for worker in takeover.workers:
        resp = get(worker, _url_on(worker, url), headers=[("If-None-Match", _etag(created))])
        assert resp.status == 304, f"{worker.name}: {resp}"
        assert resp.header("ETag") == _etag(created)


def test_write_with_a_stale_etag_from_a_third_process_is_412(takeover: Deployment) -> None:
    main = takeover.main
    worker1, worker2 = takeover.workers[0], takeover.workers[1]
    url, created = create_session(main, b"offer")
    etag0 = _etag(created)

    first = put(worker1, _url_on(worker1, url), b"from worker1", etag=etag0)
    assert first.status == 202, first

    stale = put(worker2, _url_on(worker2, url), b"from worker2", etag=etag0)
    assert stale.status == 412, stale
    body = stale.json_dict()
    assert body.get("errcode") == "M_UNKNOWN", stale
    assert body.get("org.matrix.msc4108.errcode") == "M_CONCURRENT_WRITE", stale
    # The 412 describes the version that won, written by another process.
    assert stale.header("ETag") == _etag(first)

    current = get(main, url)
    assert current.status == 200, current
    assert current.body == b"from worker1"
    assert _etag(current) == _etag(first)


# -- delegation -------------------------------------------------------------------------------


def test_delegation_create_works_on_every_process_and_is_served_by_all(
    delegation: Deployment,
) -> None:
    for creator in delegation.processes:
        payload = f"created on {creator!r}".encode()
        created = _create_on(creator, payload)
        assert created.status == 201, f"{creator!r}: {created}"
        url = created.json_dict().get("url")
        assert isinstance(url, str), created
        # Every process hands out URLs under the one public_baseurl.
        assert url.startswith(delegation.main.base_url + SESSION_PREFIX.lstrip("/")), url
        for reader in delegation.processes:
            resp = get(reader, _url_on(reader, url))
            assert resp.status == 200, f"created on {creator!r}, read on {reader!r}: {resp}"
            assert resp.body == payload
            assert _etag(resp) == _etag(created)


def test_delegation_session_is_written_and_deleted_through_other_processes(
    delegation: Deployment,
) -> None:
    worker1, worker2 = delegation.workers[0], delegation.workers[1]
    created = _create_on(worker1, b"offer")
    assert created.status == 201, created
    url = created.json_dict()["url"]
    assert isinstance(url, str)

    written = put(worker2, _url_on(worker2, url), b"answer", etag=_etag(created))
    assert written.status == 202, written
    read = get(delegation.main, _url_on(delegation.main, url))
    assert read.status == 200, read
    assert (read.body, _etag(read)) == (b"answer", _etag(written))

    assert delete(delegation.main, _url_on(delegation.main, url)).status == 204
    for process in delegation.processes:
        assert get(process, _url_on(process, url)).status == 404, process


# -- memory store -----------------------------------------------------------------------------


def test_with_the_memory_store_a_worker_does_not_know_the_main_process_sessions(
    deployment_factory: DeploymentFactory, redis_factory: RedisFactory
) -> None:
    """Documents why the Redis store exists: each process has its own memory."""
    with (
        redis_factory() as redis,
        deployment_factory("takeover", {"store": "memory"}, redis=redis, workers=1) as dep,
    ):
        url, _ = create_session(dep.main, b"offer")
        assert get(dep.main, url).status == 200
        worker = dep.workers[0]
        resp = get(worker, _url_on(worker, url))
        assert resp.status == 404, resp
        assert errcode(resp) == "M_NOT_FOUND", resp
