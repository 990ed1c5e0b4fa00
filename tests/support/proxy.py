"""A loopback reverse proxy for the tests that can be told to misbehave like real ones do.

`ReverseProxy` listens on 127.0.0.1 (a free port), forwards every request to one upstream
(``http://127.0.0.1:PORT/``) with `http.client`, and sends the answer back, optionally
transformed by its `Faults`:

- ``gzip``: compress every answer that has a body when the client accepts gzip, and weaken its
  ETag to ``W/"..."``, as nginx's ``gzip on`` does;
- ``strip_etag``: remove the ETag header;
- ``drop_cors``: remove every ``Access-Control-*`` header (preflights included);
- ``date_skew``: shift the Date header by this many seconds (as a proxy whose clock is off and
  that sets Date itself);
- ``drop_methods``: close the connection without answering requests with these methods;
- no fault: pass-through.

It can also answer ``/.well-known/matrix/client`` itself (``well_known``), for discovery, and
append the client's address to ``X-Forwarded-For`` (``forwarded_for``), as HAProxy's
``option forwardfor`` and nginx's ``$proxy_add_x_forwarded_for`` do.
Each connection carries one request (``Connection: close``), so no handler thread outlives
its request; `stop` waits for them. Use it as a context manager, or `start` and `stop`.
"""

from __future__ import annotations

import gzip
import http.client
import json
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from email.utils import format_datetime, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["Faults", "ReverseProxy", "Seen"]

UPSTREAM_TIMEOUT = 10.0
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


@dataclass(frozen=True)
class Faults:
    """How the proxy misbehaves; the default passes everything through unchanged."""

    gzip: bool = False
    strip_etag: bool = False
    drop_cors: bool = False
    date_skew: float = 0.0
    drop_methods: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Seen:
    """One request the proxy received, and the status it answered (0: dropped)."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    status: int

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


class _Server(ThreadingHTTPServer):
    # Join the handler threads on server_close(): each serves one request and ends.
    daemon_threads = False
    block_on_close = True

    def __init__(self, proxy: ReverseProxy) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.proxy = proxy


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep test output quiet

    def do_GET(self) -> None:
        self._handle()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_OPTIONS = do_PATCH = do_GET

    def _handle(self) -> None:
        proxy = self.server.proxy
        faults = proxy.faults
        self.close_connection = True
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        request_headers = tuple(self.headers.items())
        if self.command in faults.drop_methods:
            proxy._record(Seen(self.command, self.path, request_headers, 0))
            return  # close without answering
        if self.path == "/.well-known/matrix/client" and proxy.well_known is not None:
            status, document = 200, proxy.well_known
            if isinstance(document, int):
                status, document = document, {"errcode": "M_NOT_FOUND", "error": "Not found"}
            data = json.dumps(document).encode()
            # Recorded before answering, so that a client that has its answer finds it seen.
            proxy._record(Seen(self.command, self.path, request_headers, status))
            self._answer(status, "", [("Content-Type", "application/json")], data)
            return
        status, reason, headers, data = self._forward(body)
        headers, data = self._apply(faults, headers, data)
        proxy._record(Seen(self.command, self.path, request_headers, status))
        self._answer(status, reason, headers, data)

    def _forward(self, body: bytes | None) -> tuple[int, str, list[tuple[str, str]], bytes]:
        upstream = self.server.proxy.upstream
        if upstream is None:
            return 502, "Bad Gateway", [("Content-Type", "text/plain")], b"no upstream yet\n"
        parts = urlsplit(upstream)
        assert parts.hostname is not None
        connection = http.client.HTTPConnection(
            parts.hostname, parts.port or 80, timeout=UPSTREAM_TIMEOUT
        )
        try:
            connection.putrequest(
                self.command, self.path, skip_host=True, skip_accept_encoding=True
            )
            forwarded = self.server.proxy.forwarded_for
            for name, value in self.headers.items():
                if name.lower() in HOP_BY_HOP or name.lower() == "content-length":
                    continue
                if forwarded and name.lower() == "x-forwarded-for":
                    continue
                connection.putheader(name, value)
            if forwarded:
                chain = [*self.headers.get_all("X-Forwarded-For", []), self.client_address[0]]
                connection.putheader("X-Forwarded-For", ", ".join(chain))
            if body is not None:
                connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(body)
            response = connection.getresponse()
            data = response.read()
            headers = [(k, v) for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP]
            return response.status, response.reason, headers, data
        except OSError as error:
            return 502, "Bad Gateway", [("Content-Type", "text/plain")], f"{error}\n".encode()
        finally:
            connection.close()

    def _apply(
        self, faults: Faults, headers: list[tuple[str, str]], data: bytes
    ) -> tuple[list[tuple[str, str]], bytes]:
        accepts_gzip = "gzip" in (self.headers.get("Accept-Encoding") or "").lower()
        encoded = any(k.lower() == "content-encoding" for k, _ in headers)
        if faults.gzip and data and accepts_gzip and not encoded:
            data = gzip.compress(data)
            headers = [
                (k, f"W/{v}" if k.lower() == "etag" and not v.startswith("W/") else v)
                for k, v in headers
                if k.lower() != "content-length"
            ]
            headers += [("Content-Encoding", "gzip"), ("Vary", "Accept-Encoding")]
            headers.append(("Content-Length", str(len(data))))
        if faults.strip_etag:
            headers = [(k, v) for k, v in headers if k.lower() != "etag"]
        if faults.drop_cors:
            headers = [(k, v) for k, v in headers if not k.lower().startswith("access-control-")]
        if faults.date_skew:
            headers = [
                (k, _shift(v, faults.date_skew) if k.lower() == "date" else v) for k, v in headers
            ]
        return headers, data

    def _answer(
        self, status: int, reason: str, headers: list[tuple[str, str]], data: bytes
    ) -> None:
        self.send_response_only(status, reason)
        has_length = any(k.lower() == "content-length" for k, _ in headers)
        for name, value in headers:
            self.send_header(name, value)
        bodiless = self.command == "HEAD" or status in (204, 304) or 100 <= status < 200
        if not has_length and not bodiless:
            self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        if not bodiless:
            self.wfile.write(data)


def _shift(value: str, seconds: float) -> str:
    try:
        moved = parsedate_to_datetime(value) + timedelta(seconds=seconds)
    except (TypeError, ValueError):
        return value
    return format_datetime(moved, usegmt=True)


class ReverseProxy:
    """A reverse proxy on 127.0.0.1 in a background thread (see the module docstring).

    ``upstream`` and ``faults`` may be changed while it runs; requests are answered with
    502 until ``upstream`` is set.
    """

    def __init__(
        self,
        upstream: str | None = None,
        faults: Faults | None = None,
        *,
        forwarded_for: bool = False,
    ) -> None:
        self.upstream = upstream
        self.faults = faults or Faults()
        self.forwarded_for = forwarded_for
        #: Answered at ``/.well-known/matrix/client`` instead of forwarding, when not None:
        #: a JSON document (200), or a status code to answer with an error.
        self.well_known: dict[str, object] | int | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._seen: list[Seen] = []

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the proxy is not running")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def seen(self) -> list[Seen]:
        """The requests received so far, oldest first."""
        with self._lock:
            return list(self._seen)

    def clear(self) -> None:
        """Forget the requests seen so far."""
        with self._lock:
            self._seen.clear()

    def _record(self, seen: Seen) -> None:
        with self._lock:
            self._seen.append(seen)

    def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("the proxy is already running")
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"test-proxy-{self.port}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, wait for the handler threads and close the socket. Idempotent."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=10)

    def __enter__(self) -> ReverseProxy:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
