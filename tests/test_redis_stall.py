"""A stalled Redis (SIGSTOP) under load: every request is answered within its bound, memory
stays bounded, the rest of Synapse keeps serving, SIGCONT brings service back without a
restart, and SIGTERM stops Synapse at once whatever Redis does.

The load is 200 GETs and 20 PUTs declaring 8 MiB bodies, sent at once on connections opened
beforehand (so that the listener's accept queue plays no part). With ``redis.timeout: 1s`` a
GET waits at most that long for the frozen Redis before its 503; a PUT whose declared length
is over the limit is answered 413 without its body being read or copied, so Synapse's RSS
does not follow the 160 MiB uploaded (Twisted spools large bodies to a temporary file).
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import TYPE_CHECKING

import pytest
from support.http_client import create_session, delete, get, put
from support.raw_http import build_request, connect, target_of

if TYPE_CHECKING:
    import socket
    from collections.abc import Iterator

    from conftest import RedisFactory, ServerFactory

    from devtools.redis import RedisServer
    from devtools.synapse import SynapseServer

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.usefixtures("needs_module")]

GETS = 200
PUTS = 20
DECLARED_BODY = 8 * 1024 * 1024
#: The bound of the issue: ``redis.timeout`` plus half a second of slack for a busy machine.
ANSWER_WITHIN_S = 1.5
RSS_GROWTH_LIMIT = 64 * 1024 * 1024
OTHER_ANSWER_WITHIN_S = 0.5
STOP_WITHIN_S = 5.0


@pytest.fixture
def stalled_setup(
    server_factory: ServerFactory, redis_factory: RedisFactory
) -> Iterator[tuple[SynapseServer, RedisServer]]:
    with redis_factory() as redis:
        config = {"store": "redis", "redis": {"url": redis.url, "timeout": "1s"}}
        with server_factory("takeover", config) as server:
            try:
                yield server, redis
            finally:
                redis.resume()


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class _PeakRss:
    """Samples a process's RSS every 20 ms while in use."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = _rss(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> _PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            with contextlib.suppress(OSError):
                self.peak = max(self.peak, _rss(self.pid))


def _read_head(sock: socket.socket, deadline: float) -> bytes:
    """The status line and headers of the first response on ``sock`` (empty if none)."""
    data = b""
    while b"\r\n\r\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            return b""
        sock.settimeout(left)
        try:
            chunk = sock.recv(4096)
        except (TimeoutError, OSError):
            return b""
        if not chunk:
            return b""
        data += chunk
    return data.split(b"\r\n\r\n", 1)[0]


def _read_status(sock: socket.socket, deadline: float) -> int | None:
    """The status of the first response on ``sock``, or None by ``deadline``."""
    head = _read_head(sock, deadline)
    return int(head.split(b" ", 2)[1]) if head else None


def _send_all(
    server: SynapseServer, requests: list[bytes], give_up_after: float
) -> list[tuple[int | None, float]]:
    """Sends each request on a connection of its own, opened first, all at once; returns
    each status (None when unanswered) and the seconds from the end of its sending."""
    sockets = [connect(server) for _ in requests]
    results: list[tuple[int | None, float]] = [(None, 0.0)] * len(requests)
    barrier = threading.Barrier(len(requests))

    def one(index: int) -> None:
        sock = sockets[index]
        barrier.wait(30)
        with contextlib.suppress(OSError):
            sock.sendall(requests[index])
        sent = time.monotonic()
        status = _read_status(sock, sent + give_up_after)
        results[index] = (status, time.monotonic() - sent)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(requests))]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(give_up_after + 60)
    finally:
        for sock in sockets:
            sock.close()
    return results


def test_stalled_redis_under_load_stays_bounded_and_recovers(
    stalled_setup: tuple[SynapseServer, RedisServer],
) -> None:
    server, redis = stalled_setup
    pid = server.pid
    assert pid is not None
    url, created = create_session(server, b"offer")
    etag = created.header("ETag")
    assert etag is not None
    target = target_of(url)
    gets = [build_request("GET", target) for _ in range(GETS)]
    body = b"x" * DECLARED_BODY
    puts = [
        build_request(
            "PUT", target, headers=[("Content-Type", "text/plain"), ("If-Match", "*")], body=body
        )
        for _ in range(PUTS)
    ]
    baseline = _rss(pid)

    redis.pause()
    other: dict[str, float] = {}

    def ask_versions() -> None:
        time.sleep(0.3)  # while the GETs wait for Redis
        started = time.monotonic()
        resp = get(server, "/_matrix/client/versions")
        other["status"] = resp.status
        other["elapsed"] = time.monotonic() - started

    versions = threading.Thread(target=ask_versions)
    with _PeakRss(pid) as rss:
        versions.start()
        results = _send_all(server, gets + puts, give_up_after=10.0)
        versions.join(15)

    get_results, put_results = results[:GETS], results[GETS:]
    assert all(status == 503 for status, _ in get_results), get_results
    assert all(status == 413 for status, _ in put_results), put_results
    slowest = max(elapsed for _, elapsed in results)
    assert slowest < ANSWER_WITHIN_S, f"slowest answer after {slowest:.2f} s"
    growth = rss.peak - baseline
    assert growth < RSS_GROWTH_LIMIT, f"RSS grew by {growth / 2**20:.0f} MiB"
    assert other.get("status") == 200, other
    assert other["elapsed"] < OTHER_ANSWER_WITHIN_S, other

    # Thawed: the same Synapse serves again, the session kept.
    redis.resume()
    deadline = time.monotonic() + 10
    while (resp := get(server, url)).status != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert resp.status == 200, resp
    assert resp.body == b"offer"
    written = put(server, url, b"answer", etag=etag)
    assert written.status == 202, written
    assert delete(server, url).status == 204
    fresh, _ = create_session(server, b"after")
    assert get(server, fresh).status == 200
    assert server.pid == pid

    # Frozen again with requests waiting: SIGTERM still stops Synapse at once.
    redis.pause()
    waiting = [connect(server) for _ in range(GETS)]
    try:
        for sock in waiting:
            sock.sendall(build_request("GET", target_of(fresh)))
        time.sleep(0.2)
        started = time.monotonic()
        code = server.stop(timeout=STOP_WITHIN_S + 5)
        elapsed = time.monotonic() - started
    finally:
        for sock in waiting:
            sock.close()
    assert elapsed < STOP_WITHIN_S, f"stop took {elapsed:.1f} s (exit code {code})"
    assert code in (0, -15), code


def test_beyond_max_pending_requests_are_refused_at_once(
    server_factory: ServerFactory, redis_factory: RedisFactory
) -> None:
    """With 8 requests allowed to wait for a frozen Redis, the others get their 503 (with a
    Retry-After) at once instead of queueing."""
    with redis_factory() as redis:
        config = {
            "store": "redis",
            "redis": {"url": redis.url, "timeout": "2s", "pool_size": 1, "max_pending": 8},
            "rate_limit": {"enabled": False},
        }
        with server_factory("takeover", config) as server:
            url, _ = create_session(server, b"offer")
            sockets = [connect(server) for _ in range(20)]
            redis.pause()
            try:
                heads: list[tuple[bytes, float]] = [(b"", 0.0)] * len(sockets)

                def one(index: int) -> None:
                    sent = time.monotonic()
                    sockets[index].sendall(build_request("GET", target_of(url)))
                    head = _read_head(sockets[index], sent + 10)
                    heads[index] = (head, time.monotonic() - sent)

                threads = [threading.Thread(target=one, args=(i,)) for i in range(len(sockets))]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join(20)
            finally:
                redis.resume()
                for sock in sockets:
                    sock.close()
    fast = [head for head, elapsed in heads if elapsed < 1.0]
    assert all(head.startswith(b"HTTP/1.1 503") for head, _ in heads), heads
    assert len(fast) >= 12, [round(elapsed, 2) for _, elapsed in heads]
    assert all(b"\r\nRetry-After: 1" in head for head in fast), fast


def test_a_request_whose_client_left_is_not_sent_to_redis(
    server_factory: ServerFactory, redis_factory: RedisFactory
) -> None:
    """Requests waiting for Redis to come up, whose clients then left, are dropped; one whose
    client stays is sent (its rate-limit bucket shows in Redis)."""
    prefix = "left-test:"
    with redis_factory(start=False) as redis:
        config = {
            "store": "redis",
            "redis": {"url": redis.url, "timeout": "5s", "key_prefix": prefix},
            "rate_limit": {"enabled": True},
        }
        with server_factory("takeover", config) as server:
            unknown = target_of(f"{server.base_url}_synapse/client/rendezvous/{'0' * 26}")
            for source in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
                sock = connect(server, source=source)
                sock.sendall(build_request("GET", unknown))
                sock.close()
            time.sleep(0.5)  # Synapse has seen them go
            redis.start()
            time.sleep(3)  # the module reconnects (back-off at most 1 s) and sends what waits
            assert redis.keys(f"{prefix}bucket:*") == []

            staying = connect(server, source="127.0.0.5")
            try:
                staying.sendall(build_request("GET", unknown))
                head = _read_head(staying, time.monotonic() + 5)
            finally:
                staying.close()
            assert head.startswith(b"HTTP/1.1 404"), head
            assert redis.keys(f"{prefix}bucket:*") == [f"{prefix}bucket:session:127.0.0.5"]
