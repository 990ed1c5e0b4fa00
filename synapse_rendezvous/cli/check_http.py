"""The HTTP client of ``check``: standard library only, one connection per request.

All the requests of one `HttpClient` share one deadline, ``timeout`` seconds from its creation:
the DNS lookup, the connection, the TLS handshake, sending and every single read get only the
time that is left, so a server that trickles its answer cannot stretch the run. Each request
sends exactly the headers it is given (plus ``Host``, ``User-Agent`` and a ``Content-Length``
for a body) and reads the whole answer, at most `MAX_BODY_BYTES` of it, and at most
`MAX_DECODED_BYTES` once ``gzip`` or ``deflate`` is undone. It never follows redirects itself;
`redirect_target` says which ones the callers may follow.

A request that gets no usable HTTP answer (DNS, refused, TLS, time limit, a connection closed
midway, an answer too large for a rendezvous) raises `NetworkError`, whose message explains in
one line what happened.
"""

from __future__ import annotations

import http.client
import io
import json
import socket
import ssl
import threading
import time
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urljoin, urlsplit

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from _typeshed import WriteableBuffer

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_DECODED_BYTES",
    "Deadline",
    "HttpClient",
    "NetworkError",
    "Response",
    "redirect_target",
    "url_origin",
]

#: Longer bodies are refused (`NetworkError`): rendezvous payloads are 4 KiB at most, and the
#: other answers the check reads (``/versions``, ``.well-known``) a few KiB.
MAX_BODY_BYTES = 1 << 20
#: The most a compressed body may decode to: a small gzip body can decode to gigabytes.
MAX_DECODED_BYTES = 1 << 20

_READ_CHUNK = 65536
_T = TypeVar("_T")


class NetworkError(Exception):
    """No usable HTTP answer was received; ``str(error)`` is a one-line explanation."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        #: One of ``url``, ``dns``, ``refused``, ``tls``, ``timeout``, ``closed``, ``http``,
        #: ``size`` (an answer too large), ``redirect`` (not followed), ``network``.
        self.kind = kind


@dataclass(frozen=True)
class Deadline:
    """The end of the whole run, on the monotonic clock."""

    timeout: float
    at: float

    @classmethod
    def start(cls, timeout: float) -> Deadline:
        return cls(timeout, time.monotonic() + timeout)

    def left(self) -> float:
        """The seconds left; raises `TimeoutError` when there are none."""
        left = self.at - time.monotonic()
        if left <= 0:
            raise TimeoutError("the check's time limit ran out")
        return left


def url_origin(url: str) -> str | None:
    """``scheme://host:port`` of an absolute http(s) URL (port made explicit), else None."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname
    if parts.scheme not in ("http", "https") or not host:
        return None
    port = port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{f'[{host}]' if ':' in host else host}:{port}"


def redirect_target(url: str, location: str, *, other_origin: bool) -> tuple[str, str | None]:
    """Where a redirect from ``url`` to ``location`` leads, and why not to follow it (or None).

    Never from https to http; to another origin only when ``other_origin``.
    """
    target = urljoin(url, location)
    if url_origin(target) is None:
        return target, f"a redirect to {target!r}, which is not an absolute http(s) URL"
    if urlsplit(url).scheme == "https" and urlsplit(target).scheme == "http":
        return target, f"a redirect from https to http ({target}), not followed: it is in clear"
    if not other_origin and url_origin(target) != url_origin(url):
        return target, f"a redirect to another origin ({target}), not followed"
    return target, None


@dataclass(frozen=True)
class Response:
    """One complete HTTP answer, with the local times around it."""

    method: str
    url: str
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    raw_body: bytes
    #: The body with ``gzip`` or ``deflate`` undone; None if it cannot be decoded.
    body: bytes | None
    #: ``time.time()`` just before the request was sent and when the answer's head arrived.
    sent_at: float
    received_at: float

    def header(self, name: str) -> str | None:
        """The first header called ``name`` (case-insensitive), or None."""
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return None

    def header_list(self, name: str) -> list[str]:
        """The comma-separated items of every header called ``name``, stripped."""
        return _header_list(self.headers, name)

    @property
    def content_encoding(self) -> str:
        """The ``Content-Encoding`` (lower case), or ``""`` for none or ``identity``."""
        return _content_encoding(self.headers)

    def json(self) -> object:
        """The body parsed as JSON; None if it is not JSON."""
        body = self.body
        if body is None:
            return None
        try:
            value: object = json.loads(body)
        except ValueError:
            return None
        return value

    def errcode(self) -> str | None:
        """The Matrix ``errcode`` of a JSON error body, if any."""
        value = self.json()
        if isinstance(value, dict):
            code = value.get("errcode")
            return code if isinstance(code, str) else None
        return None

    def describe(self) -> str:
        """``"412 Precondition Failed (M_UNKNOWN: ETag does not match)"``-style summary."""
        text = f"{self.status} {self.reason}".strip()
        value = self.json()
        if isinstance(value, dict) and isinstance(value.get("errcode"), str):
            error = value.get("error")
            detail = value["errcode"] + (f": {error}" if isinstance(error, str) else "")
            text += f" ({detail[:120]})"
        return text


def _header_list(headers: Sequence[tuple[str, str]], name: str) -> list[str]:
    lname = name.lower()
    return [
        item.strip()
        for key, value in headers
        if key.lower() == lname
        for item in value.split(",")
        if item.strip()
    ]


def _content_encoding(headers: Sequence[tuple[str, str]]) -> str:
    codings = [c.lower() for c in _header_list(headers, "Content-Encoding")]
    return ", ".join(c for c in codings if c != "identity")


class HttpClient:
    """Sends one request per connection, over HTTP or HTTPS (certificates verified).

    Every request of this client must end within ``timeout`` seconds of its creation.
    """

    def __init__(self, timeout: float, user_agent: str) -> None:
        self.timeout = timeout
        self.deadline = Deadline.start(timeout)
        self.user_agent = user_agent
        self._tls = ssl.create_default_context()

    def request(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> Response:
        """Send ``method url`` and read the whole answer, before the client's deadline.

        Raises `NetworkError` when no complete, acceptable HTTP answer arrives in time.
        """
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            raise NetworkError("url", f"{url} has an invalid port") from None
        host = parts.hostname
        if parts.scheme not in ("http", "https") or not host:
            raise NetworkError("url", f"{url} is not an absolute http(s) URL")
        port = port or (443 if parts.scheme == "https" else 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        tls = self._tls if parts.scheme == "https" else None
        connection: _Connection | None = None
        sent_at = time.time()
        try:
            connection = _Connection(host, port, self.deadline, tls)  # validates the host
            connection.putrequest(method, target, skip_accept_encoding=True)
            names = {name.lower() for name, _ in headers}
            for name, value in headers:
                connection.putheader(name, value)
            if "user-agent" not in names:
                connection.putheader("User-Agent", self.user_agent)
            if body is not None and "content-length" not in names:
                connection.putheader("Content-Length", str(len(body)))
            sock = connection.open()
            sock.settimeout(self.deadline.left())
            connection.endheaders(body)
            response = _Response(sock, method, self.deadline)
            try:
                response.begin()
                received_at = time.time()
                answer_headers = tuple(response.getheaders())
                data = _read_body(response)
            finally:
                response.close()
        except (OSError, http.client.HTTPException) as error:
            raise _explain(error, host, port, self.timeout) from None
        except UnicodeError as error:  # a non-ASCII path, a host name IDNA refuses
            raise NetworkError("url", f"{url} is not a valid URL ({error})") from None
        finally:
            if connection is not None:
                connection.close()
        where = f"{host}:{port}"
        if data is None:
            raise NetworkError(
                "size",
                f"{where} answered {response.status} with a body of more than "
                f"{_size(MAX_BODY_BYTES)}; the check stopped reading it",
            )
        coding = _content_encoding(answer_headers)
        try:
            decoded = _decode(data, coding)
        except _TooLarge:
            raise NetworkError(
                "size",
                f"{where} answered {response.status} with a {coding} body of {_size(len(data))} "
                f"that decodes to more than {_size(MAX_DECODED_BYTES)} (a decompression bomb?); "
                "the check stopped decoding it",
            ) from None
        return Response(
            method=method,
            url=url,
            status=response.status,
            reason=response.reason,
            headers=answer_headers,
            raw_body=data,
            body=decoded,
            sent_at=sent_at,
            received_at=received_at,
        )


class _Connection(http.client.HTTPConnection):
    """`http.client` composes and validates the request; the socket is opened here, with the
    DNS lookup, each connection attempt and the TLS handshake bounded by the deadline."""

    def __init__(
        self, host: str, port: int, deadline: Deadline, tls: ssl.SSLContext | None
    ) -> None:
        super().__init__(host, port)
        self.default_port = 443 if tls is not None else 80  # the Host header omits it
        self._deadline = deadline
        self._tls = tls

    def connect(self) -> None:
        self.open()

    def open(self) -> socket.socket:
        """The connected (and for https, TLS-wrapped) socket, opened on first use."""
        if self.sock is not None:
            sock: socket.socket = self.sock
            return sock
        host, port, deadline = self.host, self.port, self._deadline
        addresses = _within(
            deadline,
            lambda: socket.getaddrinfo(host, port, type=socket.SOCK_STREAM),
            socket.gaierror(socket.EAI_AGAIN, "the lookup did not finish in the time left"),
        )
        failure: OSError = OSError(f"no address for {host}")
        for family, kind, proto, _, address in addresses:
            candidate = socket.socket(family, kind, proto)
            try:
                candidate.settimeout(deadline.left())
                candidate.connect(address)
            except OSError as error:
                candidate.close()
                failure = error
                continue
            break
        else:
            raise failure
        try:
            if self._tls is not None:
                candidate.settimeout(deadline.left())
                # The handshake as a whole is bounded by the socket's timeout.
                candidate = self._tls.wrap_socket(candidate, server_hostname=host)
        except BaseException:
            candidate.close()
            raise
        self.sock = candidate
        return candidate


class _DeadlineReader(io.RawIOBase):
    """Reads from a socket, each read with only the time left before the deadline."""

    def __init__(self, sock: socket.socket, deadline: Deadline) -> None:
        super().__init__()
        self._sock = sock
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        self._sock.settimeout(self._deadline.left())
        return self._sock.recv_into(buffer)


class _Response(http.client.HTTPResponse):
    """An `http.client.HTTPResponse` (head and body parsing, its limits on the lengths and
    number of header lines) that reads through `_DeadlineReader`: a server that trickles
    its answer byte by byte runs into the deadline like one that sends nothing."""

    def __init__(self, sock: socket.socket, method: str, deadline: Deadline) -> None:
        super().__init__(sock, method=method)
        self.fp.close()  # the plain socket file http.client made: closing it keeps the socket
        self.fp = io.BufferedReader(_DeadlineReader(sock, deadline))


def _within(deadline: Deadline, call: Callable[[], _T], late: OSError) -> _T:
    """``call()`` in a daemon thread, waited for only the time left; ``late`` if it is not
    done by then (the thread is abandoned: a resolver stuck in the C library cannot be
    interrupted)."""
    left = deadline.left()
    results: list[_T] = []
    errors: list[Exception] = []

    def run() -> None:
        try:
            results.append(call())
        except Exception as error:  # raised again in the caller's thread
            errors.append(error)

    worker = threading.Thread(target=run, name="check-dns", daemon=True)
    worker.start()
    worker.join(left)
    if errors:
        raise errors[0]
    if not results:
        raise late
    return results[0]


def _read_body(response: http.client.HTTPResponse) -> bytes | None:
    """The whole body, or None when it is longer than `MAX_BODY_BYTES` (reading stops)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = response.read(_READ_CHUNK)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)


class _TooLarge(Exception):
    """The body decodes to more than `MAX_DECODED_BYTES`."""


def _decode(raw: bytes, coding: str) -> bytes | None:
    """``raw`` with ``gzip`` or ``deflate`` undone, None if it cannot be decoded (another or
    several codings, corrupt or truncated data); `_TooLarge` past `MAX_DECODED_BYTES`."""
    if not coding:
        return raw
    attempts: tuple[int, ...]
    if coding in ("gzip", "x-gzip"):
        attempts = (16 + zlib.MAX_WBITS,)
    elif coding == "deflate":  # zlib-wrapped as specified, or raw as some servers send it
        attempts = (zlib.MAX_WBITS, -zlib.MAX_WBITS)
    else:
        return None
    for wbits in attempts:
        decoder = zlib.decompressobj(wbits)
        try:
            data = decoder.decompress(raw, MAX_DECODED_BYTES + 1)
        except zlib.error:
            continue
        if len(data) > MAX_DECODED_BYTES:
            raise _TooLarge
        return data if decoder.eof else None
    return None


def _size(size: int) -> str:
    if size >= 1 << 20 and size % (1 << 20) == 0:
        return f"{size >> 20} MiB"
    if size >= 1 << 10:
        return f"{size / 1024:.0f} KiB"
    return f"{size} bytes"


def _explain(
    error: OSError | http.client.HTTPException, host: str, port: int, timeout: float
) -> NetworkError:
    """Turn a low-level error into a one-line `NetworkError`."""
    where = f"{host}:{port}"
    limit = f"within the check's time limit (--timeout {timeout:g} s, for the whole run)"
    if isinstance(error, socket.gaierror):
        return NetworkError("dns", f"cannot resolve {host} (DNS: {error.strerror or error})")
    if isinstance(error, ConnectionRefusedError):
        return NetworkError("refused", f"connection to {where} refused: nothing listens there")
    if isinstance(error, ssl.SSLCertVerificationError):
        reason = error.verify_message or error.reason or str(error)
        return NetworkError("tls", f"TLS certificate of {host} rejected: {reason}")
    if isinstance(error, ssl.SSLError):
        reason = error.reason or str(error)
        return NetworkError(
            "tls",
            f"TLS handshake with {where} failed ({reason}); is the port plain HTTP, not HTTPS?",
        )
    if isinstance(error, TimeoutError):
        if "handshake" in str(error):
            return NetworkError(
                "tls",
                f"the TLS handshake with {where} got no answer {limit}; is the port plain "
                "HTTP, not HTTPS?",
            )
        return NetworkError("timeout", f"no complete answer from {where} {limit}")
    if isinstance(error, http.client.RemoteDisconnected):
        return NetworkError("closed", f"{where} closed the connection without answering")
    if isinstance(error, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
        return NetworkError("closed", f"{where} reset the connection")
    if isinstance(error, http.client.InvalidURL):
        return NetworkError("url", f"not a valid URL for {where}: {error}")
    if isinstance(error, http.client.HTTPException):
        what = type(error).__name__
        return NetworkError("http", f"{where} sent an invalid HTTP answer ({what}: {error})")
    detail = error.strerror or str(error) or type(error).__name__
    return NetworkError("network", f"cannot talk to {where}: {detail}")
