"""Fixtures that boot real Synapse homeservers (see `devtools.synapse`).

Every spec test takes the ``server`` fixture and so runs once per entry of `SERVER_VARIANTS`
(by default our module in takeover mode and in delegation mode, each with the memory store and
with the Redis store). The shared servers use the module's defaults, except that per-client
rate limiting is off (`BASE_MODULE_CONFIG`); tests that need special limits start their own
server with the ``server_factory`` fixture, still once per variant (the ``variant`` fixture).

``SYNAPSE_RENDEZVOUS_TEST_MODES`` (comma-separated, default ``takeover,delegation,standalone``)
selects the modes, and ``SYNAPSE_RENDEZVOUS_TEST_STORES`` (comma-separated, default
``memory,redis``) the session stores our module runs with: each mode runs once per store. The
``redis`` variants (``takeover-redis``, ``delegation-redis``, marked ``redis``) use one
redis-server for the whole session (`RedisServer`, on a port picked when this file is
imported), started only when the first of their servers starts, so ``-m "not redis"`` needs no
Redis; every server started for them gets its own ``key_prefix``, so that no server sees another
one's sessions. With ``SYNAPSE_RENDEZVOUS_TEST_STORES=memory`` every test marked ``redis`` is
skipped.

Tests of their own Redis (outages) use ``redis_factory``; tests of Synapse workers use
``deployment_factory`` (a main process plus generic workers, see `deployment.Deployment`).

``SYNAPSE_RENDEZVOUS_TEST_MODES=builtin`` runs the spec tests against Synapse's own
implementation, a check of the tests themselves: tests marked ``improvement`` (behaviour where
we deliberately differ from Synapse) are then expected to fail (strict xfail), and tests that
need our module (``module_mode``) are skipped.

Mode ``standalone`` is the standalone server (``synapse-rendezvous-server``, see
`standalone.StandaloneServer`) instead of a Synapse, with each store like the modes above
(``standalone``, ``standalone-redis``). It runs the files of `STANDALONE_SUITES` only (the other
tests are about Synapse itself), minus the tests marked ``homeserver``;
``tests/test_standalone*.py`` test the server where it differs.

Tests marked ``semantic`` (pure semantics of the API that Synapse, Twisted and the server
cannot break: ETag values, expiry arithmetic, payload equality; the Rust spec tests in
``rust/core/tests/spec/`` are their spec) run only in `SEMANTIC_VARIANTS` (``takeover`` on
memory, ``standalone-redis``, and ``builtin`` for the self-check); what the hosts can break
(routing per mode, header writing, HEAD and 304 framing, CORS, the delegation redirect, limits
through real addresses, restarts) stays unmarked and runs in every variant.

Tests marked ``slow`` (several seconds each: building the wheel, waiting out rate-limit
windows, TTLs and the reclaim run) are deselected by ``-m "not slow"`` for a quick run.

The processes come from ``devtools`` at the repository root (not installed; shared with the
bench), the helpers from ``tests/support`` (the HTTP client `support.http_client`).
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast

import pytest

_TESTS = Path(__file__).resolve().parent
for _path in (_TESTS, _TESTS.parent):
    # Under --import-mode=importlib nothing is added to sys.path: make the helper package
    # `support` (tests/) and `devtools` (the repository root, never installed) importable.
    # Appended, so that an installed synapse_rendezvous wins over the source tree.
    if str(_path) not in sys.path:
        sys.path.append(str(_path))

from support.deployment import Deployment  # noqa: E402

from devtools.redis import RedisError, RedisServer  # noqa: E402
from devtools.standalone import StandaloneServer, StandaloneStartError  # noqa: E402
from devtools.synapse import (  # noqa: E402
    MODES,
    Mode,
    SynapseServer,
    SynapseStartError,
    free_port,
)

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence
    from contextlib import AbstractContextManager

MODES_ENV = "SYNAPSE_RENDEZVOUS_TEST_MODES"
DEFAULT_MODES = "takeover,delegation,standalone"
#: The standalone server, in SYNAPSE_RENDEZVOUS_TEST_MODES.
STANDALONE = "standalone"
#: The test files whose server variants include the standalone server: the black-box spec
#: suite, the limits, the stop on SIGTERM. The others test Synapse and the module in it.
STANDALONE_SUITES = ("spec/", "test_rate_limits.py", "test_lifecycle.py")
STORES_ENV = "SYNAPSE_RENDEZVOUS_TEST_STORES"
DEFAULT_STORES = "memory,redis"
STORES = ("memory", "redis")


def enabled_modes() -> list[Mode]:
    """The modes selected by ``SYNAPSE_RENDEZVOUS_TEST_MODES``."""
    raw = os.environ.get(MODES_ENV, "").strip() or DEFAULT_MODES
    modes: list[Mode] = []
    for item in raw.split(","):
        name = item.strip()
        if not name or name == STANDALONE:
            continue
        if name not in MODES or name == "idle":
            raise pytest.UsageError(
                f"{MODES_ENV}: unknown mode {name!r} "
                "(use takeover, delegation, builtin, standalone)"
            )
        modes.append(cast("Mode", name))
    return modes


def standalone_enabled() -> bool:
    """Whether ``SYNAPSE_RENDEZVOUS_TEST_MODES`` selects the standalone server."""
    raw = os.environ.get(MODES_ENV, "").strip() or DEFAULT_MODES
    return STANDALONE in {item.strip() for item in raw.split(",")}


def enabled_stores() -> list[str]:
    """The session stores selected by ``SYNAPSE_RENDEZVOUS_TEST_STORES``."""
    raw = os.environ.get(STORES_ENV, "").strip() or DEFAULT_STORES
    stores: list[str] = []
    for item in raw.split(","):
        name = item.strip()
        if not name:
            continue
        if name not in STORES:
            raise pytest.UsageError(f"{STORES_ENV}: unknown store {name!r} (use memory, redis)")
        stores.append(name)
    return stores


#: The port of the redis-server shared by the whole session (see `_Servers.session_redis`),
#: picked now since the module config of the redis variants is static. It is only started
#: when a server of a redis variant starts.
SESSION_REDIS_PORT = free_port()
SESSION_REDIS_URL = f"redis://127.0.0.1:{SESSION_REDIS_PORT}/0"


#: Put under every module config of the test servers (a test's own config replaces it key by
#: key). The spec tests create far more sessions from 127.0.0.1 than the module's default
#: per-client limits allow (a burst of 10 creates, then one every 5 s; 20 live sessions per
#: client), so rate limiting is off here; it gets its own tests with their own config.
BASE_MODULE_CONFIG: Mapping[str, object] = {"rate_limit": {"enabled": False}}


@dataclass(frozen=True)
class ServerVariant:
    """One way of running the server under test.

    ``module_config`` is merged under the module config a test asks for. A later dimension
    (for example the session store, memory or redis) adds entries to `SERVER_VARIANTS` with
    its own ``module_config``, ``label`` and ``marks`` (e.g. ``pytest.mark.redis``).
    """

    mode: Mode
    module_config: Mapping[str, object] = field(default_factory=dict)
    label: str = ""
    marks: tuple[pytest.MarkDecorator, ...] = ()
    #: The standalone server rather than a Synapse; ``mode`` is then the layout it serves
    #: (delegation's).
    standalone: bool = False

    @property
    def id(self) -> str:
        name = STANDALONE if self.standalone else self.mode
        return f"{name}-{self.label}" if self.label else name

    @property
    def uses_module(self) -> bool:
        return self.mode != "builtin"

    @property
    def store(self) -> str:
        """The session store of our module in this variant (``memory`` or ``redis``)."""
        return str(self.module_config.get("store", "memory"))

    def config(self, overrides: Mapping[str, object] | None = None) -> dict[str, object]:
        """The module config for a server of this variant with ``overrides`` on top."""
        return {**BASE_MODULE_CONFIG, **self.module_config, **(overrides or {})}


#: The module config of the redis variants. The server factory adds a ``key_prefix`` of its
#: own to every server it starts with the session Redis.
REDIS_MODULE_CONFIG: Mapping[str, object] = {
    "store": "redis",
    "redis": {"url": SESSION_REDIS_URL},
}


def _server_variants() -> list[ServerVariant]:
    stores = enabled_stores()
    variants: list[ServerVariant] = []
    for mode in enabled_modes():
        if mode == "builtin":
            # Synapse's own implementation has no store to choose.
            variants.append(ServerVariant(mode))
            continue
        if "memory" in stores:
            variants.append(ServerVariant(mode))
        if "redis" in stores:
            variants.append(
                ServerVariant(mode, REDIS_MODULE_CONFIG, label="redis", marks=(pytest.mark.redis,))
            )
    if standalone_enabled():
        if "memory" in stores:
            variants.append(ServerVariant("delegation", standalone=True))
        if "redis" in stores:
            variants.append(
                ServerVariant(
                    "delegation",
                    REDIS_MODULE_CONFIG,
                    label="redis",
                    marks=(pytest.mark.redis,),
                    standalone=True,
                )
            )
    return variants


SERVER_VARIANTS: list[ServerVariant] = _server_variants()

#: Modes with our module loaded, for tests of the module itself (config, logging).
MODULE_MODES: list[Mode] = [m for m in enabled_modes() if m != "builtin"]


def _variant_params() -> list[object]:
    return [pytest.param(v, id=v.id, marks=v.marks) for v in SERVER_VARIANTS]


# -- markers and parametrisation --------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "improvement(reason): behaviour where our module deliberately differs from Synapse's "
        "built-in implementation; expected to fail when run against mode builtin",
    )
    config.addinivalue_line(
        "markers",
        "homeserver: needs a Synapse homeserver (its own endpoints or logs), not only the "
        "rendezvous API: not run against the standalone server",
    )
    config.addinivalue_line(
        "markers",
        "semantic: pure semantics of the rendezvous API that Synapse, Twisted and the server "
        "cannot change (the Rust spec tests own them): run in `SEMANTIC_VARIANTS` only",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # ``module_mode``: a mode in which our module is loaded (empty set under builtin only).
    if "module_mode" in metafunc.fixturenames:
        metafunc.parametrize("module_mode", MODULE_MODES)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    redis_selected = "redis" in enabled_stores()
    _deselect_standalone(config, items)
    _deselect_semantic(config, items)
    for item in items:
        # Skipped here rather than by a fixture, so that no module-scoped server or
        # deployment boots for a test that is skipped anyway.
        if not MODULE_MODES and "needs_module" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.skip(reason=f"{MODES_ENV} selects no mode with our module"))
        if not redis_selected and item.get_closest_marker("redis") is not None:
            item.add_marker(pytest.mark.skip(reason=f"{STORES_ENV} does not select redis"))
        marker = item.get_closest_marker("improvement")
        if marker is None:
            continue
        callspec = getattr(item, "callspec", None)
        params: dict[str, object] = callspec.params if callspec is not None else {}
        if any(isinstance(v, ServerVariant) and not v.uses_module for v in params.values()):
            reason = marker.args[0] if marker.args else "improvement over Synapse"
            item.add_marker(pytest.mark.xfail(reason=f"builtin: {reason}", strict=True))


def _deselect_standalone(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Drops the standalone variants of tests outside `STANDALONE_SUITES` or marked
    ``homeserver``: they test Synapse, not the rendezvous API."""
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        params: dict[str, object] = callspec.params if callspec is not None else {}
        standalone = any(isinstance(v, ServerVariant) and v.standalone for v in params.values())
        where = item.path.relative_to(_TESTS).as_posix()
        suited = where.startswith(STANDALONE_SUITES)
        if standalone and (not suited or item.get_closest_marker("homeserver") is not None):
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


#: The variants a test marked ``semantic`` runs in: one per store (our module in Synapse on
#: memory, the standalone server on Redis) and the built-in (the self-check).
SEMANTIC_VARIANTS = ("takeover", "standalone-redis", "builtin")


def _variant_of(item: pytest.Item) -> ServerVariant | None:
    callspec = getattr(item, "callspec", None)
    params: dict[str, object] = callspec.params if callspec is not None else {}
    return next((v for v in params.values() if isinstance(v, ServerVariant)), None)


def _deselect_semantic(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keeps the tests marked ``semantic`` in `SEMANTIC_VARIANTS` only; when the variants
    selected by the environment include none of them, in the first selected one, so that
    every test still runs once."""
    enabled = [v.id for v in SERVER_VARIANTS]
    wanted = {v for v in SEMANTIC_VARIANTS if v in enabled} or set(enabled[:1])
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        variant = _variant_of(item)
        if (
            variant is not None
            and variant.id not in wanted
            and item.get_closest_marker("semantic") is not None
        ):
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


# -- servers ----------------------------------------------------------------------------------


def start_or_fail(server: SynapseServer, timeout: float = 60.0) -> None:
    """Start ``server``; if it does not come up, fail the test with the tail of its log."""
    try:
        server.start(timeout)
    except SynapseStartError as exc:
        pytest.fail(f"Synapse ({server.mode}) failed to start:\n{exc}", pytrace=False)


def start_standalone_or_fail(server: StandaloneServer, timeout: float = 30.0) -> None:
    """Start ``server``; if it does not come up, fail the test with the tail of its log."""
    try:
        server.start(timeout)
    except StandaloneStartError as exc:
        pytest.fail(f"the standalone server failed to start:\n{exc}", pytrace=False)


class ServerFactory(Protocol):
    def __call__(
        self,
        variant: ServerVariant | Mode,
        module_config: Mapping[str, object] | None = None,
        *,
        extra_config: Mapping[str, object] | None = None,
        start: bool = True,
    ) -> AbstractContextManager[SynapseServer]: ...


def start_redis_or_fail(redis: RedisServer, timeout: float = 10.0) -> None:
    """Start ``redis``; if it does not come up (or the binary is missing), fail the test."""
    try:
        redis.start(timeout)
    except RedisError as exc:
        pytest.fail(f"redis-server failed to start:\n{exc}", pytrace=False)


class _Servers:
    """Starts servers on demand and makes sure every one of them is stopped.

    Also owns the session's shared redis-server, started on first use by `session_redis`.
    """

    def __init__(self) -> None:
        self.live: list[SynapseServer] = []
        self.live_standalone: list[StandaloneServer] = []
        self._redis: RedisServer | None = None
        self._prefixes = 0

    def session_redis(self) -> RedisServer:
        """The redis-server of the redis variants (on `SESSION_REDIS_PORT`), started if needed."""
        if self._redis is None:
            self._redis = RedisServer(SESSION_REDIS_PORT)
        if not self._redis.running:
            start_redis_or_fail(self._redis)
        return self._redis

    def unique_key_prefix(self) -> str:
        """A ``key_prefix`` used by no other server of this session."""
        self._prefixes += 1
        return f"rendezvous-test:{os.getpid()}:{self._prefixes}:"

    def module_config(
        self, variant: ServerVariant, overrides: Mapping[str, object] | None
    ) -> dict[str, object]:
        """The variant's module config with ``overrides`` on top; for the Redis store, with
        the session Redis when no URL is given, started, and a fresh ``key_prefix`` unless
        one is given."""
        config = variant.config(overrides)
        if config.get("store") != "redis":
            return config
        raw = config.get("redis")
        redis_block: dict[str, object] = dict(raw) if isinstance(raw, dict) else {}
        redis_block.setdefault("url", SESSION_REDIS_URL)
        if redis_block["url"] == SESSION_REDIS_URL:
            self.session_redis()
        redis_block.setdefault("key_prefix", self.unique_key_prefix())
        config["redis"] = redis_block
        return config

    @contextlib.contextmanager
    def running(
        self,
        variant: ServerVariant | Mode,
        module_config: Mapping[str, object] | None = None,
        *,
        extra_config: Mapping[str, object] | None = None,
        start: bool = True,
    ) -> Iterator[SynapseServer]:
        """A server of ``variant`` (or a plain mode) with ``module_config`` on top of the
        variant's; started unless ``start`` is false, always stopped on exit."""
        if not isinstance(variant, ServerVariant):
            variant = ServerVariant(variant)
        config = self.module_config(variant, module_config)
        if variant.standalone:
            # The tests see a SynapseServer: the standalone server offers the part they use (see
            # `standalone.StandaloneServer`); ``extra_config`` holds server keys here.
            with self._standalone(config, extra_config, start=start) as standalone:
                yield cast("SynapseServer", standalone)
            return
        server = SynapseServer(mode=variant.mode, module_config=config, extra_config=extra_config)
        self.live.append(server)
        try:
            if start:
                start_or_fail(server)
            yield server
        finally:
            server.stop()
            self.live.remove(server)

    @contextlib.contextmanager
    def _standalone(
        self,
        config: Mapping[str, object],
        server_config: Mapping[str, object] | None,
        *,
        start: bool,
    ) -> Iterator[StandaloneServer]:
        server = StandaloneServer(config, server_config=server_config)
        self.live_standalone.append(server)
        try:
            if start:
                start_standalone_or_fail(server)
            yield server
        finally:
            server.stop()
            self.live_standalone.remove(server)

    def stop_all(self) -> None:
        try:
            for server in list(self.live):
                server.stop()
            self.live.clear()
            for standalone in list(self.live_standalone):
                standalone.stop()
            self.live_standalone.clear()
        finally:
            if self._redis is not None:
                self._redis.close()
                self._redis = None


@pytest.fixture(scope="session")
def _servers() -> Iterator[_Servers]:
    servers = _Servers()
    try:
        yield servers
    finally:
        servers.stop_all()


@pytest.fixture(scope="session")
def server_factory(_servers: _Servers) -> ServerFactory:
    """``with server_factory(variant, {"ttl": "2s"}) as srv:`` runs a dedicated server."""
    return _servers.running


class RedisFactory(Protocol):
    def __call__(self, *, start: bool = True) -> AbstractContextManager[RedisServer]: ...


@contextlib.contextmanager
def _own_redis(*, start: bool = True) -> Iterator[RedisServer]:
    # A server not started now gets its port fixed already, so that a URL given to Synapse
    # before it starts stays right.
    redis = RedisServer() if start else RedisServer(free_port())
    try:
        if start:
            start_redis_or_fail(redis)
        yield redis
    finally:
        redis.close()


@pytest.fixture(scope="session")
def redis_factory() -> RedisFactory:
    """``with redis_factory() as redis:`` runs a redis-server of the test's own (free port,
    no persistence), stopped and removed on exit; the test may stop, restart, pause it.
    With ``start=False`` it is not started yet (its port and URL are fixed already)."""
    return _own_redis


class DeploymentFactory(Protocol):
    def __call__(
        self,
        mode: Mode,
        module_config: Mapping[str, object] | None = None,
        *,
        redis: RedisServer,
        workers: int = 2,
        extra_config: Mapping[str, object] | None = None,
        worker_wrapper: Sequence[str] = (),
    ) -> AbstractContextManager[Deployment]: ...


@contextlib.contextmanager
def _running_deployment(
    mode: Mode,
    module_config: Mapping[str, object] | None = None,
    *,
    redis: RedisServer,
    workers: int = 2,
    extra_config: Mapping[str, object] | None = None,
    worker_wrapper: Sequence[str] = (),
) -> Iterator[Deployment]:
    deployment = Deployment(
        mode=mode,
        module_config={**BASE_MODULE_CONFIG, **(module_config or {})},
        redis_port=redis.port,
        workers=workers,
        extra_config=extra_config,
        worker_wrapper=worker_wrapper,
    )
    try:
        try:
            deployment.start()
        except SynapseStartError as exc:
            pytest.fail(f"the worker deployment ({mode}) failed to start:\n{exc}", pytrace=False)
        yield deployment
    finally:
        deployment.stop()


@pytest.fixture(scope="session")
def deployment_factory() -> DeploymentFactory:
    """``with deployment_factory("takeover", {"store": "redis"}, redis=redis) as dep:`` runs
    a main process and ``workers`` generic workers (see `deployment.Deployment`) whose
    Synapse replication uses ``redis``, with our module configured like the test servers
    (`BASE_MODULE_CONFIG` under ``module_config``); everything is stopped on exit."""
    return _running_deployment


@pytest.fixture(scope="session")
def session_redis(_servers: _Servers) -> RedisServer:
    """The redis-server shared by the servers of the redis variants (started on first use).

    Never stop it: use a `RedisServer` of your own to test outages.
    """
    return _servers.session_redis()


@pytest.fixture(scope="session", params=_variant_params())
def variant(request: pytest.FixtureRequest) -> ServerVariant:
    """The server variant under test (see `SERVER_VARIANTS`)."""
    value = request.param
    assert isinstance(value, ServerVariant)
    return value


@pytest.fixture(scope="session")
def server(variant: ServerVariant, server_factory: ServerFactory) -> Iterator[SynapseServer]:
    """A Synapse shared by the whole session for ``variant``, with the module's defaults."""
    with server_factory(variant) as srv:
        yield srv


@pytest.fixture
def needs_module() -> None:
    """Skip unless a mode with our module is selected (not under ``...MODES=builtin``)."""
    if not MODULE_MODES:
        pytest.skip(f"{MODES_ENV} selects no mode with the synapse_rendezvous module")
