"""The servers under test: Synapse in each configuration, a private redis-server, and what
the benchmark reads about a process from ``/proc``."""

from __future__ import annotations

import contextlib
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from devtools.process import LoopbackHttp, LoopbackPort, ManagedProcess

# (`binary` is the run step's too: re-exported.)
from devtools.standalone import StandaloneServer
from devtools.standalone import binary as binary
from devtools.synapse import SynapseServer

if TYPE_CHECKING:
    from collections.abc import Mapping

BENCH_DIR = Path(__file__).resolve().parent

Impl = Literal["builtin", "memory", "redis", "trivial"]
#: Every implementation, in the order of the report; "builtin" is the reference.
IMPLS: tuple[Impl, ...] = ("builtin", "memory", "redis", "trivial")
#: The ones that serve the rendezvous API (the trivial ceiling serves one fixed answer).
RENDEZVOUS_IMPLS: tuple[Impl, ...] = ("builtin", "memory", "redis")

LABELS: Mapping[Impl, str] = {
    "builtin": "Synapse built-in",
    "memory": "module, memory store",
    "redis": "module, Redis store",
    "trivial": "trivial ceiling",
}

#: Where the trivial ceiling answers (see ``bench/trivial_module.py``).
TRIVIAL_PATH = "_synapse/client/bench_trivial"

#: Rate limits would throttle a load generator that sends everything from one address. The
#: capacity leaves room for every session the create runs make (they delete theirs after
#: each run, but a run at 3 000 creates/s for 5 s alone makes 15 000).
MODULE_CONFIG: Mapping[str, object] = {
    "rate_limit": {"enabled": False},
    "capacity": 200_000,
}


class TrivialServer(SynapseServer):
    """Synapse with only the trivial module (``bench/trivial_module.py``) loaded."""

    def module_entries(self) -> list[dict[str, object]]:
        return [{"module": "trivial_module.TrivialModule", "config": {}}]

    def environment(self) -> dict[str, str]:
        env = super().environment()
        # Synapse runs with its work directory as cwd: make the module importable.
        existing = env.get("PYTHONPATH")
        env["PYTHONPATH"] = str(BENCH_DIR) + (os.pathsep + existing if existing else "")
        return env


def make_server(impl: Impl, redis_url: str | None = None) -> SynapseServer:
    """A (not yet started) Synapse for ``impl``."""
    if impl == "builtin":
        return SynapseServer(mode="builtin")
    if impl == "memory":
        return SynapseServer(mode="takeover", module_config=MODULE_CONFIG)
    if impl == "redis":
        if redis_url is None:
            raise ValueError("the Redis store needs a redis URL")
        config = dict(MODULE_CONFIG)
        config.update({"store": "redis", "redis": {"url": redis_url}})
        return SynapseServer(mode="takeover", module_config=config)
    return TrivialServer(mode="idle")


# -- the standalone server --------------------------------------------------------------

#: The cells driven by a native load generator (oha): the standalone server on each store,
#: Synapse's built-in again (the same generator for the ratio), and the generator's own
#: ceiling, a hyper server answering an empty 200 (the server binary's `--bench-trivial`).
NativeImpl = Literal["builtin", "standalone-memory", "standalone-redis", "ceiling"]
NATIVE_IMPLS: tuple[NativeImpl, ...] = (
    "builtin",
    "standalone-memory",
    "standalone-redis",
    "ceiling",
)
NATIVE_LABELS: Mapping[NativeImpl, str] = {
    "builtin": "Synapse built-in",
    "standalone-memory": "standalone server, memory store",
    "standalone-redis": "standalone server, Redis store",
    "ceiling": "hyper trivial ceiling (empty 200)",
}

#: Like the module's: no rate limits (one address sends everything). The creates of a run
#: stay alive until their TTL, so it is short and the capacity large. One worker thread:
#: oha and Redis share the machine's two cores with the server, and a second thread only
#: adds hand-overs (measured in docs/performance.md).
STANDALONE_CONFIG: Mapping[str, object] = {
    "rate_limit": {"enabled": False},
    "capacity": 1_000_000,
    "ttl": "30s",
    "worker_threads": 1,
}


def make_standalone(store: str, redis_url: str | None = None) -> StandaloneServer:
    """A (not yet started) standalone server on ``store``, built with ``--release``."""
    config = dict(STANDALONE_CONFIG)
    if store == "redis":
        if redis_url is None:
            raise ValueError("the Redis store needs a redis URL")
        config.update(
            {"store": "redis", "redis": {"url": redis_url, "key_prefix": "bench-standalone:"}}
        )
    return StandaloneServer(config)


class Ceiling(LoopbackHttp):
    """``synapse-rendezvous-server --bench-trivial``: the same runtime and HTTP stack as the
    server, answering every request with an empty 200."""

    def __init__(self) -> None:
        self._port = LoopbackPort()
        self._proc = ManagedProcess("the trivial ceiling")

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def start(self, timeout: float = 10.0) -> None:
        self._port.start(lambda: self._start(timeout))

    def _start(self, timeout: float) -> None:
        # Its output is discarded: a port clash shows as an early exit, without a retry.
        self._proc.spawn([str(binary()), "--bench-trivial", f"127.0.0.1:{self.port}"])
        self._proc.wait_ready(self._answers, timeout, what=f"answer {self.base_url}")

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.base_url, timeout=1.0):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        self._proc.stop(timeout=5.0)


# -- /proc --------------------------------------------------------------------------------

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` (all its threads), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    # The command name (field 2) may contain spaces: count fields after its ")".
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / _TICKS


def system_busy_seconds() -> float:
    """CPU time every CPU of the machine has spent busy since boot (``/proc/stat``), in
    seconds: with the CPU time of the benchmark's own processes, what other work used."""
    fields = Path("/proc/stat").read_text(encoding="ascii").splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICKS


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def rss_bytes(pid: int) -> int:
    """Resident set size now (``VmRSS``)."""
    return _status_kib(pid, "VmRSS") * 1024


def peak_rss_bytes(pid: int) -> int:
    """Peak resident set size (``VmHWM``) since start or since `reset_peak_rss`."""
    return _status_kib(pid, "VmHWM") * 1024


def reset_peak_rss(pid: int) -> bool:
    """Resets ``VmHWM`` to the current RSS (needs Linux 4.0+ and permission); whether it did."""
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5", encoding="ascii")
        return True
    return False


@dataclass
class ProcessSample:
    """CPU time and RSS of a process at one moment."""

    cpu: float
    rss: int

    @classmethod
    def of(cls, pid: int) -> ProcessSample:
        return cls(cpu_seconds(pid), rss_bytes(pid))
