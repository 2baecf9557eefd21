"""A record BC refuses because of what the transformers made of it is fixed by fixing the
transformers: the task keeps the record as read, and a retry transforms it again with the flow's
transformers as they are then (the dashboard's "fix the transform, press Retry")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from bcbridge.flowconfig import load_project
from bcbridge.flows import FlowRunner
from bcbridge.store import RunStatus, TaskStatus
from bcbridge.testing import EmulatorControl
from tests.flows.conftest import BC, CRONUS, run_flow, store_of, write_project

IN_PROCESS = True

LONG = "A name far longer than the hundred characters BC keeps in an item's displayName " * 2
RECORDS = [
    {"number": "RFX-1", "name": "Short enough", "short": "Short enough"},
    {"number": "RFX-2", "name": LONG, "short": "Now short"},
]
FIRST: list[dict[str, Any]] = [
    {"rename": {"name": "displayName"}},
    {"keep": ["number", "displayName"]},
]
FIXED: list[dict[str, Any]] = [
    {"rename": {"short": "displayName"}},
    {"keep": ["number", "displayName"]},
]


@pytest.fixture(autouse=True)
def fresh_data(emulator: EmulatorControl) -> None:
    emulator.reset()


def items_project(folder: Path, transform: list[dict[str, Any]]) -> Path:
    (folder / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
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
            "flows": {"items": {"from": "in.jsonl", "transform": transform, "to": "items"}},
        },
    )


def retry_failed(project: Path, emulator: EmulatorControl) -> str:
    store = store_of(project)
    try:
        failed = store.tasks("items", TaskStatus.FAILED)
        runner = FlowRunner(load_project(project), store, client_factory=emulator.client_for)
        (result,) = anyio.run(runner.retry, failed)
        return result.status
    finally:
        store.close()


def test_a_refused_record_is_sent_again_as_the_fixed_transform_makes_it(
    tmp_path: Path, bc_env: dict[str, str], bc: BC, emulator: EmulatorControl
) -> None:
    project = items_project(tmp_path, FIRST)
    assert run_flow(project, "items", via=emulator).status == RunStatus.FAILED
    store = store_of(project)
    try:
        (refused,) = store.tasks("items", TaskStatus.FAILED)
        assert "StringExceededLength" in (refused.last_error or "")
        assert (refused.stage, refused.payload) == ("transform", RECORDS[1])  # as read

        # the same record read again by an unchanged flow is sent as transformed, not as read
        assert run_flow(project, "items", via=emulator).status == RunStatus.FAILED
        again = store.task(refused.id)
        assert again is not None and "StringExceededLength" in (again.last_error or "")
    finally:
        store.close()

    items_project(tmp_path, FIXED)  # the transform fixed, as in the dashboard's flow form
    assert retry_failed(project, emulator) == RunStatus.OK
    store = store_of(project)
    try:
        done = store.task(refused.id)
        assert done is not None and done.status == TaskStatus.DONE
        assert done.payload == {"number": "RFX-2", "displayName": "Now short"}
    finally:
        store.close()
    held = bc.all(CRONUS, "items", **{"$filter": "number eq 'RFX-2'"})
    assert [item["displayName"] for item in held] == ["Now short"]


def test_a_retry_with_the_transform_unchanged_fails_the_same_way(
    tmp_path: Path, bc_env: dict[str, str], bc: BC, emulator: EmulatorControl
) -> None:
    project = items_project(tmp_path, FIRST)
    assert run_flow(project, "items", via=emulator).status == RunStatus.FAILED
    assert retry_failed(project, emulator) == RunStatus.FAILED
    store = store_of(project)
    try:
        (refused,) = store.tasks("items", TaskStatus.FAILED)
        assert "StringExceededLength" in (refused.last_error or "")
        assert refused.attempts == 2 and refused.payload == RECORDS[1]
    finally:
        store.close()
    assert not bc.all(CRONUS, "items", **{"$filter": "number eq 'RFX-2'"})
