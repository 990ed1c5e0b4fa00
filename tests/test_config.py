"""Module configuration: bad values stop Synapse from starting, with a message naming the key."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from support.http_client import create_session, post_create

from devtools.synapse import SynapseStartError

if TYPE_CHECKING:
    from conftest import ServerFactory

pytestmark = pytest.mark.usefixtures("needs_module")

BAD_CONFIGS: list[tuple[dict[str, object], str]] = [
    ({"ttl": -1}, "ttl"),
    ({"capacity": 0}, "capacity"),
    ({"max_payload_bytes": "lots"}, "max_payload_bytes"),
    ({"no_such_key": 1}, "no_such_key"),
    ({"rate_limit": {"trusted_proxies": ["nope"]}}, "rate_limit.trusted_proxies[0]"),
]


@pytest.mark.parametrize(
    ("config", "key"), BAD_CONFIGS, ids=[f"{k}={v!r}" for c, _ in BAD_CONFIGS for k, v in c.items()]
)
def test_bad_config_is_a_synapse_config_error_naming_the_key(
    config: dict[str, object], key: str
) -> None:
    """What Synapse calls when it reads its config files: a ConfigError with the key's path."""
    from synapse.config._base import ConfigError

    from synapse_rendezvous.module import RendezvousModule

    with pytest.raises(ConfigError) as excinfo:
        RendezvousModule.parse_config(config)
    assert key in str(excinfo.value)
    assert excinfo.value.path == key.split(".")


def test_a_bad_key_stops_synapse_at_startup(server_factory: ServerFactory) -> None:
    """Once through a real Synapse: the error above stops it, naming the key."""
    with server_factory("takeover", {"capcity": 10}, start=False) as srv:
        with pytest.raises(SynapseStartError) as excinfo:
            srv.start(timeout=60)
        assert not srv.running
        assert srv.returncode not in (None, 0), srv.returncode
        # The error carries the tail of the log and stderr, which must name the key.
        assert "capcity" in str(excinfo.value), str(excinfo.value)


@pytest.mark.parametrize(
    ("ttl", "expected_s"), [("90s", 90), (90000, 90), ("2m", 120)], ids=["90s", "90000ms", "2m"]
)
def test_ttl_forms(ttl: object, expected_s: int) -> None:
    from synapse_rendezvous import _core

    assert f"ttl={expected_s}s" in str(_core.parse_config({"ttl": ttl}))


def test_the_ttl_applies_to_sessions(server_factory: ServerFactory) -> None:
    with server_factory("takeover", {"ttl": "90s"}) as srv:
        _, resp = create_session(srv)
        lifetime = (resp.date_header("Expires") - resp.date_header("Date")).total_seconds()
        assert 88 <= lifetime <= 91, lifetime


def test_idle_mode_starts_and_warns(server_factory: ServerFactory) -> None:
    with server_factory("idle") as srv:
        warnings = [
            r for r in srv.log_records() if r.level == "WARNING" and "idle" in r.message.lower()
        ]
        assert warnings, srv.log_text()[-5000:]


def test_idle_mode_does_not_serve_the_create_path(server_factory: ServerFactory) -> None:
    with server_factory("idle") as srv:
        resp = post_create(srv, b"hello")
        assert resp.status != 201, resp
