"""A throwaway local Synapse homeserver with the module, for the demo (``scripts/demo``).

`DevServer` generates a Synapse configuration in a work directory, writes an overlay that
points the server at a loopback port and configures MSC4108 according to a *mode*, starts
``python -m synapse.app.homeserver`` as a subprocess in its own process group and waits
until ``/_matrix/client/versions`` answers. The tests and the bench use its subclass
``devtools.synapse.SynapseServer`` (at the repository root, not installed), which adds
restarts, port retry and log parsing and runs the process through ``devtools.process``.

Modes:

- ``"takeover"``: Synapse's ``msc4108_enabled`` is on and our module is loaded; the module
  takes over Synapse's own rendezvous handler.
- ``"delegation"``: ``msc4108_delegation_endpoint`` points at
  ``<base_url>_synapse/client/rendezvous`` and our module serves that path.
- ``"builtin"``: Synapse's own implementation, no module (for comparison).
- ``"idle"``: our module is loaded but neither MSC4108 option is set.

It uses the standard library and PyYAML (a Synapse dependency) and runs Synapse in a
subprocess, so Synapse need not be importable in the current interpreter; the compiled core
must be, since importing the package (its ``__init__``) imports it.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

import yaml

if TYPE_CHECKING:
    from collections.abc import Mapping
    from types import TracebackType

__all__ = [
    "CREATE_PATH",
    "LOG_FORMAT",
    "MODES",
    "MODULE_PATH",
    "SESSION_PATH",
    "DevServer",
    "Mode",
    "SynapseStartError",
    "free_port",
]

Mode = Literal["takeover", "delegation", "builtin", "idle"]
MODES: tuple[Mode, ...] = get_args(Mode)

#: Names the Python interpreter (of another venv) that DevServers run Synapse with.
SYNAPSE_PYTHON_ENV = "SYNAPSE_PYTHON"

#: The dotted path of our Synapse module class, as written in ``modules:``.
MODULE_PATH = "synapse_rendezvous.RendezvousModule"
#: Standard MSC4108 create path (relative to the base URL, no leading slash).
CREATE_PATH = "_matrix/client/unstable/org.matrix.msc4108/rendezvous"
#: Where sessions live (relative to the base URL, no leading slash).
SESSION_PATH = "_synapse/client/rendezvous"

#: Format of the lines in the Synapse log written by a `DevServer` (parsed by the tests).
#: ``%(request)s`` is filled in by Synapse's log record factory.
LOG_FORMAT = "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s"

_LOG_FILE = "homeserver.log"
_STDOUT_FILE = "synapse.stdout"
_STDERR_FILE = "synapse.stderr"
_LOG_CONFIG_FILE = "log.config.yaml"
_BASE_CONFIG_FILE = "homeserver.yaml"
_OVERLAY_FILE = "overlay.yaml"

_TAIL_LINES = 60


class SynapseStartError(RuntimeError):
    """Synapse did not become ready; the message ends with the tail of its log and stderr."""


# Ports handed out by `free_port` in this process: never hand out the same one twice, so
# that several DevServers started side by side cannot race for one port.
_allocated_ports: set[int] = set()
_ports_lock = threading.Lock()


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1, not yet handed out by this process."""
    with _ports_lock:
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", 0))
                port: int = sock.getsockname()[1]
            if port not in _allocated_ports:
                _allocated_ports.add(port)
                return port
    raise RuntimeError("could not find a free port on 127.0.0.1")


# Output of Synapse's config generator, per Python executable (see `_config_template`).
_templates: dict[str, Path] = {}
_templates_lock = threading.Lock()


def _config_template(python: str) -> Path:
    """A directory holding a freshly generated Synapse config for server name ``localhost``."""
    with _templates_lock:
        template = _templates.get(python)
        if template is not None and (template / _BASE_CONFIG_FILE).exists():
            return template
        template = Path(tempfile.mkdtemp(prefix="synapse-rendezvous-config-"))
        result = subprocess.run(
            [
                python,
                "-m",
                "synapse.app.homeserver",
                "--server-name",
                "localhost",
                "--config-path",
                str(template / _BASE_CONFIG_FILE),
                "--data-directory",
                str(template),
                "--generate-config",
                "--report-stats=no",
            ],
            cwd=template,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0 or not (template / _BASE_CONFIG_FILE).exists():
            shutil.rmtree(template, ignore_errors=True)
            output = (result.stdout + result.stderr).decode("utf-8", "replace")
            raise SynapseStartError(
                f"generating the Synapse config failed (exit code {result.returncode}):\n"
                f"{_tail(output)}"
            )
        atexit.register(shutil.rmtree, template, ignore_errors=True)
        _templates[python] = template
        return template


def _tail(text: str, lines: int = _TAIL_LINES) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _answers(url: str) -> bool:
    """Whether a GET of ``url`` answers 200 within a second."""
    try:
        with urllib.request.urlopen(url, timeout=1.0) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


class DevServer:
    """A Synapse homeserver on 127.0.0.1 in a throwaway work directory.

    ``module_config`` is the ``config:`` block of our module (ignored in ``"builtin"`` mode).
    ``extra_config`` holds extra top-level ``homeserver.yaml`` keys; they are written to the
    overlay after the ones this class sets, so they replace them key by key.

    Subclasses (for example a worker deployment) can extend `build_overlay`,
    `module_entries`, `command` and `environment`.
    """

    def __init__(
        self,
        *,
        mode: Mode = "takeover",
        module_config: Mapping[str, object] | None = None,
        port: int | None = None,
        extra_config: Mapping[str, object] | None = None,
        workdir: Path | None = None,
        python: str | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
        self.mode: Mode = mode
        self.module_config: dict[str, object] = dict(module_config or {})
        self.extra_config: dict[str, object] = dict(extra_config or {})
        # The interpreter Synapse runs under: this one, unless $SYNAPSE_PYTHON names another
        # (the test command runs part of the suite against the oldest supported Synapse).
        self.python = python or os.environ.get(SYNAPSE_PYTHON_ENV) or sys.executable
        self.port: int = port if port is not None else free_port()
        self._owns_workdir = workdir is None
        self.workdir: Path = (
            Path(tempfile.mkdtemp(prefix="synapse-rendezvous-")) if workdir is None else workdir
        )
        self._process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"<DevServer mode={self.mode} {self.base_url} workdir={self.workdir}>"

    # -- configuration ----------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/``."""
        return f"http://127.0.0.1:{self.port}/"

    @property
    def log_path(self) -> Path:
        return self.workdir / _LOG_FILE

    @property
    def config_paths(self) -> list[Path]:
        """The ``-c`` files, in order."""
        return [self.workdir / _BASE_CONFIG_FILE, self.workdir / _OVERLAY_FILE]

    def module_entries(self) -> list[dict[str, object]]:
        """The ``modules:`` list for the current mode."""
        if self.mode == "builtin":
            return []
        return [{"module": MODULE_PATH, "config": dict(self.module_config)}]

    def experimental_features(self) -> dict[str, object]:
        """The ``experimental_features:`` block for the current mode."""
        if self.mode in ("takeover", "builtin"):
            return {"msc4108_enabled": True}
        if self.mode == "delegation":
            return {
                "msc4108_enabled": False,
                "msc4108_delegation_endpoint": f"{self.base_url}{SESSION_PATH}",
            }
        return {}

    def listeners(self) -> list[dict[str, object]]:
        return [
            {
                "port": self.port,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "tls": False,
                "x_forwarded": False,
                "resources": [{"names": ["client"], "compress": False}],
            }
        ]

    def build_overlay(self) -> dict[str, object]:
        """The top-level keys written to ``overlay.yaml`` (before ``extra_config``)."""
        return {
            "server_name": "localhost",
            "public_baseurl": self.base_url,
            "report_stats": False,
            "trusted_key_servers": [],
            "listeners": self.listeners(),
            "database": {
                "name": "sqlite3",
                "args": {"database": str(self.workdir / "homeserver.db")},
            },
            "log_config": str(self.workdir / _LOG_CONFIG_FILE),
            "pid_file": str(self.workdir / "homeserver.pid"),
            "media_store_path": str(self.workdir / "media_store"),
            "matrix_authentication_service": {
                "enabled": True,
                "endpoint": "http://127.0.0.1:9/",
                "secret": "dummy",
            },
            "experimental_features": self.experimental_features(),
            "modules": self.module_entries(),
        }

    def build_log_config(self) -> dict[str, object]:
        """A stdlib logging dict config writing INFO and above, unbuffered, to the log file."""
        return {
            "version": 1,
            "formatters": {"precise": {"format": LOG_FORMAT}},
            "handlers": {
                "file": {
                    "class": "logging.FileHandler",
                    "formatter": "precise",
                    "filename": str(self.log_path),
                    "encoding": "utf8",
                }
            },
            "loggers": {"synapse.storage.SQL": {"level": "INFO"}},
            "root": {"level": "INFO", "handlers": ["file"]},
            "disable_existing_loggers": False,
        }

    def command(self) -> list[str]:
        """The command line that starts the homeserver."""
        cmd = [self.python, "-m", "synapse.app.homeserver"]
        for path in self.config_paths:
            cmd += ["-c", str(path)]
        return cmd

    def environment(self) -> dict[str, str]:
        """Environment of the Synapse process."""
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _generate_base_config(self) -> None:
        """Write ``homeserver.yaml`` and the signing key, once per work directory.

        Synapse's generator takes a few seconds, so it runs once per process (and Python
        executable) and its output is copied, with the template's paths replaced by ours.
        """
        base = self.workdir / _BASE_CONFIG_FILE
        if base.exists():
            return
        template = _config_template(self.python)
        text = (template / _BASE_CONFIG_FILE).read_text(encoding="utf-8")
        for path in template.iterdir():
            if path.name != _BASE_CONFIG_FILE:
                shutil.copy2(path, self.workdir / path.name)
        base.write_text(text.replace(str(template), str(self.workdir)), encoding="utf-8")

    def write_config(self) -> None:
        """Generate the base config (once per work directory) and (re)write the overlay."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._generate_base_config()
        overlay = self.build_overlay()
        overlay.update(self.extra_config)
        (self.workdir / _OVERLAY_FILE).write_text(
            yaml.safe_dump(overlay, sort_keys=False), encoding="utf-8"
        )
        (self.workdir / _LOG_CONFIG_FILE).write_text(
            yaml.safe_dump(self.build_log_config(), sort_keys=False), encoding="utf-8"
        )

    # -- process control (the demo's; `devtools.synapse.SynapseServer` replaces it) -------

    @property
    def running(self) -> bool:
        """Whether the Synapse process has been started and has not exited."""
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 60.0) -> None:
        """Start Synapse and wait until ``/_matrix/client/versions`` answers 200.

        Raises `SynapseStartError` (with the tail of the log) if it exits early or is not
        ready within ``timeout`` seconds; the process is stopped in that case.
        """
        if self.running:
            raise RuntimeError(f"{self!r} is already running")
        self.write_config()
        with (
            open(self.workdir / _STDOUT_FILE, "wb") as stdout,
            open(self.workdir / _STDERR_FILE, "wb") as stderr,
        ):
            self._process = subprocess.Popen(
                self.command(),
                cwd=self.workdir,
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        url = f"{self.base_url}_matrix/client/versions"
        while not (_answers(url) and self.running):
            code = self._process.poll()
            if code is not None or time.monotonic() > deadline:
                self._stop_process()
                problem = f"exited with code {code}" if code is not None else "did not answer"
                raise SynapseStartError(f"Synapse {problem}:\n{_tail(self.log_text())}")
            time.sleep(0.1)

    def stop(self, timeout: float = 15.0) -> int | None:
        """Stop Synapse (SIGTERM to its group, SIGKILL after ``timeout``); its exit code.

        Idempotent. Removes the work directory if this object created it.
        """
        code = self._stop_process(timeout)
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return code

    def _stop_process(self, timeout: float = 15.0) -> int | None:
        proc, self._process = self._process, None
        if proc is None:
            return None
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
            if proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(wait)
        return proc.poll()

    # -- logs -------------------------------------------------------------------------------

    def log_text(self) -> str:
        """The Synapse log file(s) followed by the captured stdout and stderr."""
        parts: list[str] = []
        logs = sorted(self.workdir.glob(f"{_LOG_FILE}*"), key=lambda p: p.name, reverse=True)
        for path in [*logs, self.workdir / _STDOUT_FILE, self.workdir / _STDERR_FILE]:
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            if text:
                parts.append(f"--- {path.name} ---\n{text}")
        return "\n".join(parts)

    # -- context manager --------------------------------------------------------------------

    def __enter__(self) -> DevServer:
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
