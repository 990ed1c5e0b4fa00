"""The HTTP benchmark: boots every server, drives each with the load generator, writes JSON.

``python -m bench.run --out bench/results/http.json`` (``scripts/bench`` runs it). The servers
(see ``bench/servers.py``) all run from the start, idle but for the one under load: the cells
(one operation at one concurrency on one server) take turns, in an order that rotates from
one cell to the next, so that a busy moment of a shared machine does not fall on one
implementation only. For each cell it reads Synapse's CPU time (``/proc/PID/stat``) at the
start and end of the measured window, which the load generator announces on its stdout, and
samples its RSS while the cell runs.

After the throughput cells and the realistic mix, each rendezvous server is restarted and
filled with ``--sessions`` live sessions of ``--payload`` bytes to measure its RSS growth.

``--native`` runs the other half instead (``scripts/bench`` runs both, in two steps): the
standalone server on both stores, Synapse's built-in once more and the generator's ceiling,
driven by oha, a native load generator (the Python one tops out at a few thousand requests a
second, far below the server): see `NativeBench`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.servers import (
    IMPLS,
    NATIVE_IMPLS,
    RENDEZVOUS_IMPLS,
    Ceiling,
    Impl,
    NativeImpl,
    ProcessSample,
    binary,
    cpu_seconds,
    make_server,
    make_standalone,
    peak_rss_bytes,
    reset_peak_rss,
    rss_bytes,
    system_busy_seconds,
)
from devtools.redis import RedisServer
from devtools.synapse import CREATE_PATH

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from devtools.synapse import SynapseServer

BENCH_DIR = Path(__file__).resolve().parent
LOADGEN = BENCH_DIR / "loadgen.py"
#: The operations of the throughput cells, in the order they run. Creates run last: the
#: sessions they make stay alive (until their TTL) in the module's stores.
OPS = ("get304", "get200", "put", "create")


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Stop(Exception):
    """SIGTERM or SIGHUP: unwind, so that every server is stopped."""


def _on_signal(signum: int, frame: object) -> None:
    raise Stop(signal.Signals(signum).name)


# -- the load generator -----------------------------------------------------------------------


@dataclass
class Watched:
    """A process whose CPU time is read around a measured window (``None``: not running)."""

    name: str
    pid: int | None


def run_loadgen(
    args: Sequence[str],
    *,
    timeout: float,
    watch: Sequence[Watched] = (),
    rss_pid: int | None = None,
) -> dict[str, Any]:
    """Runs the load generator; returns its JSON result, with, when it announced a measured
    window, ``cpu_s`` (CPU seconds of each watched process in the window) and, with
    ``rss_pid``, ``rss_peak`` (highest RSS sampled while it ran)."""
    command = [sys.executable, str(LOADGEN), *args]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0]
    done = threading.Event()

    def sample_rss() -> None:
        while rss_pid is not None and not done.wait(0.1):
            with contextlib.suppress(OSError):
                peak[0] = max(peak[0], rss_bytes(rss_pid))

    sampler = threading.Thread(target=sample_rss, daemon=True)
    sampler.start()
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    marks: dict[str, dict[str, float]] = {}
    result_line = ""
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("#window "):
                mark = line.split()[1]
                marks[mark] = {w.name: cpu_seconds(w.pid) for w in watch if w.pid is not None}
                marks[mark]["loadgen"] = cpu_seconds(proc.pid)
                marks[mark]["machine"] = system_busy_seconds()
            elif line.strip():
                result_line = line
        stderr = proc.stderr.read() if proc.stderr is not None else ""
        code = proc.wait()
    finally:
        timer.cancel()
        done.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if code != 0 or not result_line:
        raise RuntimeError(
            f"load generator {' '.join(args)} failed with code {code}:\n{stderr[-3000:]}"
        )
    result: dict[str, Any] = json.loads(result_line)
    if "start" in marks and "end" in marks:
        cpu = {name: marks["end"][name] - marks["start"][name] for name in marks["start"]}
        machine = cpu.pop("machine")
        result["cpu_s"] = cpu
        result["other_cpu_s"] = max(0.0, machine - sum(cpu.values()))
    if rss_pid is not None:
        with contextlib.suppress(OSError):
            peak[0] = max(peak[0], rss_bytes(rss_pid))
        result["rss_peak"] = peak[0]
    return result


# -- the benchmark ----------------------------------------------------------------------------


@dataclass
class Settings:
    warmup: float
    duration: float
    concurrency: tuple[int, ...]
    payload: int
    logins: int
    messages: int
    sessions: int


class Bench:
    """The servers, and what was measured on them."""

    def __init__(self, settings: Settings, workdir: Path) -> None:
        self.settings = settings
        self.workdir = workdir
        self.redis: RedisServer | None = None
        self.servers: dict[Impl, SynapseServer] = {}
        self.results: dict[str, Any] = {"raw": [], "mix": {}, "memory": {}, "servers": {}}

    # -- lifecycle ------------------------------------------------------------------------

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        try:
            self.redis = RedisServer()
            self.redis.start()
            log(f"redis-server on port {self.redis.port} (pid {self.redis.pid})")
            for impl in IMPLS:
                self._start(impl)
            yield
        finally:
            for impl, server in self.servers.items():
                with contextlib.suppress(Exception):
                    server.stop()
                log(f"stopped {impl}")
            if self.redis is not None:
                self.redis.close()
                log("stopped redis-server")

    def _start(self, impl: Impl) -> None:
        server = self.servers.get(impl)
        if server is None:
            server = make_server(impl, self.redis.url if self.redis else None)
            self.servers[impl] = server
            server.start()
        else:
            server.restart()
        assert server.pid is not None
        loaded = _loaded_core(server.pid)
        if impl in ("memory", "redis"):
            from synapse_rendezvous import _core

            if loaded is None or not loaded.startswith(_core.__file__):
                raise RuntimeError(
                    f"{impl}: Synapse loaded the extension {loaded}, not {_core.__file__}"
                )
        log(
            f"{impl}: Synapse pid {server.pid} at {server.base_url}"
            + (f", extension {loaded}" if loaded else "")
        )
        self.results["servers"][impl] = {"pid": server.pid, "core": loaded}

    def _watch(self, impl: Impl) -> list[Watched]:
        server = self.servers[impl]
        watched = [Watched("synapse", server.pid)]
        if impl == "redis" and self.redis is not None:
            watched.append(Watched("redis", self.redis.pid))
        return watched

    # -- throughput -----------------------------------------------------------------------

    def raw(self) -> None:
        s = self.settings
        cells: list[tuple[str, int, list[Impl]]] = []
        for op in OPS:
            for concurrency in s.concurrency:
                impls: list[Impl] = list(RENDEZVOUS_IMPLS)
                if op == "get304":
                    # The trivial ceiling answers one GET: it takes its turn with the GETs
                    # that answer no body.
                    impls.append("trivial")
                cells.append((op, concurrency, impls))
        for turn, (op, concurrency, impls) in enumerate(cells):
            rotation = impls[turn % len(impls) :] + impls[: turn % len(impls)]
            for impl in rotation:
                self._raw_cell(impl, "trivial" if impl == "trivial" else op, concurrency)

    def _raw_cell(self, impl: Impl, op: str, concurrency: int) -> None:
        s = self.settings
        server = self.servers[impl]
        assert server.pid is not None
        args = [
            "raw",
            "--base",
            server.base_url,
            "--op",
            op,
            "--concurrency",
            str(concurrency),
            "--warmup",
            str(s.warmup),
            "--duration",
            str(s.duration),
            "--payload",
            str(s.payload),
        ]
        result = run_loadgen(
            args,
            timeout=s.warmup + s.duration + 120,
            watch=self._watch(impl),
            rss_pid=server.pid,
        )
        result.update({"impl": impl, "op": op, "concurrency": concurrency})
        cpu = result.get("cpu_s", {}).get("synapse")
        requests = result["requests"]
        result["cpu_per_1000"] = cpu / requests * 1000 if cpu is not None and requests else None
        self.results["raw"].append(result)
        log(
            f"{impl:8} {op:7} c={concurrency:<3} {result['rps']:8.0f} req/s  "
            f"p50 {result['p50_ms']:6.2f} ms  p99 {result['p99_ms']:6.2f} ms  "
            f"errors {result['errors']}  CPU/1000 {result['cpu_per_1000'] or 0:.3f} s  "
            f"client {result['client_cpu_per_request_us']:.0f} us/req"
        )

    # -- realistic mix --------------------------------------------------------------------

    def mix(self) -> None:
        s = self.settings
        for impl in RENDEZVOUS_IMPLS:
            server = self.servers[impl]
            assert server.pid is not None
            before = ProcessSample.of(server.pid)
            result = run_loadgen(
                [
                    "mix",
                    "--base",
                    server.base_url,
                    "--logins",
                    str(s.logins),
                    "--messages",
                    str(s.messages),
                    "--payload",
                    str(min(s.payload, 1024)),
                    "--timeout",
                    "60",
                ],
                timeout=120,
                rss_pid=server.pid,
            )
            cpu = cpu_seconds(server.pid) - before.cpu
            result["cpu_per_1000"] = cpu / result["requests"] * 1000 if result["requests"] else None
            self.results["mix"][impl] = result
            log(
                f"{impl:8} mix: {result['completed']}/{result['logins']} logins, "
                f"{result['requests']} requests, errors {result['errors']}, "
                f"p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms"
            )

    # -- memory ---------------------------------------------------------------------------

    def memory(self) -> None:
        s = self.settings
        for impl in RENDEZVOUS_IMPLS:
            # A fresh process: RSS freed by earlier runs would hide part of the growth.
            self._start(impl)
            server = self.servers[impl]
            assert server.pid is not None
            paths = self.workdir / f"sessions-{impl}.txt"
            common = ["--base", server.base_url, "--paths", str(paths), "--concurrency", "16"]
            # Warm up the code paths (and Synapse's caches) before the baseline.
            run_loadgen(
                ["fill", *common, "--sessions", "300", "--payload", str(s.payload)], timeout=120
            )
            run_loadgen(["drain", *common], timeout=120)
            time.sleep(1.0)
            rss_before = rss_bytes(server.pid)
            redis_before = (
                rss_bytes(self.redis.pid)
                if impl == "redis" and self.redis and self.redis.pid
                else None
            )
            started = time.perf_counter()
            fill = run_loadgen(
                ["fill", *common, "--sessions", str(s.sessions), "--payload", str(s.payload)],
                timeout=600,
            )
            fill_s = time.perf_counter() - started
            time.sleep(1.0)
            rss_after = rss_bytes(server.pid)
            redis_after = (
                rss_bytes(self.redis.pid)
                if redis_before is not None and self.redis and self.redis.pid
                else None
            )
            probe = run_loadgen(["probe", *common], timeout=600)
            paths.unlink(missing_ok=True)
            entry: dict[str, Any] = {
                "sessions": s.sessions,
                "payload": s.payload,
                "created": fill["created"],
                "create_statuses": fill["statuses"],
                "fill_s": fill_s,
                "live": probe["live"],
                "probe_statuses": probe["statuses"],
                "rss_before": rss_before,
                "rss_after": rss_after,
                "growth": rss_after - rss_before,
                "peak_rss": peak_rss_bytes(server.pid),
            }
            if redis_before is not None and redis_after is not None:
                entry["redis_growth"] = redis_after - redis_before
            self.results["memory"][impl] = entry
            log(
                f"{impl:8} memory: {fill['created']} created, {probe['live']} live, RSS "
                f"{rss_before / 2**20:.1f} -> {rss_after / 2**20:.1f} MiB "
                f"(+{(rss_after - rss_before) / 2**20:.1f} MiB)"
            )

    def peaks(self) -> None:
        for impl, server in self.servers.items():
            if server.pid is not None:
                self.results["servers"][impl]["peak_rss_run"] = peak_rss_bytes(server.pid)


# -- the standalone server, under a native load generator ---------------------------------

#: What each operation must answer; anything else is an error.
NATIVE_EXPECTED = {"get304": 304, "get200": 200, "put": 202, "create": 201, "trivial": 200}
#: Creates run for a number of requests rather than a time: every one leaves a session alive
#: (until the standalone servers' 30 s TTL), and a fixed count bounds the memory they take.
CREATES = 20_000
#: The targets' cells (c=32) run this many rounds, each implementation once per round; the
#: report takes each cell's median. This machine's speed drifts by 20 % within minutes, and
#: one round left the ratios to that drift.
TARGET_CONCURRENCY = 32
TARGET_ROUNDS = 3


class NativeBench:
    """oha against the standalone server (memory and Redis stores), against Synapse's
    built-in (so that the ratio compares two servers under one generator), and against the
    ceiling: ``synapse-rendezvous-server --bench-trivial``, an empty 200 from the same
    runtime and HTTP stack, the most oha can measure on this machine. The same warm-up,
    duration and concurrencies as the Python generator's cells; the impls take turns."""

    def __init__(self, settings: Settings, oha: str, workdir: Path) -> None:
        self.settings = settings
        self.oha = oha
        self.workdir = workdir
        self.redis: RedisServer | None = None
        self.builtin: SynapseServer | None = None
        self.servers: dict[NativeImpl, Any] = {}
        self.results: dict[str, Any] = {"native": [], "servers": {}}
        self.body = workdir / "payload.txt"
        self.body.write_bytes(b"x" * settings.payload)

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        try:
            self.redis = RedisServer()
            self.redis.start()
            log(f"redis-server on port {self.redis.port} (pid {self.redis.pid})")
            program = binary()
            log(f"standalone server binary: {program}")
            self.results["binary"] = str(program)
            for impl in NATIVE_IMPLS:
                server: Any
                if impl == "builtin":
                    server = make_server("builtin")
                elif impl == "ceiling":
                    server = Ceiling()
                else:
                    store = impl.removeprefix("standalone-")
                    server = make_standalone(store, self.redis.url)
                server.start()
                self.servers[impl] = server
                self.results["servers"][impl] = {"pid": server.pid, "url": server.base_url}
                log(f"{impl}: pid {server.pid} at {server.base_url}")
            yield
        finally:
            for impl, server in self.servers.items():
                with contextlib.suppress(Exception):
                    server.stop()
                log(f"stopped {impl}")
            if self.redis is not None:
                self.redis.close()
                log("stopped redis-server")

    def _watch(self, impl: NativeImpl) -> list[Watched]:
        watched = [Watched("server", self.servers[impl].pid)]
        if impl == "standalone-redis" and self.redis is not None:
            watched.append(Watched("redis", self.redis.pid))
        return watched

    def _target(self, impl: NativeImpl, op: str) -> list[str]:
        """oha's arguments for ``op`` on ``impl``: method, headers, body and URL."""
        base = self.servers[impl].base_url
        if op == "trivial":
            return [base]
        if op == "create":
            return ["-m", "POST", "-T", "text/plain", "-D", str(self.body), base + CREATE_PATH]
        url, etag = _create(base + CREATE_PATH, self.body.read_bytes())
        if op == "get304":
            return ["-H", f"If-None-Match: {etag}", url]
        if op == "get200":
            return [url]
        return ["-m", "PUT", "-H", "If-Match: *", "-T", "text/plain", "-D", str(self.body), url]

    def raw(self) -> None:
        s = self.settings
        cells: list[tuple[str, int, list[NativeImpl]]] = []
        for op in ("get304", "get200", "put", "create"):
            for concurrency in s.concurrency:
                impls: list[NativeImpl] = ["builtin", "standalone-memory", "standalone-redis"]
                if op == "get304":
                    impls.append("ceiling")
                rounds = TARGET_ROUNDS if concurrency == TARGET_CONCURRENCY else 1
                cells.extend((op, concurrency, impls) for _ in range(rounds))
        for turn, (op, concurrency, impls) in enumerate(cells):
            rotation = impls[turn % len(impls) :] + impls[: turn % len(impls)]
            for impl in rotation:
                self._cell(impl, "trivial" if impl == "ceiling" else op, concurrency)

    def _cell(self, impl: NativeImpl, op: str, concurrency: int) -> None:
        s = self.settings
        target = self._target(impl, op)
        common = ["--no-tui", "--output-format", "json", "-c", str(concurrency)]
        if op == "create":
            warm = ["-n", str(max(concurrency * 20, 500))]
            measured = ["-n", str(CREATES)]
        else:
            warm = ["-z", f"{s.warmup:g}s"]
            measured = ["-z", f"{s.duration:g}s"]
        if s.warmup > 0:
            _oha(self.oha, [*common, *warm, *target], timeout=s.warmup + 60)
        watched = self._watch(impl)
        before = {w.name: cpu_seconds(w.pid) for w in watched if w.pid is not None}
        machine_before = system_busy_seconds()
        result, loadgen_cpu = _oha(self.oha, [*common, *measured, *target], timeout=600)
        machine = system_busy_seconds() - machine_before
        cpu = {w.name: cpu_seconds(w.pid) - before[w.name] for w in watched if w.pid is not None}
        cpu["loadgen"] = loadgen_cpu
        summary = result["summary"]
        statuses = {int(k): v for k, v in result.get("statusCodeDistribution", {}).items()}
        failures = {
            k: v
            for k, v in result.get("errorDistribution", {}).items()
            if "aborted due to deadline" not in k
        }
        expected = NATIVE_EXPECTED[op]
        answered = sum(statuses.values())
        cell = {
            "impl": impl,
            "op": op,
            "concurrency": concurrency,
            "rps": answered / summary["total"] if summary["total"] else 0.0,
            "requests": answered,
            "elapsed_s": summary["total"],
            "p50_ms": result["latencyPercentiles"]["p50"] * 1000,
            "p99_ms": result["latencyPercentiles"]["p99"] * 1000,
            "errors": answered - statuses.get(expected, 0) + sum(failures.values()),
            "statuses": statuses,
            "failures": failures,
            "cpu_s": cpu,
            "other_cpu_s": max(0.0, machine - sum(cpu.values())),
        }
        self.results["native"].append(cell)
        server_cpu = cpu.get("server")
        log(
            f"{impl:17} {op:7} c={concurrency:<3} {cell['rps']:9.0f} req/s  "
            f"p50 {cell['p50_ms']:6.2f} ms  p99 {cell['p99_ms']:6.2f} ms  "
            f"errors {cell['errors']}  server CPU {server_cpu or 0:.2f} s  "
            f"oha CPU {loadgen_cpu:.2f} s"
        )


def _create(url: str, body: bytes) -> tuple[str, str]:
    """A new session: its URL and ETag."""
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "text/plain"}
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        created = json.load(resp)
        etag = resp.headers["ETag"]
    return str(created["url"]), str(etag)


def _oha(oha: str, args: Sequence[str], *, timeout: float) -> tuple[dict[str, Any], float]:
    """Runs oha; its JSON result and the CPU seconds it used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        [oha, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"oha {' '.join(args)} failed ({done.returncode}): {done.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result: dict[str, Any] = json.loads(done.stdout)
    return result, cpu


def find_oha(given: str | None) -> str:
    """oha from ``--oha``, PATH or ``~/.cargo/bin``."""
    for candidate in (given, shutil.which("oha"), str(Path.home() / ".cargo/bin/oha")):
        if candidate and Path(candidate).is_file():
            return candidate
    raise SystemExit("bench/run.py --native needs oha: cargo install --locked oha")


def _loaded_core(pid: int) -> str | None:
    """The path of the ``_core`` extension that process ``pid`` has mapped, if any."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/maps").read_text(encoding="utf-8").splitlines():
            if "_core.abi3.so" in line:
                return line.split(maxsplit=5)[-1]
    return None


def machine_facts() -> dict[str, Any]:
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    facts: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "loadavg_start": os.getloadavg(),
    }
    with contextlib.suppress(Exception):
        import synapse

        facts["synapse"] = synapse.__version__.split(" ")[0]
    with contextlib.suppress(Exception):
        from synapse_rendezvous import _core

        facts["core_path"] = _core.__file__
        facts["core_version"] = _core.__version__
    return facts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="where to write the JSON")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--payload", type=int, default=4096)
    parser.add_argument("--logins", type=int, default=50)
    parser.add_argument("--messages", type=int, default=5)
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument(
        "--native",
        action="store_true",
        help="the standalone server under oha instead of the Synapse cells",
    )
    parser.add_argument("--oha", help="the oha binary (default: PATH, then ~/.cargo/bin)")
    args = parser.parse_args(argv)
    settings = Settings(
        warmup=args.warmup,
        duration=args.duration,
        concurrency=tuple(int(c) for c in args.concurrency.split(",")),
        payload=args.payload,
        logins=args.logins,
        messages=args.messages,
        sessions=args.sessions,
    )
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _on_signal)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.native:
        return native(settings, args)
    bench = Bench(settings, args.out.parent)
    bench.results["settings"] = vars(settings) | {"concurrency": list(settings.concurrency)}
    bench.results["machine"] = machine_facts()
    bench.results["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    started = time.monotonic()
    with bench.running():
        for server in bench.servers.values():
            if server.pid is not None:
                reset_peak_rss(server.pid)
        log("throughput cells")
        bench.raw()
        log("realistic mix")
        bench.mix()
        bench.peaks()
        log("memory with many live sessions")
        bench.memory()
    bench.results["machine"]["loadavg_end"] = os.getloadavg()
    bench.results["elapsed_s"] = time.monotonic() - started
    args.out.write_text(json.dumps(bench.results, indent=2) + "\n", encoding="utf-8")
    log(f"wrote {args.out} after {bench.results['elapsed_s']:.0f} s")
    return 0


def native(settings: Settings, args: argparse.Namespace) -> int:
    oha = find_oha(args.oha)
    version = subprocess.run([oha, "--version"], capture_output=True, text=True, timeout=30)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-native-") as workdir:
        bench = NativeBench(settings, oha, Path(workdir))
        bench.results["settings"] = vars(settings) | {"concurrency": list(settings.concurrency)}
        bench.results["machine"] = machine_facts()
        bench.results["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        bench.results["oha"] = version.stdout.strip()
        with bench.running():
            log("native cells (oha)")
            bench.raw()
    bench.results["elapsed_s"] = time.monotonic() - started
    args.out.write_text(json.dumps(bench.results, indent=2) + "\n", encoding="utf-8")
    log(f"wrote {args.out} after {bench.results['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (Stop, KeyboardInterrupt) as stopped:
        # Every server has been stopped on the way out (see `Bench.running`).
        log(f"interrupted ({stopped or 'SIGINT'})")
        sys.exit(130 if isinstance(stopped, KeyboardInterrupt) else 143)
