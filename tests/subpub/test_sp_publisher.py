from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from bcbridge.client import BusinessCentralClient
from bcbridge.errors import ConfigError
from bcbridge.publisher import Outcome, Publisher, RecordResult
from bcbridge.store import LeaseLost
from bcbridge.testing import EmulatorControl, InProcessEmulator, start_inprocess_emulator
from bcbridge.transform import load_chain
from tests.subpub.conftest import with_client


@pytest.fixture(scope="module")
def emulator() -> Iterator[InProcessEmulator]:
    """In-process, private to this module (the CLI tests use the conftest's emulator process)."""
    with start_inprocess_emulator() as running:
        yield running


def publish(
    emulator: EmulatorControl,
    entity: str,
    action: str,
    records: list[dict[str, Any]],
    **options: Any,
) -> list[RecordResult]:
    async def work(bc: BusinessCentralClient) -> list[RecordResult]:
        publisher = Publisher(bc, entity, action, **options)
        return [result async for result in publisher.publish(records)]

    return with_client(emulator, work)


def read(emulator: EmulatorControl, entity: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    async def work(bc: BusinessCentralClient) -> list[dict[str, Any]]:
        path = f"companies({emulator.info.company_id()})/{entity}"
        return [r async for r in bc.iter_records(path, params=params)]

    return with_client(emulator, work)


def test_create_with_deep_insert_and_a_transformer(emulator: InProcessEmulator) -> None:
    records = [
        {
            "customer": "C00010",
            "lines": [{"lineObjectNumber": "I00010", "quantity": 2}],
            "ref": "DI-1",
        }
    ]
    chain = load_chain(
        [
            {
                "rename": {
                    "customer": "customerNumber",
                    "lines": "salesOrderLines",
                    "ref": "externalDocumentNumber",
                }
            }
        ]
    )
    [result] = publish(
        emulator, "salesOrders", "create", records, transform=chain, allow_duplicates=True
    )
    assert result.outcome is Outcome.CREATED and result.status == 201
    [order] = read(
        emulator,
        "salesOrders",
        {"$filter": "externalDocumentNumber eq 'DI-1'", "$expand": "salesOrderLines"},
    )
    assert (
        order["id"] == result.id
        and len(order["salesOrderLines"]) == 1
        and order["totalAmountExcludingTax"] > 0
    )


def test_upsert_looks_matches_up_in_groups_and_reports_each_record(
    emulator: InProcessEmulator,
) -> None:
    existing = read(emulator, "items", {"$top": 30, "$select": "number,displayName,unitPrice"})
    records = [
        {"number": i["number"], "displayName": i["displayName"] + " v2", "unitPrice": 1.5}
        for i in existing[:20]
    ]
    records += [
        {"number": i["number"], "displayName": i["displayName"], "unitPrice": i["unitPrice"]}
        for i in existing[20:25]
    ]
    records += [
        {"number": f"UPS{i:03d}", "displayName": f"Upserted {i}", "unitPrice": 3} for i in range(15)
    ]
    before = emulator.stats()["by_status"].get("200", 0)
    results = publish(emulator, "items", "upsert", records, key_field="number")
    outcomes = [r.outcome for r in results]
    assert outcomes == [Outcome.UPDATED] * 20 + [Outcome.UNCHANGED] * 5 + [Outcome.CREATED] * 15
    get_requests = emulator.stats()["by_status"].get("200", 0) - before
    assert (
        get_requests <= 4
    )  # companies + two lookup GETs of 40 + the batch, never one GET per record
    again = publish(emulator, "items", "upsert", records, key_field="number")
    assert {r.outcome for r in again} == {Outcome.UNCHANGED}


def test_update_delete_and_bound_actions(emulator: InProcessEmulator) -> None:
    created = publish(
        emulator,
        "vendors",
        "create",
        [{"displayName": f"Pub {i}"} for i in range(3)],
        allow_duplicates=True,
    )
    ids = [r.id for r in created]
    updated = publish(
        emulator, "vendors", "update", [{"id": i, "city": "Bergen"} for i in ids], key="{id}"
    )
    assert {r.outcome for r in updated} == {Outcome.UPDATED}
    assert {v["city"] for v in read(emulator, "vendors", {"$filter": f"id eq {ids[0]}"})} == {
        "Bergen"
    }
    deleted = publish(
        emulator,
        "vendors",
        "delete",
        [{"id": i} for i in ids[:2]] + [{"id": "00000000-0000-0000-0000-0000000000ee"}],
    )
    assert [r.outcome for r in deleted] == [Outcome.DELETED, Outcome.DELETED, Outcome.FAILED]
    assert deleted[2].status == 404
    drafts = publish(
        emulator,
        "salesInvoices",
        "create",
        [
            {
                "customerNumber": "C00015",
                "salesInvoiceLines": [{"lineObjectNumber": "I00012", "quantity": 1}],
            }
        ],
        allow_duplicates=True,
    )
    posted = publish(emulator, "salesInvoices", "post", [{"id": drafts[0].id}])
    assert posted[0].outcome is Outcome.DONE and posted[0].status == 204
    assert (
        read(emulator, "salesInvoices", {"$filter": f"id eq {drafts[0].id}"})[0]["status"] == "Open"
    )
    with pytest.raises(ConfigError, match="valid: create, update, upsert, delete, shipAndInvoice"):
        publish(emulator, "salesOrders", "post", [])


def test_bad_records_fail_alone_with_bc_errors(emulator: InProcessEmulator) -> None:
    records: list[dict[str, Any]] = [
        {"code": "OK1"},
        {"code": 5},
        {"code": "OK2"},
        {"code": "OK3", "bogus": 1},
    ]
    results = publish(emulator, "itemCategories", "create", records, allow_duplicates=True)
    assert [r.outcome for r in results] == [
        Outcome.CREATED,
        Outcome.FAILED,
        Outcome.CREATED,
        Outcome.FAILED,
    ]
    assert (
        results[1].code == "BadRequest"
        and results[1].status == 400
        and "Edm.String" in str(results[1].message)
    )


def _edit_during_batch(
    emulator: InProcessEmulator, item_id: str, change: dict[str, Any]
) -> threading.Thread:
    """Stall the next $batch, and change the record from another session while it waits."""
    emulator.fault("stall", seconds=1.5, path_contains="$batch")
    api = emulator.http_client()

    def edit() -> None:
        time.sleep(0.5)
        url = f"companies({emulator.info.company_id()})/items({item_id})"
        with api:
            api.patch(url, json=change, headers={"If-Match": "*"}).raise_for_status()

    thread = threading.Thread(target=edit)
    thread.start()
    return thread


@pytest.mark.slow
def test_fetch_never_overwrites_a_concurrent_edit_of_the_same_fields(
    emulator: InProcessEmulator,
) -> None:
    [item] = read(emulator, "items", {"$filter": "number eq 'I00020'"})
    thread = _edit_during_batch(emulator, item["id"], {"unitPrice": 111.0})
    [result] = publish(
        emulator, "items", "update", [{"number": "I00020", "unitPrice": 222.0}], key_field="number"
    )
    thread.join()
    assert result.outcome is Outcome.FAILED and result.code == "Request_EntityChanged"
    assert "unitPrice" in str(result.message)
    assert read(emulator, "items", {"$filter": "number eq 'I00020'"})[0]["unitPrice"] == 111.0


@pytest.mark.slow
def test_fetch_reapplies_when_the_concurrent_edit_touched_other_fields(
    emulator: InProcessEmulator,
) -> None:
    [item] = read(emulator, "items", {"$filter": "number eq 'I00021'"})
    thread = _edit_during_batch(emulator, item["id"], {"displayName": "Edited elsewhere"})
    [result] = publish(
        emulator, "items", "update", [{"number": "I00021", "unitPrice": 333.0}], key_field="number"
    )
    thread.join()
    assert result.outcome is Outcome.UPDATED
    [now] = read(emulator, "items", {"$filter": "number eq 'I00021'"})
    assert (now["displayName"], now["unitPrice"]) == ("Edited elsewhere", 333.0)


def test_record_and_force_etag_policies(emulator: InProcessEmulator) -> None:
    [item] = read(emulator, "items", {"$filter": "number eq 'I00022'"})
    fresh = publish(emulator, "items", "update", [{**item, "unitPrice": 10.0}], etag="record")
    assert fresh[0].outcome is Outcome.UPDATED
    stale = publish(emulator, "items", "update", [{**item, "unitPrice": 20.0}], etag="record")
    assert stale[0].outcome is Outcome.FAILED and stale[0].status == 409
    forced = publish(emulator, "items", "update", [{**item, "unitPrice": 30.0}], etag="force")
    assert forced[0].outcome is Outcome.UPDATED
    assert read(emulator, "items", {"$filter": "number eq 'I00022'"})[0]["unitPrice"] == 30.0


def test_create_matched_on_key_field_is_not_sent_twice(emulator: InProcessEmulator) -> None:
    record = {"code": "ONCE", "displayName": "Only once"}
    first = publish(emulator, "itemCategories", "create", [record], key_field="code")
    second = publish(emulator, "itemCategories", "create", [record], key_field="code")
    assert first[0].outcome is Outcome.CREATED and second[0].outcome is Outcome.UNCHANGED
    assert len(read(emulator, "itemCategories", {"$filter": "code eq 'ONCE'"})) == 1


def test_a_guard_that_refuses_stops_the_writing_before_the_next_batch(
    emulator: InProcessEmulator,
) -> None:
    """`before_write` runs before each round and each `$batch`: once it raises (a run that
    lost its lease), no further request goes out and the error reaches the caller; the rounds
    sent stand."""
    records = [{"number": f"GRD{i:03d}", "displayName": f"Guarded {i}"} for i in range(30)]
    calls: list[int] = []

    def guard() -> None:
        calls.append(len(calls))
        if len(calls) > 4:  # rounds 1 and 2 (their start and their $batch) went through
            raise LeaseLost("the lease was lost")

    async def work(bc: BusinessCentralClient) -> list[RecordResult]:
        publisher = Publisher(bc, "items", "create", key_field="number", batch_size=10)
        return [result async for result in publisher.publish(records, before_write=guard)]

    with pytest.raises(LeaseLost):
        with_client(emulator, work)
    made = read(emulator, "items", {"$filter": "startswith(number,'GRD')", "$select": "number"})
    assert sorted(item["number"] for item in made) == [r["number"] for r in records[:20]]
