"""The routing snippets of ``docs/standalone.md``, run: nginx, Caddy and HAProxy (Debian's
packages), each with the doc's block as written, in front of three standalone servers that
share one Redis (see `support.doc_proxies` for the few lines a test changes).

For each proxy:

- a whole exchange through it on the delegation layout: create on the session root, read, a
  304, a write with ``If-Match``, a stale write's 412, and the delete. The session URL is
  built from ``public_base_url`` (the proxy), the ETag arrives unchanged and nothing is
  compressed, although the client accepts gzip;
- the client's address reaches the servers: with ``trusted_proxies`` naming the proxy, the
  per-client session quota counts each client (loopback source addresses) on its own, and a
  client that names another address in its own ``X-Forwarded-For`` stays within its quota;
- a stopped server costs no request: with one of the three stopped (its listener closed),
  every create and read through the proxy succeeds, as the doc says of its retry settings.

And nginx's block for the memory store: two servers on the memory store, each with a
``public_base_url`` under a path prefix of its own, the creates balanced between them and every
session found again through its URL, on whichever server made it.

Traefik is not packaged by Debian, so its snippet is not run here.
"""

from __future__ import annotations

import contextlib
import itertools
from typing import TYPE_CHECKING

import pytest
from support.doc_proxies import DOC_UPSTREAMS, PROXIES, DocProxy, ProxyError, ProxyName
from support.http_client import SESSION_ROOT
from support.raw_http import RawResponse, request

from devtools.standalone import StandaloneServer
from devtools.synapse import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator

    from conftest import RedisFactory

pytestmark = pytest.mark.redis

TEXT = ("Content-Type", "text/plain")
GZIP = ("Accept-Encoding", "gzip, deflate, br")
QUOTA = 2
_prefixes = itertools.count()


class Deployment:
    def __init__(self, proxy: DocProxy, servers: list[StandaloneServer]) -> None:
        self.proxy = proxy
        self.servers = servers

    def call(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        headers: tuple[tuple[str, str], ...] = (),
        source: str = "127.0.0.2",
    ) -> RawResponse:
        return request(self.proxy.port, method, url, headers=headers, body=body, source=source)

    def create(
        self,
        body: bytes = b"offer",
        *,
        headers: tuple[tuple[str, str], ...] = (),
        source: str = "127.0.0.2",
    ) -> RawResponse:
        """A create on the session root, where Synapse's 307 sends clients."""
        return self.call("POST", SESSION_ROOT, body=body, headers=(TEXT, *headers), source=source)


def _start(stack: contextlib.ExitStack, proxy: DocProxy) -> None:
    """Starts ``proxy`` within ``stack``; a proxy that does not start fails the test with
    its log."""
    failed = None
    try:
        stack.enter_context(proxy)
    except ProxyError as exc:
        failed = str(exc)
    if failed is not None:
        pytest.fail(failed, pytrace=False)


@pytest.fixture(params=PROXIES)
def deployment(request: pytest.FixtureRequest, redis_factory: RedisFactory) -> Iterator[Deployment]:
    name: ProxyName = request.param
    proxy_port = free_port()
    limits = {
        "enabled": True,
        "create": {"per_second": 1000, "burst": 1000},
        "session": {"per_second": 1000, "burst": 1000},
        "max_sessions_per_ip": QUOTA,
        "trusted_proxies": ["127.0.0.1"],
    }
    with contextlib.ExitStack() as stack:
        redis = stack.enter_context(redis_factory())
        shared = {
            "store": "redis",
            "redis": {"url": redis.url, "key_prefix": f"proxy-test:{next(_prefixes)}:"},
            "rate_limit": limits,
        }
        servers = [
            stack.enter_context(
                StandaloneServer(
                    shared,
                    server_config={"public_base_url": f"http://127.0.0.1:{proxy_port}/"},
                )
            )
            for _ in DOC_UPSTREAMS
        ]
        proxy = DocProxy(name, [server.port for server in servers], proxy_port)
        _start(stack, proxy)
        yield Deployment(proxy, servers)


def test_a_whole_exchange_through_the_proxy(deployment: Deployment) -> None:
    created = deployment.create(headers=(GZIP,))
    assert created.status == 201, created
    url = created.json_dict()["url"]
    assert isinstance(url, str)
    assert url.startswith(deployment.proxy.base_url + SESSION_ROOT.lstrip("/") + "/"), url
    first = created.header("ETag")
    assert first is not None, created
    assert first.startswith('"'), created

    read = deployment.call("GET", url, headers=(GZIP,))
    assert (read.status, read.body, read.header("ETag")) == (200, b"offer", first), read
    assert read.header("Content-Encoding") is None, read
    unchanged = deployment.call("GET", url, headers=(GZIP, ("If-None-Match", first)))
    assert (unchanged.status, unchanged.body) == (304, b""), unchanged

    written = deployment.call("PUT", url, body=b"answer", headers=(TEXT, ("If-Match", first)))
    assert written.status == 202, written
    second = written.header("ETag")
    assert second is not None, written
    assert second != first, written
    stale = deployment.call("PUT", url, body=b"late", headers=(TEXT, ("If-Match", first)))
    assert stale.status == 412, stale
    assert stale.json_dict()["org.matrix.msc4108.errcode"] == "M_CONCURRENT_WRITE", stale
    read = deployment.call("GET", url, headers=(GZIP, ("If-None-Match", first)))
    assert (read.status, read.body, read.header("ETag")) == (200, b"answer", second), read

    assert deployment.call("DELETE", url).status == 204
    gone = deployment.call("GET", url)
    assert (gone.status, gone.errcode()) == (404, "M_NOT_FOUND"), gone


def test_each_client_is_counted_on_its_own_behind_the_proxy(deployment: Deployment) -> None:
    # Were the proxy's address counted instead, the second client would be refused.
    for source in ("127.0.0.2", "127.0.0.3"):
        statuses = [deployment.create(source=source).status for _ in range(QUOTA)]
        assert statuses == [201] * QUOTA, (source, statuses)
    over = deployment.create(source="127.0.0.2")
    assert (over.status, over.errcode()) == (429, "M_LIMIT_EXCEEDED"), over
    spoofed = deployment.create(source="127.0.0.2", headers=(("X-Forwarded-For", "10.9.9.9"),))
    assert (spoofed.status, spoofed.errcode()) == (429, "M_LIMIT_EXCEEDED"), spoofed


def test_a_stopped_server_costs_no_request(deployment: Deployment) -> None:
    stopped = deployment.servers[0]
    stopped.stop()
    assert not stopped.running
    # Twice round the servers and more, creates and reads, each from a client of its own.
    for n in range(8):
        source = f"127.0.0.{10 + n}"
        created = deployment.create(source=source)
        assert created.status == 201, (n, created)
        url = created.json_dict()["url"]
        assert isinstance(url, str)
        read = deployment.call("GET", url, source=source)
        assert (read.status, read.body) == (200, b"offer"), (n, read)


def test_the_memory_store_block_finds_each_session_on_its_server() -> None:
    proxy_port = free_port()
    with contextlib.ExitStack() as stack:
        servers = [
            stack.enter_context(
                StandaloneServer(
                    {"rate_limit": {"enabled": False}},
                    server_config={
                        "public_base_url": f"http://127.0.0.1:{proxy_port}/rendezvous-{n}/"
                    },
                )
            )
            for n in (1, 2)
        ]
        proxy = DocProxy("nginx", [server.port for server in servers], proxy_port, "memory")
        _start(stack, proxy)
        deployment = Deployment(proxy, servers)
        urls = []
        for n in range(6):
            created = deployment.create(f"offer {n}".encode())
            assert created.status == 201, created
            url = created.json_dict()["url"]
            assert isinstance(url, str)
            urls.append((url, created.header("ETag") or ""))
        # The creates went to both servers, and each URL names the one that answered.
        prefixes = {url.split("/")[3] for url, _ in urls}
        assert prefixes == {"rendezvous-1", "rendezvous-2"}, urls
        for n, (url, tag) in enumerate(urls):
            read = deployment.call("GET", url)
            assert (read.status, read.body) == (200, f"offer {n}".encode()), (url, read)
            written = deployment.call("PUT", url, body=b"answer", headers=(TEXT, ("If-Match", tag)))
            assert written.status == 202, (url, written)
            assert deployment.call("GET", url).body == b"answer"
            assert deployment.call("DELETE", url).status == 204
