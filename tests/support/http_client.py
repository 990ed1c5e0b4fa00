"""A tiny HTTP client for the black-box tests, with full control over the request headers.

Every request uses a fresh `http.client.HTTPConnection` to 127.0.0.1 (closed afterwards) and a
timeout of a few seconds. Headers are sent exactly as given: duplicates are kept, nothing is
added except ``Host`` and, unless disabled, a ``Content-Length`` matching the body.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

from synapse_rendezvous.devserver import CREATE_PATH as _CREATE_PATH
from synapse_rendezvous.devserver import SESSION_PATH as _SESSION_PATH

if TYPE_CHECKING:
    from datetime import datetime

TIMEOUT = 5.0

#: The standard MSC4108 create path and where sessions live: the one spelling of each for
#: the tests (the package's, with a leading slash).
CREATE_PATH = "/" + _CREATE_PATH
SESSION_ROOT = "/" + _SESSION_PATH
SESSION_PREFIX = SESSION_ROOT + "/"

#: A ULID: 26 characters of upper-case Crockford base32; the first one encodes only 3 bits.
ULID_RE = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$")

Headers = Sequence[tuple[str, str]]


class HasBaseUrl(Protocol):
    """Anything with a ``base_url`` such as ``http://127.0.0.1:PORT/`` (a SynapseServer)."""

    @property
    def base_url(self) -> str: ...


class HasHeaders(Protocol):
    """A response of this client or of `support.raw_http`."""

    def header(self, name: str) -> str | None: ...


def etag(resp: HasHeaders) -> str:
    """The ETag of ``resp`` (fails the test if it has none)."""
    value = resp.header("ETag")
    assert value, f"no ETag in {resp!r}"
    return value


@dataclass(frozen=True, repr=False)
class Response:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        """The value of the first header called ``name`` (case-insensitive), or None."""
        values = self.headers_all(name)
        return values[0] if values else None

    def headers_all(self, name: str) -> list[str]:
        """All values of the headers called ``name`` (case-insensitive), in order."""
        lname = name.lower()
        return [v for k, v in self.headers if k.lower() == lname]

    def has_header(self, name: str) -> bool:
        return bool(self.headers_all(name))

    def json(self) -> object:
        return json.loads(self.body)

    def json_dict(self) -> dict[str, object]:
        """The body as a JSON object (fails the test if it is anything else)."""
        value = self.json()
        assert isinstance(value, dict), f"expected a JSON object, got {self.body!r}"
        return value

    def date_header(self, name: str) -> datetime:
        """The header ``name`` parsed as an HTTP date (fails the test if absent or invalid)."""
        value = self.header(name)
        assert value is not None, f"missing {name} header in {self.describe()}"
        try:
            return email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError) as exc:
            raise AssertionError(f"{name}: {value!r} is not an HTTP date") from exc

    def describe(self) -> str:
        """A one-paragraph summary for assertion messages."""
        headers = "\n".join(f"  {k}: {v}" for k, v in self.headers)
        return f"HTTP {self.status} {self.reason}\n{headers}\n  body: {self.body[:300]!r}"

    def __str__(self) -> str:
        return self.describe()

    def __repr__(self) -> str:
        # Assertion messages show a shortened repr: status and body first, headers last.
        return f"<Response {self.status} body={self.body[:200]!r} headers={self.headers!r}>"


def _target(base: HasBaseUrl | str, url: str) -> tuple[int, str]:
    """The port and the request target (path and query) for ``url`` relative to ``base``."""
    base_url = base if isinstance(base, str) else base.base_url
    if not url.startswith(("http://", "https://")):
        url = base_url.rstrip("/") + "/" + url.lstrip("/")
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname != "127.0.0.1":
        raise ValueError(f"refusing to send a request outside http://127.0.0.1: {url}")
    if parts.port is None:
        raise ValueError(f"no port in {url}")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return parts.port, target


def request(
    base: HasBaseUrl | str,
    method: str,
    url: str,
    *,
    body: bytes | None = None,
    headers: Headers = (),
    content_length: bool = True,
    chunked: bool = False,
    timeout: float = TIMEOUT,
) -> Response:
    """Send one request and read the whole answer.

    ``url`` is absolute (``http://127.0.0.1:PORT/...``) or a path relative to ``base``.
    With ``content_length`` (the default), a ``Content-Length`` header matching ``body`` is
    added unless ``headers`` already has one or ``body`` is None. With ``chunked``, the body is
    sent with chunked framing and no ``Content-Length`` (add ``Transfer-Encoding: chunked`` to
    ``headers`` yourself, so that the test states exactly what is sent).
    """
    port, target = _target(base, url)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        names = {k.lower() for k, _ in headers}
        for name, value in headers:
            conn.putheader(name, value)
        if content_length and not chunked and body is not None and "content-length" not in names:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        if body is not None:
            if chunked:
                if body:
                    conn.send(f"{len(body):x}\r\n".encode() + body + b"\r\n")
                conn.send(b"0\r\n\r\n")
            else:
                conn.send(body)
        resp = conn.getresponse()
        data = resp.read()
        return Response(
            status=resp.status,
            reason=resp.reason,
            headers=[(k, v) for k, v in resp.getheaders()],
            body=data,
        )
    finally:
        conn.close()


def raw_request(base: HasBaseUrl | str, data: bytes, timeout: float = TIMEOUT) -> bytes:
    """Send raw bytes to the server and return everything it sends until it closes.

    Use with ``Connection: close`` to check the exact bytes of an answer (for example that a
    HEAD or a 304 carries no body at all).
    """
    port, _ = _target(base, "/")
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks: list[bytes] = []
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def get(base: HasBaseUrl | str, url: str, *, headers: Headers = ()) -> Response:
    return request(base, "GET", url, headers=headers)


def head(base: HasBaseUrl | str, url: str, *, headers: Headers = ()) -> Response:
    return request(base, "HEAD", url, headers=headers)


def delete(base: HasBaseUrl | str, url: str, *, headers: Headers = ()) -> Response:
    return request(base, "DELETE", url, headers=headers)


def put(
    base: HasBaseUrl | str,
    url: str,
    body: bytes = b"",
    *,
    etag: str | None = None,
    content_type: str | None = "text/plain",
    headers: Headers = (),
    chunked: bool = False,
) -> Response:
    """PUT ``body`` with ``If-Match: etag`` (if given) and ``Content-Type`` (if not None)."""
    all_headers = list(headers)
    if content_type is not None:
        all_headers.append(("Content-Type", content_type))
    if etag is not None:
        all_headers.append(("If-Match", etag))
    return request(base, "PUT", url, body=body, headers=all_headers, chunked=chunked)


def post_create(
    server: HasBaseUrl,
    body: bytes = b"",
    *,
    content_type: str | None = "text/plain",
    headers: Headers = (),
    chunked: bool = False,
    content_length: bool = True,
) -> Response:
    """POST to the standard create path, re-POSTing to the Location of a 307 (delegation).

    The same body and headers (and framing) are sent both times, as clients do.
    """
    all_headers = list(headers)
    if content_type is not None:
        all_headers.append(("Content-Type", content_type))
    resp = request(
        server,
        "POST",
        CREATE_PATH,
        body=body,
        headers=all_headers,
        chunked=chunked,
        content_length=content_length,
    )
    if resp.status == 307:
        location = resp.header("Location")
        assert location, f"307 without Location: {resp}"
        resp = request(
            server,
            "POST",
            location,
            body=body,
            headers=all_headers,
            chunked=chunked,
            content_length=content_length,
        )
    return resp


def create_session(
    server: HasBaseUrl,
    body: bytes = b"hello",
    content_type: str | None = "text/plain",
    *,
    headers: Headers = (),
) -> tuple[str, Response]:
    """Create a session; return its absolute URL and the create response (asserted 201)."""
    resp = post_create(server, body, content_type=content_type, headers=headers)
    assert resp.status == 201, f"create failed: {resp}"
    url = resp.json_dict().get("url")
    assert isinstance(url, str), f"no url in {resp}"
    return url, resp


def session_url(server: HasBaseUrl, sid: str) -> str:
    """The absolute URL of the session ``sid`` (which is not checked or escaped)."""
    return server.base_url + SESSION_PREFIX.lstrip("/") + sid


def session_id(url: str) -> str:
    """The ``{id}`` at the end of a session URL."""
    path = urlsplit(url).path
    assert path.startswith(SESSION_PREFIX), url
    return path[len(SESSION_PREFIX) :]


def errcode(resp: Response) -> object:
    """The ``errcode`` of a JSON error body (None if the body is not a JSON object)."""
    try:
        value = resp.json()
    except ValueError:
        return None
    return value.get("errcode") if isinstance(value, dict) else None
