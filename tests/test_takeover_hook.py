"""The guard around Synapse's private hook that takeover mode uses.

Unit tests of `install_handler`: a Synapse without ``get_rendezvous_handler`` (an older or a
future version) must stop at startup with a message that names delegation mode, and a
handler built before ours must not be silently replaced. The hook itself is exercised against
a real Synapse by every takeover-mode test of the suite.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import pytest

from synapse.config._base import ConfigError

from synapse_rendezvous.takeover import install_handler

if TYPE_CHECKING:
    from synapse.server import HomeServer

    from synapse_rendezvous.dispatch import Dispatcher

ENDPOINT = "https://matrix.example.org/_synapse/client/rendezvous"


class WithHook:
    def get_rendezvous_handler(self) -> object:
        return getattr(self, "_rendezvous_handler", "built-in")


class WithoutHook:
    pass


def install(hs: object, handler: object) -> None:
    install_handler(cast("HomeServer", hs), cast("Dispatcher", handler), ENDPOINT)


def test_installs_where_synapse_looks_for_its_handler() -> None:
    hs = WithHook()
    ours = object()
    install(hs, ours)
    assert hs.get_rendezvous_handler() is ours


def test_missing_hook_stops_startup_and_points_to_delegation() -> None:
    with pytest.raises(ConfigError) as raised:
        install(WithoutHook(), object())
    message = str(raised.value)
    assert "get_rendezvous_handler" in message
    assert "delegation" in message
    assert "msc4108_delegation_endpoint" in message
    assert ENDPOINT in message


def test_handler_built_before_ours_is_not_replaced() -> None:
    hs: Any = WithHook()
    hs._rendezvous_handler = "built-in"
    with pytest.raises(ConfigError, match="before the module was loaded"):
        install(hs, object())
    assert hs.get_rendezvous_handler() == "built-in"
