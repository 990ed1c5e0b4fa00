"""The load generator: a lean HTTP/1.1 client in its own process, printing JSON results.

Runs as ``python bench/loadgen.py MODE ...`` (a separate process from the orchestrator, so that
the two never share a GIL) and prints one JSON object on stdout. Modes:

- ``raw``: one operation (``create``, ``get304``, ``get200``, ``put`` or ``trivial``) as fast
  as possible over ``--concurrency`` keep-alive connections, one request in flight on each,
  for ``--warmup`` then ``--duration`` seconds; only requests started after the warm-up
  count. Sessions it needs are created before and deleted after the run, outside the window.
- ``mix``: ``--logins`` concurrent QR logins; each is two clients on their own connection
  that poll once a second with ``If-None-Match`` and exchange ``--messages`` messages (``PUT``
  with ``If-Match`` of the last ETag seen), after which the first client deletes the session.
- ``fill`` / ``probe`` / ``drain``: create ``--sessions`` sessions (their paths go to
  ``--paths``), count how many of them are still alive, delete them.

The client is asyncio over raw sockets (`asyncio.Protocol`): each request is one pre-built
byte string and each response is parsed only as far as the status line, ``Content-Length``
(or chunked framing) and ``ETag``. ``--engine threads`` runs the raw mode with one thread and
one ``http.client`` connection per unit of concurrency instead, to compare the two; the
asyncio engine needs several times less CPU per request (see docs/performance.md).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from collections.abc import Sequence

CREATE_PATH = "/_matrix/client/unstable/org.matrix.msc4108/rendezvous"
TRIVIAL_PATH = "/_synapse/client/bench_trivial"
OPS = ("create", "get304", "get200", "put", "trivial")

_NO_BODY_STATUSES = frozenset({204, 304})


class ConnectionLost(Exception):
    """The server closed the connection, or sent something that is not HTTP/1.1."""


@dataclass
class Response:
    """What the benchmark needs of a response."""

    status: int
    etag: bytes
    body: bytes


def _parse(buf: bytearray, head_request: bool) -> tuple[Response, int] | None:
    """The first complete response in ``buf`` and its length, or None if incomplete."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    if buf[:5] != b"HTTP/":
        raise ConnectionLost(f"not an HTTP response: {bytes(buf[:40])!r}")
    status = int(buf[9:12])
    head = bytes(buf[: end + 2])
    lower = head.lower()
    etag = b""
    at = lower.find(b"\r\netag:")
    if at >= 0:
        stop = head.index(b"\r\n", at + 7)
        etag = head[at + 7 : stop].strip()
    start = end + 4
    if head_request or status in _NO_BODY_STATUSES or status < 200:
        return Response(status, etag, b""), start
    at = lower.find(b"\r\ncontent-length:")
    if at >= 0:
        length = int(head[at + 17 : head.index(b"\r\n", at + 17)])
        if len(buf) < start + length:
            return None
        return Response(status, etag, bytes(buf[start : start + length])), start + length
    if b"\r\ntransfer-encoding: chunked" in lower:
        return _parse_chunked(buf, start, status, etag)
    raise ConnectionLost("response without Content-Length or chunked encoding")


def _parse_chunked(
    buf: bytearray, pos: int, status: int, etag: bytes
) -> tuple[Response, int] | None:
    body = bytearray()
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
        pos = eol + 2
        if size == 0:
            # No trailers are ever sent here: the final CRLF follows at once.
            if len(buf) < pos + 2:
                return None
            return Response(status, etag, bytes(body)), pos + 2
        if len(buf) < pos + size + 2:
            return None
        body += buf[pos : pos + size]
        pos += size + 2


class _Protocol(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[Response] | None = None
        self.head_request = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        try:
            parsed = _parse(self.buf, self.head_request)
        except (ConnectionLost, ValueError) as exc:
            waiter.set_exception(ConnectionLost(str(exc)))
            return
        if parsed is not None:
            response, used = parsed
            del self.buf[:used]
            self.waiter = None
            waiter.set_result(response)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionLost(str(exc or "connection closed")))


class Client:
    """An HTTP/1.1 client on one keep-alive connection; reconnects after a failure."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._protocol: _Protocol | None = None
        self._loop = asyncio.get_running_loop()

    async def _connected(self) -> _Protocol:
        protocol = self._protocol
        if protocol is None or protocol.closed:
            _, protocol = await self._loop.create_connection(_Protocol, self.host, self.port)
            self._protocol = protocol
        return protocol

    async def send(self, raw: bytes, *, head: bool = False) -> Response:
        """Sends one pre-built request and waits for its whole response."""
        protocol = await self._connected()
        waiter: asyncio.Future[Response] = self._loop.create_future()
        protocol.waiter = waiter
        protocol.head_request = head
        assert protocol.transport is not None
        protocol.transport.write(raw)
        try:
            return await waiter
        except ConnectionLost:
            self.close()
            raise

    def close(self) -> None:
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
        self._protocol = None


def build_request(
    method: str, host: str, path: str, headers: Sequence[tuple[str, str]] = (), body: bytes = b""
) -> bytes:
    """A complete HTTP/1.1 request as bytes."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers]
    if body or method in ("POST", "PUT"):
        lines += ["Content-Type: text/plain", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def payload(size: int, tag: str = "") -> bytes:
    """``size`` bytes of base64-looking text, starting with ``tag`` (unique payloads keep the
    built-in's payload-hash ETags apart)."""
    unit = b"QmVuY2htYXJrIHBheWxvYWQgZm9yIE1TQzQxMDggcmVuZGV6dm91cy4="
    text = (tag.encode() + unit * (size // len(unit) + 1))[:size]
    return text


def session_path(create_body: bytes) -> str:
    """The path of the session URL in a create response."""
    url: str = json.loads(create_body)["url"]
    return urlsplit(url).path


# -- statistics -----------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of sorted values (0 for none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, round(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass
class Tally:
    """Latencies (seconds) and status counts of the measured requests."""

    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    failures: list[str] = field(default_factory=list)
    #: Every response, warm-up included (for the client's CPU per request).
    total: int = 0

    def add(self, status: int, latency: float, ok: bool) -> None:
        self.latencies.append(latency)
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if not ok:
            self.errors += 1

    def fail(self, why: str) -> None:
        self.errors += 1
        self.statuses[0] = self.statuses.get(0, 0) + 1
        if len(self.failures) < 5:
            self.failures.append(why)

    def summary(self, elapsed: float) -> dict[str, object]:
        ordered = sorted(self.latencies)
        return {
            "requests": len(ordered),
            "errors": self.errors,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "failures": self.failures,
            "elapsed_s": elapsed,
            "rps": len(ordered) / elapsed if elapsed > 0 else 0.0,
            "p50_ms": percentile(ordered, 0.50) * 1000,
            "p99_ms": percentile(ordered, 0.99) * 1000,
            "max_ms": (ordered[-1] if ordered else 0.0) * 1000,
        }


# -- raw throughput -------------------------------------------------------------------------

_EXPECTED = {"create": 201, "get304": 304, "get200": 200, "put": 202, "trivial": 200}


@dataclass
class Target:
    """Where the server is."""

    host: str
    port: int

    @property
    def authority(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, base_url: str) -> Target:
        parts = urlsplit(base_url)
        return cls(parts.hostname or "127.0.0.1", parts.port or 80)


async def _create(client: Client, target: Target, body: bytes) -> tuple[str, bytes]:
    response = await client.send(build_request("POST", target.authority, CREATE_PATH, body=body))
    if response.status != 201:
        raise RuntimeError(f"create answered {response.status}: {response.body[:200]!r}")
    return session_path(response.body), response.etag


async def _delete_all(target: Target, paths: Sequence[str], concurrency: int) -> dict[int, int]:
    """Deletes every path; counts of the statuses (404 for a session already gone)."""
    statuses: dict[int, int] = {}
    queue = list(reversed(paths))

    async def worker() -> None:
        client = Client(target.host, target.port)
        try:
            while queue:
                path = queue.pop()
                try:
                    response = await client.send(build_request("DELETE", target.authority, path))
                    status = response.status
                except ConnectionLost:
                    status = 0
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            client.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


async def _raw_worker(
    client: Client,
    request: bytes,
    expected: int,
    tally: Tally,
    window: tuple[float, float],
    created: list[bytes] | None,
) -> None:
    measure_from, until = window
    clock = time.perf_counter
    while True:
        started = clock()
        if started >= until:
            return
        try:
            response = await client.send(request)
        except ConnectionLost as exc:
            if started >= measure_from:
                tally.fail(str(exc))
            continue
        tally.total += 1
        if started >= measure_from:
            tally.add(response.status, clock() - started, response.status == expected)
        if created is not None and response.status == 201:
            created.append(response.body)


def _mark(name: str) -> None:
    sys.stdout.write(f"#window {name}\n")
    sys.stdout.flush()


async def run_raw(
    target: Target,
    op: str,
    concurrency: int,
    warmup: float,
    duration: float,
    size: int,
) -> dict[str, object]:
    body = payload(size)
    clients = [Client(target.host, target.port) for _ in range(concurrency)]
    sessions: list[str] = []
    requests: list[bytes] = []
    authority = target.authority
    for index, client in enumerate(clients):
        if op == "create":
            requests.append(build_request("POST", authority, CREATE_PATH, body=body))
            continue
        if op == "trivial":
            requests.append(build_request("GET", authority, TRIVIAL_PATH))
            continue
        path, etag = await _create(client, target, payload(size, f"raw{index}-"))
        sessions.append(path)
        if op == "get304":
            requests.append(
                build_request("GET", authority, path, [("If-None-Match", etag.decode())])
            )
        elif op == "get200":
            requests.append(build_request("GET", authority, path))
        else:
            requests.append(build_request("PUT", authority, path, [("If-Match", "*")], body))
    created: list[bytes] | None = [] if op == "create" else None
    tally = Tally()
    cpu_start = time.process_time()
    start = time.perf_counter()
    window = (start + warmup, start + warmup + duration)
    # Tell the orchestrator when the measured window starts and ends (it reads the
    # server's CPU time then).
    loop = asyncio.get_running_loop()
    loop.call_later(warmup, _mark, "start")
    loop.call_later(warmup + duration, _mark, "end")
    await asyncio.gather(
        *(
            _raw_worker(client, request, _EXPECTED[op], tally, window, created)
            for client, request in zip(clients, requests, strict=True)
        )
    )
    finished = time.perf_counter()
    cpu = time.process_time() - cpu_start
    for client in clients:
        client.close()
    # Requests started in the window; the last ones end a little after it.
    elapsed = max(finished, window[1]) - window[0]
    result = tally.summary(elapsed)
    result["client_cpu_s"] = cpu
    result["client_cpu_per_request_us"] = cpu / tally.total * 1e6 if tally.total else 0.0
    if created is not None:
        sessions = [session_path(body) for body in created]
    if sessions:
        result["cleanup"] = await _delete_all(target, sessions, min(concurrency * 2, 32))
    return result


def run_raw_threads(
    target: Target, op: str, concurrency: int, warmup: float, duration: float, size: int
) -> dict[str, object]:
    """The raw mode with ``http.client`` in threads (``trivial`` only: to compare engines)."""
    if op != "trivial":
        raise SystemExit("--engine threads is only for comparing clients: use --op trivial")
    tally = Tally()
    lock = threading.Lock()
    start = time.perf_counter()
    measure_from, until = start + warmup, start + warmup + duration

    def worker() -> None:
        conn = http.client.HTTPConnection(target.host, target.port, timeout=10)
        clock = time.perf_counter
        local: list[tuple[int, float]] = []
        while True:
            started = clock()
            if started >= until:
                break
            conn.request("GET", TRIVIAL_PATH)
            response = conn.getresponse()
            response.read()
            local.append((response.status, clock() - started if started >= measure_from else -1))
        conn.close()
        with lock:
            for status, latency in local:
                tally.total += 1
                if latency >= 0:
                    tally.add(status, latency, status == 200)

    cpu_start = time.process_time()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    cpu = time.process_time() - cpu_start
    result = tally.summary(max(time.perf_counter(), until) - measure_from)
    result["client_cpu_s"] = cpu
    result["client_cpu_per_request_us"] = cpu / tally.total * 1e6 if tally.total else 0.0
    return result


# -- the realistic mix ----------------------------------------------------------------------


async def _login(
    target: Target,
    number: int,
    messages: int,
    interval: float,
    size: int,
    tally: Tally,
    deadline: float,
) -> bool:
    """One QR login: device A creates, device B answers, they alternate ``messages`` PUTs."""
    authority = target.authority
    a, b = Client(target.host, target.port), Client(target.host, target.port)
    clock = time.perf_counter
    state: dict[str, object] = {"sent": 0, "done": False}

    async def timed(client: Client, raw: bytes, ok: tuple[int, ...]) -> Response | None:
        started = clock()
        try:
            response = await client.send(raw)
        except ConnectionLost as exc:
            tally.fail(f"login {number}: {exc}")
            return None
        tally.add(response.status, clock() - started, response.status in ok)
        if response.status not in ok:
            if len(tally.failures) < 5:
                tally.failures.append(
                    f"login {number}: {raw.split(b' ', 2)[:2]!r} answered {response.status}"
                )
            return None
        return response

    def message(sent: int) -> bytes:
        return payload(size, f"login{number}-msg{sent}-")

    try:
        create = build_request("POST", authority, CREATE_PATH, body=message(0))
        created = await timed(a, create, (201,))
        if created is None:
            return False
        path = session_path(created.body)

        async def device(client: Client, me: int, etag: bytes) -> bool:
            """Polls once a second; replies when it is its turn (message k is sent by the
            device k % 2: B sends the odd ones, A the even ones). A deletes at the end."""
            while clock() < deadline:
                tick = clock()
                headers = [("If-None-Match", etag.decode())] if etag else []
                polled = await timed(
                    client, build_request("GET", authority, path, headers), (200, 304)
                )
                if polled is None:
                    return False
                if polled.status == 200:
                    etag = polled.etag
                    sent = int(polled.body.split(b"-msg", 1)[1].split(b"-", 1)[0])
                    if sent == messages:
                        # Read the last message: the login is complete.
                        deleted = await timed(
                            client, build_request("DELETE", authority, path), (204,)
                        )
                        state["done"] = deleted is not None
                        return deleted is not None
                    if (sent + 1) % 2 == me:
                        put = build_request(
                            "PUT", authority, path, [("If-Match", etag.decode())], message(sent + 1)
                        )
                        written = await timed(client, put, (202,))
                        if written is None:
                            return False
                        etag = written.etag
                        if sent + 1 == messages:
                            return True  # Sent the last message: the peer deletes.
                await asyncio.sleep(max(0.0, tick + interval - clock()))
            return False

        # B has just scanned the QR code: it has no ETag yet. A already knows its own.
        results = await asyncio.gather(device(a, 0, created.etag), device(b, 1, b""))
        return all(results) and bool(state["done"])
    finally:
        a.close()
        b.close()


async def run_mix(
    target: Target, logins: int, messages: int, interval: float, size: int, timeout: float
) -> dict[str, object]:
    tally = Tally()
    start = time.perf_counter()
    deadline = start + timeout
    rng = random.Random(4108)

    async def staggered(number: int) -> bool:
        # Logins start spread over the first poll interval, as real ones would.
        await asyncio.sleep(rng.random() * interval)
        return await _login(target, number, messages, interval, size, tally, deadline)

    results = await asyncio.gather(*(staggered(n) for n in range(logins)))
    elapsed = time.perf_counter() - start
    summary = tally.summary(elapsed)
    summary["logins"] = logins
    summary["completed"] = sum(results)
    return summary


# -- many live sessions ---------------------------------------------------------------------


async def run_fill(
    target: Target, sessions: int, concurrency: int, size: int, paths_file: Path
) -> dict[str, object]:
    paths: list[str] = []
    statuses: dict[int, int] = {}
    remaining = [sessions]
    start = time.perf_counter()

    async def worker(index: int) -> None:
        client = Client(target.host, target.port)
        try:
            while remaining[0] > 0:
                remaining[0] -= 1
                number = remaining[0]
                body = payload(size, f"fill{number}-")
                raw = build_request("POST", target.authority, CREATE_PATH, body=body)
                try:
                    response = await client.send(raw)
                except ConnectionLost:
                    statuses[0] = statuses.get(0, 0) + 1
                    continue
                statuses[response.status] = statuses.get(response.status, 0) + 1
                if response.status == 201:
                    paths.append(session_path(response.body))
        finally:
            client.close()

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    paths_file.write_text("\n".join(paths), encoding="ascii")
    return {
        "created": len(paths),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "elapsed_s": time.perf_counter() - start,
    }


async def run_probe(target: Target, paths: Sequence[str], concurrency: int) -> dict[str, object]:
    """Counts live sessions among ``paths`` (304 to ``If-None-Match: *``; 404 when gone)."""
    statuses: dict[int, int] = {}
    queue = list(paths)

    async def worker() -> None:
        client = Client(target.host, target.port)
        try:
            while queue:
                path = queue.pop()
                raw = build_request("GET", target.authority, path, [("If-None-Match", "*")])
                try:
                    status = (await client.send(raw)).status
                except ConnectionLost:
                    status = 0
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            client.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    live = sum(count for status, count in statuses.items() if status in (200, 304))
    return {"live": live, "statuses": {str(k): v for k, v in sorted(statuses.items())}}


# -- command line ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("raw", "mix", "fill", "probe", "drain"))
    parser.add_argument("--base", required=True, help="the server's base URL")
    parser.add_argument("--op", choices=OPS, default="get304")
    parser.add_argument("--engine", choices=("asyncio", "threads"), default="asyncio")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--payload", type=int, default=4096, help="body size in bytes")
    parser.add_argument("--logins", type=int, default=50)
    parser.add_argument("--messages", type=int, default=5)
    parser.add_argument("--interval", type=float, default=1.0, help="poll interval (mix)")
    parser.add_argument("--timeout", type=float, default=60.0, help="mix deadline, seconds")
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--paths", type=Path, help="session paths (fill writes, others read)")
    args = parser.parse_args(argv)
    target = Target.parse(args.base)

    result: dict[str, object]
    if args.mode == "raw" and args.engine == "threads":
        result = run_raw_threads(
            target, args.op, args.concurrency, args.warmup, args.duration, args.payload
        )
    elif args.mode == "raw":
        result = asyncio.run(
            run_raw(target, args.op, args.concurrency, args.warmup, args.duration, args.payload)
        )
    elif args.mode == "mix":
        result = asyncio.run(
            run_mix(target, args.logins, args.messages, args.interval, args.payload, args.timeout)
        )
    else:
        if args.paths is None:
            parser.error(f"{args.mode} needs --paths")
        if args.mode == "fill":
            result = asyncio.run(
                run_fill(target, args.sessions, args.concurrency, args.payload, args.paths)
            )
        else:
            paths = [p for p in args.paths.read_text(encoding="ascii").splitlines() if p]
            if args.mode == "probe":
                result = asyncio.run(run_probe(target, paths, args.concurrency))
            else:
                statuses = asyncio.run(_delete_all(target, paths, args.concurrency))
                result = {"statuses": {str(k): v for k, v in sorted(statuses.items())}}
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
