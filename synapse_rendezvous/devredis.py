"""A throwaway ``redis-server`` on a loopback port, for tests and benchmarks of the Redis store.

`RedisServer` runs the real ``redis-server`` binary (Debian's ``/usr/bin/redis-server``, or
whatever ``$REDIS_SERVER`` or ``PATH`` names) bound to 127.0.0.1 on a free port, without any
persistence (``--save "" --appendonly no``), in a temporary directory. It can be stopped and
started again on the same port (its data is lost, as with a real Redis without persistence),
and paused with SIGSTOP to play a Redis that accepts connections but never answers.

Every wait is bounded. Use it as a context manager, or `start` and `stop` (idempotent).

A missing binary raises `RedisBinaryMissing`, whose message says how to install it: the tests
that need Redis fail with it rather than being skipped, since CI installs the package.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING

from synapse_rendezvous.devserver import free_port

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["RedisBinaryMissing", "RedisError", "RedisServer", "find_redis_server"]

DEFAULT_BINARY = "/usr/bin/redis-server"
BINARY_ENV = "REDIS_SERVER"
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


class RedisServer:
    """A ``redis-server`` on ``127.0.0.1:port``; ``port`` is picked free unless given."""

    def __init__(self, port: int | None = None, *, binary: str | None = None) -> None:
        self._port_was_chosen = port is not None
        self.port: int = port if port is not None else free_port()
        self._binary = binary
        self.workdir = Path(tempfile.mkdtemp(prefix="rendezvous-redis-"))
        self._process: subprocess.Popen[bytes] | None = None
        self._output: IO[bytes] | None = None
        self.starts = 0

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<RedisServer 127.0.0.1:{self.port} {state}>"

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``, for the module's ``redis.url``."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def log_path(self) -> Path:
        return self.workdir / "redis.log"

    def log_tail(self) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-_LOG_TAIL_LINES:])

    # -- process control --------------------------------------------------------------------

    def command(self) -> list[str]:
        if self._binary is not None and not os.access(self._binary, os.X_OK):
            raise RedisBinaryMissing(f"redis-server binary {self._binary!r} is not executable")
        binary = self._binary or find_redis_server()
        return [
            binary,
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
        try:
            self._start(timeout)
        except RedisError as exc:
            if self._port_was_chosen or "Address already in use" not in str(exc):
                raise
            self.port = free_port()
            self._start(timeout)
        # From now on the URL must not change: restarts use the same port.
        self._port_was_chosen = True

    def _start(self, timeout: float) -> None:
        if self.running:
            raise RedisError(f"{self!r} is already running")
        self.workdir.mkdir(parents=True, exist_ok=True)
        command = self.command()
        self._close_output()
        self._output = open(self.log_path, "ab")  # noqa: SIM115
        self._process = subprocess.Popen(
            command,
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.starts += 1
        deadline = time.monotonic() + timeout
        while True:
            code = self._process.poll()
            if code is not None:
                self._process = None
                self._close_output()
                raise RedisError(
                    f"redis-server on port {self.port} exited at startup with code {code}:\n"
                    f"{self.log_tail()}"
                )
            with contextlib.suppress(OSError, RedisError):
                if self.execute("PING", timeout=0.5) == "PONG":
                    return
            if time.monotonic() > deadline:
                self.stop()
                raise RedisError(
                    f"redis-server on port {self.port} did not answer PING within "
                    f"{timeout:.0f} s:\n{self.log_tail()}"
                )
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> int | None:
        """Stop redis-server (SIGTERM, SIGKILL after ``timeout``); returns its exit code.

        Idempotent. A paused server is resumed first so that it can handle the SIGTERM.
        """
        proc = self._process
        if proc is None:
            return None
        try:
            if proc.poll() is None:
                self._signal(signal.SIGCONT)
                self._signal(signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self._signal(signal.SIGKILL)
                    proc.wait(10.0)
            return proc.returncode
        finally:
            self._process = None
            self._close_output()

    def kill(self) -> None:
        """Stop redis-server abruptly (SIGKILL), as a crash would."""
        proc = self._process
        if proc is None:
            return
        try:
            self._signal(signal.SIGKILL)
            proc.wait(10.0)
        finally:
            self._process = None
            self._close_output()

    def restart(self, timeout: float = 10.0) -> None:
        """Stop and start again on the same port (without persistence, the data is gone)."""
        self.stop()
        self.start(timeout)

    def pause(self) -> None:
        """Freeze redis-server (SIGSTOP): connections are accepted but never answered."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Undo `pause` (SIGCONT)."""
        self._signal(signal.SIGCONT)

    def close(self) -> None:
        """Stop the server and remove its directory."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _signal(self, sig: signal.Signals) -> None:
        proc = self._process
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)

    def _close_output(self) -> None:
        if self._output is not None:
            self._output.close()
            self._output = None

    # -- a minimal client -------------------------------------------------------------------

    def execute(self, *args: str | bytes | int, timeout: float = 5.0) -> object:
        """Send one command and return its decoded reply (RESP2: str, int, None or list).

        Error replies raise `RedisError`. Enough for PING, KEYS, DEL, FLUSHALL and the like.
        """
        parts: list[bytes] = []
        for arg in args:
            data = arg if isinstance(arg, bytes) else str(arg).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        message = b"*%d\r\n" % len(parts) + b"".join(parts)
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            sock.sendall(message)
            reader = sock.makefile("rb")
            try:
                return _read_reply(reader)
            finally:
                reader.close()

    def keys(self, pattern: str = "*") -> list[str]:
        """The keys matching ``pattern`` (decoded as UTF-8)."""
        reply = self.execute("KEYS", pattern)
        assert isinstance(reply, list), reply
        return sorted(str(key) for key in reply)

    def delete_prefix(self, prefix: str) -> int:
        """Delete every key starting with ``prefix``; returns how many were deleted."""
        script = (
            "local n = 0 "
            "for _, key in ipairs(redis.call('KEYS', ARGV[1] .. '*')) do "
            "n = n + redis.call('DEL', key) end "
            "return n"
        )
        reply = self.execute("EVAL", script, 0, prefix)
        assert isinstance(reply, int), reply
        return reply

    # -- context manager --------------------------------------------------------------------

    def __enter__(self) -> RedisServer:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _read_reply(reader: IO[bytes]) -> object:
    line = reader.readline()
    if not line.endswith(b"\r\n"):
        raise RedisError(f"connection closed mid-reply: {line!r}")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode("utf-8", "replace")
    if kind == b"-":
        raise RedisError(rest.decode("utf-8", "replace"))
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        if size < 0:
            return None
        data = reader.read(size + 2)
        return data[:-2].decode("utf-8", "replace")
    if kind == b"*":
        count = int(rest)
        if count < 0:
            return None
        return [_read_reply(reader) for _ in range(count)]
    raise RedisError(f"unexpected reply {line!r}")
