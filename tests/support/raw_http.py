"""Raw-socket HTTP/1.1 for the abuse tests: the test chooses every byte sent, and every read
is bounded by a timeout, so a server that never answers fails the test instead of hanging it.

`http_client` goes through `http.client`, which refuses to send malformed requests and
cannot pick the client's source address. Here requests are plain bytes (`build_request`
helps to write well-formed ones), sent from any loopback address: Linux routes all of
127.0.0.0/8 to the loopback interface, so a socket bound to ``127.0.0.2`` reaches a server on
127.0.0.1 and the server sees 127.0.0.2 as the client.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from support.http_client import CREATE_PATH

if TYPE_CHECKING:
    from support.http_client import HasBaseUrl

#: Longest wait for the next bytes of an answer.
TIMEOUT = 5.0


Headers = Sequence[tuple[str, str]]


@dataclass(frozen=True, repr=False)
class RawResponse:
    """One parsed HTTP response."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of the header ``name`` (case-insensitive), or None."""
        values = self.headers_all(name)
        return values[0] if values else None

    def headers_all(self, name: str) -> list[str]:
        lname = name.lower()
        return [v for k, v in self.headers if k.lower() == lname]

    def json_dict(self) -> dict[str, object]:
        """The body as a JSON object (fails the test if it is anything else)."""
        value = json.loads(self.body)
        assert isinstance(value, dict), f"expected a JSON object, got {self.body!r}"
        return value

    def errcode(self) -> object:
        """The ``errcode`` of a JSON error body, or None."""
        try:
            return self.json_dict().get("errcode")
        except (ValueError, AssertionError):
            return None

    def __repr__(self) -> str:
        headers = "".join(f"\n  {k}: {v}" for k, v in self.headers)
        return f"<HTTP {self.status} {self.reason}{headers}\n  body: {self.body[:300]!r}>"


@dataclass(frozen=True, repr=False)
class Exchange:
    """Everything that happened on one connection after the request was sent."""

    #: Every byte received.
    data: bytes
    #: The server closed (or reset) the connection.
    closed: bool
    #: Nothing more arrived within the timeout while the connection was still open.
    timed_out: bool
    #: Seconds from the end of sending to the end of reading.
    elapsed: float
    #: The responses parsed from ``data``.
    responses: list[RawResponse] = field(default_factory=list)

    @property
    def response(self) -> RawResponse:
        """The one response on this connection (fails the test unless there is exactly one)."""
        assert len(self.responses) == 1, f"expected one response, got {self!r}"
        return self.responses[0]

    @property
    def status(self) -> int | None:
        """The status of the first response, or None if nothing parseable arrived."""
        return self.responses[0].status if self.responses else None

    def __repr__(self) -> str:
        state = "closed" if self.closed else "timed out" if self.timed_out else "open"
        return (
            f"<Exchange {state} after {self.elapsed:.2f}s, {len(self.data)} bytes: "
            f"{self.data[:600]!r}>"
        )


def port_of(server: HasBaseUrl | int) -> int:
    """The port of a server (anything with a ``base_url``) or the port itself."""
    if isinstance(server, int):
        return server
    port = urlsplit(server.base_url).port
    assert port is not None, server.base_url
    return port


def target_of(url: str) -> str:
    """The request target (path and query) of an absolute or relative URL."""
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def build_request(
    method: str,
    target: str | bytes,
    headers: Headers = (),
    body: bytes | None = None,
    *,
    content_length: bool = True,
    close: bool = True,
) -> bytes:
    """The bytes of one HTTP/1.1 request.

    Sends ``Host``, the given ``headers`` in order, ``Content-Length: len(body)`` when a body
    is given (unless ``content_length`` is false) and ``Connection: close`` (unless ``close``
    is false), then the body as is.
    """
    raw_target = target.encode() if isinstance(target, str) else target
    lines = [method.encode() + b" " + raw_target + b" HTTP/1.1", b"Host: 127.0.0.1"]
    lines += [f"{name}: {value}".encode() for name, value in headers]
    if body is not None and content_length:
        lines.append(f"Content-Length: {len(body)}".encode())
    if close:
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")


def connect(
    server: HasBaseUrl | int, *, source: str | None = None, timeout: float = TIMEOUT
) -> socket.socket:
    """A connection to the server on 127.0.0.1, from the loopback address ``source``."""
    return socket.create_connection(
        ("127.0.0.1", port_of(server)),
        timeout=timeout,
        source_address=(source, 0) if source else None,
    )


def read_until_close(sock: socket.socket, timeout: float = TIMEOUT) -> tuple[bytes, bool, bool]:
    """Reads until the server closes, or until nothing arrives for ``timeout`` seconds.

    Returns the bytes, whether the server closed, and whether the read timed out.
    """
    sock.settimeout(timeout)
    chunks: list[bytes] = []
    while True:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return b"".join(chunks), False, True
        except (ConnectionResetError, BrokenPipeError):
            return b"".join(chunks), True, False
        if not chunk:
            return b"".join(chunks), True, False
        chunks.append(chunk)


def exchange(
    server: HasBaseUrl | int,
    data: bytes,
    *,
    source: str | None = None,
    timeout: float = TIMEOUT,
    head: bool = False,
) -> Exchange:
    """Sends ``data`` on a fresh connection and reads until close or ``timeout``.

    ``head``: the request was a HEAD, so the response has no body whatever it declares.
    """
    with connect(server, source=source, timeout=timeout) as sock:
        # The server may give up on a request before reading all of it; what it said
        # first is still worth reading.
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            sock.sendall(data)
        started = time.monotonic()
        received, closed, timed_out = read_until_close(sock, timeout)
        elapsed = time.monotonic() - started
    return Exchange(received, closed, timed_out, elapsed, parse_responses(received, head=head))


def pipeline(
    server: HasBaseUrl | int,
    requests: Sequence[bytes],
    *,
    source: str | None = None,
    timeout: float = TIMEOUT,
) -> list[RawResponse]:
    """Sends several requests at once on one keep-alive connection (HTTP/1.1 pipelining;
    only the last one may say ``Connection: close``) and returns their responses, in order.

    The server gets them back to back, with no round trip in between: the fastest burst a
    single client can make.
    """
    result = exchange(server, b"".join(requests), source=source, timeout=timeout)
    assert result.closed, result
    assert not result.timed_out, result
    assert len(result.responses) == len(requests), result
    return result.responses


def parse_responses(data: bytes, *, head: bool = False) -> list[RawResponse]:
    """Every complete response in ``data``; a response with neither a length nor chunked
    framing takes the rest of ``data``."""
    responses: list[RawResponse] = []
    rest = data
    while rest:
        header_block, sep, after = rest.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = header_block.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            break
        status = int(parts[1])
        reason = parts[2] if len(parts) > 2 else ""
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
        names = {k.lower(): v for k, v in headers}
        body: bytes
        if head or status in (204, 304) or 100 <= status < 200:
            body, rest = b"", after
        elif "chunked" in names.get("transfer-encoding", "").lower():
            body, rest = _dechunk(after)
        elif "content-length" in names and names["content-length"].isdigit():
            length = int(names["content-length"])
            body, rest = after[:length], after[length:]
        else:
            body, rest = after, b""
        responses.append(RawResponse(status, reason, headers, body))
    return responses


def _dechunk(data: bytes) -> tuple[bytes, bytes]:
    """The decoded body of a chunked message and the bytes after it."""
    body = b""
    rest = data
    while True:
        size_line, sep, rest = rest.partition(b"\r\n")
        if not sep:
            return body, b""
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            # Skip the (empty) trailer section.
            _, _, rest = rest.partition(b"\r\n")
            return body, rest
        body += rest[:size]
        rest = rest[size + 2 :]


def request(
    server: HasBaseUrl | int,
    method: str,
    url: str,
    *,
    headers: Headers = (),
    body: bytes | None = None,
    source: str | None = None,
    timeout: float = TIMEOUT,
) -> RawResponse:
    """One well-formed request (``Connection: close``) and its one response."""
    data = build_request(method, target_of(url), headers, body)
    result = exchange(server, data, source=source, timeout=timeout, head=method == "HEAD")
    assert result.closed, f"{method} {url}: {result!r}"
    assert not result.timed_out, f"{method} {url}: {result!r}"
    return result.response


def create(
    server: HasBaseUrl | int,
    body: bytes = b"hello",
    *,
    headers: Headers = (("Content-Type", "text/plain"),),
    source: str | None = None,
    timeout: float = TIMEOUT,
) -> RawResponse:
    """POST to the standard create path, re-POSTing to the ``Location`` of a 307
    (delegation mode) from the same source address, as clients do."""
    resp = request(
        server, "POST", CREATE_PATH, headers=headers, body=body, source=source, timeout=timeout
    )
    if resp.status == 307:
        location = resp.header("Location")
        assert location, f"307 without Location: {resp!r}"
        resp = request(
            server, "POST", location, headers=headers, body=body, source=source, timeout=timeout
        )
    return resp


def create_url(
    server: HasBaseUrl | int,
    body: bytes = b"hello",
    *,
    source: str | None = None,
    timeout: float = TIMEOUT,
) -> str:
    """Creates a session (asserting 201) and returns its absolute URL."""
    resp = create(server, body, source=source, timeout=timeout)
    assert resp.status == 201, f"create failed: {resp!r}"
    url = resp.json_dict().get("url")
    assert isinstance(url, str), resp
    return url
