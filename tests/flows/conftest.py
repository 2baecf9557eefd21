"""Flows against a private emulator: projects are written to tmp_path, state in a SQLite store."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

from bcbridge.cli.demo import examples_dir
from bcbridge.client import BusinessCentralClient
from bcbridge.config import ClientSettings
from bcbridge.flowconfig import load_project
from bcbridge.flows import FlowRunner, RunResult
from bcbridge.store import Store
from bcbridge.testing import EmulatorControl, start_emulator, start_inprocess_emulator

# the random kill points of crash tests; BCBRIDGE_CRASH_SEED replays a run
SEED = int(os.environ.get("BCBRIDGE_CRASH_SEED", time.time_ns() % 1_000_000))
CRONUS = "CRONUS USA, Inc."
FABRIKAM = "Fabrikam & O'Brien, Ltd."


@pytest.fixture(scope="module")
def emulator(request: pytest.FixtureRequest) -> Iterator[EmulatorControl]:
    """The module's private emulator: a process, which `bcbridge` processes reach by URL; or,
    where the module sets `IN_PROCESS = True` (it runs flows only through `run_flow(...,
    via=emulator)`), one in this process, which starts and answers without sockets."""
    start = start_inprocess_emulator if getattr(request.module, "IN_PROCESS", False) else None
    with (start or start_emulator)() as running:
        yield running


@pytest.fixture
def bc_env(emulator: EmulatorControl, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The BC_* variables of the emulator, set for in-process runs and returned for subprocesses."""
    for name, value in emulator.info.env().items():
        monkeypatch.setenv(name, value)
    return {**os.environ, **emulator.info.env()}


@pytest.fixture
def examples(tmp_path: Path, bc_env: dict[str, str]) -> Path:
    """A copy of examples/ in tmp_path; returns its project file."""
    shutil.copytree(
        examples_dir(), tmp_path, dirs_exist_ok=True, ignore=shutil.ignore_patterns("out", ".*")
    )
    return tmp_path / "bcbridge.yaml"


def write_project(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# The client's retry policy with short waits: fault storms cost milliseconds, not seconds;
# what is retried and how often stays as configured.
QUICK_RETRIES = {"backoff_base": 0.01, "backoff_max": 0.05}


def run_flow(project: Path, name: str, via: EmulatorControl | None = None) -> RunResult:
    """Run one flow in this process; its clients reach `via` (the settings' URLs by default)
    with `QUICK_RETRIES`."""
    config = load_project(project)
    store = Store(config.store)

    def quick(settings: ClientSettings) -> BusinessCentralClient:
        retry = settings.retry.model_copy(update=QUICK_RETRIES)
        settings = settings.model_copy(update={"retry": retry})
        return via.client_for(settings) if via else BusinessCentralClient(settings)

    try:
        return anyio.run(FlowRunner(config, store, client_factory=quick).run, name)
    finally:
        store.close()


def store_of(project: Path) -> Store:
    return Store(load_project(project).store)


BCBRIDGE = [sys.executable, "-m", "bcbridge"]


def cli(
    env: dict[str, str], *args: str, timeout: float = 120, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BCBRIDGE, *args],
        env={**env, "COLUMNS": "250"},  # rich wraps tables at the terminal width
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


def start_run(
    env: dict[str, str], project: Path, flow: str, *options: str
) -> subprocess.Popen[str]:
    """`bcbridge run FLOW` in the background, for tests that kill or interrupt it."""
    return subprocess.Popen(
        [*BCBRIDGE, "run", flow, *options, "--config", str(project)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def ctrl_c_when(process: subprocess.Popen[str], ready: Callable[[], bool], within: float) -> str:
    """Wait (up to `within` seconds, while the run lives) until `ready()`, press Ctrl-C; return
    the run's stderr once it has stopped."""
    deadline = time.monotonic() + within
    while not ready():
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    return process.communicate(timeout=60)[1]


class BC:
    """A small synchronous view of the emulator's data, for checking what flows did."""

    def __init__(self, emulator: EmulatorControl):
        self.client = emulator.sync_client()

    def close(self) -> None:
        self.client.close()

    def path(self, company: str, entity: str) -> str:
        return f"companies({self.client.resolve_company(company).id})/{entity}"

    def all(self, company: str, entity: str, **params: Any) -> list[dict[str, Any]]:
        return list(self.client.iter_records(self.path(company, entity), params=params))

    def create(self, company: str, entity: str, record: dict[str, Any]) -> dict[str, Any]:
        response = self.client.request("POST", self.path(company, entity), json=record)
        created: dict[str, Any] = response.json()
        return created

    def patch(self, company: str, entity: str, record: dict[str, Any], **changes: Any) -> None:
        self.client.request(
            "PATCH",
            f"{self.path(company, entity)}({record['id']})",
            json=changes,
            headers={"If-Match": record["@odata.etag"]},
        )


@pytest.fixture
def bc(emulator: EmulatorControl) -> Iterator[BC]:
    view = BC(emulator)
    yield view
    view.close()


def kill_runs_at_random(
    env: dict[str, str],
    project: Path,
    flow: str,
    rng: random.Random,
    total: int,
    kills: int = 5,
) -> int:
    """Start the flow and SIGKILL it at a random point, `kills` times; how many were killed.

    A point is "after `target` records are done, plus a random pause": the pause lands the kill
    anywhere in the next chunk (key lookup, send, settle, cursor commit), and a target of 0 kills
    the run while it starts. Aiming by progress, not by wall time, keeps this independent of how
    fast the machine is."""
    killed = 0
    store = store_of(project)
    try:
        for _ in range(kills):
            done = store.count_tasks(flow).get("done", 0)
            if total - done < 2:
                break
            target = done + rng.randint(0, (total - done) // 3)
            process = start_run(env, project, flow)
            while process.poll() is None and store.count_tasks(flow).get("done", 0) < target:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.3))
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait()
                killed += 1
    finally:
        store.close()
    print(f"{flow}: killed {killed} times")
    return killed
