"""A standalone rendezvous server (``synapse-rendezvous-server``) for the tests and the bench.

`StandaloneServer` writes a YAML configuration (the module's keys, plus ``listen``,
``public_base_url`` on a free loopback port and whatever server keys a test adds), starts the
binary that ``cargo build [--release] -p synapse-rendezvous-server`` built, in its own process
group, and waits until its ``/health`` answers 200 (with the Redis store: once a connection to
Redis is up). It stops with SIGTERM, then SIGKILL after a bound. Every wait is bounded (the
process and the port retry are `devtools.process`'s).

It offers the part of `devtools.synapse.SynapseServer` that the shared tests use
(``base_url``, ``mode``, ``start``, ``stop``, ``restart``, ``running``, ``pid``,
``returncode``, ``log_text``), so that the spec suite can take either; ``mode`` is
``"standalone"``. Its log is the server's own (stderr), not Synapse's: `log_records` is empty.

The binary: ``$SYNAPSE_RENDEZVOUS_SERVER`` if set, else the newer of ``target/release`` and
``target/debug`` (``scripts/test`` builds the release one first).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import yaml

from devtools.process import LoopbackHttp, LoopbackPort, ManagedProcess, ManagedServer, tail

if TYPE_CHECKING:
    import signal
    from collections.abc import Mapping

    from devtools.synapse import LogRecord

__all__ = [
    "BINARY_ENV",
    "StandaloneMode",
    "StandaloneServer",
    "StandaloneStartError",
    "binary",
    "target_dir",
]

StandaloneMode = Literal["standalone"]
BINARY_ENV = "SYNAPSE_RENDEZVOUS_SERVER"
BINARY_NAME = "synapse-rendezvous-server"

_ROOT = Path(__file__).resolve().parent.parent
_CONFIG_FILE = "server.yaml"
_LOG_FILE = "server.log"
_TAIL_LINES = 60


class StandaloneStartError(RuntimeError):
    """The server did not become ready; the message ends with the tail of its log."""


def target_dir() -> Path:
    """Where cargo builds this checkout: ``$CARGO_TARGET_DIR``, else ``target/``."""
    return Path(os.environ.get("CARGO_TARGET_DIR", _ROOT / "target"))


def binary() -> Path:
    """The server binary to run (see the module's documentation)."""
    chosen = os.environ.get(BINARY_ENV)
    if chosen:
        return Path(chosen)
    target = target_dir()
    built = [target / profile / BINARY_NAME for profile in ("release", "debug")]
    existing = [path for path in built if path.is_file()]
    if not existing:
        raise StandaloneStartError(
            f"no {BINARY_NAME} binary under {target}: build it with "
            f"`cargo build --release -p {BINARY_NAME}` (scripts/test does), "
            f"or set ${BINARY_ENV}"
        )
    return max(existing, key=lambda path: path.stat().st_mtime)


class StandaloneServer(LoopbackHttp, ManagedServer):
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
        self._port = LoopbackPort(port)
        self._owns_workdir = workdir is None
        self.workdir: Path = (
            Path(tempfile.mkdtemp(prefix="rendezvous-server-")) if workdir is None else workdir
        )
        self._proc = ManagedProcess(BINARY_NAME, error=StandaloneStartError)

    def __repr__(self) -> str:
        return f"<StandaloneServer {self.base_url} workdir={self.workdir}>"

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

    def start(self, timeout: float = 30.0) -> None:
        """Starts the server and waits until ``/health`` answers 200, within ``timeout``.

        Raises `StandaloneStartError` with the tail of the log otherwise (the process is
        stopped then). A port taken meanwhile by someone else is replaced by another one,
        unless the caller chose it or the server already ran on it.
        """
        self._port.start(lambda: self._start(timeout))

    def _start(self, timeout: float) -> None:
        self.write_config()
        program = binary()
        self._proc.spawn(
            [str(program), "--config", str(self.config_path)],
            cwd=self.workdir,
            stdout=self.log_path,
            stderr=self.log_path,
        )
        url = f"{self.base_url}health"
        self._proc.wait_ready(
            lambda: _answers(url),
            timeout,
            what=f"answer {url}",
            log_tail=lambda: tail(self.log_text(), _TAIL_LINES),
        )

    def signal(self, sig: signal.Signals) -> None:
        """Sends ``sig`` to the server process."""
        self._proc.signal(sig, group=False)

    def wait(self, timeout: float) -> int:
        """Waits for the server to exit by itself (raises `subprocess.TimeoutExpired`)."""
        return self._proc.wait(timeout)

    def stop(self, timeout: float = 15.0) -> int | None:
        """Stops the server (SIGTERM, then SIGKILL after ``timeout``); its exit code.

        Idempotent. Removes the work directory if this object created it.
        """
        code = self._proc.stop(timeout)
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return code

    def restart(self, timeout: float = 30.0) -> None:
        """Stops (keeping the work directory) and starts again on the same port."""
        self._proc.stop()
        self.start(timeout)

    # -- logs -------------------------------------------------------------------------------

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def end(self) -> None:
        self.stop()

    def log_records(self) -> list[LogRecord]:
        """Synapse's log records: a standalone server has none (see `log_text`)."""
        return []


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False
