"""deploy/local_topology.py: PostgreSQL, one serve and N workers as processes on this machine,
the topology of deploy/compose.yaml. A run deferred to it ends ok; SIGTERM stops it all, exit 0."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from bcbridge.engine import EngineClient, list_workers
from bcbridge.store import Store
from tests.flows.conftest import write_project

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).parents[2] / "deploy" / "local_topology.py"


def test_the_local_topology_runs_a_flow_and_stops_cleanly(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text("".join(f'{{"id": "{n}"}}\n' for n in range(20)))
    project = write_project(
        tmp_path / "bcbridge.yaml",
        {
            "store": "${BCBRIDGE_STORE}",
            "engine": "procrastinate",
            "flows": {"copy": {"from": "in.jsonl", "to": "out.jsonl"}},
        },
    )
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--config", str(project), "--workers", "2"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "BCBRIDGE_LEASE_TTL": "3"},
    )
    try:
        assert process.stdout is not None
        up = json.loads(process.stdout.readline())
        assert len(up["workers"]) == 2 and up["url"].startswith("http://127.0.0.1:")
        store = Store(up["store"])
        engine = EngineClient(store)
        try:
            assert engine.defer_run("copy")
            deadline = time.monotonic() + 60
            while not (store.runs("copy") and store.runs("copy")[0]["status"] == "ok"):
                assert time.monotonic() < deadline, store.runs("copy")
                time.sleep(0.2)
            while len(list_workers(store)) < 2:  # the second one may still be starting
                assert time.monotonic() < deadline, list_workers(store)
                time.sleep(0.2)
        finally:
            engine.close()
            store.close()
        with httpx.Client() as client:
            page = client.get(up["login_url"], follow_redirects=True)
            assert page.status_code == 200
            assert "Last heartbeat" in client.get(up["url"] + "/workers").text
        assert (tmp_path / "out.jsonl").read_text().count('"id"') == 20
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(120)
    assert code == 0
