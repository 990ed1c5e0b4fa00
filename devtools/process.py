"""The one way the tests and the bench run a server process: `ManagedProcess` and `LoopbackPort`.

`ManagedProcess` starts a command in its own session (so its own process group: a server
that forks, such as Synapse, is stopped as a whole), waits until a readiness check passes
within a deadline, and stops it with SIGTERM, then SIGKILL after a bound. Every wait is
bounded; a failed start stops the process and raises the caller's error type with the tail of
its log.

`LoopbackPort` is the port such a server binds on 127.0.0.1: picked free unless the caller
chose it; if the picked port turns out to be taken by someone else at the first start (the
error says ``Address already in use``), another one is picked and the start tried once more.
After a successful start the port is kept, so that restarts keep the server's URLs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from typing import IO, TYPE_CHECKING, Self

from synapse_rendezvous.devserver import free_port

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from pathlib import Path
    from types import TracebackType

__all__ = [
    "ADDRESS_IN_USE",
    "LoopbackHttp",
    "LoopbackPort",
    "ManagedProcess",
    "free_port",
    "tail",
]

#: What a server's log says when its port is taken (the kernel's EADDRINUSE message).
ADDRESS_IN_USE = "Address already in use"
#: Longest wait for a process to exit after SIGKILL.
KILL_TIMEOUT = 10.0


def tail(text: str, lines: int = 60) -> str:
    """The last ``lines`` lines of ``text``."""
    return "\n".join(text.splitlines()[-lines:])


class LoopbackPort:
    """The TCP port of a server on 127.0.0.1 (see the module's documentation)."""

    def __init__(self, port: int | None = None) -> None:
        self.number: int = port if port is not None else free_port()
        self._fixed = port is not None

    def start(self, attempt: Callable[[], None]) -> None:
        """Run ``attempt`` (a start on `number`), once more on a new port if it was taken."""
        try:
            attempt()
        except Exception as exc:
            if self._fixed or ADDRESS_IN_USE not in str(exc):
                raise
            self.number = free_port()
            attempt()
        # From now on the URL must not change: restarts use the same port.
        self._fixed = True


class LoopbackHttp:
    """An HTTP server on ``127.0.0.1`` at its `LoopbackPort` (``self._port``): its port and
    base URL."""

    _port: LoopbackPort

    @property
    def port(self) -> int:
        return self._port.number

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"


class ManagedProcess:
    """One child process at a time, in its own session (see the module's documentation).

    ``error`` is the exception type raised when a start fails; ``name`` names the process in
    its messages.
    """

    def __init__(self, name: str, error: type[Exception] = RuntimeError) -> None:
        self.name = name
        self.error = error
        self._popen: subprocess.Popen[bytes] | None = None
        self._outputs: list[IO[bytes]] = []
        self._returncode: int | None = None

    def __repr__(self) -> str:
        return f"<ManagedProcess {self.name} pid={self.pid}>"

    @property
    def running(self) -> bool:
        """Whether the process has been started and has not exited."""
        return self._popen is not None and self._popen.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self._popen is None else self._popen.pid

    @property
    def returncode(self) -> int | None:
        """The exit code of the last process, once it has exited (negative: killed by signal)."""
        if self._popen is not None:
            return self._popen.poll()
        return self._returncode

    def spawn(
        self,
        command: Sequence[str],
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        stdout: Path | None = None,
        stderr: Path | None = None,
    ) -> None:
        """Start ``command``; its stdout and stderr are appended to the given files (one file
        if both name the same one), or discarded."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        self._close_outputs()
        self._returncode = None
        out = self._open(stdout)
        err = out if stderr == stdout and stdout is not None else self._open(stderr)
        try:
            self._popen = subprocess.Popen(
                list(command),
                cwd=cwd,
                env=None if env is None else dict(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        except BaseException:
            self._close_outputs()
            raise

    def wait_ready(
        self,
        ready: Callable[[], bool],
        timeout: float,
        *,
        what: str = "become ready",
        log_tail: Callable[[], str] = lambda: "",
        interval: float = 0.05,
    ) -> None:
        """Wait until ``ready()`` is true while the process runs, for at most ``timeout`` s.

        Otherwise (early exit or deadline) the process is stopped and ``self.error`` is raised
        with ``log_tail()`` (read once the process has exited and flushed its log).
        """
        assert self._popen is not None, "spawn first"
        deadline = time.monotonic() + timeout
        while True:
            code = self._popen.poll()
            if code is not None:
                problem = f"{self.name} exited early with code {code}"
                break
            # Checked after the answer: it was our process that answered, not another one.
            if ready() and self._popen.poll() is None:
                return
            if time.monotonic() > deadline:
                problem = f"{self.name} did not {what} within {timeout:.0f} s"
                break
            time.sleep(interval)
        self.stop(timeout=10.0)
        raise self.error(
            f"{problem}\n--- exit code {self._returncode}; last lines of the log ---\n{log_tail()}"
        )

    def signal(self, sig: signal.Signals, *, group: bool = True) -> None:
        """Send ``sig`` to the process group (or only to the process), if it runs."""
        proc = self._popen
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group:
                # start_new_session=True made the process the leader of its own group.
                os.killpg(proc.pid, sig)
            else:
                os.kill(proc.pid, sig)

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit by itself (raises `subprocess.TimeoutExpired`)."""
        assert self._popen is not None
        code = self._popen.wait(timeout)
        self._forget()
        return code

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (after a SIGCONT, in case it is paused), then SIGKILL after ``timeout``;
        returns the exit code. Idempotent."""
        proc = self._popen
        if proc is None:
            return self._returncode
        try:
            if proc.poll() is None:
                self.signal(signal.SIGCONT)
                self.signal(signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.signal(signal.SIGKILL)
                    proc.wait(KILL_TIMEOUT)
        finally:
            self._forget()
        return self._returncode

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        proc = self._popen
        if proc is None:
            return
        try:
            self.signal(signal.SIGKILL)
            proc.wait(KILL_TIMEOUT)
        finally:
            self._forget()

    def _forget(self) -> None:
        if self._popen is not None:
            self._returncode = self._popen.poll()
        self._popen = None
        self._close_outputs()

    def _open(self, path: Path | None) -> IO[bytes] | int:
        if path is None:
            return subprocess.DEVNULL
        handle = open(path, "ab")  # noqa: SIM115
        self._outputs.append(handle)
        return handle

    def _close_outputs(self) -> None:
        for handle in self._outputs:
            handle.close()
        self._outputs = []


class ManagedServer:
    """What every server of the tests built on a `ManagedProcess` (``self._proc``) shares:
    its process's state, and ``with server:`` starting it and always ending it (`end`)."""

    _proc: ManagedProcess

    @property
    def running(self) -> bool:
        return self._proc.running

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        """The exit code once the process has exited (negative: killed by a signal)."""
        return self._proc.returncode

    def start(self, timeout: float = 30.0) -> None:
        raise NotImplementedError

    def end(self) -> None:
        """What leaving ``with`` does: stop the process (and free what it holds)."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.end()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.end()
