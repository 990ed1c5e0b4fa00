"""nginx, Caddy and HAProxy run with the routing snippets of ``docs/standalone.md`` as written.

`DocProxy` takes the doc's code block for one proxy, changes only what a test must (the
upstream addresses ``10.0.1.5:8090``... become the test's servers, the commented-out
``listen``/``bind`` line becomes a loopback port) and adds what a whole configuration file
has around such a block (nginx's ``events`` and ``http``, HAProxy's ``defaults`` and the
``synapse`` backend the snippet names, Caddy's global options). It runs the Debian binary in
the foreground, in its own work directory, waits (bounded) until the port accepts
connections, and stops it with SIGTERM. A missing binary fails the test with the command
that installs it (``scripts/test`` does).
"""

from __future__ import annotations

import re
import shutil
import socket
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from devtools.process import LoopbackHttp, LoopbackPort, ManagedProcess, ManagedServer, tail

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "DOC_UPSTREAMS",
    "PROXIES",
    "DocProxy",
    "ProxyError",
    "ProxyName",
    "Store",
    "doc_snippet",
]

ProxyName = Literal["nginx", "caddy", "haproxy"]
Store = Literal["redis", "memory"]
PROXIES: tuple[ProxyName, ...] = ("nginx", "caddy", "haproxy")

STANDALONE_DOC = Path(__file__).resolve().parents[2] / "docs" / "standalone.md"
#: The servers every snippet of the doc balances over, in order.
DOC_UPSTREAMS = ("10.0.1.5:8090", "10.0.1.6:8090", "10.0.1.7:8090")
MEMORY_MARK = "# memory store"
_FENCE = {"nginx": "nginx", "caddy": "caddyfile", "haproxy": "haproxy"}
_BINARY = {"nginx": "/usr/sbin/nginx", "caddy": "/usr/bin/caddy", "haproxy": "/usr/sbin/haproxy"}


class ProxyError(RuntimeError):
    """The proxy did not start."""


def doc_snippet(name: ProxyName, store: Store = "redis") -> str:
    """The one code block of ``docs/standalone.md`` for proxy ``name`` and ``store`` (the
    memory store's block starts with the comment ``# memory store``)."""
    text = STANDALONE_DOC.read_text(encoding="utf-8")
    blocks = re.findall(rf"^```{_FENCE[name]}\n(.*?)^```", text, flags=re.S | re.M)
    chosen = [b for b in blocks if b.startswith(MEMORY_MARK) == (store == "memory")]
    assert len(chosen) == 1, f"expected one {store} ```{_FENCE[name]} block in {STANDALONE_DOC}"
    return str(chosen[0])


def _with_upstreams(snippet: str, upstreams: Sequence[int]) -> str:
    for doc_address, port in zip(DOC_UPSTREAMS, upstreams, strict=False):
        assert doc_address in snippet, f"{doc_address} is not in the snippet"
        snippet = snippet.replace(doc_address, f"127.0.0.1:{port}")
    unmapped = [address for address in DOC_UPSTREAMS if address in snippet]
    assert not unmapped, f"no server for {unmapped}"
    return snippet


def _replace_line(snippet: str, starts: str, new: str) -> str:
    """``snippet`` with its one line that starts (after indentation) with ``starts`` as
    ``new``, indented alike."""
    lines = snippet.splitlines()
    found = [i for i, line in enumerate(lines) if line.lstrip().startswith(starts)]
    assert len(found) == 1, f"expected one line starting with {starts!r}: {snippet}"
    line = lines[found[0]]
    lines[found[0]] = line[: len(line) - len(line.lstrip())] + new
    return "\n".join(lines) + "\n"


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class DocProxy(LoopbackHttp, ManagedServer):
    """Proxy ``name`` on ``127.0.0.1:port``, routing to ``upstreams`` as the doc's block for
    ``store`` says."""

    def __init__(
        self, name: ProxyName, upstreams: Sequence[int], port: int, store: Store = "redis"
    ) -> None:
        self.name = name
        self.upstreams = list(upstreams)
        self.store: Store = store
        self._port = LoopbackPort(port)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"rendezvous-{name}-"))
        self._proc = ManagedProcess(name, error=ProxyError)

    @property
    def log_path(self) -> Path:
        return self.workdir / "proxy.log"

    def configuration(self) -> str:
        """The whole configuration file: the doc's snippet, adapted as the module says."""
        snippet = _with_upstreams(doc_snippet(self.name, self.store), self.upstreams)
        listen = f"127.0.0.1:{self.port}"
        if self.name == "nginx":
            # The snippet's server block says where the listen line goes.
            snippet = _replace_line(snippet, "# ... listen 443", f"listen {listen};")
            return (
                f"daemon off;\nworker_processes 1;\npid {self.workdir}/nginx.pid;\n"
                f"error_log {self.log_path} info;\n"
                "events { worker_connections 256; }\n"
                f"http {{\naccess_log off;\nclient_body_temp_path {self.workdir}/body;\n"
                f"proxy_temp_path {self.workdir}/proxy;\n{snippet}}}\n"
            )
        if self.name == "caddy":
            snippet = _replace_line(snippet, "matrix.example.org {", f"http://{listen} {{")
            return "{\n\tadmin off\n\tauto_https off\n}\n\n" + snippet
        snippet = _replace_line(snippet, "# bind :443", f"bind {listen}")
        # Synapse's backend, which the snippet names as the default: nothing listens here.
        return (
            "defaults\n    mode http\n    timeout connect 2s\n    timeout client 10s\n"
            f"    timeout server 10s\n\n{snippet}\n"
            "backend synapse\n    server synapse 127.0.0.1:9\n"
        )

    def _command(self, config: Path) -> list[str]:
        binary = _BINARY[self.name]
        if self.name == "nginx":
            return [binary, "-p", str(self.workdir), "-e", str(self.log_path), "-c", str(config)]
        if self.name == "caddy":
            return [binary, "run", "--adapter", "caddyfile", "--config", str(config)]
        return [binary, "-db", "-f", str(config)]

    def start(self, timeout: float = 20.0) -> None:
        binary = _BINARY[self.name]
        if shutil.which(binary) is None:
            raise ProxyError(
                f"{binary} is missing (scripts/test installs it: apt-get install {self.name})"
            )
        self._port.start(lambda: self._start(timeout))

    def _start(self, timeout: float) -> None:
        config = self.workdir / f"{self.name}.conf"
        config.write_text(self.configuration(), encoding="utf-8")
        # Caddy keeps state under XDG directories: this proxy's own, not the user's.
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(self.workdir),
            "XDG_CONFIG_HOME": str(self.workdir / "config"),
            "XDG_DATA_HOME": str(self.workdir / "data"),
        }
        self._proc.spawn(
            self._command(config),
            cwd=self.workdir,
            env=env,
            stdout=self.log_path,
            stderr=self.log_path,
        )
        self._proc.wait_ready(
            lambda: _accepts(self.port),
            timeout,
            what=f"accept connections on port {self.port}",
            log_tail=self.log_tail,
        )

    def log_tail(self) -> str:
        try:
            return tail(self.log_path.read_text(encoding="utf-8", errors="replace"), 40)
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> int | None:
        return self._proc.stop(timeout)

    def end(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)
