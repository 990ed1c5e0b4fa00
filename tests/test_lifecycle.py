"""Process lifecycle: clean shutdown on SIGTERM, and what the module logs at startup."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from support.http_client import create_session, delete, get, put

if TYPE_CHECKING:
    from conftest import ServerFactory, ServerVariant

    from devtools.synapse import Mode, SynapseServer

#: Measured with mode "builtin" on matrix-synapse 1.163.2: after SIGTERM Synapse runs its
#: shutdown hooks and exits with code 0 within about 0.1 s (subprocess reports 0, not -15).
#: -15 (killed by the signal without a handler) is accepted too.
CLEAN_EXIT_CODES = (0, -15)
STOP_WITHIN_S = 5.0


def _some_traffic(server: SynapseServer) -> None:
    url, created = create_session(server, b"hello")
    etag = created.header("ETag")
    assert etag is not None
    assert get(server, url).status == 200
    assert get(server, url, headers=[("If-None-Match", etag)]).status == 304
    assert put(server, url, b"world", etag=etag).status == 202
    assert put(server, url, b"stale", etag=etag).status == 412
    assert delete(server, url).status == 204
    assert get(server, url).status == 404


def test_sigterm_stops_synapse_quickly_after_traffic(
    variant: ServerVariant, server_factory: ServerFactory
) -> None:
    with server_factory(variant) as srv:
        _some_traffic(srv)
        started = time.monotonic()
        # A generous SIGKILL deadline, so that a hang shows up as a slow, killed stop.
        code = srv.stop(timeout=STOP_WITHIN_S + 5)
        elapsed = time.monotonic() - started
        assert elapsed < STOP_WITHIN_S, f"stop took {elapsed:.1f} s (exit code {code})"
        assert code in CLEAN_EXIT_CODES, code


def test_startup_logs_mode_and_limits_once(
    module_mode: Mode, server_factory: ServerFactory
) -> None:
    with server_factory(module_mode) as srv:
        lines = [
            r.message
            for r in srv.log_records()
            if r.name.startswith("synapse_rendezvous")
            and r.level == "INFO"
            and module_mode in r.message
            and all(key in r.message for key in ("ttl", "capacity", "max_payload_bytes"))
        ]
        assert len(lines) == 1, lines or srv.log_text()[-5000:]
