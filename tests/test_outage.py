"""Redis outages with the Redis store: fail fast with 503, keep Synapse up, recover by itself.

Synapse runs in takeover mode with ``store: redis`` and ``redis.timeout: 500ms``, on a
redis-server started by the tests, which stop, kill, freeze (SIGSTOP) and restart it. While
Redis is unreachable every rendezvous request is answered 503 with a Matrix error
(``M_UNKNOWN``) within `ANSWER_WITHIN_S`: never a hang, never a 500; the rest of Synapse keeps
serving. When Redis is back on the same port the module uses it again without a restart of
Synapse (the sessions are gone: the test Redis persists nothing).

The outages Synapse must live through share one Synapse and one Redis for the module (each
test starts with both up and answering); starting with Redis down, and stopping Synapse during
an outage, get their own.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import TYPE_CHECKING

import pytest
from support.http_client import (
    Response,
    create_session,
    delete,
    errcode,
    get,
    post_create,
    put,
    session_url,
)
from support.http_client import etag as _etag

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from contextlib import AbstractContextManager

    from conftest import RedisFactory, ServerFactory

    from devtools.redis import RedisServer
    from devtools.synapse import SynapseServer

pytestmark = [pytest.mark.redis, pytest.mark.usefixtures("needs_module")]

REDIS_TIMEOUT = "500ms"
#: Bound on the answer to any rendezvous request while Redis is unreachable.
ANSWER_WITHIN_S = 3.0
#: Bound on the time service takes to resume once Redis answers again, and on the number of
#: 503s meanwhile. Measured: the very first request after Redis is back succeeds; the slack
#: is for a busy test machine, where a request may miss the 500 ms timeout once.
RECOVER_WITHIN_S = 10.0
MAX_503_WHILE_RECOVERING = 2
#: As in test_lifecycle: Synapse exits with 0 after SIGTERM (-15 is accepted too).
CLEAN_EXIT_CODES = (0, -15)
STOP_WITHIN_S = 5.0
UNKNOWN_ID = "01HZZZZZZZZZZZZZZZZZZZZZZZ"
#: Rendezvous requests left waiting for a hung Redis at once (four times Synapse's threadpool),
#: and how fast Synapse must still answer anything else meanwhile (it takes milliseconds).
WAITING_REQUESTS = 40
OTHER_ANSWER_WITHIN_S = 0.5


def _config(redis: RedisServer) -> dict[str, object]:
    return {"store": "redis", "redis": {"url": redis.url, "timeout": REDIS_TIMEOUT}}


def _timed(call: Callable[[], Response]) -> tuple[Response, float]:
    started = time.monotonic()
    resp = call()
    return resp, time.monotonic() - started


def _assert_unavailable(resp: Response, elapsed: float, what: str) -> None:
    assert resp.status == 503, f"{what}: {resp}"
    assert errcode(resp) == "M_UNKNOWN", f"{what}: {resp}"
    assert resp.header("Content-Type") == "application/json", f"{what}: {resp}"
    assert resp.header("Access-Control-Allow-Origin") == "*", f"{what}: {resp}"
    assert elapsed < ANSWER_WITHIN_S, f"{what}: answered after {elapsed:.2f} s"


def _every_request_is_503(server: SynapseServer, url: str, etag: str) -> None:
    """Each kind of rendezvous request, on a known session and on a new one."""
    calls: dict[str, Callable[[], Response]] = {
        "GET": lambda: get(server, url),
        "GET If-None-Match": lambda: get(server, url, headers=[("If-None-Match", etag)]),
        "PUT": lambda: put(server, url, b"during outage", etag=etag),
        "DELETE": lambda: delete(server, url),
        "GET unknown id": lambda: get(server, session_url(server, UNKNOWN_ID)),
        "create": lambda: post_create(server, b"during outage"),
    }
    for what, call in calls.items():
        resp, elapsed = _timed(call)
        _assert_unavailable(resp, elapsed, what)


def _synapse_still_serves(server: SynapseServer) -> None:
    assert server.running
    resp = get(server, "/_matrix/client/versions")
    assert resp.status == 200, resp


def _wait_for_service(
    server: SynapseServer, max_failures: int | None = MAX_503_WHILE_RECOVERING
) -> tuple[str, Response, list[Response]]:
    """Create sessions until one succeeds (within `RECOVER_WITHIN_S`, after at most
    ``max_failures`` attempts); every failed attempt must be a quick 503. Returns the session
    URL, its create response and the failed attempts."""
    failures: list[Response] = []
    deadline = time.monotonic() + RECOVER_WITHIN_S
    while True:
        resp, elapsed = _timed(lambda: post_create(server, b"after outage"))
        if resp.status == 201:
            url = resp.json_dict().get("url")
            assert isinstance(url, str), resp
            return url, resp, failures
        _assert_unavailable(resp, elapsed, "create while Redis comes back")
        failures.append(resp)
        assert max_failures is None or len(failures) <= max_failures, (
            f"{len(failures)} creates in a row answered 503 after Redis came back: {resp}"
        )
        assert time.monotonic() < deadline, (
            f"service did not resume within {RECOVER_WITHIN_S} s of Redis coming back: "
            f"{len(failures)} answers 503"
        )
        time.sleep(0.1)


def _full_exchange(server: SynapseServer, url: str, created: Response) -> None:
    assert get(server, url).status == 200
    written = put(server, url, b"answer", etag=_etag(created))
    assert written.status == 202, written
    current = get(server, url)
    assert (current.status, current.body, _etag(current)) == (200, b"answer", _etag(written))
    assert delete(server, url).status == 204


@pytest.fixture(scope="module")
def shared_redis(redis_factory: RedisFactory) -> Iterator[RedisServer]:
    with redis_factory() as server:
        yield server


@pytest.fixture(scope="module")
def shared_synapse(
    server_factory: ServerFactory, shared_redis: RedisServer
) -> Iterator[SynapseServer]:
    """One Synapse for the outages it must live through, without a restart."""
    with _synapse(server_factory, shared_redis) as server:
        yield server


@pytest.fixture
def redis(shared_redis: RedisServer) -> Iterator[RedisServer]:
    """The module's Redis, running and answering at the start and at the end of each test,
    whatever the test (or a failed one before it) did to it."""
    _revive(shared_redis)
    try:
        yield shared_redis
    finally:
        _revive(shared_redis)


@pytest.fixture
def server(shared_synapse: SynapseServer, redis: RedisServer) -> SynapseServer:
    """The module's Synapse, serving rendezvous requests again."""
    assert shared_synapse.running, "the shared Synapse has exited"
    _wait_for_service(shared_synapse, max_failures=None)
    return shared_synapse


def _revive(redis: RedisServer) -> None:
    redis.resume()
    if not redis.running:
        redis.start()


def _synapse(
    server_factory: ServerFactory, redis: RedisServer
) -> AbstractContextManager[SynapseServer]:
    return server_factory("takeover", _config(redis))


def test_redis_stopped_mid_exchange_gives_503_then_service_resumes(
    server: SynapseServer, redis: RedisServer
) -> None:
    pid = server.pid
    url, created = create_session(server, b"offer")
    written = put(server, url, b"answer", etag=_etag(created))
    assert written.status == 202, written

    redis.stop()
    _every_request_is_503(server, url, _etag(written))
    _synapse_still_serves(server)

    redis.start()  # the same port, and empty: the test Redis does not persist
    new_url, new_created, _ = _wait_for_service(server)
    _full_exchange(server, new_url, new_created)
    # The old session went with Redis's data.
    assert get(server, url).status == 404
    assert server.pid == pid, "Synapse was restarted"
    _synapse_still_serves(server)


def test_first_request_after_redis_restart_succeeds(
    server: SynapseServer, redis: RedisServer
) -> None:
    """Connections left over from before the restart are not used to answer a request."""
    # Fill the pool with a few connections.
    for _ in range(3):
        url, _ = create_session(server, b"offer")
        assert get(server, url).status == 200
    redis.restart()
    resp = post_create(server, b"after restart")
    assert resp.status == 201, resp


def test_redis_killed_then_back_resumes_service(server: SynapseServer, redis: RedisServer) -> None:
    url, created = create_session(server, b"offer")
    redis.kill()
    _every_request_is_503(server, url, _etag(created))
    redis.start()
    new_url, new_created, _ = _wait_for_service(server)
    _full_exchange(server, new_url, new_created)


def test_hung_redis_gives_503_within_the_timeout(server: SynapseServer, redis: RedisServer) -> None:
    """A Redis that accepts connections but never answers (SIGSTOP)."""
    url, created = create_session(server, b"offer")
    redis.pause()
    try:
        _every_request_is_503(server, url, _etag(created))
        _synapse_still_serves(server)
    finally:
        redis.resume()
    # The data is still there: Redis was only frozen.
    deadline = time.monotonic() + RECOVER_WITHIN_S
    while (resp := get(server, url)).status == 503 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert resp.status == 200, resp
    assert (resp.body, _etag(resp)) == (b"offer", _etag(created))


def test_concurrent_requests_to_a_hung_redis_all_get_503(
    server: SynapseServer, redis: RedisServer
) -> None:
    """More requests at once than the pool has connections: none waits past the timeout."""
    url, _ = create_session(server, b"offer")
    redis.pause()
    results: list[tuple[Response, float]] = []
    lock = threading.Lock()

    def one() -> None:
        outcome = _timed(lambda: get(server, url))
        with lock:
            results.append(outcome)

    try:
        threads = [threading.Thread(target=one) for _ in range(24)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(15)
    finally:
        redis.resume()
    assert len(results) == len(threads)
    for resp, elapsed in results:
        _assert_unavailable(resp, elapsed, "concurrent GET")


def test_redis_down_at_startup_then_up(
    server_factory: ServerFactory, redis_factory: RedisFactory
) -> None:
    with (
        redis_factory(start=False) as redis,
        _synapse(server_factory, redis) as server,
    ):
        _synapse_still_serves(server)
        resp, elapsed = _timed(lambda: post_create(server, b"offer"))
        _assert_unavailable(resp, elapsed, "create before Redis is up")
        resp, elapsed = _timed(lambda: get(server, session_url(server, UNKNOWN_ID)))
        _assert_unavailable(resp, elapsed, "GET before Redis is up")

        redis.start()
        url, created, _ = _wait_for_service(server)
        _full_exchange(server, url, created)


@pytest.mark.parametrize("outage", ["stopped", "hung"])
def test_sigterm_stops_synapse_quickly_while_redis_is_down(
    server_factory: ServerFactory, redis_factory: RedisFactory, outage: str
) -> None:
    with redis_factory() as redis, _synapse(server_factory, redis) as server:
        url, _ = create_session(server, b"offer")
        if outage == "stopped":
            redis.stop()
        else:
            redis.pause()
        try:
            resp, elapsed = _timed(lambda: get(server, url))
            _assert_unavailable(resp, elapsed, "GET during the outage")
            # Requests still waiting for Redis when the signal arrives.
            pending = [
                threading.Thread(target=lambda: _swallow(lambda: get(server, url)))
                for _ in range(4)
            ]
            for thread in pending:
                thread.start()
            time.sleep(0.1)
            started = time.monotonic()
            code = server.stop(timeout=STOP_WITHIN_S + 5)
            elapsed = time.monotonic() - started
            for thread in pending:
                thread.join(10)
        finally:
            redis.resume()
        assert elapsed < STOP_WITHIN_S, f"stop took {elapsed:.1f} s (exit code {code})"
        assert code in CLEAN_EXIT_CODES, code


def _swallow(call: Callable[[], object]) -> None:
    """Run ``call``, ignoring connection errors (the server is going away meanwhile)."""
    with contextlib.suppress(OSError):
        call()


def test_other_synapse_responses_are_not_delayed_while_requests_wait_for_redis(
    server: SynapseServer, redis: RedisServer
) -> None:
    url, _ = create_session(server, b"offer")
    redis.pause()
    try:
        waiting = [
            threading.Thread(target=lambda: _swallow(lambda: get(server, url)))
            for _ in range(WAITING_REQUESTS)
        ]
        for thread in waiting:
            thread.start()
        time.sleep(0.5)  # every request has reached Synapse and waits for Redis
        resp, elapsed = _timed(lambda: get(server, "/_matrix/client/versions"))
        for thread in waiting:
            thread.join(15)
    finally:
        redis.resume()
    assert resp.status == 200, resp
    assert elapsed < OTHER_ANSWER_WITHIN_S, f"/versions took {elapsed:.2f} s"
