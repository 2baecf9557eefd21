"""The adversarial matrix: every action x every fault, and BC -> file/SQL targets under faults.

Each case runs the flow under the fault, then twice more without it (what a user or a scheduler
does after a failed run), and checks BC's state and the target: every record's effect happened
exactly once, nothing was lost, and every task ended `done` (an unclear bound action is settled
by reading BC, never by sending it again)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from bcbridge.testing import EmulatorControl
from tests.flows.conftest import BC, CRONUS, run_flow, store_of, write_project

pytestmark = pytest.mark.slow  # emulator-heavy: left out of `make test-fast`
IN_PROCESS = True  # flows run in this process only: the emulator need not be a process

RECORDS = 12
CHUNK = 4  # three chunks: a fault lands in the middle of a run, not only at its start

FAULTS: dict[str, dict[str, Any]] = {
    "batch dropped": {"kind": "drop", "path_contains": "$batch", "count": 1},
    "batch answer lost": {"kind": "drop", "after": True, "path_contains": "$batch", "count": 1},
    "503 storm": {"kind": "status", "status": 503, "count": 8},
    "429 storm": {"kind": "status", "status": 429, "retry_after": 0, "count": 8},
}


@pytest.fixture(autouse=True)
def fresh_data(emulator: EmulatorControl, bc_env: dict[str, str]) -> Iterator[None]:
    emulator.reset()
    yield
    emulator.clear_faults()


@dataclass
class Case:
    """What a flow does to BC: its outgoing, the records it reads, and how to check BC after."""

    outgoing: dict[str, Any]
    records: list[dict[str, Any]]
    check: Callable[[], None]


def numbered(bc: BC, prefix: str) -> Counter[str]:
    return Counter(i["number"] for i in bc.all(CRONUS, "items") if i["number"].startswith(prefix))


def existing_items(bc: BC, prefix: str, name: str = "old") -> None:
    for n in range(RECORDS):
        bc.create(CRONUS, "items", {"number": f"{prefix}{n:03d}", "displayName": name})


def case_create(bc: BC) -> Case:
    def check() -> None:
        assert numbered(bc, "MC") == Counter({f"MC{n:03d}": 1 for n in range(RECORDS)})

    return Case(
        {"entity": "items", "action": "create", "key_field": "number"},
        [{"number": f"MC{n:03d}", "displayName": "new"} for n in range(RECORDS)],
        check,
    )


def case_upsert(bc: BC) -> Case:
    for n in range(0, RECORDS, 2):  # half exist, half are new
        bc.create(CRONUS, "items", {"number": f"MU{n:03d}", "displayName": "old"})

    def check() -> None:
        items = [i for i in bc.all(CRONUS, "items") if i["number"].startswith("MU")]
        assert Counter(i["number"] for i in items) == Counter(
            {f"MU{n:03d}": 1 for n in range(RECORDS)}
        )
        assert {i["displayName"] for i in items} == {"new"}

    return Case(
        {"entity": "items", "action": "upsert", "key_field": "number"},
        [{"number": f"MU{n:03d}", "displayName": "new"} for n in range(RECORDS)],
        check,
    )


def case_update(bc: BC) -> Case:
    existing_items(bc, "MP")

    def check() -> None:
        items = [i for i in bc.all(CRONUS, "items") if i["number"].startswith("MP")]
        assert len(items) == RECORDS and {i["displayName"] for i in items} == {"changed"}

    return Case(
        {"entity": "items", "action": "update", "key_field": "number"},
        [{"number": f"MP{n:03d}", "displayName": "changed"} for n in range(RECORDS)],
        check,
    )


def case_delete(bc: BC) -> Case:
    existing_items(bc, "MD")

    def check() -> None:
        assert numbered(bc, "MD") == Counter()

    return Case(
        {"entity": "items", "action": "delete", "key_field": "number"},
        [{"number": f"MD{n:03d}"} for n in range(RECORDS)],
        check,
    )


def case_post(bc: BC) -> Case:
    drafts = [
        bc.create(
            CRONUS,
            "salesInvoices",
            {
                "customerNumber": "C00010",
                "salesInvoiceLines": [{"lineObjectNumber": "I00010", "quantity": n + 1}],
            },
        )
        for n in range(RECORDS)
    ]
    before = len(bc.all(CRONUS, "salesInvoices"))

    def check() -> None:
        invoices = {i["id"]: i for i in bc.all(CRONUS, "salesInvoices")}
        assert len(invoices) == before  # posting keeps the invoice (emulator, bc-api.md §5.5)
        assert {invoices[d["id"]]["status"] for d in drafts} == {"Open"}

    return Case(
        {"entity": "salesInvoices", "action": "post", "key": "{id}"},
        [{"id": d["id"]} for d in drafts],
        check,
    )


def case_make_invoice(bc: BC) -> Case:
    quotes = [
        bc.create(
            CRONUS,
            "salesQuotes",
            {
                "customerNumber": "C00010",
                "salesQuoteLines": [{"lineObjectNumber": "I00010", "quantity": n + 1}],
            },
        )
        for n in range(RECORDS)
    ]
    invoices = len(bc.all(CRONUS, "salesInvoices"))

    def check() -> None:
        left = {q["id"] for q in bc.all(CRONUS, "salesQuotes")}
        assert not left & {q["id"] for q in quotes}  # each converted (BC deletes the quote)
        assert len(bc.all(CRONUS, "salesInvoices")) == invoices + RECORDS  # ... exactly once

    return Case(
        {"entity": "salesQuotes", "action": "makeInvoice", "key": "{id}"},
        [{"id": q["id"]} for q in quotes],
        check,
    )


ACTIONS: dict[str, Callable[[BC], Case]] = {
    "create": case_create,
    "upsert": case_upsert,
    "update": case_update,
    "delete": case_delete,
    "post": case_post,
    "makeInvoice": case_make_invoice,
}


def flow_project(folder: Path, case: Case) -> Path:
    source = folder / "in.jsonl"
    source.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in case.records))
    outgoing = {**case.outgoing, "company": CRONUS, "batch_size": CHUNK}
    flow = {"from": "in.jsonl", "to": "out", "chunk_size": CHUNK}
    return write_project(
        folder / "bcbridge.yaml", {"outgoing": {"out": outgoing}, "flows": {"matrix": flow}}
    )


def task_statuses(project: Path) -> Counter[str]:
    store = store_of(project)
    try:
        return Counter(t.status for t in store.tasks("matrix", limit=None))
    finally:
        store.close()


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("action", ACTIONS)
def test_every_action_under_every_fault_happens_exactly_once(
    action: str, fault: str, tmp_path: Path, bc: BC, emulator: EmulatorControl
) -> None:
    case = ACTIONS[action](bc)
    project = flow_project(tmp_path, case)
    emulator.fault(**FAULTS[fault])
    first = run_flow(project, "matrix", via=emulator)
    assert first.status in ("ok", "failed", "error"), first
    emulator.clear_faults()
    for _ in range(2):  # the user runs it again, and once more: nothing changes the second time
        again = run_flow(project, "matrix", via=emulator)
        assert again.status == "ok", (again.status, again.error, again.counts)
    assert task_statuses(project) == Counter({"done": RECORDS})
    case.check()


READ_FAULTS: dict[str, dict[str, Any]] = {
    "GETs dropped": {"kind": "drop", "method": "GET", "count": 3},
    "429 storm": {"kind": "status", "status": 429, "retry_after": 0, "count": 6},
    "503 storm": {"kind": "status", "status": 503, "count": 6},
}
TARGETS = {
    "jsonl": "out/customers.jsonl",
    "csv": "out/customers.csv",
    "sqlite": "sqlite:///out/bc.db#customers",
}


def written_ids(folder: Path, target: str) -> Counter[str]:
    if target == "sqlite":
        engine = sa.create_engine(f"sqlite:///{folder / 'out/bc.db'}")
        with engine.connect() as conn:
            ids = [row[0] for row in conn.execute(sa.text("select id from customers"))]
        engine.dispose()
        return Counter(ids)
    text = (folder / TARGETS[target]).read_text()
    if target == "csv":
        lines = text.splitlines()
        column = lines[0].split(",").index("id")
        return Counter(line.split(",")[column] for line in lines[1:])
    return Counter(orjson.loads(line)["id"] for line in text.splitlines())


@pytest.mark.parametrize("fault", READ_FAULTS)
@pytest.mark.parametrize("target", TARGETS)
def test_bc_to_every_writer_under_read_faults_writes_each_record_once(
    target: str, fault: str, tmp_path: Path, bc: BC, emulator: EmulatorControl
) -> None:
    project = write_project(
        tmp_path / "bcbridge.yaml",
        {
            "incoming": {
                "customers": {
                    "entity": "customers",
                    "company": CRONUS,
                    "cursor": "lastModifiedDateTime",
                    "page_size": 10,
                    "params": {"$select": "id,number,displayName,balanceDue"},
                }
            },
            "flows": {
                "matrix": {
                    "from": "customers",
                    "to": {"writer": TARGETS[target], "key": "id"},
                    "chunk_size": 7,
                }
            },
        },
    )
    expected = {c["id"] for c in bc.all(CRONUS, "customers")}
    emulator.fault(**READ_FAULTS[fault])
    run_flow(project, "matrix", via=emulator)
    emulator.clear_faults()
    changed = bc.all(CRONUS, "customers")[0]
    bc.patch(CRONUS, "customers", changed, displayName="Changed after the first run")
    for _ in range(2):
        again = run_flow(project, "matrix", via=emulator)
        assert again.status == "ok", (again.status, again.error)
    ids = written_ids(tmp_path, target)
    assert set(ids) == expected
    # a record changed in BC is written again by an incremental run (once per change); any other
    # record is written exactly once
    assert {i for i, n in ids.items() if n > 1} <= {changed["id"]}
    assert ids[changed["id"]] <= (1 if target == "sqlite" else 2)  # the SQL writer upserts on id
