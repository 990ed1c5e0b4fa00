"""The Synapse module: chooses how to serve, builds the handler and wires it in."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from synapse.config._base import ConfigError

from synapse_rendezvous import _core, metrics, msc4388
from synapse_rendezvous.dispatch import Dispatcher, Timer
from synapse_rendezvous.listeners import client_listeners
from synapse_rendezvous.redis_connection import RedisConnections, TlsFiles
from synapse_rendezvous.resource import RendezvousResource
from synapse_rendezvous.takeover import install_handler, is_installed

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from synapse.module_api import ModuleApi
    from synapse.server import HomeServer

logger = logging.getLogger(__name__)

SESSION_PREFIX = "/_synapse/client/rendezvous"
# How often expired sessions are freed on each process: memory comes back within this time
# even when nobody touches the sessions again.
RECLAIM_INTERVAL_MS = 5_000
#: For the tests only, which should not sleep out five seconds: another interval.
RECLAIM_INTERVAL_ENV = "SYNAPSE_RENDEZVOUS_TEST_RECLAIM_INTERVAL_MS"

Mode = Literal["takeover", "delegation"]


class RendezvousModule:
    """Serves MSC4108 rendezvous sessions from the Rust core in Synapse's place."""

    def __init__(self, config: _core.Config, api: ModuleApi) -> None:
        endpoint = api.public_baseurl.rstrip("/") + SESSION_PREFIX
        mode, reason = _choose_mode(api, endpoint)
        hs = api._hs
        msc4388_mode = msc4388.synapse_mode(hs)
        self._handler: _core.RendezvousHandler | None = None
        if mode is None and msc4388_mode == "off":
            logger.warning(
                "synapse_rendezvous is idle and serves nothing: %s, and "
                "experimental_features.msc4388_mode is off",
                reason,
            )
            return

        try:
            handler = _core.RendezvousHandler(
                config,
                api.public_baseurl,
                # With MSC4108 off no request reaches its routes: the mode is moot.
                mode=mode or "takeover",
                clock=hs.get_clock().time,
                default_redis_url=homeserver_redis_url(hs.config.redis),
                msc4388=msc4388_mode,
            )
        except _core.ConfigError as error:
            raise _synapse_config_error(error) from None
        reactor = hs.get_reactor()
        self._timer = Timer(reactor, handler)
        self._connections: RedisConnections | None = None
        if handler.redis_address is not None:
            tls = homeserver_tls_files(hs.config.redis) if config.uses_homeserver_redis else None
            self._connections = RedisConnections(reactor, handler, self._timer, tls)
            reactor.callWhenRunning(self._connections.start)
        dispatcher = Dispatcher(handler, self._timer)
        if mode == "takeover":
            install_handler(hs, dispatcher, endpoint)
            # Modules are built inside Synapse's start-up, on a running reactor: check once
            # every other module has been built.
            reactor.callLater(0, _verify_takeover, hs, dispatcher)
        if msc4388_mode != "off":
            msc4388.install_handler(hs, msc4388.Msc4388Handler(dispatcher))
            routes = msc4388.RouteInstaller(hs, api, dispatcher, msc4388_mode)
            # After the listeners are built (right after the modules, in the same call).
            reactor.callLater(0, _install_msc4388_routes, hs, routes)
        listeners = client_listeners(hs)
        for warning in config.startup_warnings(x_forwarded_client_listener=listeners.x_forwarded):
            logger.warning("synapse_rendezvous: %s", warning)
        if mode is not None:
            # Also in takeover mode: replaces Synapse's session resource, which answers 500
            # to percent-encoded non-ASCII ids instead of 404.
            api.register_web_resource(SESSION_PREFIX, RendezvousResource(dispatcher, listeners))
        api.looping_background_call(
            self._maintain,
            int(os.environ.get(RECLAIM_INTERVAL_ENV) or RECLAIM_INTERVAL_MS),
            desc="synapse_rendezvous_reclaim",
            run_on_all_instances=True,
        )
        self._handler = handler
        self._server_name = api.server_name
        metrics.register(self._server_name, handler, config.store_kind)
        _on_shutdown(hs, self._shutdown)
        serving = f"MSC4108 rendezvous in {mode} mode" if mode is not None else "no MSC4108"
        if msc4388_mode != "off":
            serving += f" and MSC4388 rendezvous ({msc4388_mode})"
        logger.info("synapse_rendezvous serving %s: %s", serving, config)

    @staticmethod
    def parse_config(config: Mapping[str, object] | None) -> _core.Config:
        """Validates the ``config:`` block; Synapse refuses to start on an error."""
        try:
            return _core.parse_config(config)
        except _core.ConfigError as error:
            raise _synapse_config_error(error) from None

    async def _maintain(self) -> None:
        """Frees expired sessions and counts the live ones (one Redis call, not awaited)."""
        if self._handler is not None:
            self._timer.after(self._handler.maintain())

    def _shutdown(self) -> None:
        """Answers what still waits on Redis, stops the connections and saves the snapshot,
        so that Synapse stops at once whatever Redis does."""
        if self._handler is None:
            return
        handler, self._handler = self._handler, None
        handler.close()
        if self._connections is not None:
            self._connections.stop()
        self._timer.stop()
        metrics.unregister(self._server_name)
        try:
            saved = handler.save_snapshot()
        except OSError as error:
            logger.error("synapse_rendezvous could not save its session snapshot: %s", error)
            return
        if saved is not None:
            logger.info("synapse_rendezvous saved %d live sessions to its snapshot", saved)


def _on_shutdown(hs: HomeServer, stop: Callable[[], None]) -> None:
    """Runs ``stop`` before the reactor stops, and also when the homeserver alone is shut down
    where Synapse has a hook for that (``register_sync_shutdown_handler``)."""
    register = getattr(hs, "register_sync_shutdown_handler", None)
    if register is not None:
        register(phase="before", eventType="shutdown", shutdown_func=stop)
    else:
        hs.get_reactor().addSystemEventTrigger("before", "shutdown", stop)


def _install_msc4388_routes(hs: HomeServer, routes: msc4388.RouteInstaller) -> None:
    """Points this process's MSC4388 routes at the core; stops Synapse if some stay
    Synapse's (its servlets would answer discovery and DELETE themselves)."""
    installed = routes.install()
    stray = routes.verify()
    if stray:
        logger.error(
            "synapse_rendezvous: MSC4388 routes still served by Synapse's servlets (%s); "
            "stopping. Turn experimental_features.msc4388_mode off to run without MSC4388.",
            ", ".join(stray),
        )
        hs.get_reactor().stop()
    elif installed == 0:
        logger.info("synapse_rendezvous: no client listener here, MSC4388 not served on it")


def _verify_takeover(hs: HomeServer, dispatcher: Dispatcher) -> None:
    """Stops Synapse if its rendezvous handler is no longer ours."""
    if is_installed(hs, dispatcher):
        return
    logger.error(
        "synapse_rendezvous: Synapse's rendezvous handler is not the module's any more "
        "(another module or this Synapse version replaced it), so creates would reach "
        "Synapse's built-in; stopping. Use delegation mode (see docs/integration.md)."
    )
    hs.get_reactor().stop()


def homeserver_tls_files(redis: Any) -> TlsFiles:
    """The client certificate and trust anchors of the homeserver's own ``redis:`` section."""
    return TlsFiles(
        certificate=getattr(redis, "redis_certificate", None),
        private_key=getattr(redis, "redis_private_key", None),
        ca_file=getattr(redis, "redis_ca_file", None),
        ca_path=getattr(redis, "redis_ca_path", None),
    )


def homeserver_redis_url(redis: Any) -> str | None:
    """The URL of the homeserver's own Redis (its ``redis:`` section), if it is enabled."""
    if not getattr(redis, "redis_enabled", False):
        return None
    username = getattr(redis, "redis_username", None) or ""
    password = getattr(redis, "redis_password", None) or ""
    dbid = getattr(redis, "redis_dbid", None) or 0
    path = getattr(redis, "redis_path", None)
    if path:
        query = f"db={dbid}"
        if username:
            query += f"&user={quote(username, safe='')}"
        if password:
            query += f"&pass={quote(password, safe='')}"
        return f"unix://{path}?{query}"
    auth = ""
    if username or password:
        auth = f"{quote(username, safe='')}:{quote(password, safe='')}@"
    scheme = "rediss" if getattr(redis, "redis_use_tls", False) else "redis"
    host = str(getattr(redis, "redis_host", "localhost"))
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 literal
    port = getattr(redis, "redis_port", 6379)
    return f"{scheme}://{auth}{host}:{port}/{dbid}"


def _synapse_config_error(error: _core.ConfigError) -> ConfigError:
    return ConfigError(f"synapse_rendezvous: {error}", path=error.key.split("."))


def _choose_mode(api: ModuleApi, endpoint: str) -> tuple[Mode | None, str]:
    experimental = api._hs.config.experimental
    if experimental.msc4108_enabled:
        return "takeover", "experimental_features.msc4108_enabled is set"
    delegation: str | None = experimental.msc4108_delegation_endpoint
    if delegation is None:
        return None, (
            "neither experimental_features.msc4108_enabled nor "
            "experimental_features.msc4108_delegation_endpoint is set"
        )
    if delegation.rstrip("/") != endpoint:
        return None, (
            f"experimental_features.msc4108_delegation_endpoint is {delegation!r}, which is "
            f"not this homeserver's {endpoint!r}"
        )
    return "delegation", "experimental_features.msc4108_delegation_endpoint points here"
