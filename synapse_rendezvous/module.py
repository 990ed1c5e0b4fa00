"""The Synapse module: chooses how to serve, builds the handler and wires it in."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal

from synapse.config._base import ConfigError

from synapse_rendezvous import _core
from synapse_rendezvous.resource import RendezvousResource
from synapse_rendezvous.takeover import install_handler

if TYPE_CHECKING:
    from synapse.module_api import ModuleApi

logger = logging.getLogger(__name__)

SESSION_PREFIX = "/_synapse/client/rendezvous"
# How often expired sessions are freed on each process: memory comes back within this time
# even when nobody touches the sessions again.
RECLAIM_INTERVAL_MS = 5_000

Mode = Literal["takeover", "delegation"]


class RendezvousModule:
    """Serves MSC4108 rendezvous sessions from the Rust core in Synapse's place."""

    def __init__(self, config: _core.Config, api: ModuleApi) -> None:
        endpoint = api.public_baseurl.rstrip("/") + SESSION_PREFIX
        mode, reason = _choose_mode(api, endpoint)
        self._handler: _core.RendezvousHandler | None = None
        if mode is None:
            logger.warning("synapse_rendezvous is idle and serves nothing: %s", reason)
            return

        handler = _core.RendezvousHandler(config, api.public_baseurl, mode=mode)
        if mode == "takeover":
            install_handler(api._hs, handler, endpoint)
        # Also in takeover mode: replaces Synapse's session resource, which answers 500 to
        # percent-encoded non-ASCII ids instead of 404.
        api.register_web_resource(SESSION_PREFIX, RendezvousResource(handler))
        api.looping_background_call(
            self._reclaim_expired,
            RECLAIM_INTERVAL_MS,
            desc="synapse_rendezvous_reclaim",
            run_on_all_instances=True,
        )
        self._handler = handler
        logger.info(
            "synapse_rendezvous serving MSC4108 rendezvous in %s mode: store=memory, "
            "ttl=%gs, max_payload_bytes=%d, capacity=%d",
            mode,
            config.ttl_ms / 1000,
            config.max_payload_bytes,
            config.capacity,
        )

    @staticmethod
    def parse_config(config: Mapping[str, object] | None) -> _core.Config:
        """Validates the ``config:`` block; Synapse refuses to start on an error."""
        try:
            return _core.parse_config(config)
        except _core.ConfigError as error:
            raise ConfigError(f"synapse_rendezvous: {error}", path=error.key.split(".")) from None

    def _reclaim_expired(self) -> None:
        if self._handler is not None:
            self._handler.reclaim_expired()


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
