"""Answers lost on the way back from BC: a bound action (or any write that cannot be matched) is
never sent twice by bcbridge itself. Where BC's state tells what happened, the runner reads it
and settles the task; otherwise the task waits, `unknown`, for `tasks retry` or `tasks skip`."""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bcbridge.testing import RunningEmulator
from tests.flows.conftest import (
    BC,
    CRONUS,
    cli,
    run_flow,
    start_run,
    store_of,
    write_project,
)

LOST_BATCH: dict[str, Any] = {"kind": "drop", "after": True, "path_contains": "$batch", "count": 1}
TRIPWIRE: dict[str, Any] = {"kind": "status", "status": 500, "path_contains": "$batch", "count": 1}


@pytest.fixture(autouse=True)
def fresh_data(emulator: RunningEmulator, bc_env: dict[str, str]) -> Iterator[None]:
    emulator.reset()
    yield
    emulator.clear_faults()


def action_project(
    folder: Path, entity: str, action: str, *, params: dict[str, str] | None = None, chunk: int = 50
) -> Path:
    """A flow that runs `action` on every record of `entity` it reads (found by its id)."""
    return write_project(
        folder / "bcbridge.yaml",
        {
            "incoming": {
                "documents": {"entity": entity, "company": CRONUS, "params": params or {}}
            },
            "outgoing": {
                "act": {"entity": entity, "company": CRONUS, "action": action, "key": "{id}"}
            },
            "flows": {
                "act": {
                    "from": "documents",
                    "transform": [{"keep": ["id", "number"]}],
                    "to": "act",
                    "chunk_size": chunk,
                }
            },
        },
    )


def run_cli(env: dict[str, str], project: Path, *args: str) -> tuple[int, str]:
    done = cli(env, *args, "--config", str(project))
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stderr + done.stdout


def statuses(project: Path) -> Counter[str]:
    store = store_of(project)
    try:
        return Counter(task.status for task in store.tasks("act", limit=None))
    finally:
        store.close()


def draft_invoices(bc: BC, count: int) -> list[dict[str, Any]]:
    return [
        bc.create(
            CRONUS,
            "salesInvoices",
            {
                "customerNumber": "C00010",
                "externalDocumentNumber": "ONCE",
                "salesInvoiceLines": [{"lineObjectNumber": "I00010", "quantity": n + 1}],
            },
        )
        for n in range(count)
    ]


def run_three_times(env: dict[str, str], project: Path, emulator: RunningEmulator) -> None:
    """The first run loses the answer of its $batch; the next two must send nothing at all."""
    emulator.fault(**LOST_BATCH)
    code, output = run_cli(env, project, "run", "act")
    assert code == 0, output
    assert emulator.stats()["by_status"].get("dropped") == 1
    emulator.fault(**TRIPWIRE)  # any $batch from here on would meet it
    for _ in range(2):
        code, output = run_cli(env, project, "run", "act")
        assert code == 0, output
    assert "500" not in emulator.stats()["by_status"]
    emulator.clear_faults()


def test_make_invoice_whose_answer_was_lost_converts_each_quote_once(
    tmp_path: Path, bc: BC, bc_env: dict[str, str], emulator: RunningEmulator
) -> None:
    quotes = bc.all(CRONUS, "salesQuotes")
    invoices = len(bc.all(CRONUS, "salesInvoices"))
    project = action_project(tmp_path, "salesQuotes", "makeInvoice")
    run_three_times(bc_env, project, emulator)
    assert len(bc.all(CRONUS, "salesInvoices")) == invoices + len(quotes)
    assert bc.all(CRONUS, "salesQuotes") == []  # BC deletes a quote it converts
    assert statuses(project) == {"done": len(quotes)}


def test_post_whose_answer_was_lost_posts_each_invoice_once(
    tmp_path: Path, bc: BC, bc_env: dict[str, str], emulator: RunningEmulator
) -> None:
    drafts = draft_invoices(bc, 5)
    project = action_project(
        tmp_path, "salesInvoices", "post", params={"$filter": "externalDocumentNumber eq 'ONCE'"}
    )
    run_three_times(bc_env, project, emulator)
    posted = bc.all(CRONUS, "salesInvoices", **{"$filter": "externalDocumentNumber eq 'ONCE'"})
    assert sorted(i["id"] for i in posted) == sorted(d["id"] for d in drafts)
    assert {i["status"] for i in posted} == {"Open"}
    assert statuses(project) == {"done": 5}  # a second post would have failed: BC refuses it


def test_an_action_without_a_probe_waits_unknown_until_retried_or_skipped(
    tmp_path: Path, bc: BC, bc_env: dict[str, str], emulator: RunningEmulator
) -> None:
    """`send` on quotes leaves nothing that tells whether it ran: the tasks of the chunk whose
    answer was lost stay unknown, the next chunk is sent, and no later run sends them again."""
    quotes = bc.all(CRONUS, "salesQuotes")
    project = action_project(tmp_path, "salesQuotes", "send", chunk=2)
    emulator.fault(**LOST_BATCH)
    code, output = run_cli(bc_env, project, "run", "act")
    assert code == 1 and "failed" in output
    assert "answer was lost" in output and "tasks list --status unknown --flow act" in output
    assert statuses(project) == {"unknown": 2, "done": len(quotes) - 2}
    store = store_of(project)
    lost = sorted(store.tasks("act", "unknown"), key=lambda task: task.id)
    store.close()
    assert "answer was lost" in str(lost[0].last_error)
    assert f"tasks retry {lost[0].id}" in str(lost[0].last_error)

    emulator.fault(**TRIPWIRE)
    again = run_flow(project, "act")
    assert (again.status, again.counts["unknown"]) == ("failed", 2)
    assert "500" not in emulator.stats()["by_status"]  # nothing was sent again
    assert statuses(project) == {"unknown": 2, "done": len(quotes) - 2}
    emulator.clear_faults()

    code, output = run_cli(bc_env, project, "tasks", "retry", str(lost[0].id))
    assert code == 0, output
    code, output = run_cli(bc_env, project, "tasks", "skip", str(lost[1].id))
    assert code == 0, output
    assert statuses(project) == {"done": len(quotes) - 1, "skipped": 1}
    code, output = run_cli(bc_env, project, "tasks", "skip", str(lost[0].id))
    assert code != 0 and "done already" in output

    emulator.fault(**TRIPWIRE)
    last = run_flow(project, "act")
    assert (last.status, last.counts["skipped"]) == ("ok", len(quotes))
    assert "500" not in emulator.stats()["by_status"]


def test_a_killed_run_leaves_sending_actions_that_the_next_run_settles_from_bc(
    tmp_path: Path, bc: BC, bc_env: dict[str, str], emulator: RunningEmulator
) -> None:
    """The run is killed while its $batch is held up in BC; whether BC acted on it nobody knows.
    Here BC did for two quotes (converted by hand after the kill, as BC would have done): the
    next run reads that and settles them; the two BC shows untouched are sent."""
    quotes = bc.all(CRONUS, "salesQuotes")
    invoices = len(bc.all(CRONUS, "salesInvoices"))
    project = action_project(tmp_path, "salesQuotes", "makeInvoice")
    emulator.fault(kind="stall", seconds=3, path_contains="$batch")
    process = start_run(bc_env, project, "act")
    while statuses(project).get("sending", 0) < len(quotes):
        assert process.poll() is None, process.communicate()[1]
        time.sleep(0.05)
    time.sleep(1)  # the key lookup is done and the $batch is held up in BC
    process.send_signal(signal.SIGKILL)
    process.wait()
    time.sleep(2.5)  # past the stall
    for quote in quotes[:2]:
        url = f"{bc.path(CRONUS, 'salesQuotes')}({quote['id']})/Microsoft.NAV.makeInvoice"
        bc.client.request("POST", url)
    assert statuses(project) == {"sending": len(quotes)}

    code, output = run_cli(bc_env, project, "run", "act")
    assert code == 0, output
    assert statuses(project) == {"done": len(quotes)}
    store = store_of(project)
    notes = Counter(task.last_error for task in store.tasks("act", limit=None))
    store.close()
    gone = "read in BC: the quote is gone: BC deletes a quote when it converts it"
    assert notes == {gone: 2, None: 2}, notes
    assert len(bc.all(CRONUS, "salesInvoices")) == invoices + len(quotes)
    assert bc.all(CRONUS, "salesQuotes") == []


pytestmark = pytest.mark.slow  # subprocesses/emulator-heavy: left out of `make test-fast`
