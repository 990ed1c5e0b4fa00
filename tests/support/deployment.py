"""A Synapse worker deployment for the tests: a main process and N generic workers.

`Deployment` runs a main process (`MainProcess`, a `SynapseServer` with Synapse's ``redis:``
replication, an ``instance_map`` and a replication listener) and ``workers`` processes of
``synapse.app.generic_worker`` (`WorkerProcess`), each with a client listener of its own, all
on 127.0.0.1 and all loading our module with the same config. They share one Redis (a
`RedisServer` the caller owns) for Synapse's replication, and one SQLite database, which is
enough for what the rendezvous tests need (Synapse's docs want PostgreSQL for real workers).

Every process writes its log to its own file (the workers' work directories are below the
main process's). Workers start once the main process answers, in parallel, and are ready
when their own ``/_matrix/client/versions`` answers 200. `stop` sends SIGTERM to every process
(SIGKILL after a timeout) and is idempotent; use the deployment as a context manager.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import yaml

from devtools.synapse import Mode, SynapseServer, SynapseStartError, free_port

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path
    from types import TracebackType

__all__ = ["Deployment", "MainProcess", "WorkerProcess"]

#: Start timeout of each process: generous, the test machine has two busy cores.
START_TIMEOUT = 90.0
STOP_TIMEOUT = 15.0


class MainProcess(SynapseServer):
    """The main Synapse process of a worker deployment.

    On top of a plain `SynapseServer`: ``redis:`` pointing at ``redis_port`` (replication), an
    ``instance_map`` naming its replication listener, and that listener.
    """

    def __init__(
        self,
        *,
        mode: Mode,
        module_config: Mapping[str, object],
        redis_port: int,
        extra_config: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(mode=mode, module_config=module_config, extra_config=extra_config)
        self.redis_port = redis_port
        self.replication_port = free_port()

    def __repr__(self) -> str:
        return f"<MainProcess mode={self.mode} {self.base_url} workdir={self.workdir}>"

    def listeners(self) -> list[dict[str, object]]:
        return [
            *super().listeners(),
            {
                "port": self.replication_port,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "resources": [{"names": ["replication"]}],
            },
        ]

    def build_overlay(self) -> dict[str, object]:
        overlay = super().build_overlay()
        overlay["redis"] = {"enabled": True, "host": "127.0.0.1", "port": self.redis_port}
        overlay["instance_map"] = {
            "main": {"host": "127.0.0.1", "port": self.replication_port},
        }
        return overlay


class WorkerProcess(SynapseServer):
    """A ``synapse.app.generic_worker`` of ``main``, with a client listener on its own port.

    It reads the main process's ``homeserver.yaml`` and ``overlay.yaml`` (so the same module
    config and ``public_baseurl``: session URLs it hands out point at the main process) plus
    a worker file of its own. ``base_url`` is the worker's own listener.
    """

    def __init__(self, main: MainProcess, name: str, wrapper: Sequence[str] = ()) -> None:
        super().__init__(
            mode=main.mode,
            module_config=main.module_config,
            workdir=main.workdir / name,
            python=main.python,
        )
        self.main = main
        self.name = name
        self.wrapper = list(wrapper)

    def __repr__(self) -> str:
        return f"<WorkerProcess {self.name} {self.base_url}>"

    @property
    def worker_config_path(self) -> Path:
        return self.workdir / "worker.yaml"

    @property
    def config_paths(self) -> list[Path]:
        return [*self.main.config_paths, self.worker_config_path]

    def build_worker_config(self) -> dict[str, object]:
        return {
            "worker_app": "synapse.app.generic_worker",
            "worker_name": self.name,
            "worker_listeners": [
                {
                    "type": "http",
                    "port": self.port,
                    "bind_addresses": ["127.0.0.1"],
                    "resources": [{"names": ["client"]}],
                }
            ],
            "worker_log_config": str(self.workdir / "log.config.yaml"),
        }

    def write_config(self) -> None:
        # The main process has written the shared files; only the worker's own are written.
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.worker_config_path.write_text(
            yaml.safe_dump(self.build_worker_config(), sort_keys=False), encoding="utf-8"
        )
        (self.workdir / "log.config.yaml").write_text(
            yaml.safe_dump(self.build_log_config(), sort_keys=False), encoding="utf-8"
        )

    def command(self) -> list[str]:
        cmd = [*self.wrapper, self.python, "-m", "synapse.app.generic_worker"]
        for path in self.config_paths:
            cmd += ["-c", str(path)]
        return cmd


class Deployment:
    """A main process and ``workers`` generic workers sharing the Redis on ``redis_port``."""

    def __init__(
        self,
        *,
        mode: Mode,
        module_config: Mapping[str, object],
        redis_port: int,
        workers: int = 2,
        extra_config: Mapping[str, object] | None = None,
        worker_wrapper: Sequence[str] = (),
    ) -> None:
        """``worker_wrapper`` is a command the workers run under (for example ``faketime``)."""
        self.main = MainProcess(
            mode=mode,
            module_config=module_config,
            redis_port=redis_port,
            extra_config=extra_config,
        )
        self.workers = [
            WorkerProcess(self.main, f"worker{i + 1}", worker_wrapper) for i in range(workers)
        ]

    def __repr__(self) -> str:
        return f"<Deployment main={self.main.base_url} workers={len(self.workers)}>"

    @property
    def processes(self) -> list[SynapseServer]:
        """The main process first, then the workers."""
        return [self.main, *self.workers]

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the main process, then every worker in parallel; each must be ready within
        ``timeout`` seconds. On failure everything is stopped and `SynapseStartError` raised
        (with the tail of the failing process's log)."""
        try:
            self.main.start(timeout)
            errors: list[str] = []
            threads = [
                threading.Thread(
                    target=_start_into, args=(worker, timeout, errors), name=worker.name
                )
                for worker in self.workers
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout + STOP_TIMEOUT + 15)
            if any(thread.is_alive() for thread in threads):
                errors.append("a worker start did not return in time")
            if errors:
                raise SynapseStartError("\n\n".join(errors))
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = STOP_TIMEOUT) -> dict[str, int | None]:
        """SIGTERM every process (workers first; SIGKILL after ``timeout``); their exit codes.

        Idempotent. Removes the work directories.
        """
        codes: dict[str, int | None] = {}
        try:
            for worker in self.workers:
                codes[worker.name] = worker.stop(timeout)
        finally:
            codes["main"] = self.main.stop(timeout)
        return codes

    def log_text(self) -> str:
        """Every process's log, main first, for assertion messages."""
        return "\n".join(
            f"===== {process!r} =====\n{process.log_text()}" for process in self.processes
        )

    def __enter__(self) -> Deployment:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _start_into(worker: WorkerProcess, timeout: float, errors: list[str]) -> None:
    try:
        worker.start(timeout)
    except SynapseStartError as exc:
        errors.append(f"{worker.name} failed to start: {exc}")
    except Exception as exc:  # reported by the caller, which stops everything
        errors.append(f"{worker.name} failed to start: {exc!r}")
