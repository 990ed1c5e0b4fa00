"""Serves MSC4388 (the 2025 rendezvous) in Synapse's place.

Synapse registers its MSC4388 servlets in the client resource of the main process, and builds
their handler with ``HomeServer.get_msc4388_rendezvous_handler()``. Two of its servlet methods
cannot be served through that handler: discovery never calls it (and answers 401 without an
access token in ``authenticated`` mode, where the MSC wants 200 ``{"create_available":
false}``), and DELETE does not pass it the request (so no client address for the rate limit,
and no way to answer after a Redis call). So the module:

- installs `Msc4388Handler` where Synapse caches its handler (as takeover mode does for the
  2024 one), so that Synapse never builds its in-memory built-in;
- once the listeners exist, points every MSC4388 route of each client resource at the core
  (`RouteInstaller`), and registers the routes where Synapse did not (workers) through the
  resource's own ``register_paths`` (the interface Synapse's servlets use): with the Redis
  store any process with a client listener serves MSC4388. The client resources are found
  from the listening ports (the main process's ``_listening_services``, or the reactor's
  readers on a worker, which keeps no list);
- checks that the routes are ours, and stops Synapse if a process that serves MSC4388 has a
  client resource whose routes it could not take over.

The core routes by the request's own path, so the callbacks only decide whether the caller is
authenticated (``authenticated`` mode) and hand the request over.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any, Literal

from synapse.config._base import ConfigError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from twisted.web.iweb import IRequest

    from synapse.module_api import ModuleApi
    from synapse.server import HomeServer

    from synapse_rendezvous.dispatch import Dispatcher

logger = logging.getLogger(__name__)

Msc4388Mode = Literal["off", "open", "authenticated"]

PREFIX = "/_matrix/client/unstable/io.element.msc4388/rendezvous"
_CREATE_PATTERN = re.compile("^" + re.escape(PREFIX) + "$")
_SESSION_PATTERN = re.compile("^" + re.escape(PREFIX) + "/(?P<rendezvous_id>[^/]+)$")
_ROUTES = ((_CREATE_PATTERN, ("GET", "POST")), (_SESSION_PATTERN, ("GET", "PUT", "DELETE")))
_SERVLET_NAME = "synapse_rendezvous.MSC4388"

_GETTER = "get_msc4388_rendezvous_handler"
_CACHE_ATTRIBUTE = "_msc4388_rendezvous_handler"
#: Resource trees are a few levels deep; the walk stops well beyond.
_MAX_RESOURCES = 256


def synapse_mode(hs: HomeServer) -> Msc4388Mode:
    """Synapse's ``experimental_features.msc4388_mode`` (``off`` before Synapse 1.149)."""
    experimental = hs.config.experimental
    if not getattr(experimental, "msc4388_enabled", False):
        return "off"
    if getattr(experimental, "msc4388_requires_authentication", False):
        return "authenticated"
    return "open"


class Msc4388Handler:
    """What Synapse's own MSC4388 servlets would call; `RouteInstaller` takes their routes
    over, so this only keeps Synapse from building its built-in handler, and answers
    correctly should a servlet reach it anyway."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self._dispatcher = dispatcher

    def handle_post(self, request: IRequest) -> None:
        self._dispatcher.handle(request)

    def handle_get(self, session_id: str, request: IRequest) -> None:
        self._dispatcher.handle(request)

    def handle_put(self, session_id: str, request: IRequest) -> None:
        self._dispatcher.handle(request)

    def handle_delete(self, session_id: str) -> tuple[int, Any]:
        # Unreachable once the routes are ours (checked at startup): Synapse's servlet does
        # not pass the request on.
        raise RuntimeError("synapse_rendezvous: MSC4388 DELETE reached Synapse's servlet")


def install_handler(hs: HomeServer, handler: Msc4388Handler) -> None:
    """Makes ``hs`` hand out ``handler`` as its MSC4388 handler.

    Raises:
        ConfigError: when Synapse already built its own (another module replaced it).
    """
    if not callable(getattr(type(hs), _GETTER, None)):
        return  # A Synapse without MSC4388 servlets: the routes are registered anyway.
    if _CACHE_ATTRIBUTE in vars(hs):
        raise ConfigError(
            "synapse_rendezvous: Synapse built its MSC4388 rendezvous handler before the "
            "module was loaded (is another module replacing it?)"
        )
    setattr(hs, _CACHE_ATTRIBUTE, handler)


class RouteInstaller:
    """Points the MSC4388 routes of this process's client resources at the core."""

    def __init__(
        self, hs: HomeServer, api: ModuleApi, dispatcher: Dispatcher, mode: Msc4388Mode
    ) -> None:
        self._hs = hs
        self._api = api
        self._dispatcher = dispatcher
        self._authenticated = mode == "authenticated"

    def install(self) -> int:
        """Takes the routes over in every client resource; returns how many it changed."""
        count = 0
        for resource in _json_resources(self._hs):
            owned = [p for p in resource._routes if _is_msc4388(p)]
            if owned:
                # Synapse's servlets: same patterns, our callback.
                for pattern in owned:
                    entries = resource._routes[pattern]
                    for method, entry in list(entries.items()):
                        entries[method] = type(entry)(self._callback, _SERVLET_NAME)
            else:
                # A worker: Synapse registers MSC4388 on the main process only.
                for pattern, methods in _ROUTES:
                    for method in methods:
                        resource.register_paths(method, [pattern], self._callback, _SERVLET_NAME)
            count += 1
        return count

    def verify(self) -> list[str]:
        """The MSC4388 routes of this process that do not reach the core."""
        stray = []
        for resource in _json_resources(self._hs):
            for pattern, entries in resource._routes.items():
                if not _is_msc4388(pattern):
                    continue
                for method, entry in entries.items():
                    if entry.callback != self._callback:
                        stray.append(
                            f"{method.decode()} {pattern.pattern} ({entry.servlet_classname})"
                        )
        return stray

    async def _callback(self, request: Any, **_path: str) -> None:
        if self._authenticated and _has_access_token(request):
            # An invalid or expired token raises (401 M_UNKNOWN_TOKEN, from Synapse).
            await self._api.get_user_by_req(request)
            self._dispatcher.handle(request, authenticated=True)
            return
        self._dispatcher.handle(request)


def _has_access_token(request: Any) -> bool:
    if request.requestHeaders.hasHeader(b"Authorization"):
        return True
    args = getattr(request, "args", None) or {}
    return b"access_token" in args


def _sites(hs: HomeServer) -> Iterator[Any]:
    """The HTTP sites this process listens with: the ports the main process keeps
    (``_listening_services``), and the listening ports among the reactor's readers (a
    worker keeps none)."""
    ports = list(getattr(hs, "_listening_services", []))
    readers = getattr(hs.get_reactor(), "getReaders", None)
    if callable(readers):
        ports.extend(readers())
    seen: set[int] = set()
    for port in ports:
        factory = getattr(port, "factory", None)
        factory = getattr(factory, "wrappedFactory", factory)  # TLS wraps the site
        if getattr(factory, "resource", None) is None or id(factory) in seen:
            continue
        seen.add(id(factory))
        yield factory


def _json_resources(hs: HomeServer) -> Iterator[Any]:
    """The resources of this process's listeners that route client paths by pattern."""
    seen: set[int] = set()
    for site in _sites(hs):
        pending = [site.resource]
        while pending and len(seen) < _MAX_RESOURCES:
            resource = pending.pop()
            if id(resource) in seen:
                continue
            seen.add(id(resource))
            routes = getattr(resource, "_routes", None)
            register = getattr(resource, "register_paths", None)
            if isinstance(routes, dict) and callable(register) and any(map(_serves_client, routes)):
                yield resource
            pending.extend(getattr(resource, "children", {}).values())


def _is_msc4388(pattern: Any) -> bool:
    return "io.element.msc4388/rendezvous" in getattr(pattern, "pattern", "")


def _serves_client(pattern: Any) -> bool:
    return "/_matrix/client/" in getattr(pattern, "pattern", "")
