"""Drop-in MSC4108 rendezvous ("Sign in with QR code") for Synapse, served by a Rust core.

``RendezvousModule`` is imported lazily, so that the command-line tools (``python -m
synapse_rendezvous check``) also work where Synapse is not installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from synapse_rendezvous._core import __version__

if TYPE_CHECKING:
    from synapse_rendezvous.module import RendezvousModule

__all__ = ["RendezvousModule", "__version__"]


def __getattr__(name: str) -> object:
    if name == "RendezvousModule":
        from synapse_rendezvous.module import RendezvousModule

        return RendezvousModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
