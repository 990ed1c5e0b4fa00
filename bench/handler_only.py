"""The handlers alone, without Synapse or any network: ours against Synapse's own.

Both are driven in this one Python process with the same in-memory fake Twisted requests
(`FakeRequest`), so the figures are the cost of the handler call itself: reading the request
off the Twisted object, the rendezvous logic, and writing the response back to it. Each
operation is timed over many calls with ``time.perf_counter_ns``; the result is the median of
several rounds, in nanoseconds per call.

- ours: ``synapse_rendezvous._core.RendezvousHandler(config, public_baseurl, mode="takeover")``
  with ``.handle(request)``, on the memory store with rate limits off (as in the HTTP runs);
- Synapse's: ``synapse.synapse_rust.rendezvous.RendezvousHandler(homeserver)``, built on a
  minimal fake homeserver (`FakeHomeServer`: a real parsed ``HomeServerConfig`` and a clock
  with ``time_msec`` and ``looping_call``), with ``handle_post``/``handle_get``/``handle_put``.

Run with ``python -m bench.handler_only [--json FILE]``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from twisted.internet.address import IPv4Address
from twisted.web.http_headers import Headers

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

BASEURL = "http://127.0.0.1:8008/"
CREATE_URI = b"/_matrix/client/unstable/org.matrix.msc4108/rendezvous"
SESSION_PREFIX = "/_synapse/client/rendezvous/"
PAYLOAD = (b"QmVuY2htYXJrIHBheWxvYWQgZm9yIE1TQzQxMDggcmVuZGV6dm91cy4=" * 80)[:4096]
OPS = ("create", "get304", "get200", "put4k")
IMPLS = ("ours", "synapse")


class CheapHeaders:
    """Request or response headers whose methods are C builtins (a dict's), to tell apart
    what a handler costs by itself from what Twisted's ``Headers`` methods, written in
    Python, cost it (see `measure`)."""

    __slots__ = ("_raw", "addRawHeader", "getAllRawHeaders", "setRawHeaders")

    def __init__(self, raw: dict[bytes, list[bytes]] | None = None) -> None:
        self._raw: dict[Any, Any] = dict(raw or {})
        self.getAllRawHeaders = self._raw.items
        self.setRawHeaders = self._raw.__setitem__
        self.addRawHeader = self._raw.__setitem__

    def getRawHeaders(self, name: bytes) -> list[bytes] | None:
        for key in (name.lower(), name.lower().decode()):
            value = self._raw.get(key)
            if isinstance(value, bytes):
                return [value]
            if isinstance(value, list):
                return value
        return None


class FakeRequest:
    """The part of a Twisted ``Request`` both handlers use, in memory. With ``cheap``, its
    headers are `CheapHeaders` instead of Twisted's."""

    __slots__ = (
        "_disconnected",
        "code",
        "content",
        "finished",
        "method",
        "requestHeaders",
        "responseHeaders",
        "uri",
        "written",
    )

    _ADDRESS = IPv4Address("TCP", "127.0.0.1", 40000)

    def __init__(
        self,
        method: bytes,
        uri: bytes,
        headers: dict[bytes, bytes],
        body: bytes = b"",
        *,
        cheap: bool = False,
    ) -> None:
        self.method = method
        self.uri = uri
        raw = {name: [value] for name, value in headers.items()}
        self.requestHeaders: Headers | CheapHeaders = CheapHeaders(raw) if cheap else Headers(raw)
        self.content = io.BytesIO(body)
        self.responseHeaders: Headers | CheapHeaders = CheapHeaders() if cheap else Headers()
        self.code = 200
        self.written: list[bytes] = []
        self.finished = False
        self._disconnected = False

    def getClientAddress(self) -> IPv4Address:
        return self._ADDRESS

    def setResponseCode(self, code: int, message: bytes | None = None) -> None:
        self.code = code

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def finish(self) -> None:
        self.finished = True

    def header(self, name: bytes) -> bytes:
        values = self.responseHeaders.getRawHeaders(name)
        if not values:
            raise AssertionError(f"no {name!r} header in the {self.code} response")
        return values[0]


def upload(
    method: bytes, uri: bytes, extra: dict[bytes, bytes] | None = None, *, cheap: bool = False
) -> FakeRequest:
    headers = {b"Content-Type": b"text/plain", b"Content-Length": str(len(PAYLOAD)).encode()}
    headers.update(extra or {})
    return FakeRequest(method, uri, headers, PAYLOAD, cheap=cheap)


# -- Synapse's handler ----------------------------------------------------------------------


class _FakeClock:
    def time_msec(self) -> int:
        return int(time.time() * 1000)

    def looping_call(self, f: Callable[[], object], msec: float, *args: object) -> None:
        # Its periodic eviction would run on the reactor; here nothing runs between calls,
        # and its create path evicts by itself when it reaches twice its capacity.
        pass


def load_config() -> Any:
    """A real ``HomeServerConfig``, parsed from a config generated the way `SynapseServer` does
    for a real Synapse (no Synapse process is started). Synapse's handler reads several
    sections of it, which differ between Synapse versions, so no hand-made fake is used."""
    from synapse.config.homeserver import HomeServerConfig

    from devtools.synapse import SynapseServer

    server = SynapseServer(mode="builtin", port=int(urlsplit(BASEURL).port or 8008))
    try:
        server.write_config()
        args: list[str] = []
        for path in server.config_paths:
            args += ["-c", str(path)]
        return HomeServerConfig.load_config("bench", args)
    finally:
        server.stop()


class FakeHomeServer:
    """What ``synapse.synapse_rust.rendezvous.RendezvousHandler`` reads from a HomeServer:
    ``config`` (it reads ``config.server.public_baseurl`` among others) and ``get_clock()``."""

    def __init__(self) -> None:
        self.config = load_config()
        self._clock = _FakeClock()

    def get_clock(self) -> _FakeClock:
        return self._clock


# -- the two implementations behind one interface ---------------------------------------------


class Impl(ABC):
    """Calls one handler; ``session_path`` and ``etag`` read a create's answer."""

    name: str

    @abstractmethod
    def create(self, request: FakeRequest) -> None: ...

    @abstractmethod
    def get(self, request: FakeRequest, session_id: str) -> None: ...

    @abstractmethod
    def put(self, request: FakeRequest, session_id: str) -> None: ...

    @abstractmethod
    def delete(self, request: FakeRequest, session_id: str) -> None: ...


class Ours(Impl):
    name = "ours"

    def __init__(self) -> None:
        from synapse_rendezvous import _core

        config = _core.parse_config({"rate_limit": {"enabled": False}, "capacity": 1_000_000})
        handler = _core.RendezvousHandler(config, BASEURL, mode="takeover", clock=time.time)
        self._handle = handler.handle

    def create(self, request: FakeRequest) -> None:
        self._handle(request)  # type: ignore[arg-type]

    def get(self, request: FakeRequest, session_id: str) -> None:
        self._handle(request)  # type: ignore[arg-type]

    put = get
    delete = get


class Synapse(Impl):
    name = "synapse"

    def __init__(self) -> None:
        from synapse.synapse_rust.rendezvous import RendezvousHandler

        # A fake HomeServer on purpose: only what the handler reads.
        handler: Any = RendezvousHandler(cast("Any", FakeHomeServer()))
        self._post = handler.handle_post
        self._get = handler.handle_get
        self._put = handler.handle_put
        self._delete = handler.handle_delete

    def create(self, request: FakeRequest) -> None:
        self._post(request)

    def get(self, request: FakeRequest, session_id: str) -> None:
        self._get(request, session_id)

    def put(self, request: FakeRequest, session_id: str) -> None:
        self._put(request, session_id)

    def delete(self, request: FakeRequest, session_id: str) -> None:
        self._delete(request, session_id)


def _create_session(impl: Impl) -> tuple[str, bytes]:
    request = upload(b"POST", CREATE_URI)
    impl.create(request)
    if request.code != 201:
        raise AssertionError(f"{impl.name}: create answered {request.code}")
    url = json.loads(b"".join(request.written))["url"]
    return url.rsplit("/", 1)[1], request.header(b"ETag")


def _delete(impl: Impl, session_id: str) -> None:
    request = FakeRequest(b"DELETE", (SESSION_PREFIX + session_id).encode(), {})
    # Synapse's handler raises NotFoundError (a 404) for a session it has already evicted.
    with contextlib.suppress(Exception):
        impl.delete(request, session_id)


# -- timing -----------------------------------------------------------------------------------


def _time_round(impl: Impl, op: str, calls: int, cheap: bool) -> tuple[float, float]:
    """Wall-clock and CPU ns per call of one round of ``calls`` calls; the requests are built
    before the clocks run."""
    expected = {"create": 201, "get304": 304, "get200": 200, "put4k": 202}[op]
    session_id, etag = _create_session(impl)
    uri = (SESSION_PREFIX + session_id).encode()
    if op == "create":
        requests = [upload(b"POST", CREATE_URI, cheap=cheap) for _ in range(calls)]
        call: Callable[[FakeRequest], None] = impl.create
    elif op == "get304":
        headers = {b"If-None-Match": etag}
        requests = [FakeRequest(b"GET", uri, headers, cheap=cheap) for _ in range(calls)]
        call = lambda r: impl.get(r, session_id)  # noqa: E731
    elif op == "get200":
        requests = [FakeRequest(b"GET", uri, {}, cheap=cheap) for _ in range(calls)]
        call = lambda r: impl.get(r, session_id)  # noqa: E731
    else:
        requests = [upload(b"PUT", uri, {b"If-Match": b"*"}, cheap=cheap) for _ in range(calls)]
        call = lambda r: impl.put(r, session_id)  # noqa: E731
    clock, cpu_clock = time.perf_counter_ns, time.process_time_ns
    cpu_started = cpu_clock()
    started = clock()
    for request in requests:
        call(request)
    elapsed = clock() - started
    cpu = cpu_clock() - cpu_started
    bad = [r.code for r in requests if r.code != expected or not r.finished]
    if bad:
        raise AssertionError(f"{impl.name} {op}: {len(bad)} answers were not {expected}: {bad[:5]}")
    # Leave no sessions behind, so that every round starts from the same state.
    if op == "create":
        for request in requests:
            url = json.loads(b"".join(request.written))["url"]
            _delete(impl, url.rsplit("/", 1)[1])
    _delete(impl, session_id)
    # The lambda's own call costs the same for both implementations (none for create).
    return elapsed / calls, cpu / calls


def measure(
    impls: Sequence[Impl], ops: Sequence[str], calls: int, rounds: int
) -> dict[str, dict[str, dict[str, float]]]:
    """``{op: {variant: figures}}``, the figures in ns per call: ``ns`` (wall clock, best
    round: the least disturbed by other processes), ``median_ns`` (wall clock) and ``cpu_ns``
    (CPU time, best round). The variants are each implementation's name, fed requests with
    Twisted's ``Headers`` (the real thing), and the same name with ``_cheap``, fed
    `CheapHeaders`: the difference is what Twisted's header methods cost the handler. Rounds
    of all variants alternate, so that a busy moment of the machine hits them all."""
    variants = [(impl, cheap) for impl in impls for cheap in (False, True)]

    def name(impl: Impl, cheap: bool) -> str:
        return impl.name + ("_cheap" if cheap else "")

    walls: dict[str, dict[str, list[float]]] = {
        op: {name(i, c): [] for i, c in variants} for op in ops
    }
    cpus: dict[str, dict[str, list[float]]] = {
        op: {name(i, c): [] for i, c in variants} for op in ops
    }
    for impl, cheap in variants:  # warm up caches and allocators
        for op in ops:
            _time_round(impl, op, min(calls, 200), cheap)
    for _ in range(rounds):
        for op in ops:
            for impl, cheap in variants:
                wall, cpu = _time_round(impl, op, calls, cheap)
                walls[op][name(impl, cheap)].append(wall)
                cpus[op][name(impl, cheap)].append(cpu)
    return {
        op: {
            variant: {
                "ns": min(values),
                "median_ns": statistics.median(values),
                "cpu_ns": min(cpus[op][variant]),
            }
            for variant, values in by_variant.items()
        }
        for op, by_variant in walls.items()
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args(argv)
    # Synapse's capacity is 100 sessions (it evicts the oldest beyond 200): rounds stay
    # below that except for create, where evicting is part of its real cost.
    results = measure([Ours(), Synapse()], OPS, args.calls, args.rounds)
    print(f"{'operation':<10} {'ours ns':>10} {'Synapse ns':>11} {'ratio':>7}   (wall, best round)")
    for op in OPS:
        ours, theirs = results[op]["ours"]["ns"], results[op]["synapse"]["ns"]
        print(f"{op:<10} {ours:>10.0f} {theirs:>11.0f} {ours / theirs:>6.2f}x")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"calls": args.calls, "rounds": args.rounds, "results": results}
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
