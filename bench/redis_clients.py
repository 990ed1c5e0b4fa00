"""What a Redis call costs the reactor's process, by way of doing it: the figures behind the
choice of the Redis store's I/O design (docs/performance.md).

One Python process, a real Twisted reactor and a real redis-server on loopback; no Synapse,
no HTTP (the requests are `bench.handler_only.FakeRequest`s, answered GET 304). ``depth``
requests are kept in flight; each variant runs ``calls`` of them and reports the process's
CPU time (user + system, every thread) and wall time per request:

- ``memory``: our handler on the memory store, inline (the floor);
- ``pipeline``: our handler on the Redis store, as the module runs it: one script call per
  request, written by the core on connections Twisted keeps open, replies parsed in Rust, no
  thread (the design chosen);
- ``txredisapi``: the same script call for the same session through txredisapi (Synapse's
  ``redis`` extra, with hiredis), alone: no rendezvous work at all, only the client;
- ``thread hop``: ``deferToThreadPool`` of a function that does nothing, the least a
  thread-pool design pays per request (the previous design: plus a blocking call per hop).

Run with ``python -m bench.redis_clients [--calls N] [--depth D] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.internet import reactor as _reactor
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from bench.handler_only import BASEURL, CREATE_URI, PAYLOAD, FakeRequest
from devtools.redis import RedisServer
from synapse_rendezvous import _core
from synapse_rendezvous.dispatch import Timer
from synapse_rendezvous.redis_connection import RedisConnections

if TYPE_CHECKING:
    from collections.abc import Callable

# The global reactor, with every interface the real one has.
reactor: Any = _reactor
SCRIPTS = Path(__file__).resolve().parent.parent / "rust/core/src/store/redis"
PREFIX = "bench-clients:"
VARIANTS = ("memory", "pipeline", "txredisapi", "thread hop")


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _handler(config: dict[str, object]) -> _core.RendezvousHandler:
    parsed = _core.parse_config({"rate_limit": {"enabled": False}, **config})
    return _core.RendezvousHandler(parsed, BASEURL, mode="takeover", clock=reactor.seconds)


class _Tracked(FakeRequest):
    """A fake request that says when it is answered."""

    __slots__ = ("on_finish",)
    on_finish: Callable[[], None]

    def finish(self) -> None:
        self.finished = True
        self.on_finish()


def _tracked(
    on_finish: Callable[[], None],
    method: bytes,
    uri: bytes,
    headers: dict[bytes, bytes],
    body: bytes = b"",
) -> _Tracked:
    request = _Tracked(method, uri, headers, body)
    request.on_finish = on_finish
    return request


class _Driver:
    """Keeps ``depth`` calls of ``start`` in flight until ``calls`` have completed; calls
    that complete at once (the memory store) are started again in a loop, not recursively."""

    def __init__(self, calls: int, depth: int, start: Callable[[Callable[[], None]], None]) -> None:
        self.left = calls
        self.depth = depth
        self.start = start
        self.done: defer.Deferred[None] = defer.Deferred()
        self.in_flight = 0
        self.pumping = False

    def run(self) -> defer.Deferred[None]:
        self._pump()
        return self.done

    def _pump(self) -> None:
        if self.pumping:
            return
        self.pumping = True
        while self.left > 0 and self.in_flight < self.depth:
            self.left -= 1
            self.in_flight += 1
            self.start(self._finished)
        self.pumping = False
        if self.left == 0 and self.in_flight == 0 and not self.done.called:
            self.done.callback(None)

    def _finished(self) -> None:
        self.in_flight -= 1
        self._pump()


def _get304(
    handler: _core.RendezvousHandler, path: bytes, etag: bytes, timer: Timer | None
) -> Callable[[Callable[[], None]], None]:
    def start(finished: Callable[[], None]) -> None:
        request = _tracked(finished, b"GET", path, {b"If-None-Match": etag})
        delay = handler.handle(request)  # type: ignore[arg-type]
        if timer is not None:
            timer.after(delay)

    return start


async def _measure(
    name: str, calls: int, depth: int, start: Callable[..., None]
) -> dict[str, float]:
    await _Driver(max(calls // 10, depth), depth, start).run()  # warm-up
    cpu, wall = _cpu(), time.perf_counter()
    await _Driver(calls, depth, start).run()
    cpu, wall = _cpu() - cpu, time.perf_counter() - wall
    figures = {"cpu_us": cpu / calls * 1e6, "wall_us": wall / calls * 1e6}
    print(
        f"{name:>11}: {figures['cpu_us']:7.1f} us CPU, "
        f"{figures['wall_us']:7.1f} us wall per request"
    )
    return figures


async def _created(handler: _core.RendezvousHandler, timer: Timer | None) -> tuple[bytes, bytes]:
    """Creates a session through ``handler``: its path and ETag."""
    done: defer.Deferred[None] = defer.Deferred()
    request = _tracked(
        lambda: done.callback(None),
        b"POST",
        CREATE_URI,
        {b"Content-Type": b"text/plain", b"Content-Length": str(len(PAYLOAD)).encode()},
        PAYLOAD,
    )
    delay = handler.handle(request)  # type: ignore[arg-type]
    if timer is not None:
        timer.after(delay)
    await done
    url = json.loads(b"".join(request.written))["url"]
    return url.split("127.0.0.1:8008", 1)[1].encode(), request.header(b"ETag")


async def _run(redis: RedisServer, calls: int, depth: int, pool: int) -> dict[str, Any]:
    import txredisapi  # type: ignore[import-untyped]

    results: dict[str, Any] = {}
    memory = _handler({})
    path, etag = await _created(memory, None)
    results["memory"] = await _measure("memory", calls, depth, _get304(memory, path, etag, None))

    redis_config = {"url": redis.url, "key_prefix": PREFIX, "pool_size": pool}
    piped = _handler({"store": "redis", "redis": redis_config})
    timer = Timer(reactor, piped)
    connections = RedisConnections(reactor, piped, timer)
    connections.start()
    path, etag = await _created(piped, timer)
    results["pipeline"] = await _measure(
        "pipeline", calls, depth, _get304(piped, path, etag, timer)
    )

    source = (SCRIPTS / "common.lua").read_text() + (SCRIPTS / "read.lua").read_text()
    client = await txredisapi.ConnectionPool("127.0.0.1", redis.port, poolsize=4)
    sha = await client.script_load(source)
    session_id = path.decode().rsplit("/", 1)[1]
    session_key = f"{PREFIX}session:{session_id}"
    tag = etag.decode().strip('"')
    # read.lua's layout (see its header): no clock, no limit, then what the forged-state
    # check needs (prefix, id, max payload, ttl in ms), then If-None-Match: one tag.
    keys = [f"{PREFIX}bucket:none", session_key, f"{PREFIX}sessions"]
    args = ["", "", "", PREFIX, session_id, "4096", "120000", "0", tag]

    def evalsha(finished: Callable[[], None]) -> None:
        call = client.evalsha(sha, keys=keys, args=args)

        def check(reply: Any) -> None:
            # 5: the 304 answer; anything else means the call is not the one measured.
            if not reply or reply[0] != 5:
                raise RuntimeError(f"read.lua answered {reply!r}, not a 304")
            finished()

        call.addCallback(check)

    results["txredisapi"] = await _measure("txredisapi", calls, depth, evalsha)
    await client.disconnect()

    threads = ThreadPool(minthreads=1, maxthreads=depth, name="bench")
    threads.start()

    def hop(finished: Callable[[], None]) -> None:
        deferToThreadPool(reactor, threads, lambda: None).addCallback(lambda _: finished())

    results["thread hop"] = await _measure("thread hop", calls, depth, hop)
    threads.stop()
    piped.close()
    connections.stop()
    timer.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--pool-size", type=int, default=4, help="redis.pool_size")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    outcome: dict[str, Any] = {}

    with RedisServer() as redis:

        def run() -> None:
            task = defer.ensureDeferred(_run(redis, args.calls, args.depth, args.pool_size))
            task.addCallback(outcome.update)
            task.addErrback(lambda failure: outcome.setdefault("error", failure.getTraceback()))
            task.addBoth(lambda _: reactor.stop())

        reactor.callWhenRunning(run)
        reactor.run()
    if "error" in outcome:
        print(outcome["error"], file=sys.stderr)
        return 1
    if args.json is not None:
        args.json.write_text(
            json.dumps({"calls": args.calls, "depth": args.depth, "results": outcome})
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
