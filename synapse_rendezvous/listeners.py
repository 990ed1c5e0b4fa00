"""Which of the process's HTTP listeners serve the client API.

Synapse mounts a module's web resource on every HTTP listener, federation-only and replication
ones included, which carry other proxy, ``x_forwarded`` and firewall assumptions. The
rendezvous API is part of the client API, so it answers only where Synapse serves that (the
built-in answers 404 elsewhere). A request is matched to its listener by the local port (or
UNIX socket path) it arrived on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable

    from twisted.web.iweb import IRequest

    from synapse.server import HomeServer


@dataclass(frozen=True)
class ClientListeners:
    """The ports and socket paths on which every listener serves the client API."""

    ports: frozenset[int] = field(default_factory=frozenset)
    paths: frozenset[str] = field(default_factory=frozenset)
    #: Whether one of them has ``x_forwarded: true``.
    x_forwarded: bool = False

    def serve(self, request: IRequest) -> bool:
        """Whether ``request`` arrived on a listener that serves the client API."""
        host = request.getHost()
        port = getattr(host, "port", None)
        if isinstance(port, int):
            return port in self.ports
        name = getattr(host, "name", None)
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        return isinstance(name, str) and name in self.paths


def client_listeners(hs: HomeServer) -> ClientListeners:
    """The client listeners of this process (the main process's or a worker's)."""
    listeners: Iterable[Any] = (
        hs.config.worker.worker_listeners
        if hs.config.worker.worker_app is not None
        else hs.config.server.listeners
    )
    client_ports: set[int] = set()
    other_ports: set[int] = set()
    paths: set[str] = set()
    x_forwarded = False
    for listener in listeners:
        http = getattr(listener, "http_options", None)
        if getattr(listener, "type", None) != "http" or http is None:
            continue
        serves_client = any("client" in resource.names for resource in http.resources)
        x_forwarded |= serves_client and bool(http.x_forwarded)
        port = getattr(listener, "port", None)
        if isinstance(port, int):
            (client_ports if serves_client else other_ports).add(port)
        elif serves_client and getattr(listener, "path", None):
            paths.add(str(listener.path))
    # Two listeners on one port but different addresses: serve only if both are client ones.
    return ClientListeners(frozenset(client_ports - other_ports), frozenset(paths), x_forwarded)
