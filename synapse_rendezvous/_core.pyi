"""The Rust extension: configuration validation and the request handler.

Everything about sessions and HTTP semantics happens here; the Python package only glues
Synapse and Twisted to it.
"""

from collections.abc import Mapping
from typing import Any, Literal, final

from twisted.web.iweb import IRequest

__all__ = [
    "Config",
    "ConfigError",
    "PendingRequest",
    "PendingResponse",
    "RendezvousHandler",
    "__version__",
    "parse_config",
]
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

    @property
    def redis_pool_size(self) -> int | None:
        """Connections each process keeps to Redis; None for the memory store."""

    @property
    def store_kind(self) -> Literal["memory", "redis"]:
        """Which store holds the sessions."""

    @property
    def store_description(self) -> str:
        """The store and its settings, for the startup log (never the Redis URL)."""

def parse_config(config: Mapping[str, object] | None, /) -> Config:
    """Validates the module's ``config:`` block.

    Raises:
        ConfigError: naming the first unknown key or invalid value.
    """

@final
class PendingRequest:
    """A request read off a Twisted request, ready for :meth:`RendezvousHandler.process`."""

@final
class PendingResponse:
    """A computed response, ready for :meth:`RendezvousHandler.write_response`."""

    @property
    def status(self) -> int:
        """The HTTP status code."""

@final
class RendezvousHandler:
    """Serves the rendezvous API for one Synapse process."""

    def __new__(
        cls,
        config: Config,
        public_baseurl: str,
        /,
        *,
        mode: Literal["takeover", "delegation"],
        default_redis_url: str | None = None,
    ) -> RendezvousHandler:
        """Opens the configured store (restoring a memory snapshot if one is configured).

        Args:
            config: the validated configuration.
            public_baseurl: the homeserver's ``public_baseurl``; session URLs start with it.
            mode: ``"takeover"`` serves creates on the standard path only;
                ``"delegation"`` also serves them on ``/_synapse/client/rendezvous``.
            default_redis_url: the homeserver's own Redis, used by ``store: redis`` when
                ``redis.url`` is not set.

        Raises:
            ConfigError: when the Redis store has no usable URL.
        """

    @property
    def blocking(self) -> bool:
        """Whether the store can block on the network, so :meth:`process` must run in a
        thread."""

    def handle(self, request: IRequest, /) -> None:
        """Answers a Twisted request completely: reads it, writes the response, finishes it."""

    def read_request(self, request: IRequest, /) -> PendingRequest:
        """Reads a Twisted request (on the reactor thread)."""

    def process(self, pending: PendingRequest, /) -> PendingResponse:
        """Computes the response without the GIL; safe to call from any thread."""

    def write_response(self, request: IRequest, response: PendingResponse, /) -> None:
        """Writes a computed response to the request and finishes it (reactor thread)."""

    def reclaim_expired(self) -> int:
        """Frees the memory of expired sessions and returns how many were freed.

        Raises:
            OSError: when the store cannot be reached.
        """

    def live_sessions(self) -> int:
        """The number of live sessions.

        Raises:
            OSError: when the store cannot be reached.
        """

    def metrics(self) -> dict[str, Any]:
        """Every counter, for the Prometheus collector: ints ``sessions_created``,
        ``sessions_deleted``, ``sessions_expired``, ``conflicts``, ``rate_limited``,
        ``store_latency_count``; ``responses``, a list of ``(method, status, count)``;
        ``store_errors``, kind to count; ``store_latency_buckets``, a list of
        ``(upper bound in seconds, cumulative count)``; ``store_latency_sum`` in seconds."""

    def save_snapshot(self) -> int | None:
        """Saves live sessions to the configured snapshot; how many, or None without one.

        Raises:
            OSError: when the snapshot cannot be written.
        """
