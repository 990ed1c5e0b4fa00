"""One standalone-server cell under oha, with the CPU each process spends per request and,
optionally, ``perf`` attached to the server or to redis-server: how the figures in
docs/performance.md's "What limits the targets that miss" were found.

    .venv/bin/python -m bench.profile_native redis put                  # CPU per request
    .venv/bin/python -m bench.profile_native redis put --unix           # Redis over a UNIX socket
    .venv/bin/python -m bench.profile_native redis put --perf server    # perf record -g
    .venv/bin/python -m bench.profile_native redis put --perf redis \\
        --events raw_syscalls:sys_enter,context-switches                # perf stat

The server is the release build (``$SYNAPSE_RENDEZVOUS_SERVER`` or ``target/release``) with
the bench's configuration (`bench.servers.STANDALONE_CONFIG`); everything it starts is
stopped on the way out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bench.run import _create, find_oha
from bench.servers import cpu_seconds, make_standalone
from devtools.redis import RedisServer
from devtools.synapse import CREATE_PATH

if TYPE_CHECKING:
    from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("store", choices=("memory", "redis"))
    parser.add_argument("op", choices=("get304", "put"))
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--payload", type=int, default=4096)
    parser.add_argument(
        "--unix", action="store_true", help="the server reaches Redis over a UNIX socket"
    )
    parser.add_argument("--perf", choices=("server", "redis"), help="attach perf to it")
    parser.add_argument("--events", help="perf stat these events instead of perf record")
    parser.add_argument("--out", type=Path, default=Path("perf.data"), help="perf's output")
    args = parser.parse_args(argv)
    oha = find_oha(None)
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as workdir:
        redis = stack.enter_context(RedisServer(unix_socket=args.unix))
        redis_url = redis.unix_url if args.unix else redis.url
        server = stack.enter_context(make_standalone(args.store, redis_url))
        body = Path(workdir) / "payload"
        body.write_bytes(b"x" * args.payload)
        url, etag = _create(server.base_url + CREATE_PATH, body.read_bytes())
        if args.op == "get304":
            target = ["-H", f"If-None-Match: {etag}", url]
        else:
            target = ["-m", "PUT", "-H", "If-Match: *", "-T", "text/plain", "-D", str(body), url]
        common = [oha, "--no-tui", "--output-format", "json", "-c", str(args.concurrency)]
        subprocess.run([*common, "-z", "2s", *target], capture_output=True, timeout=60, check=True)
        pids = {"server": server.pid, "redis": redis.pid}
        before = {name: cpu_seconds(pid) for name, pid in pids.items() if pid is not None}
        perf = None
        if args.perf is not None:
            pid = str(pids[args.perf])
            window = ["--", "sleep", f"{args.seconds:g}"]
            if args.events:
                record = ["perf", "stat", "-e", args.events, "-p", pid, "-o", str(args.out)]
            else:
                record = ["perf", "record", "-g", "-F", "999", "-p", pid, "-o", str(args.out)]
            perf = subprocess.Popen([*record, *window], stderr=subprocess.DEVNULL)
        started = time.monotonic()
        done = subprocess.run(
            [*common, "-z", f"{args.seconds:g}s", *target],
            capture_output=True,
            text=True,
            timeout=args.seconds + 60,
            check=True,
        )
        elapsed = time.monotonic() - started
        if perf is not None:
            perf.wait(timeout=args.seconds + 30)
        result = json.loads(done.stdout)
        requests = sum(result.get("statusCodeDistribution", {}).values()) or 1
        cpu = {name: cpu_seconds(pids[name]) - spent for name, spent in before.items()}
        print(
            f"{args.store} {args.op} c={args.concurrency}: {requests / elapsed:,.0f} req/s, "
            f"p99 {result['latencyPercentiles']['p99'] * 1000:.2f} ms, statuses "
            f"{result.get('statusCodeDistribution')}; CPU per request: "
            + ", ".join(f"{name} {spent / requests * 1e6:.1f} µs" for name, spent in cpu.items())
        )
        if perf is not None:
            print(f"perf wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
