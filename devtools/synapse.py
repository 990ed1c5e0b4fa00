"""The Synapse homeserver of the tests and the bench: `SynapseServer`, and its log records.

`SynapseServer` is the package's `synapse_rendezvous.devserver.DevServer` (the configuration
per mode, which the demo uses too) run through `devtools.process`: its own process group,
a bounded wait until ``/_matrix/client/versions`` answers, SIGTERM then SIGKILL, port retry,
restarts on the same port, the exit code, and the log parsed into `LogRecord`\\ s.
"""

from __future__ import annotations

import contextlib
import re
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING

from devtools.process import LoopbackPort, ManagedProcess, free_port, tail
from synapse_rendezvous.devserver import (
    CREATE_PATH,
    LOG_FORMAT,
    MODES,
    MODULE_PATH,
    SESSION_PATH,
    DevServer,
    Mode,
    SynapseStartError,
)

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

__all__ = [
    "CREATE_PATH",
    "LOG_FORMAT",
    "MODES",
    "MODULE_PATH",
    "SESSION_PATH",
    "LogRecord",
    "Mode",
    "SynapseServer",
    "SynapseStartError",
    "free_port",
    "parse_log",
]

_LOG_LINE = re.compile(
    r"^(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+) - (?P<name>\S+) - (?P<lineno>\d+) - "
    r"(?P<level>[A-Z]+) - (?P<request>.*?) - (?P<message>.*)$"
)


@dataclass(frozen=True)
class LogRecord:
    """One line of a `SynapseServer` log, as parsed by `parse_log`."""

    time: str
    name: str
    level: str
    request: str
    message: str


def parse_log(text: str) -> list[LogRecord]:
    """Parse the log lines written with `LOG_FORMAT`.

    Continuation lines (tracebacks) are appended to the message of the preceding record;
    lines before the first record are ignored.
    """
    records: list[LogRecord] = []
    for line in text.splitlines():
        m = _LOG_LINE.match(line)
        if m is not None:
            records.append(
                LogRecord(
                    time=m["time"],
                    name=m["name"],
                    level=m["level"],
                    request=m["request"],
                    message=m["message"],
                )
            )
        elif records:
            last = records[-1]
            records[-1] = LogRecord(
                last.time, last.name, last.level, last.request, f"{last.message}\n{line}"
            )
    return records


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


class SynapseServer(DevServer):
    """A `DevServer` run through `ManagedProcess` (see the module's documentation).

    Subclasses (a worker deployment, the bench's trivial server) extend `build_overlay`,
    `module_entries`, `command` and `environment` as with `DevServer`.
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
        self._port = LoopbackPort(port)
        super().__init__(
            mode=mode,
            module_config=module_config,
            port=self._port.number,
            extra_config=extra_config,
            workdir=workdir,
            python=python,
        )
        self._proc = ManagedProcess(f"Synapse ({self.mode})", error=SynapseStartError)

    def __repr__(self) -> str:
        return f"<SynapseServer mode={self.mode} {self.base_url} workdir={self.workdir}>"

    @property
    def running(self) -> bool:
        return self._proc.running

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        """The exit code of the last process, once it has exited (negative: killed by signal)."""
        return self._proc.returncode

    def start(self, timeout: float = 60.0) -> None:
        """Start Synapse and wait until ``/_matrix/client/versions`` answers 200.

        Raises `SynapseStartError` (with the tail of the log and stderr) if it exits early or
        is not ready within ``timeout`` seconds; the process is stopped in that case.
        """
        self._port.start(lambda: self._start(timeout))

    def _start(self, timeout: float) -> None:
        self.port = self._port.number
        # A previous stop() may have removed a temporary work directory: start afresh.
        self.write_config()
        stdout, stderr = self.workdir / "synapse.stdout", self.workdir / "synapse.stderr"
        for path in (stdout, stderr):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self._proc.spawn(
            self.command(), cwd=self.workdir, env=self.environment(), stdout=stdout, stderr=stderr
        )
        url = f"{self.base_url}_matrix/client/versions"
        self._proc.wait_ready(
            lambda: _answers(url),
            timeout,
            what=f"answer {url}",
            log_tail=lambda: tail(self.log_text()),
            interval=0.1,
        )

    def _stop_process(self, timeout: float = 15.0) -> int | None:
        # `stop` (the package's) calls this, then removes a temporary work directory.
        return self._proc.stop(timeout)

    def restart(self, timeout: float = 60.0) -> None:
        """Stop (keeping the work directory) and start again on the same port."""
        self._proc.stop()
        self.start(timeout)

    def log_records(self) -> list[LogRecord]:
        """The parsed lines of the Synapse log file."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return []
        return parse_log(text)
