"""Run now on a flow that reads Business Central (the in-process emulator): the records land,
the tasks show in the dashboard, and no client secret is in any page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bcbridge.store import RunStatus, TaskStatus
from bcbridge.testing import EmulatorControl
from tests.dashboard.conftest import open_dashboard, run_now
from tests.flows.conftest import CRONUS, bc_env, emulator, write_project

IN_PROCESS = True  # the module's emulator (tests/flows/conftest.py) runs in this process
pytestmark = pytest.mark.anyio
__all__ = ["bc_env", "emulator"]  # the fixtures this module uses


async def test_run_now_reads_business_central_into_a_file(
    tmp_path: Path, emulator: EmulatorControl, bc_env: dict[str, str]
) -> None:
    project = write_project(
        tmp_path / "bcbridge.yaml",
        {
            "store": "sqlite:///state.db",
            "incoming": {
                "customers": {
                    "entity": "customers",
                    "company": CRONUS,
                    "params": {"$select": "id,number,displayName"},
                }
            },
            "flows": {"bc_customers": {"from": "customers", "to": "out/customers.jsonl"}},
        },
    )
    async with open_dashboard(project, client_factory=emulator.client_for) as dashboard:
        await dashboard.sign_in()
        fragment = await run_now(dashboard, "bc_customers")
        assert "ok:" in fragment, fragment
        (run,) = dashboard.store.runs("bc_customers")
        assert run["status"] == RunStatus.OK and run["counts"]["read"] > 0
        written = (tmp_path / "out" / "customers.jsonl").read_text().splitlines()
        assert len(written) == run["counts"]["read"]
        tasks = await dashboard.client.get(f"/tasks?flow=bc_customers&status={TaskStatus.DONE}")
        assert f"{run['counts']['read']:,} in all" in tasks.text
        first = re.search(r'<a href="(/tasks/\d+)">', tasks.text)
        assert first
        task = await dashboard.client.get(first.group(1))
        assert "displayName" in task.text
        secret = bc_env["BC_CLIENT_SECRET"]
        for page in ("/flows", "/runs", "/tasks", first.group(1), "/flows/bc_customers/progress"):
            assert secret not in (await dashboard.client.get(page)).text
