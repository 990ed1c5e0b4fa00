"""Drop-in MSC4108 rendezvous ("Sign in with QR code") for Synapse, served by a Rust core."""

from synapse_rendezvous._core import __version__
from synapse_rendezvous.module import RendezvousModule

__all__ = ["RendezvousModule", "__version__"]
