"""One Redis call per request: a create, a GET, a PUT and a DELETE through a real Synapse,
watched with ``MONITOR``, each send exactly one command (an ``EVALSHA``), rate limit and
per-client quota included (limits are on, as by default). No ``PING``, no separate read.

``ECHO`` markers, sent by the test between the requests, cut the monitor's stream into one
part per request; the module's own maintenance call (every few seconds, on the index alone)
is set aside.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from typing import TYPE_CHECKING

import pytest
from support.http_client import create_session, delete, get, put

if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import RedisFactory, ServerFactory

pytestmark = [pytest.mark.redis, pytest.mark.usefixtures("needs_module")]

PREFIX = "calls-test:"
#: A MONITOR line: timestamp, `[db client]`, then `"COMMAND" "arg"...`. Commands a script
#: runs show as the client `lua`: they are part of the one call.
_LINE = re.compile(r'^\d+\.\d+ \[\d+ (?P<client>[^\]]+)\] "(?P<command>[A-Za-z]+)"(?P<args>.*)$')


def _maintenance(args: str) -> bool:
    """The module's periodic call: one key, the index."""
    return f'"1" "{PREFIX}sessions"' in args


def test_each_request_is_one_redis_call(
    server_factory: ServerFactory, redis_factory: RedisFactory
) -> None:
    cli = shutil.which("redis-cli")
    assert cli is not None, "redis-cli ships with redis-server"
    with redis_factory() as redis:
        config = {
            "store": "redis",
            "redis": {"url": redis.url, "key_prefix": PREFIX},
            "rate_limit": {"enabled": True},
        }
        with server_factory("takeover", config) as server:
            # Warm up: connections open, scripts loaded.
            url, _created = create_session(server, b"warm")
            assert delete(server, url).status == 204

            monitor = subprocess.Popen(
                [cli, "-p", str(redis.port), "monitor"],
                stdout=subprocess.PIPE,
                text=True,
                errors="replace",
            )
            lines: list[str] = []
            reader = threading.Thread(target=lambda: lines.extend(monitor.stdout or []))
            reader.start()

            def mark(name: str) -> None:
                subprocess.run(
                    [cli, "-p", str(redis.port), "echo", name],
                    check=True,
                    timeout=10,
                    capture_output=True,
                )

            state: dict[str, str] = {}

            def create() -> None:
                url, resp = create_session(server, b"offer")
                state["url"], state["etag"] = url, resp.header("ETag") or ""

            steps: list[tuple[str, Callable[[], object]]] = [
                ("create", create),
                ("get", lambda: get(server, state["url"])),
                ("put", lambda: put(server, state["url"], b"answer", etag=state["etag"])),
                ("delete", lambda: delete(server, state["url"])),
            ]
            try:
                time.sleep(0.3)  # MONITOR is on
                for name, step in steps:
                    mark(f"before-{name}")
                    step()
                    mark(f"after-{name}")
            finally:
                monitor.terminate()
                monitor.wait(10)
                reader.join(10)
                if monitor.stdout is not None:
                    monitor.stdout.close()

    for name, _ in steps:
        begin = next(i for i, line in enumerate(lines) if f'"before-{name}"' in line)
        end = next(i for i, line in enumerate(lines) if f'"after-{name}"' in line)
        calls = []
        for line in lines[begin + 1 : end]:
            match = _LINE.match(line)
            assert match, line
            if match["client"] != "lua" and not _maintenance(match["args"]):
                calls.append(match["command"].upper())
        assert calls == ["EVALSHA"], f"{name}: {calls}"
