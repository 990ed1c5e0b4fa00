"""Fixtures that boot real Synapse homeservers (see `synapse_rendezvous.devserver`).

Every spec test takes the ``server`` fixture and so runs once per entry of `SERVER_VARIANTS`
(by default our module in takeover mode and in delegation mode). The shared servers use the
module's defaults, except that per-client rate limiting is off (`BASE_MODULE_CONFIG`); tests
that need special limits start their own server with the ``server_factory`` fixture, still once
per variant (the ``variant`` fixture).

``SYNAPSE_RENDEZVOUS_TEST_MODES`` (comma-separated, default ``takeover,delegation``) selects the
modes. ``SYNAPSE_RENDEZVOUS_TEST_MODES=builtin`` runs the spec tests against Synapse's own
implementation, a check of the tests themselves: tests marked ``improvement`` (behaviour where
we deliberately differ from Synapse) are then expected to fail (strict xfail), and tests that
need our module (``module_mode``) are skipped.
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
    # Under --import-mode=importlib nothing is added to sys.path: make the helper module
    # `http_client` importable, and (when the package is not installed) the pure-Python
    # `synapse_rendezvous.devserver`. Appended, so that an installed synapse_rendezvous wins
    # over the source tree.
    if str(_path) not in sys.path:
        sys.path.append(str(_path))

from synapse_rendezvous.devserver import MODES, DevServer, Mode, SynapseStartError  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from contextlib import AbstractContextManager

MODES_ENV = "SYNAPSE_RENDEZVOUS_TEST_MODES"
DEFAULT_MODES = "takeover,delegation"


def enabled_modes() -> list[Mode]:
    """The modes selected by ``SYNAPSE_RENDEZVOUS_TEST_MODES``."""
    raw = os.environ.get(MODES_ENV, "").strip() or DEFAULT_MODES
    modes: list[Mode] = []
    for item in raw.split(","):
        name = item.strip()
        if not name:
            continue
        if name not in MODES or name == "idle":
            raise pytest.UsageError(
                f"{MODES_ENV}: unknown mode {name!r} (use takeover, delegation, builtin)"
            )
        modes.append(cast("Mode", name))
    return modes


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

    @property
    def id(self) -> str:
        return f"{self.mode}-{self.label}" if self.label else self.mode

    @property
    def uses_module(self) -> bool:
        return self.mode != "builtin"

    def config(self, overrides: Mapping[str, object] | None = None) -> dict[str, object]:
        """The module config for a server of this variant with ``overrides`` on top."""
        return {**BASE_MODULE_CONFIG, **self.module_config, **(overrides or {})}


SERVER_VARIANTS: list[ServerVariant] = [ServerVariant(mode) for mode in enabled_modes()]

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


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # ``module_mode``: a mode in which our module is loaded (empty set under builtin only).
    if "module_mode" in metafunc.fixturenames:
        metafunc.parametrize("module_mode", MODULE_MODES)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        marker = item.get_closest_marker("improvement")
        if marker is None:
            continue
        callspec = getattr(item, "callspec", None)
        params: dict[str, object] = callspec.params if callspec is not None else {}
        if any(isinstance(v, ServerVariant) and not v.uses_module for v in params.values()):
            reason = marker.args[0] if marker.args else "improvement over Synapse"
            item.add_marker(pytest.mark.xfail(reason=f"builtin: {reason}", strict=True))


# -- servers ----------------------------------------------------------------------------------


def start_or_fail(server: DevServer, timeout: float = 60.0) -> None:
    """Start ``server``; if it does not come up, fail the test with the tail of its log."""
    try:
        server.start(timeout)
    except SynapseStartError as exc:
        pytest.fail(f"Synapse ({server.mode}) failed to start:\n{exc}", pytrace=False)


class ServerFactory(Protocol):
    def __call__(
        self,
        variant: ServerVariant | Mode,
        module_config: Mapping[str, object] | None = None,
        *,
        extra_config: Mapping[str, object] | None = None,
        start: bool = True,
    ) -> AbstractContextManager[DevServer]: ...


class _Servers:
    """Starts servers on demand and makes sure every one of them is stopped."""

    def __init__(self) -> None:
        self.live: list[DevServer] = []

    @contextlib.contextmanager
    def running(
        self,
        variant: ServerVariant | Mode,
        module_config: Mapping[str, object] | None = None,
        *,
        extra_config: Mapping[str, object] | None = None,
        start: bool = True,
    ) -> Iterator[DevServer]:
        """A server of ``variant`` (or a plain mode) with ``module_config`` on top of the
        variant's; started unless ``start`` is false, always stopped on exit."""
        if not isinstance(variant, ServerVariant):
            variant = ServerVariant(variant)
        server = DevServer(
            mode=variant.mode,
            module_config=variant.config(module_config),
            extra_config=extra_config,
        )
        self.live.append(server)
        try:
            if start:
                start_or_fail(server)
            yield server
        finally:
            server.stop()
            self.live.remove(server)

    def stop_all(self) -> None:
        for server in list(self.live):
            server.stop()
        self.live.clear()


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


@pytest.fixture(scope="session", params=_variant_params())
def variant(request: pytest.FixtureRequest) -> ServerVariant:
    """The server variant under test (see `SERVER_VARIANTS`)."""
    value = request.param
    assert isinstance(value, ServerVariant)
    return value


@pytest.fixture(scope="session")
def server(variant: ServerVariant, server_factory: ServerFactory) -> Iterator[DevServer]:
    """A Synapse shared by the whole session for ``variant``, with the module's defaults."""
    with server_factory(variant) as srv:
        yield srv


@pytest.fixture
def needs_module() -> None:
    """Skip unless a mode with our module is selected (not under ``...MODES=builtin``)."""
    if not MODULE_MODES:
        pytest.skip(f"{MODES_ENV} selects no mode with the synapse_rendezvous module")
