"""Installs our handler where Synapse's own rendezvous servlets look for the built-in one.

Synapse builds its handler with ``HomeServer.get_rendezvous_handler()``, which caches the
result in the ``_rendezvous_handler`` attribute. Modules are constructed before the
listeners, so setting that attribute first makes both the create servlet and Synapse's
session resource call us. The attribute is private, so its presence is checked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from synapse.config._base import ConfigError

if TYPE_CHECKING:
    from synapse.server import HomeServer

    from synapse_rendezvous.dispatch import Dispatcher

_GETTER = "get_rendezvous_handler"
_CACHE_ATTRIBUTE = "_rendezvous_handler"

_NO_HOOK = (
    "synapse_rendezvous: this Synapse version has no rendezvous handler hook "
    "(HomeServer.get_rendezvous_handler), which takeover mode needs. Use delegation mode "
    "instead: turn experimental_features.msc4108_enabled off and set "
    "experimental_features.msc4108_delegation_endpoint to {endpoint}"
)


def is_installed(hs: HomeServer, handler: Dispatcher) -> bool:
    """Whether ``hs`` still hands out ``handler``: something that rebuilt or replaced it
    (another module, a Synapse that caches the handler elsewhere) would send creates to the
    built-in while our log says takeover mode."""
    return getattr(hs, _GETTER)() is handler


def install_handler(hs: HomeServer, handler: Dispatcher, endpoint: str) -> None:
    """Makes ``hs`` hand out ``handler`` as its rendezvous handler.

    Raises:
        ConfigError: when this Synapse has no such hook, or its built-in handler was already
            built (and so may already be wired to the listeners).
    """
    if not callable(getattr(type(hs), _GETTER, None)):
        raise ConfigError(_NO_HOOK.format(endpoint=endpoint))
    if _CACHE_ATTRIBUTE in vars(hs):
        raise ConfigError(
            "synapse_rendezvous: Synapse built its rendezvous handler before the module was "
            "loaded (is another module replacing it?); " + _NO_HOOK.format(endpoint=endpoint)
        )
    setattr(hs, _CACHE_ATTRIBUTE, handler)
