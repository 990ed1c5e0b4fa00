"""Module configuration: bad values stop Synapse from starting, with a message naming the key."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from http_client import create_session, post_create

from synapse_rendezvous.devserver import SynapseStartError

if TYPE_CHECKING:
    from conftest import ServerFactory

pytestmark = pytest.mark.usefixtures("needs_module")

BAD_CONFIGS: list[tuple[dict[str, object], str]] = [
    ({"ttl": -1}, "ttl"),
    ({"capacity": 0}, "capacity"),
    ({"max_payload_bytes": "lots"}, "max_payload_bytes"),
    ({"no_such_key": 1}, "no_such_key"),
]


@pytest.mark.parametrize(
    ("config", "key"), BAD_CONFIGS, ids=[f"{k}={v!r}" for c, _ in BAD_CONFIGS for k, v in c.items()]
)
def test_bad_config_stops_startup_naming_the_key(
    server_factory: ServerFactory, config: dict[str, object], key: str
) -> None:
    with server_factory("takeover", config, start=False) as srv:
        with pytest.raises(SynapseStartError) as excinfo:
            srv.start(timeout=60)
        assert not srv.running
        assert srv.returncode not in (None, 0), srv.returncode
        # The error carries the tail of the log and stderr, which must name the key.
        assert key in str(excinfo.value), str(excinfo.value)


@pytest.mark.parametrize(
    ("ttl", "expected_s"), [("90s", 90), (90000, 90), ("2m", 120)], ids=["90s", "90000ms", "2m"]
)
def test_valid_ttl_forms_start_and_apply(
    server_factory: ServerFactory, ttl: object, expected_s: int
) -> None:
    with server_factory("takeover", {"ttl": ttl}) as srv:
        _, resp = create_session(srv)
        lifetime = (resp.date_header("Expires") - resp.date_header("Date")).total_seconds()
        assert expected_s - 2 <= lifetime <= expected_s + 1, lifetime


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
