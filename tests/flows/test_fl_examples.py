"""Each example flow end to end against the emulator, checking the data on both sides."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from bcbridge.testing import RunningEmulator
from tests.flows.conftest import (
    BC,
    CRONUS,
    FABRIKAM,
    cli,
    ctrl_c_when,
    run_flow,
    start_run,
    store_of,
)

pytestmark = pytest.mark.slow  # subprocesses/emulator-heavy: left out of `make test-fast`


@pytest.fixture(autouse=True)
def fresh_data(emulator: RunningEmulator) -> Iterator[None]:
    emulator.reset()
    yield


def sqlite_rows(project: Path) -> dict[str, dict[str, object]]:
    engine = sa.create_engine(f"sqlite:///{project.parent / 'out' / 'customers.db'}")
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM customers")).mappings().all()
    engine.dispose()
    return {str(row["id"]): dict(row) for row in rows}


def test_customers_to_sqlite_is_incremental(examples: Path, bc: BC) -> None:
    first = run_flow(examples, "customers_to_sqlite")
    customers = {c["id"]: c for c in bc.all(CRONUS, "customers")}
    rows = sqlite_rows(examples)
    assert first.status == "ok" and first.counts["written"] == len(customers) == len(rows)
    assert {k: r["displayName"] for k, r in rows.items()} == {
        k: c["displayName"] for k, c in customers.items()
    }

    changed = next(iter(customers.values()))
    bc.patch(CRONUS, "customers", changed, displayName="Renamed by a BC user")
    added = bc.create(CRONUS, "customers", {"displayName": "Added after the first run"})
    second = run_flow(examples, "customers_to_sqlite")
    assert second.counts["read"] == 2 and second.counts["written"] == 2
    rows = sqlite_rows(examples)
    assert len(rows) == len(customers) + 1
    assert rows[changed["id"]]["displayName"] == "Renamed by a BC user"
    assert rows[added["id"]]["number"] == added["number"]

    third = run_flow(examples, "customers_to_sqlite")
    assert third.counts["read"] == 0


def test_items_from_csv_upserts_by_number(examples: Path, bc: BC) -> None:
    before = {i["number"]: i for i in bc.all(CRONUS, "items")}
    result = run_flow(examples, "items_from_csv")
    assert result.status == "ok"
    assert (result.counts["created"], result.counts["updated"], result.counts["filtered"]) == (
        6,
        3,
        1,
    )
    after = {i["number"]: i for i in bc.all(CRONUS, "items")}
    assert len(after) == len(before) + 6
    assert after["I00010"]["displayName"] == "Desk (refreshed catalogue text)"
    assert after["I00010"]["id"] == before["I00010"]["id"]  # updated in place, not re-created
    assert after["I90001"]["unitPrice"] == 899.0 and after["I90001"]["type"] == "Inventory"

    again = run_flow(examples, "items_from_csv")  # the same file again: nothing changes in BC
    assert again.counts["unchanged"] == 9 and not again.counts["created"]
    assert len(bc.all(CRONUS, "items")) == len(after)


def test_sales_orders_copied_with_customers_mapped_by_number(examples: Path, bc: BC) -> None:
    source = bc.all(CRONUS, "salesOrders", **{"$expand": "salesOrderLines"})
    result = run_flow(examples, "copy_sales_orders")
    assert result.status == "ok" and result.counts["created"] == len(source)

    fabrikam_customers = {c["number"]: c["id"] for c in bc.all(FABRIKAM, "customers")}
    copies = {
        o["externalDocumentNumber"]: o
        for o in bc.all(FABRIKAM, "salesOrders", **{"$expand": "salesOrderLines"})
        if o["externalDocumentNumber"].startswith("CRONUS-")
    }
    assert len(copies) == len(source)
    for order in source:
        copy = copies[f"CRONUS-{order['number']}"]
        assert copy["customerNumber"] == order["customerNumber"]
        assert copy["customerId"] == fabrikam_customers[order["customerNumber"]]
        assert copy["customerId"] != order["customerId"]
        lines = [(line["lineObjectNumber"], line["quantity"]) for line in order["salesOrderLines"]]
        assert [(x["lineObjectNumber"], x["quantity"]) for x in copy["salesOrderLines"]] == lines
        assert copy["totalAmountExcludingTax"] == order["totalAmountExcludingTax"]

    # A source order edited after the copy is read again, and matched: not copied twice.
    bc.patch(CRONUS, "salesOrders", source[0], phoneNumber="+1 555 0199")
    again = run_flow(examples, "copy_sales_orders")
    assert again.counts["read"] == 1 and again.counts["unchanged"] == 1
    assert len(
        [
            o
            for o in bc.all(FABRIKAM, "salesOrders")
            if o["externalDocumentNumber"].startswith("CRONUS-")
        ]
    ) == len(source)


def test_cli_run_flows_list_and_tasks(examples: Path, bc_env: dict[str, str]) -> None:
    config = ["--config", str(examples)]
    run = cli(bc_env, "run", "items_from_csv", *config)
    assert run.returncode == 0, run.stderr
    assert "items_from_csv" in run.stderr and "created" in run.stderr

    listed = cli(bc_env, "flows", "list", *config)
    assert listed.returncode == 0, listed.stderr
    for name in ("customers_to_sqlite", "items_from_csv", "copy_sales_orders"):
        assert name in listed.stdout
    assert "never" in listed.stdout and "done 9" in listed.stdout

    tasks = cli(bc_env, "tasks", "list", "--flow", "items_from_csv", "--status", "done", *config)
    assert tasks.returncode == 0 and "I90006" in tasks.stdout
    task_id = store_of(examples).tasks("items_from_csv", limit=1)[0].id
    shown = json.loads(cli(bc_env, "tasks", "show", str(task_id), *config).stdout)
    assert shown["status"] == "done" and shown["payload"]["number"] == "I90006"

    unknown = cli(bc_env, "run", "no_such_flow", *config)
    assert unknown.returncode == 2  # a usage error
    assert "no flow named 'no_such_flow'" in unknown.stderr and "items_from_csv" in unknown.stderr


def test_the_demo_runs_the_examples_against_its_own_emulator(tmp_path: Path) -> None:
    """`make demo` on a fresh machine: no project file here, no BC_* settings, exit 0."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BC_", "BCBRIDGE_"))}
    demo = cli(env, "demo", cwd=tmp_path)
    assert demo.returncode == 0, demo.stderr
    landed = {
        line.split("│")[1].strip(): line.split("│")[2].strip()
        for line in demo.stderr.splitlines()
        if line.startswith("│ ") and line.count("│") == 3
    }
    assert landed["customers table in customers.db"] == "40"
    assert landed["sales orders copied into Fabrikam & O'Brien, Ltd."] == "8"
    assert landed["items from items.csv created in CRONUS USA, Inc."] == "6"
    assert "Changed 2 customers in BC" in demo.stderr
    assert list(tmp_path.iterdir()) == []  # the scratch folder is elsewhere, and removed


def test_run_every_repeats_until_ctrl_c(examples: Path, bc_env: dict[str, str]) -> None:
    process = start_run(bc_env, examples, "items_from_csv", "--every", "1s")
    store = store_of(examples)
    err = ctrl_c_when(process, lambda: len(store.runs("items_from_csv")) >= 3, within=60)
    assert process.returncode == 130, err
    assert "next run at" in err
    runs = store.runs("items_from_csv")
    store.close()
    assert {run["status"] for run in runs} <= {"ok", "interrupted"}
    assert runs[-1]["counts"]["created"] == 6  # the first run created, the next found them
    assert all(run["counts"].get("created", 0) == 0 for run in runs[:-1])
