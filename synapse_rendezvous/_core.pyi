"""The Rust extension: configuration validation and the request handler.

Everything about sessions, stores and HTTP semantics happens here; the Python package only
glues Synapse and Twisted to it: it hands requests over, opens the Redis connections and
moves their bytes, and runs the timer and maintenance the handler asks for.
"""

from collections.abc import Callable, Mapping
from typing import Any, Literal, final

from twisted.internet.interfaces import ITransport
from twisted.web.iweb import IRequest

__all__ = [
    "Config",
    "ConfigError",
    "Metrics",
    "ProtocolCounters",
    "RedisAddress",
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
    """Validated configuration, as returned by :func:`parse_config`; ``str()`` gives the
    startup log line (never the Redis URL). Immutable: copies are the object itself."""

    @property
    def store_kind(self) -> Literal["memory", "redis"]:
        """Which store holds the sessions."""

    @property
    def uses_homeserver_redis(self) -> bool:
        """The Redis store uses the homeserver's own ``redis:`` section (no ``redis.url``),
        whose TLS files then apply too."""

    def startup_warnings(self, *, x_forwarded_client_listener: bool) -> list[str]:
        """What the operator should hear at startup about how clients are told apart, given
        whether a listener serving the client API has ``x_forwarded: true``."""

    def __copy__(self) -> Config: ...
    def __deepcopy__(self, memo: Any, /) -> Config: ...

def parse_config(config: Mapping[str, object] | None, /) -> Config:
    """Validates the module's ``config:`` block.

    Raises:
        ConfigError: naming the first unknown key or invalid value.
    """

@final
class Metrics:
    """Every counter of a handler at one instant."""

    @property
    def sessions_created(self) -> int: ...
    @property
    def sessions_deleted(self) -> int: ...
    @property
    def sessions_expired(self) -> int:
        """Ended sessions the store removed."""
    @property
    def conflicts(self) -> int:
        """Writes refused with 412 because ``If-Match`` was stale."""
    @property
    def rate_limited(self) -> int:
        """Requests refused with 429 by a rate limit or the per-client session cap."""
    @property
    def responses(self) -> list[tuple[str, int, int]]:
        """``(method, status, count)``; status 0 for statuses not counted one by one."""
    @property
    def store_errors(self) -> list[tuple[str, int]]:
        """``(kind, count)`` of failed store calls."""
    @property
    def store_latency_buckets(self) -> list[tuple[float, int]]:
        """``(upper bound in seconds, cumulative count)`` of store call durations."""
    @property
    def store_latency_count(self) -> int: ...
    @property
    def store_latency_sum(self) -> float:
        """Seconds."""
    @property
    def live_sessions(self) -> int | None:
        """Counted at scrape time for the memory store, at the last maintenance run for
        Redis; None before the first count."""
    @property
    def by_protocol(self) -> list[ProtocolCounters]:
        """The counters of each protocol, MSC4108 first."""

@final
class ProtocolCounters:
    """One protocol's share of a `Metrics` reading."""

    @property
    def protocol(self) -> Literal["msc4108", "msc4388"]: ...
    @property
    def sessions_created(self) -> int: ...
    @property
    def sessions_deleted(self) -> int: ...
    @property
    def conflicts(self) -> int:
        """Writes refused as concurrent: 412 for MSC4108, 409 for MSC4388."""
    @property
    def rate_limited(self) -> int: ...
    @property
    def retries(self) -> int:
        """MSC4388 writes answered as idempotent retries; 0 for MSC4108."""
    @property
    def responses(self) -> list[tuple[str, int, int]]:
        """``(method, status, count)``; status 0 for statuses not counted one by one."""

@final
class RedisAddress:
    """Where the Redis store's server is, for the glue to connect to."""

    @property
    def kind(self) -> Literal["tcp", "unix"]: ...
    @property
    def host(self) -> str | None: ...
    @property
    def port(self) -> int | None: ...
    @property
    def tls(self) -> bool: ...
    @property
    def insecure(self) -> bool:
        """Skip verifying the server's certificate (``#insecure`` in the URL)."""
    @property
    def path(self) -> str | None: ...
    @property
    def connections(self) -> int:
        """How many connections to keep open."""
    @property
    def timeout(self) -> float:
        """Longest a request waits, in seconds; also bounds each connection attempt."""

@final
class RendezvousHandler:
    """Serves the rendezvous API for one Synapse process.

    Methods that may leave requests waiting on Redis return the delay in seconds after which
    :meth:`tick` must run, when the caller's timer is to be started, else None.
    """

    def __new__(
        cls,
        config: Config,
        public_baseurl: str,
        /,
        *,
        mode: Literal["takeover", "delegation"],
        clock: Callable[[], float],
        default_redis_url: str | None = None,
        msc4388: Literal["off", "open", "authenticated"] = "off",
    ) -> RendezvousHandler:
        """Opens the configured store (restoring a memory snapshot if one is configured).

        Args:
            config: the validated configuration.
            public_baseurl: the homeserver's ``public_baseurl``; session URLs start with it.
            mode: ``"takeover"`` serves creates on the standard path only;
                ``"delegation"`` also serves them on ``/_synapse/client/rendezvous``.
            clock: the homeserver's time in seconds since the epoch (``Clock.time``); the
                memory store's sessions live by it.
            default_redis_url: the homeserver's own Redis, used by ``store: redis`` when
                ``redis.url`` is not set.
            msc4388: Synapse's ``experimental_features.msc4388_mode``: whether MSC4388 is
                served too, and whether its creates need an authenticated caller.

        Raises:
            ConfigError: when the Redis store has no usable URL, or MSC4388 is on and
                ``ttl`` is outside 120 to 300 s.
        """

    def handle(self, request: IRequest, /, *, authenticated: bool = False) -> float | None:
        """Answers a Twisted request, now (memory) or once Redis has answered.
        ``authenticated``: the caller's access token was checked (MSC4388)."""

    def answer_unrecognized(self, request: IRequest, /) -> None:
        """Answers 404 ``M_UNRECOGNIZED``: for a request on a listener that does not serve
        the client API."""

    def maintain(self) -> float | None:
        """Frees ended sessions and counts the live ones; run periodically."""

    @property
    def redis_address(self) -> RedisAddress | None:
        """Where to connect for the Redis store; None for the memory store."""

    def redis_connected(self, index: int, transport: ITransport, /) -> float | None:
        """Connection ``index`` to Redis is open; the handler writes to ``transport``."""

    def redis_received(self, index: int, data: bytes, /) -> float | None:
        """Bytes arrived on connection ``index``."""

    def redis_lost(self, index: int, /) -> float | None:
        """Connection ``index`` is gone."""

    def tick(self) -> float | None:
        """Answers the requests whose time is up; when to run again, if anything waits."""

    def close(self) -> None:
        """At shutdown: answers every waiting request 503, closes the Redis connections and
        refuses later requests."""

    def metrics(self) -> Metrics:
        """Every counter, for the Prometheus collector."""

    def save_snapshot(self) -> int | None:
        """Saves live sessions to the configured snapshot; how many, or None without one.

        Raises:
            OSError: when the snapshot cannot be written.
        """
