"""Turns the benchmark's JSON into ``docs/performance.md`` and ``docs/performance.png``, and
prints one PASS/MISS line per target.

``python -m bench.report --http bench/results/http.json --handler bench/results/handler.json
--criterion target/criterion`` (``scripts/bench`` runs it). The targets are only checked
here, on the figures of one run; no test ever times anything.
"""

# The Markdown uses typographic characters on purpose: the multiplication sign for ratios
# and the en dash for ranges.
# ruff: noqa: RUF001

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.servers import IMPLS, LABELS, NATIVE_LABELS, RENDEZVOUS_IMPLS, NativeImpl

if TYPE_CHECKING:
    from collections.abc import Sequence

ROOT = Path(__file__).resolve().parent.parent
MIB = 2**20

OP_LABELS = {
    "get304": "GET 304",
    "get200": "GET 200",
    "put": "PUT (If-Match: *)",
    "create": "create (POST)",
    "trivial": "trivial GET",
}
#: Order of the operations in tables and chart.
OP_ORDER = ("create", "get304", "get200", "put")
HANDLER_LABELS = {
    "create": "create",
    "get304": "GET 304",
    "get200": "GET 200",
    "put4k": "PUT 4 KiB",
}
CRITERION_BENCHES = (
    ("create", "create"),
    ("get_304", "GET 304"),
    ("get_200", "GET 200"),
    ("put_4k", "PUT 4 KiB"),
)

#: Bytes a live session may take beyond its payload.
SESSION_OVERHEAD = 512


@dataclass
class Check:
    """One target, checked on one figure."""

    target: str
    subject: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'PASS' if self.ok else 'MISS'}  {self.target}: {self.subject}: {self.detail}"


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or reference is None or reference == 0:
        return None
    return value / reference


def _x(ratio: float | None) -> str:
    return "" if ratio is None else f"{ratio:.2f}×"


class Report:
    def __init__(
        self,
        http: dict[str, Any],
        handler: dict[str, Any] | None,
        criterion: dict[str, Any],
        clients: dict[str, Any] | None = None,
        native: dict[str, Any] | None = None,
    ) -> None:
        self.http = http
        self.native = native
        self.native_cells = _median_cells((native or {}).get("native", []))
        self.handler = handler
        self.clients = clients
        self.criterion = criterion
        self.cells: dict[tuple[str, str, int], dict[str, Any]] = {
            (cell["impl"], cell["op"], cell["concurrency"]): cell for cell in http["raw"]
        }
        self.concurrency: list[int] = http["settings"]["concurrency"]
        self.checks: list[Check] = []

    def cell(self, impl: str, op: str, concurrency: int) -> dict[str, Any] | None:
        if impl == "trivial":
            op = "trivial"
        return self.cells.get((impl, op, concurrency))

    # -- targets ----------------------------------------------------------------------------

    def check_targets(self) -> None:
        target = "memory store >= 1.0x built-in throughput, p99 no worse"
        for op in OP_ORDER:
            for c in self.concurrency:
                ours, builtin = self.cell("memory", op, c), self.cell("builtin", op, c)
                if ours is None or builtin is None:
                    continue
                ratio = ours["rps"] / builtin["rps"] if builtin["rps"] else 0.0
                p99 = ours["p99_ms"] / builtin["p99_ms"] if builtin["p99_ms"] else 0.0
                self.checks.append(
                    Check(
                        target,
                        f"{OP_LABELS[op]} c={c}",
                        ratio >= 1.0 and p99 <= 1.0 and ours["errors"] == 0,
                        f"{ratio:.2f}x req/s, p99 {ours['p99_ms']:.2f} vs "
                        f"{builtin['p99_ms']:.2f} ms ({p99:.2f}x), errors {ours['errors']}",
                    )
                )
        target = "memory store >= 0.9x the trivial ceiling"
        for c in self.concurrency:
            ours, ceiling = self.cell("memory", "get304", c), self.cell("trivial", "get304", c)
            if ours is None or ceiling is None:
                continue
            ratio = ours["rps"] / ceiling["rps"] if ceiling["rps"] else 0.0
            self.checks.append(
                Check(target, f"GET 304 c={c}", ratio >= 0.9, f"{ratio:.2f}x the trivial GET")
            )
        if self.handler is not None:
            target = "handler-only <= 0.5x Synapse's handler"
            for op, label in HANDLER_LABELS.items():
                figures = self.handler["results"].get(op)
                if figures is None:
                    continue
                ratio = figures["ours"]["ns"] / figures["synapse"]["ns"]
                self.checks.append(
                    Check(
                        target,
                        label,
                        ratio <= 0.5,
                        f"{figures['ours']['ns']:,.0f} vs {figures['synapse']['ns']:,.0f} ns "
                        f"({ratio:.2f}x)",
                    )
                )
        target = (
            "Redis store >= 0.9x memory store throughput, Synapse CPU per request <= 1.2x (c=8, 32)"
        )
        for op in OP_ORDER:
            for c in (8, 32):
                redis, memory = self.cell("redis", op, c), self.cell("memory", op, c)
                if redis is None or memory is None:
                    continue
                ratio = redis["rps"] / memory["rps"] if memory["rps"] else 0.0
                cpu = _ratio(redis.get("cpu_per_1000"), memory.get("cpu_per_1000"))
                self.checks.append(
                    Check(
                        target,
                        f"{OP_LABELS[op]} c={c}",
                        ratio >= 0.9 and cpu is not None and cpu <= 1.2,
                        f"{ratio:.2f}x req/s, {_x(cpu)} CPU per request",
                    )
                )
        self.check_native_targets()
        memory = self.http["memory"].get("memory")
        if memory is not None:
            limit = memory["sessions"] * (memory["payload"] + SESSION_OVERHEAD)
            builtin = self.http["memory"].get("builtin")
            net = ""
            if builtin is not None:
                net = (
                    f"; +{(memory['growth'] - builtin['growth']) / MIB:.1f} MiB net of the "
                    f"built-in's growth for the same creates"
                )
            self.checks.append(
                Check(
                    f"memory <= payload + {SESSION_OVERHEAD} B per live session",
                    f"{memory['sessions']:,} x {memory['payload']} B sessions",
                    memory["growth"] <= limit and memory["live"] == memory["sessions"],
                    f"+{memory['growth'] / MIB:.1f} MiB RSS for {memory['live']:,} live "
                    f"(limit +{limit / MIB:.1f} MiB){net}",
                )
            )

    def native_cell(self, impl: str, op: str, concurrency: int) -> dict[str, Any] | None:
        if impl == "ceiling":
            op = "trivial"
        return self.native_cells.get((impl, op, concurrency))

    def check_native_targets(self) -> None:
        """The standalone server against the built-in, both under oha, at c=32."""
        floors: tuple[tuple[NativeImpl, float], ...] = (
            ("standalone-memory", 20.0),
            ("standalone-redis", 10.0),
        )
        for impl, floor in floors:
            target = f"{NATIVE_LABELS[impl]} >= {floor:g}x built-in req/s, p99 no worse (c=32)"
            for op in ("get304", "put"):
                ours, builtin = self.native_cell(impl, op, 32), self.native_cell("builtin", op, 32)
                if ours is None or builtin is None:
                    continue
                ratio = ours["rps"] / builtin["rps"] if builtin["rps"] else 0.0
                p99 = ours["p99_ms"] / builtin["p99_ms"] if builtin["p99_ms"] else 0.0
                self.checks.append(
                    Check(
                        target,
                        OP_LABELS[op],
                        ratio >= floor and p99 <= 1.0 and ours["errors"] == 0,
                        f"{ours['rps']:,.0f} vs {builtin['rps']:,.0f} req/s ({ratio:.1f}x), p99 "
                        f"{ours['p99_ms']:.2f} vs {builtin['p99_ms']:.2f} ms, "
                        f"errors {ours['errors']}",
                    )
                )

    def native_table(self) -> list[str]:
        lines = [
            "| operation | conc. | implementation | req/s | × built-in | × ceiling | p50 ms "
            "| p99 ms | server CPU µs / req | oha CPU µs / req | errors |",
            "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        concurrency = (self.native or {}).get("settings", {}).get("concurrency", [])
        for op in OP_ORDER:
            for c in concurrency:
                builtin = self.native_cell("builtin", op, c) or {}
                ceiling = self.native_cell("ceiling", op, c) or {}
                for impl in NATIVE_LABELS:
                    cell = self.native_cell(impl, op, c)
                    if cell is None or (impl == "ceiling" and op != "get304"):
                        continue
                    requests = cell["requests"] or 1
                    server = cell["cpu_s"].get("server", 0.0) + cell["cpu_s"].get("redis", 0.0)
                    lines.append(
                        f"| {OP_LABELS['trivial' if impl == 'ceiling' else op]} | {c} "
                        f"| {NATIVE_LABELS[impl]} | {cell['rps']:,.0f} "
                        f"| {_x(_ratio(cell['rps'], builtin.get('rps')))} "
                        f"| {_x(_ratio(cell['rps'], ceiling.get('rps')))} "
                        f"| {cell['p50_ms']:.2f} | {cell['p99_ms']:.2f} "
                        f"| {server / requests * 1e6:.1f} "
                        f"| {cell['cpu_s'].get('loadgen', 0.0) / requests * 1e6:.1f} "
                        f"| {cell['errors']} |"
                    )
        return lines

    def native_section(self) -> list[str]:
        if self.native is None:
            return []
        native = self.native
        settings = native["settings"]
        return [
            "## The standalone server",
            "",
            f"`bench/run.py --native` ({native.get('date', '?')}, {native.get('oha', 'oha')}): "
            "the standalone server (`synapse-rendezvous-server`, release build) on the memory "
            "store and on the Redis store (its own `redis-server`, without persistence), "
            "Synapse's built-in once more, and the generator's ceiling, all driven by oha, a "
            "native load generator: the Python one above tops out at a few thousand requests "
            "a second. The ceiling is `synapse-rendezvous-server --bench-trivial`: the same "
            "tokio and hyper stack answering an empty 200 without any work, so it is the most "
            "oha can measure against a server on this machine, where oha and the server share "
            f"its {native.get('machine', {}).get('nproc', '?')} CPUs. Each cell: "
            f"{settings['warmup']:g} s warm-up, {settings['duration']:g} s measured (creates: "
            "a fixed 20 000 requests, since each leaves a session); implementations take turns "
            f"cell by cell.{_rounds_note(native.get('native', []))} Server CPU counts "
            "redis-server's too for the Redis store. Rate "
            "limits are off (one address sends everything), as in the tables above.",
            "",
            *self.native_table(),
            "",
        ]

    # -- markdown ---------------------------------------------------------------------------

    def raw_table(self) -> list[str]:
        lines = [
            "| operation | conc. | implementation | req/s | × built-in | p50 ms | p99 ms "
            "| p99 × built-in | Synapse CPU s / 1 000 req | × built-in | peak RSS MiB | errors |",
            "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for op in OP_ORDER:
            for c in self.concurrency:
                builtin = self.cell("builtin", op, c)
                impls = list(RENDEZVOUS_IMPLS) + (["trivial"] if op == "get304" else [])
                for impl in impls:
                    cell = self.cell(impl, op, c)
                    if cell is None:
                        continue
                    label = LABELS[impl]
                    if impl == "trivial":
                        label += " (fixed 200)"
                    ref = builtin or {}
                    lines.append(
                        f"| {OP_LABELS[op]} | {c} | {label} | {cell['rps']:,.0f} "
                        f"| {_x(_ratio(cell['rps'], ref.get('rps')))} "
                        f"| {cell['p50_ms']:.2f} | {cell['p99_ms']:.2f} "
                        f"| {_x(_ratio(cell['p99_ms'], ref.get('p99_ms')))} "
                        f"| {_fmt(cell.get('cpu_per_1000'), 3)} "
                        f"| {_x(_ratio(cell.get('cpu_per_1000'), ref.get('cpu_per_1000')))} "
                        f"| {cell.get('rss_peak', 0) / MIB:.0f} | {cell['errors']} |"
                    )
        return lines

    def mix_table(self) -> list[str]:
        lines = [
            "| implementation | logins completed | requests | errors | p50 ms | p50 × built-in "
            "| p99 ms | p99 × built-in | Synapse CPU s / 1 000 req | peak RSS MiB |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        builtin = self.http["mix"].get("builtin", {})
        for impl in RENDEZVOUS_IMPLS:
            mix = self.http["mix"].get(impl)
            if mix is None:
                continue
            lines.append(
                f"| {LABELS[impl]} | {mix['completed']} / {mix['logins']} | {mix['requests']:,} "
                f"| {mix['errors']} | {mix['p50_ms']:.2f} "
                f"| {_x(_ratio(mix['p50_ms'], builtin.get('p50_ms')))} | {mix['p99_ms']:.2f} "
                f"| {_x(_ratio(mix['p99_ms'], builtin.get('p99_ms')))} "
                f"| {_fmt(mix.get('cpu_per_1000'), 3)} | {mix.get('rss_peak', 0) / MIB:.0f} |"
            )
        return lines

    def memory_table(self) -> list[str]:
        lines = [
            "| implementation | created (201) | still live | RSS before MiB | RSS after MiB "
            "| growth MiB | bytes per live session | net of built-in's growth, bytes per live "
            "session | limit MiB |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        builtin = self.http["memory"].get("builtin", {})
        for impl in RENDEZVOUS_IMPLS:
            mem = self.http["memory"].get(impl)
            if mem is None:
                continue
            per = mem["growth"] / mem["live"] if mem["live"] else None
            net = None
            if impl != "builtin" and builtin and mem["live"]:
                net = (mem["growth"] - builtin["growth"]) / mem["live"]
            limit = mem["sessions"] * (mem["payload"] + SESSION_OVERHEAD) / MIB
            growth = f"{mem['growth'] / MIB:+.1f}"
            if "redis_growth" in mem:
                growth += f" (redis-server {mem['redis_growth'] / MIB:+.1f})"
            lines.append(
                f"| {LABELS[impl]} | {mem['created']:,} | {mem['live']:,} "
                f"| {mem['rss_before'] / MIB:.1f} | {mem['rss_after'] / MIB:.1f} | {growth} "
                f"| {_fmt(per, 0)} | {_fmt(net, 0)} | {limit:.1f} |"
            )
        return lines

    def handler_table(self) -> list[str]:
        if self.handler is None:
            return ["(not run)"]
        lines = [
            "| operation | ours ns | Synapse's ns | ratio | ours CPU ns | Synapse's CPU ns "
            "| ours, cheap headers ns | Synapse's, cheap headers ns |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for op, label in HANDLER_LABELS.items():
            f = self.handler["results"].get(op)
            if f is None:
                continue
            cheap = f.get("ours_cheap", {}).get("ns"), f.get("synapse_cheap", {}).get("ns")
            lines.append(
                f"| {label} | {f['ours']['ns']:,.0f} | {f['synapse']['ns']:,.0f} "
                f"| {f['ours']['ns'] / f['synapse']['ns']:.2f}× | {f['ours']['cpu_ns']:,.0f} "
                f"| {f['synapse']['cpu_ns']:,.0f} | {_fmt(cheap[0], 0)} | {_fmt(cheap[1], 0)} |"
            )
        return lines

    def breakdown(self) -> list[str]:
        """Where the time of one request goes, from the figures of this run."""
        if self.handler is None or not self.criterion:
            return ["(needs the handler and Criterion runs)"]
        lines = [
            "| operation | core alone µs | + binding glue µs | + Twisted `Headers` calls µs "
            "| = our handler µs | Synapse's handler µs | Synapse CPU per request, memory "
            "store, c=8 µs | our handler's share |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        ops = (
            ("create", "create", "create"),
            ("get304", "get304", "get_304"),
            ("get200", "get200", "get_200"),
            ("put4k", "put", "put_4k"),
        )
        for handler_op, raw_op, bench in ops:
            f = self.handler["results"].get(handler_op)
            est = self.criterion.get(bench)
            if f is None or est is None or "ours_cheap" not in f:
                continue
            core = (est.get("slope") or est["mean"])["point_estimate"] / 1000
            cheap = f["ours_cheap"]["ns"] / 1000
            ours = f["ours"]["ns"] / 1000
            theirs = f["synapse"]["ns"] / 1000
            cell = self.cell("memory", raw_op, 8)
            per_request = cell["cpu_per_1000"] * 1000 if cell and cell.get("cpu_per_1000") else None
            share = f"{ours / per_request:.0%}" if per_request else "n/a"
            lines.append(
                f"| {HANDLER_LABELS[handler_op]} | {core:.1f} | {cheap - core:+.1f} "
                f"| {ours - cheap:+.1f} | {ours:.1f} | {theirs:.1f} | {_fmt(per_request, 0)} "
                f"| {share} |"
            )
        return lines

    def redis_cost(self) -> list[str]:
        lines = [
            "| operation | conc. | Synapse CPU µs / req, memory | Synapse CPU µs / req, Redis "
            "| extra | redis-server CPU µs / req | Redis × memory req/s |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for op in OP_ORDER:
            for c in self.concurrency:
                memory, redis = self.cell("memory", op, c), self.cell("redis", op, c)
                if not memory or not redis or not memory.get("cpu_per_1000"):
                    continue
                if not redis.get("cpu_per_1000"):
                    continue
                mem_us, red_us = memory["cpu_per_1000"] * 1000, redis["cpu_per_1000"] * 1000
                server = redis.get("cpu_s", {}).get("redis")
                server_us = (
                    server / redis["requests"] * 1e6 if server and redis["requests"] else None
                )
                lines.append(
                    f"| {OP_LABELS[op]} | {c} | {mem_us:.0f} | {red_us:.0f} "
                    f"| {red_us - mem_us:+.0f} ({red_us / mem_us - 1:+.0%}) "
                    f"| {_fmt(server_us, 0)} | {_x(_ratio(redis['rps'], memory['rps']))} |"
                )
        return lines

    def clients_table(self) -> list[str]:
        if self.clients is None:
            return ["(not measured in this run)"]
        results = self.clients["results"]
        memory = results.get("memory", {}).get("cpu_us")
        rows = [
            "| variant | what it does per request | CPU µs / request | wall µs / request "
            "| CPU over the memory store µs |",
            "|---|---|---:|---:|---:|",
        ]
        what = {
            "memory": "our handler, memory store, inline",
            "pipeline": "our handler, Redis store: one script call on the reactor's pipeline "
            "(the module's design)",
            "txredisapi": "the same script call through txredisapi (hiredis), client alone: "
            "no rendezvous work",
            "thread hop": "an empty `deferToThreadPool`: the least a thread-pool design pays",
        }
        for name, label in what.items():
            figures = results.get(name)
            if figures is None:
                continue
            extra = (
                "" if memory is None or name == "memory" else f"+{figures['cpu_us'] - memory:.1f}"
            )
            rows.append(
                f"| {name} | {label} | {figures['cpu_us']:.1f} | {figures['wall_us']:.1f} "
                f"| {extra} |"
            )
        return rows

    def utilisation(self) -> str:
        """How busy the load generator and Synapse were in the busiest cells."""
        client = 0.0
        server = 0.0
        for cell in self.http["raw"]:
            client = max(client, cell["client_cpu_per_request_us"] * cell["rps"] / 1e6)
            synapse = cell.get("cpu_s", {}).get("synapse")
            if synapse is not None and cell["elapsed_s"]:
                server = max(server, synapse / cell["elapsed_s"])
        return (
            f"In the busiest cell the load generator used {client:.0%} of one CPU, while "
            f"Synapse (one Python process, bound by its GIL) used up to {server:.0%}: the "
            "generator is not the bottleneck."
        )

    def criterion_table(self) -> list[str]:
        if not self.criterion:
            return ["(not run)"]
        lines = ["| operation | time per request (95 % interval) |", "|---|---|"]
        for name, label in CRITERION_BENCHES:
            est = self.criterion.get(name)
            if est is None:
                continue
            point = est["slope"] if est.get("slope") else est["mean"]
            lo, hi = (
                point["confidence_interval"]["lower_bound"],
                point["confidence_interval"]["upper_bound"],
            )
            lines.append(
                f"| {label} | {point['point_estimate'] / 1000:.2f} µs "
                f"({lo / 1000:.2f}–{hi / 1000:.2f} µs) |"
            )
        return lines

    def markdown(self, command: str, chart: str | None) -> str:
        http = self.http
        machine = http["machine"]
        settings = http["settings"]
        others = [
            cell["other_cpu_s"] / cell["elapsed_s"]
            for cell in http["raw"]
            if "other_cpu_s" in cell and cell["elapsed_s"]
        ]
        other_mean = sum(others) / len(others) if others else 0.0
        other_max = max(others, default=0.0)
        busy = other_mean > 0.1
        passed = sum(c.ok for c in self.checks)
        out = [
            "# Performance",
            "",
            "Side-by-side benchmark of synapse-rendezvous against Synapse's built-in MSC4108",
            "implementation, on one machine, over loopback. Generated by `scripts/bench` "
            "(`bench/report.py`); do not edit by hand.",
            "",
            f"- Command: `{command}`",
            f"- Date: {http.get('date') or time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
            f"- Machine: {machine.get('nproc')} CPUs (`nproc`), {machine.get('cpu_model')}, "
            f"Linux {machine.get('kernel')}, Python {machine.get('python')}",
            f"- Synapse {machine.get('synapse', '?')}; synapse-rendezvous "
            f"{machine.get('core_version', '?')} (release build of the extension)",
            f"- Other work on the machine (all CPU time but the benchmark's own processes, "
            f"from `/proc/stat`) during the measured windows: {other_mean:.2f} CPUs on average, "
            f"{other_max:.2f} at most, of {machine.get('nproc')}"
            + (
                " — **the figures were measured under contention**: the implementations take "
                "turns cell by cell, so the ratios are still comparable, but each cell is a "
                "single 4-second sample and absolute figures are pessimistic."
                if busy
                else "."
            ),
            f"- HTTP runs took {http.get('elapsed_s', 0):.0f} s.",
            "",
            "## Method",
            "",
            "Four Synapse processes run side by side, each with its own client listener on "
            "127.0.0.1: Synapse with its built-in implementation (`msc4108_enabled`), Synapse "
            "with our module on the memory store, with our module on the Redis store (a "
            "`redis-server` started by the benchmark, without persistence), and, as the ceiling "
            "no handler inside Synapse can beat, Synapse with a module that answers a fixed 200 "
            "without doing any work (`bench/trivial_module.py`). Our module runs with rate "
            "limits off (a load generator sends everything from one address) and a capacity of "
            "200 000. Only the server under test is loaded at any time; the order of the "
            "implementations rotates from one cell to the next.",
            "",
            "The load generator (`bench/loadgen.py`) is a separate process: asyncio over raw "
            "keep-alive HTTP/1.1 connections, one request in flight per connection (against the "
            "trivial server it got 5-15 % more requests per second than one thread per "
            "connection with `http.client` at concurrency 1 and 8, the same at 32, for half "
            "the CPU per request; `bench/loadgen.py --engine threads` repeats the comparison)."
            f" Each throughput cell: {settings['warmup']:g} s warm-up, then "
            f"{settings['duration']:g} s measured; uploads carry {settings['payload']} bytes, so "
            "GET 200 answers that many. Synapse's CPU time is read from `/proc/PID/stat` at the "
            "start and end of the measured window; peak RSS is the highest `VmRSS` sampled "
            "every 100 ms during the cell. Errors are any status other than the expected one. "
            + self.utilisation(),
            "",
            "## Targets",
            "",
            f"{passed} of {len(self.checks)} checks pass.",
            "",
            "```text",
            *[c.line() for c in self.checks],
            "```",
            "",
            "## Raw throughput",
            "",
            "Ratios are to the built-in in the same run at the same operation and concurrency. "
            "The trivial ceiling answers a GET without a body, like GET 304.",
            "",
            *self.raw_table(),
            "",
        ]
        if chart:
            out += [f"![Throughput and p99 latency by concurrency]({chart})", ""]
        out += [
            *self.native_section(),
            "## Realistic mix",
            "",
            f"{settings['logins']} concurrent QR logins started within one second. Each is two "
            "clients on their own connections, polling once a second with `If-None-Match`; "
            f"they exchange {settings['messages']} messages (PUT with `If-Match` of the last "
            "ETag seen, up to 1 KiB each), then the receiver of the last message deletes the "
            "session. Any status other than 2xx or 304 is an error.",
            "",
            *self.mix_table(),
            "",
            "## Memory",
            "",
            f"RSS growth of a freshly started Synapse (after a warm-up of 300 sessions, "
            f"created and deleted) when {settings['sessions']:,} sessions of "
            f"{settings['payload']} bytes are created (16 connections), read from "
            '`/proc/PID/status` one second after the last create; "still live" counts the '
            "sessions that then answer 304 to `If-None-Match: *`. Synapse's built-in holds at "
            "most 200 sessions: beyond that it evicts the oldest, so it cannot hold 10 000 "
            "and its growth is mostly Synapse's own: what handling that many requests leaves "
            'behind in the allocator, whichever implementation answers them. The "net" '
            "column subtracts it. With the Redis store the sessions live in redis-server, not "
            "in Synapse.",
            "",
            *self.memory_table(),
            "",
            "## The handlers alone",
            "",
            "`bench/handler_only.py`: our binding's `RendezvousHandler.handle` and Synapse's "
            "`synapse.synapse_rust.rendezvous.RendezvousHandler` in one Python process, fed the "
            "same in-memory fake Twisted requests (no Synapse, no network); wall-clock ns per "
            "call (`time.perf_counter_ns`), best of "
            f"{self.handler['rounds'] if self.handler else '?'} rounds of "
            f"{self.handler['calls'] if self.handler else '?'} calls, rounds of all variants "
            'interleaved; CPU time of the best round beside it. The "cheap headers" columns '
            "feed the same handlers request and response headers whose methods are C builtins "
            "instead of Twisted's `Headers` (written in Python): the difference is what "
            "Twisted's header methods cost each handler.",
            "",
            *self.handler_table(),
            "",
            "## Where the time goes",
            "",
            "From the figures above: the core alone (Criterion), what our binding adds around "
            "it (reading the Twisted request, converting, writing the response, with cheap "
            "headers), what Twisted's `Headers` methods add, and how that compares with the "
            "CPU time Synapse spends on a whole request (HTTP parsing, resource tree, logging, "
            "metrics) in the HTTP runs.",
            "",
            *self.breakdown(),
            "",
            "With the Redis store each request also makes one Redis call: written on a "
            "connection the reactor keeps open, its reply read back on the reactor (no thread), "
            "and the request finished from there, in a later turn of the reactor than the one "
            "that read it:",
            "",
            *self.redis_cost(),
            "",
            "## What limits the targets that miss",
            "",
            "Read with the tables above; the figures named here are the ones measured when this "
            "section was written (2026-12-02) and may move between runs.",
            "",
            "- **Handler alone vs Synapse's handler (target 0.5x).** The first version of the "
            "binding cost 1.0-1.5x Synapse's handler, most of it in Twisted's `Headers` methods, "
            "written in Python and called once per response header. The binding now stores "
            "headers straight into the `Headers` dict under Twisted's own spelling of each name, "
            "leaves `Date` to Twisted, and skips what the request does not need; that brought "
            "it to 0.43-0.62x. What remains is the core itself for create and PUT (6-7 us in "
            "Criterion: SHA-256 over a 4 KiB payload, the MIME parse of Content-Type, three "
            "HTTP dates; randomness now comes from a thread-local CSPRNG instead of two "
            "`getrandom` system calls) "
            "and the Twisted request methods both handlers pay (`content.read`, "
            "`getAllRawHeaders`, `write`, `finish`).",
            "- **Memory store vs the trivial ceiling (target 0.9x).** The trivial resource sends "
            "3 headers; a rendezvous answer must send 9 (ETag, Expires, Last-Modified, "
            "Cache-Control, Pragma, two CORS headers, Content-Type, Content-Length), and Twisted "
            "writes every header line in Python. That, plus the handler, is the gap; none of "
            "those headers can go without breaking a client or a proxy.",
            "- **Redis store vs memory store (target 0.9x req/s, 1.2x CPU).** Not yet "
            "profiled: the run of 2026-12-02 18:54 UTC, after the forged-state checks in the "
            "scripts and MSC4388, gave 0.67-0.90x and up to 1.49x CPU per request at 32 (most "
            "at create, GET 200 and PUT; the run of 2026-12-03 15:28 UTC gave 0.58-0.96x and up "
            "to 1.68x), against 0.85-1.08x and at most 1.14x in the run the "
            "rest of this paragraph describes, before those changes. What follows explains "
            "that earlier run. Synapse is "
            "CPU-bound here (one core, its GIL), so throughput follows CPU per request. The "
            "Redis path adds 6-29 us of Synapse CPU (3-14 %) to requests of 180-210 us at 8 "
            "and 32 concurrent requests; it misses 0.9x only for GET 200 and PUT at 8 (0.85-0.86x "
            "in the run of 2026-12-02; GET 304 at 8 was 0.90x). Our own part is small: the "
            "pipeline costs 11-17 us per request over the memory store at 32 and 8 in flight "
            "(`bench/redis_clients.py`, below), mostly the send, receive and epoll system calls "
            "of each batch, which is why the link fills one connection before it uses the next "
            "(with calls spread evenly over 4 connections the same run gave 0.79-0.88x). The "
            "rest is Synapse's cost of finishing a request asynchronously: `SynapseRequest.finish` "
            "outside the request's own rendering switches the logging context in and out (a "
            "`getrusage` and Synapse's CPU accounting each time; 36 vs 15 us per request in "
            "`set_current_context` in py-spy, GET 304 at 8), and the extra reactor turns the "
            "reply needs. No design that keeps the reactor from waiting on Redis avoids that. "
            "Tried and dropped, no gain within the noise of this machine: sending each call at "
            "once with `socket.send` instead of Twisted's buffered write (slower: 233-242 vs "
            "217-221 us per GET 304), and switching the logging context directly from one "
            "finished request to the next.",
            "- **Memory per live session (payload + 512 B).** The store itself is within it: "
            "net of Synapse's own allocator churn (what the built-in grows by for the same "
            "creates), about 4 270 B per 4 KiB session, that is payload + about 180 B. The "
            "gross RSS figure moves by a few MiB between runs.",
            "- **Standalone server vs the built-in (20x on the memory store, 10x on Redis, at "
            "c=32).** Met in the run of 2026-12-03 15:34 UTC. The ratios follow the built-in's "
            "speed as much as the server's. On 2026-12-02 22:14 UTC, on another machine of the "
            "same kind, oha's ceiling was 99 000 req/s (52 000-58 000 on 2026-12-03), and the "
            "built-in did 2 600-3 300 req/s at c=32 (1 200-1 500 on 2026-12-03). There the "
            "same server code met the memory store's GET 304 (24.0x) but missed its PUT "
            "(18.5x) and both Redis cells (9.9x GET 304, 8.3x PUT). Three processes share the "
            "two cores: oha, the server and, for the Redis store, redis-server. Per request at "
            "c=32 on 2026-12-03 (`python -m bench.profile_native`, with the figures of "
            "2026-12-02 in brackets): on the memory store, 19-30 us of server CPU for a 4 KiB "
            "PUT [14-15] and 21-25 us for a GET 304 [10-12]; on the Redis store, 46-55 us of "
            "server CPU plus 36-41 us of redis-server's for a PUT [25-29 plus 17-21], and "
            "35-44 plus 20-25 us for a GET 304 [19-22 plus 10-12]. About half of the server's "
            "CPU is the kernel's TCP work (47 % of its samples for Redis PUTs): the read and "
            "the write every request needs and, for Redis, delivering the calls over loopback. "
            "Three changes came from profiling: the bench runs the server with one worker "
            "thread, since a second only added hand-overs between threads (0.32 against 0.04 "
            "context switches per request, and a p99 2-3x higher). Calls that arrive together "
            "now go to Redis in one write (sends per request fell from 1.0 to 0.1-0.4). The "
            "ETag no longer hashes the payload: SHA-256 over 4 KiB was 16 % of the server's "
            "CPU per PUT. On the Redis store, 17-23 % of redis-server's time per PUT goes into "
            "hashing every byte of the 4 KiB payload argument as Redis 7's Lua turns it into a "
            "string (Debian's 7.0.15: the byte loop at the top of its `perf` profile). "
            "Avoiding that means keeping the payload out of the script: its own key, written "
            "and read by plain commands in one MULTI with the script. That changes the layout "
            "the module shares, so it was not done here. Tried and dropped: mimalloc as the "
            "server's allocator (no gain within the noise), and reaching Redis over a UNIX "
            "socket instead of loopback TCP (`--unix`: -6 % to +11 % req/s in three "
            "interleaved pairs of PUT and GET 304 cells, within the noise).",
            "",
            "## Choosing the Redis store's I/O",
            "",
            "Profiled first, on the design before this one (HEAD bcd99a2, 2026-12-02: py-spy "
            "`--native` and perf, wrk at 8 connections, GET 304 and PUT 4 KiB, release build): "
            "the memory store answered GET 304 at 5 444 req/s for 180 us of Synapse CPU per "
            "request; the same memory store sent through the module's thread pool (as the Redis "
            "store was) fell to 2 637 req/s and 387 us, so the thread-pool hop alone cost about "
            "200 us and halved throughput (7 context switches per request, GIL hand-offs: 11 % "
            "of samples in `drop_gil` on the reactor, 15 % waiting in `take_gil` on the "
            "workers). The Redis store was 2 200 req/s and 479 us, with three round trips per "
            "GET (PING, rate limit, read); the same calls made blocking on the reactor without "
            "the PING gave 3 807 req/s and 223 us, so each round trip cost about 40-45 us there "
            "and the hop dominated.",
            "",
            "Options, each measured where it was tried: (a) a sans-IO core whose one call per "
            "request the reactor sends: with txredisapi the client alone costs about 40 us per "
            "call; with the core's own pipeline (Rust builds the call, Twisted moves the bytes, "
            "Rust parses the replies and answers) the whole request costs 11-17 us over the "
            "memory store. (b) Asynchronous I/O on a Rust thread would still hand every batch "
            "across threads: an empty `deferToThreadPool` costs 54 us of CPU, more than (a) in "
            "full. The module uses (a) with the core's pipeline. One process, a real reactor "
            "and redis-server, no HTTP (`bench/redis_clients.py`, 8 in flight, this run):",
            "",
            *self.clients_table(),
            "",
            "## The core alone",
            "",
            "Criterion (`rust/core/benches/core.rs`): one request through "
            "`Rendezvous::handle` on a `MemoryStore`, no Python at all. "
            "`cargo bench -p synapse-rendezvous-core --bench core -- --warm-up-time 1 "
            "--measurement-time 3`.",
            "",
            *self.criterion_table(),
            "",
        ]
        return "\n".join(out)


def chart(report: Report, path: Path) -> bool:
    """Throughput and p99 by concurrency, one panel per operation, one series per impl."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no chart", file=sys.stderr)
        return False
    fig, axes = plt.subplots(2, len(OP_ORDER), figsize=(4 * len(OP_ORDER), 7), squeeze=False)
    styles = {"builtin": "o-", "memory": "s-", "redis": "^-", "trivial": "k--"}
    for col, op in enumerate(OP_ORDER):
        for impl in IMPLS:
            if impl == "trivial" and op != "get304":
                continue
            points = [(c, report.cell(impl, op, c)) for c in report.concurrency]
            xs = [c for c, cell in points if cell is not None]
            cells = [cell for _, cell in points if cell is not None]
            if not cells:
                continue
            label = LABELS[impl]
            axes[0][col].plot(xs, [cell["rps"] for cell in cells], styles[impl], label=label)
            axes[1][col].plot(xs, [cell["p99_ms"] for cell in cells], styles[impl], label=label)
        axes[0][col].set_title(OP_LABELS[op])
        for row, ylabel in enumerate(("requests / s", "p99 latency (ms)")):
            ax = axes[row][col]
            ax.set_xscale("log", base=2)
            ax.set_xticks(report.concurrency, [str(c) for c in report.concurrency])
            ax.set_xlabel("concurrency")
            ax.set_ylim(bottom=0)
            ax.grid(True, alpha=0.3)
            if col == 0:
                ax.set_ylabel(ylabel)
    handles, labels = axes[0][1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(labels))
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def load_criterion(directory: Path | None) -> dict[str, Any]:
    estimates: dict[str, Any] = {}
    if directory is None:
        return estimates
    for name, _ in CRITERION_BENCHES:
        path = directory / name / "new" / "estimates.json"
        if path.exists():
            estimates[name] = json.loads(path.read_text(encoding="utf-8"))
    return estimates


def _median_cells(cells: Sequence[dict[str, Any]]) -> dict[tuple[str, str, int], dict[str, Any]]:
    """Each (impl, op, concurrency)'s run of median req/s, when it ran more than once."""
    runs: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for cell in cells:
        runs.setdefault((cell["impl"], cell["op"], cell["concurrency"]), []).append(cell)
    return {
        key: sorted(found, key=lambda cell: cell["rps"])[(len(found) - 1) // 2]
        for key, found in runs.items()
    }


def _rounds_note(cells: Sequence[dict[str, Any]]) -> str:
    """What the native table's text says about cells run more than once."""
    runs: dict[tuple[str, str, int], int] = {}
    for cell in cells:
        key = (cell["impl"], cell["op"], cell["concurrency"])
        runs[key] = runs.get(key, 0) + 1
    repeated = {c: n for (_, _, c), n in runs.items() if n > 1}
    if not repeated:
        return ""
    c, rounds = max(repeated.items())
    return (
        f" At {c} concurrent requests, where the targets are, every cell ran {rounds} times, "
        "in rounds, and the table shows each one's run of median req/s (with that run's own "
        "p99 and CPU)."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--http", type=Path, required=True)
    parser.add_argument("--handler", type=Path)
    parser.add_argument("--clients", type=Path, help="bench/redis_clients.py's JSON")
    parser.add_argument("--criterion", type=Path, help="Criterion's output directory")
    parser.add_argument("--native", type=Path, help="bench/run.py --native's JSON")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "performance.md")
    parser.add_argument("--chart", type=Path, default=ROOT / "docs" / "performance.png")
    parser.add_argument("--command", default="scripts/bench")
    args = parser.parse_args(argv)

    http = json.loads(args.http.read_text(encoding="utf-8"))
    if "date" not in http:
        http["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(args.http.stat().st_mtime))
    handler = None
    if args.handler is not None and args.handler.exists():
        handler = json.loads(args.handler.read_text(encoding="utf-8"))
    clients = None
    if args.clients is not None and args.clients.exists():
        clients = json.loads(args.clients.read_text(encoding="utf-8"))
    native = None
    if args.native is not None and args.native.exists():
        native = json.loads(args.native.read_text(encoding="utf-8"))
    report = Report(http, handler, load_criterion(args.criterion), clients, native)
    report.check_targets()
    drawn = chart(report, args.chart)
    relative = args.chart.name if args.chart.parent == args.doc.parent else str(args.chart)
    args.doc.write_text(
        report.markdown(args.command, relative if drawn else None), encoding="utf-8"
    )
    for check in report.checks:
        print(check.line())
    passed = sum(c.ok for c in report.checks)
    print(
        f"{passed} of {len(report.checks)} targets met; wrote {args.doc}"
        + (f" and {args.chart}" if drawn else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
