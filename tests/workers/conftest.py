"""Workers on a real PostgreSQL: the topology of deploy/ (one store, N `bcbridge worker`
processes) started here as processes, and helpers to wait for their runs."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bcbridge.store import Store
from tests.flows.conftest import CRONUS, write_project

BCBRIDGE = [sys.executable, "-m", "bcbridge"]


@dataclass
class Workers:
    """`bcbridge worker` processes of one project, started, killed and stopped by a test."""

    project: Path
    env: dict[str, str]
    log_dir: Path
    options: tuple[str, ...] = ("--stalled-after", "3")
    running: list[subprocess.Popen[bytes]] = field(default_factory=list)
    started: int = 0

    def start(self, count: int = 1) -> None:
        for _ in range(count):
            self.started += 1
            log = (self.log_dir / f"worker-{self.started}.log").open("wb")
            self.running.append(
                subprocess.Popen(
                    [*BCBRIDGE, "worker", "--config", str(self.project), *self.options],
                    env=self.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )

    def kill(self, index: int) -> None:
        process = self.running.pop(index)
        process.send_signal(signal.SIGKILL)
        process.wait()

    def stop_all(self, timeout: float = 60) -> list[int]:
        for process in self.running:
            process.send_signal(signal.SIGTERM)
        codes = [process.wait(timeout) for process in self.running]
        self.running.clear()
        return codes

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
            for path in sorted(self.log_dir.glob("worker-*.log"))
        )


@pytest.fixture
def workers_of(tmp_path: Path) -> Iterator[Any]:
    """workers_of(project, env) -> Workers; every worker still running is killed at teardown."""
    made: list[Workers] = []

    def make(project: Path, env: dict[str, str], **options: Any) -> Workers:
        folder = tmp_path / f"logs{len(made)}"
        folder.mkdir()
        workers = Workers(project, env, folder, **options)
        made.append(workers)
        return workers

    yield make
    for workers in made:
        for process in workers.running:
            process.kill()
            process.wait()


def wait_for_runs(store: Store, flows: list[str], within: float, workers: Workers) -> None:
    """Wait until the newest run of each flow ended `ok` with no task left undelivered."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if all(_finished(store, flow) for flow in flows):
            return
        time.sleep(0.5)
    state = {flow: (store.runs(flow, limit=3), store.count_tasks(flow)) for flow in flows}
    raise AssertionError(f"runs did not end ok within {within}s: {state}\n{workers.logs()}")


def _finished(store: Store, flow: str) -> bool:
    runs = store.runs(flow, limit=1)
    if not runs or runs[0]["status"] != "ok":
        return False
    return set(store.count_tasks(flow)) <= {"done"}


def items_csv(folder: Path, count: int, prefix: str) -> Path:
    path = folder / f"{prefix}items.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["number", "displayName"])
        writer.writerows([f"{prefix}{n:06d}", f"Worker item {n}"] for n in range(count))
    return path


def engine_project(
    folder: Path,
    store: str,
    flows: dict[str, Any],
    outgoing: dict[str, Any] | None = None,
    incoming: dict[str, Any] | None = None,
) -> Path:
    return write_project(
        folder / "bcbridge.yaml",
        {
            "store": store,
            "engine": "procrastinate",
            **({"incoming": incoming} if incoming else {}),
            **({"outgoing": outgoing} if outgoing else {}),
            "flows": flows,
        },
    )


UPSERT_ITEMS = {"entity": "items", "company": CRONUS, "action": "upsert", "key_field": "number"}


def worker_env(emulator_env: dict[str, str], **extra: str) -> dict[str, str]:
    return {**os.environ, **emulator_env, "BCBRIDGE_LEASE_TTL": "3", **extra}


@dataclass
class PrivatePostgres:
    """A PostgreSQL server of one test, which it may restart (the session's is shared)."""

    folder: Path
    port: int

    @property
    def pg_ctl(self) -> list[str]:
        from tests.pg_server import postgres_bin

        return [str(postgres_bin() / "pg_ctl"), "-D", str(self.folder / "data")]

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        from tests.pg_server import as_server_user

        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.folder / "server.log")
        command = as_server_user([*self.pg_ctl, "-o", options, "-l", log, "-w", "start"])
        subprocess.run(command, check=True, capture_output=True)

    def stop(self, mode: str = "fast") -> None:
        from tests.pg_server import as_server_user

        subprocess.run(as_server_user([*self.pg_ctl, "-m", mode, "stop"]), capture_output=True)


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    import shutil
    import tempfile

    from tests.pg_server import as_server_user, free_port, postgres_bin

    folder = Path(tempfile.mkdtemp(prefix="bcbridge-wk-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    initdb = [str(postgres_bin() / "initdb"), "-D", str(folder / "data"), "-U", "postgres"]
    subprocess.run(as_server_user([*initdb, "--auth=trust"]), check=True, capture_output=True)
    server = PrivatePostgres(folder, free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(folder, ignore_errors=True)
