"""The Rust extension: configuration validation and the request handler.

Everything about sessions and HTTP semantics happens here; the Python package only glues
Synapse and Twisted to it.
"""

from collections.abc import Mapping
from typing import Literal, final

from twisted.web.iweb import IRequest

__version__: str

class ConfigError(ValueError):
    """The module's configuration is invalid; ``key`` names the offending option."""

    key: str

@final
class Config:
    """Validated configuration, as returned by :func:`parse_config`."""

    @property
    def ttl_ms(self) -> int:
        """Session lifetime, in milliseconds."""

    @property
    def max_payload_bytes(self) -> int:
        """Largest accepted body, in bytes."""

    @property
    def capacity(self) -> int:
        """Most live sessions at once."""

def parse_config(config: Mapping[str, object] | None, /) -> Config:
    """Validates the module's ``config:`` block.

    Raises:
        ConfigError: naming the first unknown key or invalid value.
    """

@final
class RendezvousHandler:
    """Serves the rendezvous API for one Synapse process."""

    def __init__(
        self,
        config: Config,
        public_baseurl: str,
        /,
        *,
        mode: Literal["takeover", "delegation"],
    ) -> None:
        """A handler with an in-memory store.

        Args:
            config: the validated configuration.
            public_baseurl: the homeserver's ``public_baseurl``; session URLs start with it.
            mode: ``"takeover"`` serves creates on the standard path only;
                ``"delegation"`` also serves them on ``/_synapse/client/rendezvous``.
        """

    def handle(self, request: IRequest, /) -> None:
        """Answers a Twisted request completely: reads it, writes the response, finishes it."""

    def handle_post(self, request: IRequest, /) -> None:
        """What Synapse's create servlet calls on its rendezvous handler."""

    def handle_get(self, request: IRequest, _session_id: str, /) -> None:
        """What Synapse's session resource calls; the id is read from the request."""

    def handle_put(self, request: IRequest, _session_id: str, /) -> None:
        """What Synapse's session resource calls; the id is read from the request."""

    def handle_delete(self, request: IRequest, _session_id: str, /) -> None:
        """What Synapse's session resource calls; the id is read from the request."""

    def reclaim_expired(self) -> int:
        """Frees the memory of expired sessions and returns how many were freed."""

    def live_sessions(self) -> int:
        """The number of live sessions."""
