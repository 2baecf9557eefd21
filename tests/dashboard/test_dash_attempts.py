"""The task page's attempts and request log: every attempt of a task is kept (its outcome, BC's
status, error code and message, request id) with the request-log lines of the delivery it was
part of; no secret in them, even one BC's answer quotes (the store's side:
tests/store/test_st_attempts.py)."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import orjson
import pytest

from bcbridge import _redact
from bcbridge.store import TaskStatus
from bcbridge.testing import EmulatorControl
from tests.dashboard.conftest import open_dashboard, run_now
from tests.flows.conftest import CRONUS, bc_env, emulator, write_project

IN_PROCESS = True  # the module's emulator (tests/flows/conftest.py) runs in this process
pytestmark = pytest.mark.anyio
__all__ = ["bc_env", "emulator"]  # the fixtures this module uses


def items_project(folder: Path, records: list[dict[str, object]]) -> Path:
    """Flow `items`: in.jsonl -> BC's items in CRONUS, upserted on their number."""
    (folder / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return write_project(
        folder / "bcbridge.yaml",
        {
            "store": "sqlite:///state.db",
            "outgoing": {
                "items": {
                    "entity": "items",
                    "action": "upsert",
                    "company": CRONUS,
                    "key_field": "number",
                }
            },
            "flows": {"items": {"from": "in.jsonl", "to": "items", "chunk_size": 10}},
        },
    )


async def test_each_attempt_and_its_requests_are_on_the_task_page_with_no_secret(
    tmp_path: Path, emulator: EmulatorControl, bc_env: dict[str, str]
) -> None:
    canary = "CANARY-s3cr3t-attempts-0f9e"
    _redact.register_secret(canary)  # a known secret, as a client secret or a password is
    records: list[dict[str, object]] = [
        {"number": "ATT-1", "displayName": "Good one", "unitPrice": 5},
        {"number": "ATT-2", "displayName": "Bad price", "unitPrice": canary},  # BC quotes it
    ]
    project = items_project(tmp_path, records)
    async with open_dashboard(project, client_factory=emulator.client_for) as dashboard:
        await dashboard.sign_in()
        await run_now(dashboard, "items")
        store = dashboard.store
        (good,) = [t for t in store.tasks("items") if t.record_key == "ATT-1"]
        (bad,) = [t for t in store.tasks("items") if t.record_key == "ATT-2"]
        assert bad.status == TaskStatus.FAILED

        (attempt,) = store.attempts(bad.id)
        assert (attempt.attempt, attempt.outcome, attempt.http_status) == (1, "failed", 400)
        assert attempt.error_code == "BadRequest"  # BC's code, kept
        assert attempt.error_message and "Cannot convert the literal '***'" in attempt.error_message
        assert attempt.method == "POST" and attempt.request_id  # its part of the $batch
        lines = [orjson.loads(line) for line in attempt.requests]
        sent = [(line.get("method"), line.get("status")) for line in lines]
        assert ("GET", 200) in sent and ("POST", 200) in sent  # the lookup, the $batch
        assert any(line["url"].endswith("$batch") for line in lines)
        assert all("Bearer" not in line and "eyJ" not in line for line in attempt.requests)
        (done,) = store.attempts(good.id)
        assert done.outcome == "created" and done.error_message is None
        assert done.requests == attempt.requests  # one delivery served both

        # Retry (the same payload: it fails again): a second attempt, newest first
        page = await dashboard.client.get(f"/tasks/{bad.id}")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert csrf
        await dashboard.client.post(f"/tasks/{bad.id}/retry", data={"csrf_token": csrf.group(1)})
        assert [a.attempt for a in store.attempts(bad.id)] == [2, 1]
        page = await dashboard.client.get(f"/tasks/{bad.id}")
        assert page.text.count('<tr class="attempt">') == 2
        assert "$batch" in page.text and attempt.request_id in page.text
        assert page.text.count('<tr class="request-line">') >= 4
        good_page = await dashboard.client.get(f"/tasks/{good.id}")
        assert "created" in good_page.text and "$batch" in good_page.text

        secret = emulator.info.client_secret
        for text in (page.text, good_page.text):
            assert canary not in text and secret not in text
    database = sqlite3.connect(tmp_path / "state.db")
    attempts = database.execute("SELECT * FROM task_attempts").fetchall()
    deliveries = database.execute("SELECT * FROM task_deliveries").fetchall()
    database.close()
    assert len(attempts) == 3 and len(deliveries) == 2  # the run's chunk, the retry
    dumped = repr(attempts + deliveries)
    assert canary not in dumped and "s3cr3t" not in dumped and secret not in dumped
