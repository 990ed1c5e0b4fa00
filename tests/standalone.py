"""A standalone rendezvous server (``synapse-rendezvous-server``) for the tests.

`StandaloneServer` writes a YAML configuration (the module's keys, plus ``listen``,
``public_base_url`` on a free loopback port and whatever server keys a test adds), starts the
binary that ``cargo build [--release] -p synapse-rendezvous-server`` built, in its own process
group, and waits until its ``/health`` answers 200 (with the Redis store: once a connection to
Redis is up). It stops with SIGTERM, then SIGKILL after a bound. Every wait is bounded.

It offers the part of `synapse_rendezvous.devserver.DevServer` that the shared tests use
(``base_url``, ``mode``, ``start``, ``stop``, ``restart``, ``running``, ``pid``,
``returncode``, ``log_text``), so that the spec suite can take either; ``mode`` is
``"standalone"``. Its log is the server's own (stderr), not Synapse's: `log_records` is empty.

The binary: ``$SYNAPSE_RENDEZVOUS_SERVER`` if set, else the newer of ``target/release`` and
``target/debug`` (``scripts/test`` builds the release one first).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal

import yaml

from synapse_rendezvous.devserver import free_port

if TYPE_CHECKING:
    from collections.abc import Mapping
    from types import TracebackType

    from synapse_rendezvous.devserver import LogRecord

__all__ = ["BINARY_ENV", "StandaloneMode", "StandaloneServer", "StandaloneStartError", "binary"]

StandaloneMode = Literal["standalone"]
BINARY_ENV = "SYNAPSE_RENDEZVOUS_SERVER"
BINARY_NAME = "synapse-rendezvous-server"

_ROOT = Path(__file__).resolve().parent.parent
_CONFIG_FILE = "server.yaml"
_LOG_FILE = "server.log"
_TAIL_LINES = 60


class StandaloneStartError(RuntimeError):
    """The server did not become ready; the message ends with the tail of its log."""


def binary() -> Path:
    """The server binary to run (see the module's documentation)."""
    chosen = os.environ.get(BINARY_ENV)
    if chosen:
        return Path(chosen)
    target = Path(os.environ.get("CARGO_TARGET_DIR", _ROOT / "target"))
    built = [target / profile / BINARY_NAME for profile in ("release", "debug")]
    existing = [path for path in built if path.is_file()]
    if not existing:
        raise StandaloneStartError(
            f"no {BINARY_NAME} binary under {target}: build it with "
            f"`cargo build --release -p {BINARY_NAME}` (scripts/test does), "
            f"or set ${BINARY_ENV}"
        )
    return max(existing, key=lambda path: path.stat().st_mtime)


class StandaloneServer:
    """``synapse-rendezvous-server`` on 127.0.0.1 in a throwaway work directory.

    ``config`` holds the module's keys (``ttl``, ``store``, ``redis``, ``rate_limit``...);
    ``server_config`` the server's own keys (``drain_timeout``, ``metrics_listen``...), which
    replace the defaults this class writes (``listen``, ``public_base_url``).
    """

    mode: StandaloneMode = "standalone"

    def __init__(
        self,
        config: Mapping[str, object] | None = None,
        *,
        server_config: Mapping[str, object] | None = None,
        port: int | None = None,
        workdir: Path | None = None,
    ) -> None:
        self.module_config: dict[str, object] = dict(config or {})
        self.server_config: dict[str, object] = dict(server_config or {})
        self._port_was_chosen = port is not None
        self.port: int = port if port is not None else free_port()
        self._owns_workdir = workdir is None
        self.workdir: Path = (
            Path(tempfile.mkdtemp(prefix="rendezvous-server-")) if workdir is None else workdir
        )
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._returncode: int | None = None

    def __repr__(self) -> str:
        return f"<StandaloneServer {self.base_url} workdir={self.workdir}>"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def config_path(self) -> Path:
        return self.workdir / _CONFIG_FILE

    @property
    def log_path(self) -> Path:
        return self.workdir / _LOG_FILE

    def configuration(self) -> dict[str, object]:
        """Everything written to the configuration file."""
        return {
            "listen": [f"127.0.0.1:{self.port}"],
            "public_base_url": self.base_url,
            **self.module_config,
            **self.server_config,
        }

    def write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            yaml.safe_dump(self.configuration(), sort_keys=False), encoding="utf-8"
        )

    # -- process control --------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def returncode(self) -> int | None:
        if self._process is not None:
            return self._process.poll()
        return self._returncode

    def start(self, timeout: float = 30.0) -> None:
        """Starts the server and waits until ``/health`` answers 200, within ``timeout``.

        Raises `StandaloneStartError` with the tail of the log otherwise (the process is
        stopped then). A port taken meanwhile by someone else is replaced by another one,
        unless the caller chose it or the server already ran on it.
        """
        try:
            self._start(timeout)
        except StandaloneStartError as exc:
            if self._port_was_chosen or "Address already in use" not in str(exc):
                raise
            self.port = free_port()
            self._start(timeout)
        self._port_was_chosen = True

    def _start(self, timeout: float) -> None:
        if self.running:
            raise RuntimeError(f"{self!r} is already running")
        self._close_log()
        self.write_config()
        program = binary()
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        self._returncode = None
        self._process = subprocess.Popen(
            [str(program), "--config", str(self.config_path)],
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        url = f"{self.base_url}health"
        while True:
            code = self._process.poll()
            if code is not None:
                self._returncode = code
                self._process = None
                raise StandaloneStartError(
                    f"{program.name} exited early with code {code}\n{self._tail()}"
                )
            if _answers(url) and self._process.poll() is None:
                return
            if time.monotonic() > deadline:
                self._stop_process(5.0)
                raise StandaloneStartError(
                    f"{program.name} did not answer {url} within {timeout:.0f} s\n{self._tail()}"
                )
            time.sleep(0.05)

    def signal(self, sig: signal.Signals) -> None:
        """Sends ``sig`` to the server process."""
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._process.pid, sig)

    def wait(self, timeout: float) -> int:
        """Waits for the server to exit by itself (raises `subprocess.TimeoutExpired`)."""
        assert self._process is not None
        code = self._process.wait(timeout)
        self._returncode = code
        self._process = None
        self._close_log()
        return code

    def stop(self, timeout: float = 15.0) -> int | None:
        """Stops the server (SIGTERM, then SIGKILL after ``timeout``); its exit code.

        Idempotent. Removes the work directory if this object created it.
        """
        code = self._stop_process(timeout)
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return code

    def restart(self, timeout: float = 30.0) -> None:
        """Stops (keeping the work directory) and starts again on the same port."""
        self._stop_process()
        self.start(timeout)

    def _stop_process(self, timeout: float = 15.0) -> int | None:
        proc = self._process
        if proc is None:
            return self._returncode
        try:
            if proc.poll() is None:
                _signal_group(proc, signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    _signal_group(proc, signal.SIGKILL)
                    proc.wait(10.0)
            self._returncode = proc.returncode
        finally:
            self._process = None
            self._close_log()
        return self._returncode

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    # -- logs -------------------------------------------------------------------------------

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def log_records(self) -> list[LogRecord]:
        """Synapse's log records: a standalone server has none (see `log_text`)."""
        return []

    def _tail(self) -> str:
        lines = self.log_text().splitlines()[-_TAIL_LINES:]
        return "--- last lines of the log ---\n" + "\n".join(lines)

    def __enter__(self) -> StandaloneServer:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    # start_new_session=True made the process the leader of its own group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
