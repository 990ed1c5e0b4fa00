"""Restarting Synapse in the middle of a rendezvous.

With the Redis store, and with the memory store given a ``snapshot_path``, a session survives
a clean restart (SIGTERM, then start again on the same port: `SynapseServer.restart`) with the same
ETag, dates and data, and the exchange simply continues. With the memory store and no
snapshot (the default), a restart ends every session. A corrupt snapshot is logged and
ignored: it never stops Synapse from starting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
from support.http_client import create_session, errcode, get, put
from support.http_client import etag as _etag

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from conftest import ServerFactory

    from devtools.synapse import SynapseServer

pytestmark = pytest.mark.usefixtures("needs_module")

#: Sessions created before the restart; the last one is written to after it, by one test.
SESSIONS = 3


@dataclass(frozen=True)
class Before:
    """What a session looked like just before the restart."""

    url: str
    body: bytes
    etag: str
    expires: str
    last_modified: str


@dataclass(frozen=True)
class Restarted:
    server: SynapseServer
    sessions: list[Before]
    snapshot: Path | None
    #: Whether the snapshot file existed right after the restart.
    snapshot_left_after_start: bool


def _exchange_then_restart(server: SynapseServer, snapshot: Path | None) -> Restarted:
    """Create sessions, write each one as the peer would, restart, and keep their state."""
    sessions: list[Before] = []
    for i in range(SESSIONS):
        url, created = create_session(server, f"offer {i}".encode())
        body = f"answer {i}".encode()
        written = put(server, url, body, etag=_etag(created))
        assert written.status == 202, written
        current = get(server, url)
        assert current.status == 200, current
        assert _etag(current) == _etag(written)
        sessions.append(
            Before(
                url=url,
                body=body,
                etag=_etag(written),
                expires=str(current.header("Expires")),
                last_modified=str(current.header("Last-Modified")),
            )
        )
    server.restart()
    left = snapshot is not None and snapshot.exists()
    return Restarted(server, sessions, snapshot, left)


@pytest.fixture(
    scope="module",
    params=[pytest.param("redis", marks=pytest.mark.redis), "snapshot"],
)
def restarted(
    request: pytest.FixtureRequest,
    server_factory: ServerFactory,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Restarted]:
    """A server (Redis store, or memory store with a snapshot) restarted mid-exchange."""
    snapshot: Path | None = None
    if request.param == "redis":
        # The session Redis, under a key prefix of this server's own (see conftest).
        config: dict[str, object] = {"store": "redis"}
    else:
        snapshot = tmp_path_factory.mktemp("snapshot") / "sessions.snapshot"
        config = {"snapshot_path": str(snapshot)}
    with server_factory("takeover", config) as server:
        yield _exchange_then_restart(server, snapshot)


def test_session_survives_restart_with_same_etag_and_data(restarted: Restarted) -> None:
    for before in restarted.sessions[:-1]:
        resp = get(restarted.server, before.url)
        assert resp.status == 200, resp
        assert resp.body == before.body
        assert _etag(resp) == before.etag
        assert resp.header("Expires") == before.expires
        assert resp.header("Last-Modified") == before.last_modified


def test_if_none_match_with_the_old_etag_is_304_after_restart(restarted: Restarted) -> None:
    before = restarted.sessions[0]
    resp = get(restarted.server, before.url, headers=[("If-None-Match", before.etag)])
    assert resp.status == 304, resp
    assert resp.header("ETag") == before.etag


def test_put_with_the_old_etag_is_202_after_restart(restarted: Restarted) -> None:
    before = restarted.sessions[-1]
    resp = put(restarted.server, before.url, b"after restart", etag=before.etag)
    assert resp.status == 202, resp
    assert _etag(resp) != before.etag
    current = get(restarted.server, before.url)
    assert (current.body, _etag(current)) == (b"after restart", _etag(resp))
    # The old ETag is stale now, exactly as without a restart.
    stale = put(restarted.server, before.url, b"stale", etag=before.etag)
    assert stale.status == 412, stale


@pytest.mark.parametrize("restarted", ["snapshot"], indirect=True)
def test_snapshot_file_is_gone_after_startup(restarted: Restarted) -> None:
    assert restarted.snapshot is not None
    assert not restarted.snapshot_left_after_start, restarted.snapshot
    assert not restarted.snapshot.exists(), restarted.snapshot


@pytest.mark.parametrize("restarted", ["snapshot"], indirect=True)
def test_snapshot_save_and_restore_are_logged(restarted: Restarted) -> None:
    assert restarted.snapshot is not None
    messages = [r.message for r in restarted.server.log_records()]
    saved = [m for m in messages if f"saved {SESSIONS} live sessions" in m]
    restored = [m for m in messages if f"restored {SESSIONS} of {SESSIONS} live sessions" in m]
    assert saved, restarted.server.log_text()[-4000:]
    assert restored, restarted.server.log_text()[-4000:]
    assert str(restarted.snapshot) in restored[0]


def test_corrupt_snapshot_is_logged_and_ignored(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    snapshot = tmp_path / "sessions.snapshot"
    snapshot.write_bytes(b"\x00\xffnot a snapshot\xfe\x01" * 50)
    with server_factory("takeover", {"snapshot_path": str(snapshot)}) as server:
        warnings = [
            r
            for r in server.log_records()
            if r.level == "WARNING" and str(snapshot) in r.message and "snapshot" in r.message
        ]
        assert warnings, server.log_text()[-4000:]
        assert all(r.name.startswith("synapse_rendezvous") for r in warnings), warnings
        # Synapse started and serves rendezvous as usual.
        url, created = create_session(server, b"offer")
        written = put(server, url, b"answer", etag=_etag(created))
        assert written.status == 202, written
        assert get(server, url).body == b"answer"


def test_memory_store_without_snapshot_loses_sessions_on_restart(
    server_factory: ServerFactory,
) -> None:
    """Documents the default: sessions live in the process's memory only."""
    with server_factory("takeover") as server:
        url, _ = create_session(server, b"offer")
        assert get(server, url).status == 200
        server.restart()
        resp = get(server, url)
        assert resp.status == 404, resp
        assert errcode(resp) == "M_NOT_FOUND", resp
