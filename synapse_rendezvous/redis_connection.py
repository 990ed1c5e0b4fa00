"""The Redis store's connections, opened and kept open by Twisted on the reactor.

The core decides everything (what to send, which reply answers which request, when a
request's time is up, when a connection has stalled); this moves bytes. Each connection is a
`ClientService`, which reconnects with a short back-off after any loss, so that service
resumes by itself once Redis is back.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint, wrapClientTLS
from twisted.internet.protocol import Factory, Protocol, connectionDone

if TYPE_CHECKING:
    from twisted.internet.interfaces import IStreamClientEndpoint
    from twisted.python.failure import Failure

    from synapse.types import ISynapseReactor

    from synapse_rendezvous._core import RedisAddress, RendezvousHandler
    from synapse_rendezvous.dispatch import Timer

#: Reconnect soon after a loss (a restarting Redis is back within a second), and never wait
#: more than a second between attempts, so that clients see service resume quickly.
_RETRY = backoffPolicy(
    initialDelay=0.05, maxDelay=1.0, factor=2.0, jitter=lambda: random.random() / 20
)


@dataclass(frozen=True)
class TlsFiles:
    """TLS material from the homeserver's own ``redis:`` section (PEM files)."""

    certificate: str | None = None
    private_key: str | None = None
    ca_file: str | None = None
    ca_path: str | None = None


class RedisConnections:
    """One `ClientService` per connection the handler wants."""

    def __init__(
        self,
        reactor: ISynapseReactor,
        handler: RendezvousHandler,
        timer: Timer,
        tls_files: TlsFiles | None = None,
    ) -> None:
        address = handler.redis_address
        if address is None:
            raise ValueError("the handler does not use Redis")
        self._services = [
            ClientService(
                _endpoint(reactor, address, tls_files or TlsFiles()),
                _ConnectionFactory(handler, index, timer),
                retryPolicy=_RETRY,
                clock=reactor,
            )
            for index in range(address.connections)
        ]

    def start(self) -> None:
        for service in self._services:
            service.startService()

    def stop(self) -> None:
        """Stops reconnecting; the handler's ``close`` has already closed the connections."""
        for service in self._services:
            if service.running:
                service.stopService()


def _endpoint(
    reactor: ISynapseReactor, address: RedisAddress, files: TlsFiles
) -> IStreamClientEndpoint:
    if address.path is not None:
        return UNIXClientEndpoint(reactor, address.path, timeout=address.timeout)
    if address.host is None or address.port is None:
        raise ValueError("a Redis address without a host or a path")
    tcp = HostnameEndpoint(reactor, address.host, address.port, timeout=address.timeout)
    if not address.tls:
        return tcp
    return wrapClientTLS(_tls_options(address.host, address.insecure, files), tcp)


def _tls_options(host: str, insecure: bool, files: TlsFiles) -> Any:
    """Verifies the server's certificate and name (against ``files``' CAs if given, else the
    system's), presenting ``files``' client certificate if given; ``insecure`` checks
    nothing (the URL's ``#insecure``)."""
    # Imported only for rediss:// URLs: they need pyOpenSSL, which Synapse depends on.
    from twisted.internet import ssl

    client = None
    if files.certificate:
        pem = Path(files.certificate).read_bytes()
        if files.private_key:
            pem += b"\n" + Path(files.private_key).read_bytes()
        client = ssl.PrivateCertificate.loadPEM(pem)
    if insecure:
        return ssl.CertificateOptions(
            privateKey=client.privateKey.original if client else None,
            certificate=client.original if client else None,
        )
    anchors = [Path(files.ca_file)] if files.ca_file else []
    if not anchors and files.ca_path:
        anchors = sorted(p for p in Path(files.ca_path).iterdir() if p.is_file())
    trust = None
    if anchors:
        certificates = [
            ssl.Certificate.loadPEM(block + b"-----END CERTIFICATE-----\n")
            for path in anchors
            for block in path.read_bytes().split(b"-----END CERTIFICATE-----")
            if b"-----BEGIN CERTIFICATE-----" in block
        ]
        trust = ssl.trustRootFromCertificates(certificates)
    return ssl.optionsForClientTLS(host, trustRoot=trust, clientCertificate=client)


class _ConnectionFactory(Factory):
    def __init__(self, handler: RendezvousHandler, index: int, timer: Timer) -> None:
        self._handler = handler
        self._index = index
        self._timer = timer

    def buildProtocol(self, addr: object) -> _RedisConnection:
        return _RedisConnection(self._handler, self._index, self._timer)


class _RedisConnection(Protocol):
    def __init__(self, handler: RendezvousHandler, index: int, timer: Timer) -> None:
        self._handler = handler
        self._index = index
        self._timer = timer

    def connectionMade(self) -> None:
        transport = self.transport
        assert transport is not None  # Twisted sets it before calling connectionMade
        # Small pipelined writes must not wait for Nagle; keep-alive finds a dead peer.
        for option in ("setTcpNoDelay", "setTcpKeepAlive"):
            setter = getattr(transport, option, None)
            if setter is not None:
                setter(True)
        self._timer.after(self._handler.redis_connected(self._index, transport))

    def dataReceived(self, data: bytes) -> None:
        self._timer.after(self._handler.redis_received(self._index, data))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._timer.after(self._handler.redis_lost(self._index))
