"""The HTTP client of ``check``: standard library only, one connection per request.

Every request is bounded in time, sends exactly the headers it is given (plus ``Host``,
``User-Agent`` and a ``Content-Length`` for a body) and reads the whole answer. A request that
gets no HTTP answer at all (DNS, refused, TLS, timeout, a connection closed midway) raises
`NetworkError`, whose message explains in one line what happened.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import time
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["MAX_BODY_BYTES", "HttpClient", "NetworkError", "Response"]

#: Larger answers are cut here; rendezvous payloads are a few KiB at most.
MAX_BODY_BYTES = 1 << 20

_READ_CHUNK = 65536


class NetworkError(Exception):
    """No HTTP answer was received; ``str(error)`` is a one-line explanation."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        #: One of ``url``, ``dns``, ``refused``, ``tls``, ``timeout``, ``closed``, ``http``,
        #: ``network``.
        self.kind = kind


@dataclass(frozen=True)
class Response:
    """One complete HTTP answer, with the local times around it."""

    method: str
    url: str
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    raw_body: bytes
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
        lname = name.lower()
        return [
            item.strip()
            for key, value in self.headers
            if key.lower() == lname
            for item in value.split(",")
            if item.strip()
        ]

    @property
    def content_encoding(self) -> str:
        """The ``Content-Encoding`` (lower case), or ``""`` for none or ``identity``."""
        codings = [c.lower() for c in self.header_list("Content-Encoding")]
        return ", ".join(c for c in codings if c != "identity")

    @property
    def body(self) -> bytes | None:
        """The body with ``gzip`` or ``deflate`` undone; None if it cannot be decoded."""
        coding = self.content_encoding
        if not coding:
            return self.raw_body
        try:
            if coding in ("gzip", "x-gzip"):
                return zlib.decompress(self.raw_body, 16 + zlib.MAX_WBITS)
            if coding == "deflate":
                try:
                    return zlib.decompress(self.raw_body)
                except zlib.error:
                    return zlib.decompress(self.raw_body, -zlib.MAX_WBITS)
        except zlib.error:
            return None
        return None

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


class HttpClient:
    """Sends one request per connection, over HTTP or HTTPS (certificates verified)."""

    def __init__(self, timeout: float, user_agent: str) -> None:
        self.timeout = timeout
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
        """Send ``method url`` and read the whole answer, within about ``timeout`` seconds.

        Raises `NetworkError` when no complete HTTP answer arrives.
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
        connection: http.client.HTTPConnection
        if parts.scheme == "https":
            connection = http.client.HTTPSConnection(
                host, port, timeout=self.timeout, context=self._tls
            )
        else:
            connection = http.client.HTTPConnection(host, port, timeout=self.timeout)
        deadline = time.monotonic() + self.timeout
        sent_at = time.time()
        try:
            connection.putrequest(method, target, skip_accept_encoding=True)
            names = {name.lower() for name, _ in headers}
            for name, value in headers:
                connection.putheader(name, value)
            if "user-agent" not in names:
                connection.putheader("User-Agent", self.user_agent)
            if body is not None and "content-length" not in names:
                connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(body)
            response = connection.getresponse()
            received_at = time.time()
            data = _read_body(response, deadline)
        except (OSError, http.client.HTTPException) as error:
            raise _explain(error, host, port, self.timeout) from None
        finally:
            connection.close()
        return Response(
            method=method,
            url=url,
            status=response.status,
            reason=response.reason,
            headers=tuple(response.getheaders()),
            raw_body=data,
            sent_at=sent_at,
            received_at=received_at,
        )


def _read_body(response: http.client.HTTPResponse, deadline: float) -> bytes:
    """The body, read in chunks until the end, `MAX_BODY_BYTES` or the deadline."""
    chunks: list[bytes] = []
    size = 0
    while size <= MAX_BODY_BYTES:
        if time.monotonic() > deadline:
            raise TimeoutError("the body did not arrive in time")
        chunk = response.read(_READ_CHUNK)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)[:MAX_BODY_BYTES]


def _explain(
    error: OSError | http.client.HTTPException, host: str, port: int, timeout: float
) -> NetworkError:
    """Turn a low-level error into a one-line `NetworkError`."""
    where = f"{host}:{port}"
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
                f"the TLS handshake with {where} got no answer within {timeout:g} s; is the "
                "port plain HTTP, not HTTPS?",
            )
        return NetworkError("timeout", f"no answer from {where} within {timeout:g} s")
    if isinstance(error, http.client.RemoteDisconnected):
        return NetworkError("closed", f"{where} closed the connection without answering")
    if isinstance(error, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
        return NetworkError("closed", f"{where} reset the connection")
    if isinstance(error, http.client.HTTPException):
        what = type(error).__name__
        return NetworkError("http", f"{where} sent an invalid HTTP answer ({what}: {error})")
    detail = error.strerror or str(error) or type(error).__name__
    return NetworkError("network", f"cannot talk to {where}: {detail}")
