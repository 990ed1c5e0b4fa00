"""A loopback "homeserver" that attacks the ``check`` command, for its hardening tests.

`HostileServer` listens on 127.0.0.1 (a free port; HTTPS with `loopback_tls`), records every
request it receives as a `support.proxy.Seen` (``status`` 0 when the answer is not a plain
one), and answers each request as its ``routes`` say, keyed ``"METHOD /path"`` or ``"/path"``:

- `Reply`: a complete answer (``Content-Length`` added);
- `Stream`: a status, headers and a body produced lazily chunk by chunk (`gzip_bomb`,
  `endless_body`), so that a huge body costs the test nothing;
- `Trickle`: raw bytes written one at a time, ``interval`` seconds apart, until the client
  leaves or the server stops (the status line and headers too, unless given as ``head``).

Without a route it plays a minimal homeserver: ``/_matrix/client/versions`` advertises
MSC4108, preflights pass, everything else is 404. `created` and `redirect` build the usual
rendezvous answers.

Like `support.proxy.ReverseProxy` it serves one request per connection from a background
thread, and `stop` (or leaving the ``with`` block) ends every handler thread: writes are
bounded by a socket timeout and trickles wake up when the server stops.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import threading
import zlib
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from support.http_client import CREATE_PATH
from support.proxy import Seen

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping
    from pathlib import Path
    from types import TracebackType

__all__ = [
    "CREATE_PATH",
    "SESSION_PATH",
    "Behaviour",
    "HostileServer",
    "LoopbackTls",
    "Reply",
    "Stream",
    "Trickle",
    "created",
    "endless_body",
    "gzip_bomb",
    "loopback_tls",
    "redirect",
]

SESSION_PATH = "/_synapse/client/rendezvous/01HOSTILE"
#: Bounds every read and write of a handler: no handler thread outlives a vanished client.
HANDLER_TIMEOUT = 5.0


@dataclass(frozen=True)
class Reply:
    """A complete answer; ``Content-Length`` and ``Connection: close`` are added."""

    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


@dataclass(frozen=True)
class Stream:
    """A status and headers, then the chunks of ``body()`` as they are produced."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: Callable[[], Iterable[bytes]]


@dataclass(frozen=True)
class Trickle:
    """A raw answer, status line included: ``head`` at once, then ``data`` one byte every
    ``interval`` seconds."""

    data: bytes
    interval: float = 0.5
    head: bytes = b""


Behaviour = Reply | Stream | Trickle

_CORS = (
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Methods", "GET, HEAD, POST, PUT, DELETE, OPTIONS"),
    ("Access-Control-Allow-Headers", "*"),
    ("Access-Control-Expose-Headers", "ETag"),
)
_VERSIONS = Reply(
    200,
    (("Content-Type", "application/json"), *_CORS),
    json.dumps({"versions": ["v1.11"], "unstable_features": {"org.matrix.msc4108": True}}).encode(),
)
_PREFLIGHT = Reply(204, _CORS)
_NOT_FOUND = Reply(
    404,
    (("Content-Type", "application/json"), *_CORS),
    b'{"errcode": "M_NOT_FOUND", "error": "Not found"}',
)


def created(session_url: str) -> Reply:
    """The 201 of a create, pointing at ``session_url``, with the session headers."""
    return Reply(
        201,
        (
            ("Content-Type", "application/json"),
            ("ETag", '"1"'),
            ("Expires", "Thu, 01 Jan 2099 00:02:00 GMT"),
            ("Last-Modified", "Thu, 01 Jan 2099 00:00:00 GMT"),
            ("Cache-Control", "no-store, no-transform"),
            *_CORS,
        ),
        json.dumps({"url": session_url}).encode(),
    )


def redirect(location: str, status: int = 307) -> Reply:
    return Reply(status, (("Location", location), *_CORS))


def gzip_bomb(
    compressed_size: int, *, status: int = 200, wbits: int = 16 + zlib.MAX_WBITS
) -> tuple[int, Stream]:
    """An answer whose ``Content-Encoding: gzip`` body (``deflate`` for ``wbits`` MAX_WBITS) of
    about ``compressed_size`` bytes decodes to about 1000 times as many zero bytes.

    It costs almost nothing to make: after ``Z_FULL_FLUSH`` the compressor starts afresh, so
    each further MiB of zeros compresses to the very same ~1 KiB block, computed once and
    repeated. (The stream has no end: a client must stop decoding long before.) Returns the
    number of bytes it decodes to, and the answer.
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, wbits)
    zeros = bytes(1 << 20)
    first = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    block = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    blocks = max(0, (compressed_size - len(first)) // len(block))
    per_write = 64

    def body() -> Iterator[bytes]:
        yield first
        for start in range(0, blocks, per_write):
            yield block * min(per_write, blocks - start)

    coding = "gzip" if wbits > zlib.MAX_WBITS else "deflate"
    headers = (
        ("Content-Type", "application/json"),
        ("Content-Encoding", coding),
        ("Content-Length", str(len(first) + blocks * len(block))),
        *_CORS,
    )
    return (1 + blocks) << 20, Stream(status, headers, body)


def endless_body(status: int = 200) -> Stream:
    """An answer whose body (no ``Content-Length``: it ends with the connection) never ends."""

    def body() -> Iterator[bytes]:
        chunk = bytes(1 << 16)
        while True:
            yield chunk

    return Stream(status, (("Content-Type", "application/json"), *_CORS), body)


@dataclass(frozen=True)
class LoopbackTls:
    """A throwaway CA (trust it with ``SSL_CERT_FILE=ca_file``) and a server context whose
    certificate it signed, for 127.0.0.1."""

    server: ssl.SSLContext
    ca_file: Path


def loopback_tls(directory: Path) -> LoopbackTls:
    """Make a CA and a certificate for 127.0.0.1 in ``directory``."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "check hostile test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file, key_file = directory / "server.pem", directory / "server.key"
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    return LoopbackTls(server, ca_file)


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


class _Server(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True  # server_close() joins the handler threads

    def __init__(self, owner: HostileServer) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.owner = owner
        if owner.tls is not None:
            # The handshake happens in the handler thread (`_Handler.setup`), not in accept().
            self.socket = owner.tls.wrap_socket(
                self.socket, server_side=True, do_handshake_on_connect=False
            )

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that hangs up or refuses the certificate is what these tests do


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = HANDLER_TIMEOUT

    def setup(self) -> None:
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._handle()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_OPTIONS = do_GET

    def _handle(self) -> None:
        owner = self.server.owner
        self.close_connection = True
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        path = self.path.split("?")[0]
        behaviour = owner.routes.get(f"{self.command} {path}") or owner.routes.get(path)
        if behaviour is None:
            if self.command == "OPTIONS":
                behaviour = _PREFLIGHT
            elif path == "/_matrix/client/versions":
                behaviour = _VERSIONS
            else:
                behaviour = _NOT_FOUND
        status = behaviour.status if isinstance(behaviour, Reply) else 0
        owner._record(Seen(self.command, self.path, tuple(self.headers.items()), status))
        try:
            if isinstance(behaviour, Trickle):
                self._trickle(behaviour)
            elif isinstance(behaviour, Stream):
                self._head(behaviour.status, behaviour.headers)
                for chunk in behaviour.body():
                    if owner.stopping.is_set():
                        return
                    self.wfile.write(chunk)
            else:
                headers = (*behaviour.headers, ("Content-Length", str(len(behaviour.body))))
                self._head(behaviour.status, headers)
                if self.command != "HEAD":
                    self.wfile.write(behaviour.body)
        except OSError:
            pass  # the client went away: that is its right

    def _head(self, status: int, headers: Iterable[tuple[str, str]]) -> None:
        self.send_response_only(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Connection", "close")
        self.end_headers()

    def _trickle(self, trickle: Trickle) -> None:
        self.wfile.write(trickle.head)
        for byte in trickle.data:
            if self.server.owner.stopping.wait(trickle.interval):
                return
            self.wfile.write(bytes([byte]))


class HostileServer:
    """A misbehaving homeserver on 127.0.0.1 in a background thread (see the module
    docstring); ``routes`` may be changed while it runs."""

    def __init__(
        self, routes: Mapping[str, Behaviour] | None = None, *, tls: LoopbackTls | None = None
    ) -> None:
        self.routes: dict[str, Behaviour] = dict(routes or {})
        self.tls = tls.server if tls is not None else None
        #: Set by `stop`: trickles and streams end at once.
        self.stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._seen: list[Seen] = []

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the server is not running")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/"

    def url(self, path: str) -> str:
        """The absolute URL of ``path`` (``/...``) on this server."""
        return self.base_url + path.lstrip("/")

    @property
    def seen(self) -> list[Seen]:
        """The requests received so far, oldest first."""
        with self._lock:
            return list(self._seen)

    def _record(self, seen: Seen) -> None:
        with self._lock:
            self._seen.append(seen)

    def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("the server is already running")
        self.stopping.clear()
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"test-hostile-{self.port}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, end the handler threads and close the socket. Idempotent."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        self.stopping.set()
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=10)

    def __enter__(self) -> HostileServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
