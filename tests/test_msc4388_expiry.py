"""MSC4388 sessions end at their lifetime through a real Synapse, on both stores: every
method on the session (GET, PUT and DELETE) answers 404 ``M_NOT_FOUND`` once ``ttl`` has
passed, and the session is still whole a moment before.

The lifetime is at least 120 s when MSC4388 is on, so the clock that decides expiry is
jumped instead of waited for: the process runs under libfaketime (Debian's ``faketime``,
which the test command installs), whose offset is read from a file on every call, and the
test writes that file. That works for the memory store, where Synapse's own clock (the
module reads its reactor's) decides, and the test checks that the jump took effect, so that
a clock that did not move cannot pass as expiry. With the Redis store redis-server's clock
decides (``TIME`` in the scripts, and key expiry), and redis-server does not start under
libfaketime on this system, so that test waits the 120 s for real, once, for a Synapse in
each MSC4388 mode on the same Redis. In ``authenticated`` mode the device creates with its
access token; the session paths need none.
"""

from __future__ import annotations

import contextlib
import time
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from support.http_client import errcode
from test_msc4388 import MODES, PREFIX, call, create, creating_device

if TYPE_CHECKING:
    from collections.abc import Iterator

    from conftest import RedisFactory, ServerFactory
    from support.http_client import HasBaseUrl

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("needs_module")]

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
TTL_S = 120


@contextlib.contextmanager
def faked_clock(monkeypatch: pytest.MonkeyPatch, offset_file: Path) -> Iterator[None]:
    """Processes started inside run with the clock offset that ``offset_file`` holds."""
    if not LIBFAKETIME.exists():
        pytest.fail(
            f"{LIBFAKETIME} is missing (scripts/test installs it: apt-get install faketime)"
        )
    offset_file.write_text("+0\n", encoding="ascii")
    with monkeypatch.context() as env:
        env.setenv("LD_PRELOAD", str(LIBFAKETIME))
        env.setenv("FAKETIME_TIMESTAMP_FILE", str(offset_file))
        env.setenv("FAKETIME_NO_CACHE", "1")
        yield


def _jump(offset_file: Path, seconds: int) -> None:
    offset_file.write_text(f"+{seconds}\n", encoding="ascii")


def _assert_gone(srv: HasBaseUrl, session: str, data: str) -> None:
    for method, body in (
        ("GET", None),
        ("PUT", {"sequence_token": "0.x", "data": data}),
        ("DELETE", None),
    ):
        resp = call(srv, method, f"{PREFIX}/{session}", body)
        assert (resp.status, errcode(resp)) == (404, "M_NOT_FOUND"), (method, resp)


def _assert_alive(srv: HasBaseUrl, session: str, data: str) -> None:
    resp = call(srv, "GET", f"{PREFIX}/{session}")
    assert resp.status == 200, resp
    assert resp.json_dict()["data"] == data, resp


@pytest.mark.parametrize("mode", MODES)
def test_memory_store_sessions_end_at_ttl_by_synapses_clock(
    server_factory: ServerFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mode: str
) -> None:
    offset = tmp_path / "faketime"
    with contextlib.ExitStack() as stack:
        with faked_clock(monkeypatch, offset):
            srv, auth = stack.enter_context(
                creating_device(server_factory, "memory", mode, {"ttl": f"{TTL_S}s"})
            )
        created = create(srv, "offer", headers=auth)
        assert created["expires_in_ms"] == TTL_S * 1000, created
        _jump(offset, TTL_S - 20)
        resp = call(srv, "GET", f"{PREFIX}/{created['id']}")
        # Twisted dates its answers by the faked clock: the jump took effect.
        date = resp.header("Date")
        assert date is not None, resp
        ahead = parsedate_to_datetime(date).timestamp() - time.time()
        assert abs(ahead - (TTL_S - 20)) < 10, f"Synapse's clock is {ahead:.0f} s ahead"
        _assert_alive(srv, created["id"], "offer")
        _jump(offset, TTL_S + 1)
        _assert_gone(srv, created["id"], "offer")


@pytest.mark.redis
# The suite's 120 s per test is below the shortest MSC4388 lifetime this test waits out.
@pytest.mark.timeout(TTL_S + 90)
def test_redis_store_sessions_end_at_ttl_by_redis_clock(
    server_factory: ServerFactory, redis_factory: RedisFactory
) -> None:
    # redis-server cannot run under libfaketime here (its jemalloc calls clock_gettime
    # while libfaketime initialises, and it never starts), so this one waits for real: once,
    # for a Synapse in each mode on the same Redis.
    with contextlib.ExitStack() as stack:
        redis = stack.enter_context(redis_factory())
        config: dict[str, object] = {"ttl": f"{TTL_S}s", "redis": {"url": redis.url}}
        # Both boot before either creates, so that the sessions end within a second.
        devices = [
            stack.enter_context(creating_device(server_factory, "redis", mode, config))
            for mode in MODES
        ]
        sessions = [
            (srv, create(srv, f"offer {n}", headers=auth)["id"], f"offer {n}")
            for n, (srv, auth) in enumerate(devices)
        ]
        redis_then = _redis_seconds(redis.execute("TIME"))
        _sleep_until(time.monotonic() + TTL_S - 5)
        for srv, session, data in sessions:
            _assert_alive(srv, session, data)
        _sleep_until(time.monotonic() + 6)
        assert _redis_seconds(redis.execute("TIME")) - redis_then > TTL_S
        for srv, session, data in sessions:
            _assert_gone(srv, session, data)


def _redis_seconds(reply: str) -> float:
    seconds, micros = reply.split()[:2]
    return int(seconds) + int(micros) / 1e6


def _sleep_until(deadline: float) -> None:
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 5.0))
