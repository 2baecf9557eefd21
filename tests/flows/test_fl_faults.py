"""Flows under faults: rejected records become retryable failed tasks; throttling, 503s, token
expiry and dropped connections lose nothing and write nothing twice."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bcbridge.testing import RunningEmulator
from tests.flows.conftest import BC, CRONUS, FABRIKAM, cli, run_flow, store_of, write_project


@pytest.fixture(autouse=True)
def fresh_data(emulator: RunningEmulator, bc_env: dict[str, str]) -> Iterator[None]:
    emulator.reset()
    emulator.configure(token_lifetime=3599, latency_ms=0, rate_limit="6000/300")
    yield
    emulator.clear_faults()


PRICE_AS_NUMBER = [{"convert": {"unitPrice": "decimal"}}]


def items_project(
    folder: Path,
    count: int,
    *,
    chunk: int = 50,
    price: str = "12.5",
    transform: list[Any] = PRICE_AS_NUMBER,
) -> Path:
    """`count` new items from a CSV, created in CRONUS, matched on their number."""
    with (folder / "items.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["number", "displayName", "unitPrice"])
        for n in range(count):
            writer.writerow([f"F{n:05d}", f"Fault item {n}", price])
    return write_project(
        folder / "bcbridge.yaml",
        {
            "outgoing": {
                "items": {
                    "entity": "items",
                    "company": CRONUS,
                    "action": "create",
                    "key_field": "number",
                    "batch_size": chunk,
                }
            },
            "flows": {
                "load": {
                    "from": "items.csv",
                    "transform": transform,
                    "to": "items",
                    "chunk_size": chunk,
                }
            },
        },
    )


def assert_each_once(bc: BC, count: int) -> None:
    numbers = Counter(i["number"] for i in bc.all(CRONUS, "items") if i["number"][0] == "F")
    assert len(numbers) == count, f"missing: {count - len(numbers)}"
    assert max(numbers.values()) == 1, [n for n, c in numbers.items() if c > 1]


def test_a_rejected_record_is_a_failed_task_with_bcs_message_and_retries(
    tmp_path: Path, bc: BC, bc_env: dict[str, str], examples: Path
) -> None:
    lonely = bc.create(CRONUS, "customers", {"number": "C77777", "displayName": "Only in CRONUS"})
    order = bc.create(
        CRONUS,
        "salesOrders",
        {
            "customerNumber": lonely["number"],
            "salesOrderLines": [{"lineType": "Item", "lineObjectNumber": "I00010", "quantity": 2}],
        },
    )
    result = run_flow(examples, "copy_sales_orders")
    assert result.status == "failed" and result.counts["failed"] == 1
    assert result.counts["created"] == result.counts["read"] - 1  # the others landed
    failed = store_of(examples).tasks("copy_sales_orders", "failed")
    assert [t.record_key for t in failed] == [f"CRONUS-{order['number']}"]
    # a missing referenced record is 404 Internal_RecordNotFound (bc-api.md §7)
    assert "C77777" in str(failed[0].last_error) and "404" in str(failed[0].last_error)

    config = ["--config", str(examples)]
    still = cli(bc_env, "tasks", "retry", str(failed[0].id), *config)
    assert still.returncode == 1  # the customer is still missing in Fabrikam

    bc.create(FABRIKAM, "customers", {"number": "C77777", "displayName": "Now in Fabrikam"})
    retried = cli(bc_env, "tasks", "retry", "--failed", *config)
    assert retried.returncode == 0, retried.stderr + retried.stdout
    task = store_of(examples).task(failed[0].id)
    assert task is not None and task.status == "done" and task.attempts == 3
    copies = [
        o
        for o in bc.all(FABRIKAM, "salesOrders")
        if o["externalDocumentNumber"] == f"CRONUS-{order['number']}"
    ]
    assert len(copies) == 1 and copies[0]["customerNumber"] == "C77777"


def test_a_transform_failure_keeps_the_source_record_and_retries_with_fixed_transformers(
    tmp_path: Path, bc: BC, bc_env: dict[str, str]
) -> None:
    project = items_project(tmp_path, 3, price="twelve")
    result = run_flow(project, "load")
    assert result.counts["failed"] == 3 and not result.counts["created"]
    failed = store_of(project).tasks("load", "failed")
    assert failed[0].stage == "transform" and failed[0].payload["unitPrice"] == "twelve"
    assert "convert" in str(failed[0].last_error) and "unitPrice" in str(failed[0].last_error)

    # The fix is in the flow: prices that are not numbers are left out. The CSV stays as it is.
    items_project(tmp_path, 3, price="twelve", transform=[{"drop": ["unitPrice"]}])
    retried = cli(bc_env, "tasks", "retry", "--failed", "--config", str(project))
    assert retried.returncode == 0, retried.stderr
    assert_each_once(bc, 3)
    assert {t.status for t in store_of(project).tasks("load")} == {"done"}


FAULTS: dict[str, dict[str, Any]] = {
    "503s": {"kind": "status", "status": 503, "count": 5},
    "dropped GETs": {"kind": "drop", "count": 4, "method": "GET"},
    "dropped $batch": {"kind": "drop", "count": 2, "path_contains": "$batch"},
    "$batch answers lost": {"kind": "drop", "count": 2, "path_contains": "$batch", "after": True},
}


@pytest.mark.parametrize("fault", FAULTS, ids=list(FAULTS))
def test_flow_survives_faults(
    fault: str, tmp_path: Path, bc: BC, emulator: RunningEmulator
) -> None:
    project = items_project(tmp_path, 400)
    emulator.fault(**FAULTS[fault])
    result = run_flow(project, "load")
    assert result.status == "ok"
    assert (
        emulator.stats()["by_status"]["dropped" if FAULTS[fault]["kind"] == "drop" else "503"] >= 1
    )
    # A batch that landed but whose answer was lost is matched when delivered again.
    lost = 50 * FAULTS[fault]["count"] if FAULTS[fault].get("after") else 0
    assert (result.counts["created"], result.counts["unchanged"]) == (400 - lost, lost)
    assert_each_once(bc, 400)


def test_flow_survives_a_429_storm(tmp_path: Path, bc: BC, emulator: RunningEmulator) -> None:
    project = items_project(tmp_path, 400, chunk=20)
    emulator.configure(rate_limit="12/2")  # far below what the client assumes BC allows
    result = run_flow(project, "load")
    emulator.configure(rate_limit="6000/300")
    assert result.status == "ok" and result.counts["created"] == 400
    assert emulator.stats()["throttled"] > 0
    assert_each_once(bc, 400)


def test_flow_survives_token_expiry(tmp_path: Path, bc: BC, emulator: RunningEmulator) -> None:
    project = items_project(tmp_path, 300, chunk=10)
    emulator.configure(token_lifetime=1, latency_ms=30)
    before = emulator.stats()["tokens_issued"]
    result = run_flow(project, "load")
    emulator.configure(token_lifetime=3599, latency_ms=0)
    assert result.status == "ok" and result.counts["created"] == 300
    assert emulator.stats()["tokens_issued"] - before >= 3  # it really ran on renewed tokens
    assert_each_once(bc, 300)


pytestmark = pytest.mark.slow  # subprocesses/emulator-heavy: left out of `make test-fast`
