"""A throwaway ``redis-server`` on a loopback port, for tests and benchmarks of the Redis store.

`RedisServer` runs the real ``redis-server`` binary (Debian's ``/usr/bin/redis-server``, or
whatever ``$REDIS_SERVER`` or ``PATH`` names) bound to 127.0.0.1 on a free port, without any
persistence (``--save "" --appendonly no``), in a temporary directory. It can be stopped and
started again on the same port (its data is lost, as with a real Redis without persistence),
and paused with SIGSTOP to play a Redis that accepts connections but never answers.

Every wait is bounded. Use it as a context manager, or `start` and `stop` (idempotent). The
process runs through `devtools.process`; commands go through ``redis-cli`` (installed with
redis-server), so that no RESP client of our own needs testing.

A missing binary raises `RedisBinaryMissing`, whose message says how to install it: the tests
that need Redis fail with it rather than being skipped, since CI installs the package.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from devtools.process import LoopbackPort, ManagedProcess, ManagedServer, tail

__all__ = ["RedisBinaryMissing", "RedisError", "RedisServer", "find_redis_cli", "find_redis_server"]

DEFAULT_BINARY = "/usr/bin/redis-server"
BINARY_ENV = "REDIS_SERVER"
CLI_ENV = "REDIS_CLI"
_LOG_TAIL_LINES = 30


class RedisError(RuntimeError):
    """redis-server did not start or stop as asked, or a command failed."""


class RedisBinaryMissing(RedisError):
    """No redis-server binary was found."""


def find_redis_server() -> str:
    """The path of the redis-server binary; raises `RedisBinaryMissing` if there is none."""
    candidates = [os.environ.get(BINARY_ENV, ""), DEFAULT_BINARY, shutil.which("redis-server")]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RedisBinaryMissing(
        "redis-server not found (looked at $REDIS_SERVER, /usr/bin/redis-server and PATH): "
        "the tests of the Redis store need a real Redis. Install it with "
        "`apt-get install redis-server` (CI does, see .ci/), or deselect them with "
        "`-m 'not redis'` or SYNAPSE_RENDEZVOUS_TEST_STORES=memory."
    )


def find_redis_cli(server: str) -> str:
    """The path of redis-cli: ``$REDIS_CLI``, beside ``server``, or on PATH."""
    beside = str(Path(server).with_name("redis-cli"))
    for candidate in (os.environ.get(CLI_ENV, ""), beside, shutil.which("redis-cli")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RedisBinaryMissing(
        "redis-cli not found (looked at $REDIS_CLI, beside redis-server and on PATH): "
        "it comes with redis-server (`apt-get install redis-server`)."
    )


class RedisServer(ManagedServer):
    """A ``redis-server`` on ``127.0.0.1:port``; ``port`` is picked free unless given. With
    ``unix_socket``, it listens on a UNIX socket in its directory too (`unix_url`)."""

    def __init__(
        self, port: int | None = None, *, binary: str | None = None, unix_socket: bool = False
    ) -> None:
        self._port = LoopbackPort(port)
        self._binary = binary
        self._unix_socket = unix_socket
        self.workdir = Path(tempfile.mkdtemp(prefix="rendezvous-redis-"))
        self._proc = ManagedProcess("redis-server", error=RedisError)
        self.starts = 0

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<RedisServer 127.0.0.1:{self.port} {state}>"

    @property
    def port(self) -> int:
        return self._port.number

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``, for the module's ``redis.url``."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def unix_url(self) -> str:
        """``unix:///DIR/redis.sock``, when started with ``unix_socket``."""
        if not self._unix_socket:
            raise RedisError("this redis-server was not started with a UNIX socket")
        return f"unix://{self.workdir / 'redis.sock'}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "redis.log"

    def log_tail(self) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return tail(text, _LOG_TAIL_LINES)

    # -- process control --------------------------------------------------------------------

    def binary(self) -> str:
        if self._binary is not None and not os.access(self._binary, os.X_OK):
            raise RedisBinaryMissing(f"redis-server binary {self._binary!r} is not executable")
        return self._binary or find_redis_server()

    def command(self) -> list[str]:
        unix = ["--unixsocket", str(self.workdir / "redis.sock"), "--unixsocketperm", "700"]
        return [
            self.binary(),
            *(unix if self._unix_socket else []),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
            "--daemonize",
            "no",
            "--logfile",
            "",
        ]

    def start(self, timeout: float = 10.0) -> None:
        """Start redis-server and wait (at most ``timeout`` s) until it answers PING.

        If the port was picked by this object and turns out to be taken, another free port is
        tried; a port given by the caller (or used before: `restart`) is kept.
        """
        self._port.start(lambda: self._start(timeout))

    def _start(self, timeout: float) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        command = self.command()
        self._proc.spawn(command, cwd=self.workdir, stdout=self.log_path, stderr=self.log_path)
        self.starts += 1
        self._proc.wait_ready(
            self._pings, timeout, what="answer PING", log_tail=self.log_tail, interval=0.02
        )

    def _pings(self) -> bool:
        try:
            return self.execute("PING", timeout=0.5) == "PONG"
        except (OSError, RedisError, subprocess.TimeoutExpired):
            return False

    def stop(self, timeout: float = 10.0) -> int | None:
        """Stop redis-server (SIGTERM, SIGKILL after ``timeout``); returns its exit code.

        Idempotent. A paused server is resumed first so that it can handle the SIGTERM.
        """
        if not self._proc.running and self._proc.pid is None:
            return None
        return self._proc.stop(timeout)

    def kill(self) -> None:
        """Stop redis-server abruptly (SIGKILL), as a crash would."""
        self._proc.kill()

    def restart(self, timeout: float = 10.0) -> None:
        """Stop and start again on the same port (without persistence, the data is gone)."""
        self.stop()
        self.start(timeout)

    def pause(self) -> None:
        """Freeze redis-server (SIGSTOP): connections are accepted but never answered."""
        self._proc.signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Undo `pause` (SIGCONT)."""
        self._proc.signal(signal.SIGCONT)

    def close(self) -> None:
        """Stop the server and remove its directory."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- commands, through redis-cli ---------------------------------------------------------

    def execute(self, *args: str | bytes | int, timeout: float = 5.0) -> str:
        """Run one command with ``redis-cli`` and return its raw output, stripped.

        An error reply (or a failed connection) raises `RedisError`. Enough for PING, KEYS,
        DEL, HSET, EVAL and the like; arrays come back one element a line.
        """
        argv: list[str | bytes] = [
            find_redis_cli(self.binary()),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-e",
            "--raw",
        ]
        argv += [arg if isinstance(arg, bytes) else str(arg) for arg in args]
        result = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False
        )
        output = result.stdout.decode("utf-8", "replace").strip()
        if result.returncode != 0:
            error = result.stderr.decode("utf-8", "replace").strip()
            raise RedisError(f"redis-cli {args[0]!r}: {error or output}")
        return output

    def keys(self, pattern: str = "*") -> list[str]:
        """The keys matching ``pattern``, sorted."""
        return sorted(self.execute("KEYS", pattern).splitlines())

    def delete_prefix(self, prefix: str) -> int:
        """Delete every key starting with ``prefix``; returns how many were deleted."""
        script = (
            "local n = 0 "
            "for _, key in ipairs(redis.call('KEYS', ARGV[1] .. '*')) do "
            "n = n + redis.call('DEL', key) end "
            "return n"
        )
        return int(self.execute("EVAL", script, 0, prefix))

    def end(self) -> None:
        self.close()
