"""State that someone else wrote, read back through a real Synapse: a forged snapshot file, a
symlink planted where the snapshot is written, and forged session hashes in Redis. Nothing a
forger puts there brings back a session this configuration could not have created, holds
capacity beyond the lifetime, or breaks a response; each drop is logged as a WARNING.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
import time
from typing import TYPE_CHECKING

import pytest
from support.http_client import create_session, get, session_url

if TYPE_CHECKING:
    from pathlib import Path

    from conftest import RedisFactory, ServerFactory

    from devtools.synapse import SynapseServer

pytestmark = pytest.mark.usefixtures("needs_module")

MAGIC = b"SRVSNAP1"
#: Crockford base32, the ULID alphabet.
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
YEAR_8307_MS = 200_000_000_000_000


def _ulid(value: int) -> str:
    return "".join(ALPHABET[(value >> (5 * (25 - i))) & 31] for i in range(26))


def _entry(ident: int, expires_ms: int, payload: bytes) -> bytes:
    tag = f"forged{ident}".encode()
    now_ms = int(time.time() * 1000)
    return (
        ident.to_bytes(16, "big")
        + struct.pack(">QQ", expires_ms, now_ms)
        + bytes([len(tag)])
        + tag
        + struct.pack(">I", len(payload))
        + payload
    )


def _snapshot(entries: list[bytes]) -> bytes:
    """A snapshot in the documented layout, with a valid checksum: forging one is easy."""
    body = MAGIC + struct.pack(">I", len(entries)) + b"".join(entries)
    return body + hashlib.sha256(body).digest()


def _warnings(server: SynapseServer) -> list[str]:
    return [r.message for r in server.log_records() if r.level == "WARNING"]


def test_a_forged_snapshot_restores_only_what_could_be_ours(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    path = tmp_path / "sessions.snapshot"
    in_a_minute = int(time.time() * 1000) + 60_000
    honest, oversized, lasting = 1 << 80, 2 << 80, 3 << 80
    path.write_bytes(
        _snapshot(
            [
                _entry(honest, in_a_minute, b"fine"),
                _entry(oversized, in_a_minute, b"x" * (8 * 1024 * 1024)),
                _entry(lasting, YEAR_8307_MS, b"forever"),
            ]
        )
    )
    with server_factory("takeover", {"snapshot_path": str(path)}) as server:
        assert any("dropped 2" in w for w in _warnings(server)), _warnings(server)
        assert get(server, session_url(server, _ulid(honest))).body == b"fine"
        for ident in (oversized, lasting):
            assert get(server, session_url(server, _ulid(ident))).status == 404
        server.stop()
    # Saved again at shutdown: private to its owner.
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_planted_symlink_is_never_written_through(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    path = tmp_path / "sessions.snapshot"
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    os.symlink(victim, tmp_path / "sessions.snapshot.tmp")
    with server_factory("takeover", {"snapshot_path": str(path)}) as server:
        create_session(server, b"offer")
        server.stop()
    assert victim.read_bytes() == b"precious"
    assert path.is_file()
    assert not path.is_symlink()
    # A symlink at the path itself is not read.
    path.unlink()
    os.symlink(victim, path)
    with server_factory("takeover", {"snapshot_path": str(path)}) as server:
        assert any("snapshot" in w for w in _warnings(server)), _warnings(server)
    assert victim.read_bytes() == b"precious"


@pytest.mark.redis
def test_forged_sessions_in_redis_are_dropped(
    server_factory: ServerFactory, redis_factory: RedisFactory
) -> None:
    prefix = "forged-test:"
    with redis_factory() as redis:
        config = {"store": "redis", "redis": {"url": redis.url, "key_prefix": prefix}}
        with server_factory("takeover", config) as server:
            url, _ = create_session(server, b"honest")
            now_ms = int(time.time() * 1000)
            forged = {
                _ulid(5 << 80): (str(YEAR_8307_MS), b"forever"),
                _ulid(6 << 80): (str(now_ms + 60_000), b"x" * 10_000),
                # Past the last HTTP date: would have made the date formatting fail.
                _ulid(7 << 80): ("253402300800000", b"late"),
            }
            for ident, (expires, payload) in forged.items():
                key = f"{prefix}session:{ident}"
                redis.execute("HSET", key, "payload", payload, "etag", "e", "expires", expires)
                redis.execute("HSET", key, "last_modified", str(now_ms))
                redis.execute("ZADD", f"{prefix}sessions", expires, ident)
            for ident in forged:
                resp = get(server, session_url(server, ident))
                assert resp.status == 404, resp
            assert get(server, url).body == b"honest"
            assert redis.keys(f"{prefix}session:*") == [f"{prefix}session:{url.rsplit('/', 1)[1]}"]
            dropped = [w for w in _warnings(server) if "cannot have written" in w]
            assert len(dropped) == len(forged), _warnings(server)
