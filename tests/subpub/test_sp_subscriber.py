from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from bcbridge.client import BusinessCentralClient
from bcbridge.subscriber import CursorState, Subscriber
from bcbridge.testing import InProcessEmulator, start_inprocess_emulator
from bcbridge.transform import load_chain
from tests.subpub.conftest import with_client


@pytest.fixture(scope="module")
def emulator() -> Iterator[InProcessEmulator]:
    """In-process, private to this module (the CLI tests use the conftest's emulator process)."""
    with start_inprocess_emulator() as running:
        yield running


async def _collect(subscriber: Subscriber) -> list[dict[str, Any]]:
    return [record async for record in subscriber.records()]


def test_key_segments_navigation_params_and_paging(emulator: InProcessEmulator) -> None:
    async def work(bc: BusinessCentralClient) -> None:
        orders = await _collect(Subscriber(bc, "salesOrders", params={"$top": 2}, paging=False))
        assert len(orders) == 2
        one = await _collect(Subscriber(bc, "salesOrders", key=orders[0]["id"]))
        assert [r["id"] for r in one] == [orders[0]["id"]]
        lines = await _collect(
            Subscriber(bc, "salesOrderLines", key=f"salesOrders({orders[0]['id']})/salesOrderLines")
        )
        assert lines and {line["documentId"] for line in lines} == {orders[0]["id"]}
        paged = Subscriber(
            bc, "items", params={"$select": "id,number", "$orderby": "number desc"}, page_size=7
        )
        items = await _collect(paged)
        assert paged.pages > 1 and [i["number"] for i in items] == sorted(
            (i["number"] for i in items), reverse=True
        )
        other = await _collect(
            Subscriber(bc, "customers", company="Fabrikam & O'Brien, Ltd.", params={"$top": 1})
        )
        assert other and other[0]["id"] not in {
            c["id"] for c in await _collect(Subscriber(bc, "customers"))
        }
        shaped = Subscriber(
            bc,
            "customers",
            params={"$top": "50"},
            transform=load_chain([{"set": {"$filter": "startswith(number,'C0001')"}}]),
        )
        assert {c["number"][:5] for c in await _collect(shaped)} == {"C0001"}

    with_client(emulator, work)


def test_incremental_pulls_across_runs_miss_nothing_and_repeat_nothing(
    emulator: InProcessEmulator,
) -> None:
    state = CursorState()

    async def run_once(bc: BusinessCentralClient) -> list[dict[str, Any]]:
        delivered = await _collect(Subscriber(bc, "vendors", cursor=state, page_size=4))
        for record in delivered:
            state.advance(record)  # "written downstream"
        return delivered

    first = with_client(emulator, run_once)
    assert len(first) >= 15

    async def change(bc: BusinessCentralClient) -> set[str]:
        path = f"companies({emulator.info.company_id()})/vendors"
        new = [
            (await bc.request("POST", path, json={"displayName": f"New {i}"})).json()["id"]
            for i in range(3)
        ]
        for vendor in first[:2]:
            await bc.request(
                "PATCH",
                f"{path}({vendor['id']})",
                json={"city": "Changed"},
                headers={"If-Match": "*"},
            )
        return {*new, first[0]["id"], first[1]["id"]}

    changed = with_client(emulator, change)
    second = with_client(emulator, run_once)
    assert {r["id"] for r in second} == changed and len(second) == 5
    assert with_client(emulator, run_once) == []
    assert CursorState.from_json(state.to_json()) == state


def test_boundary_duplicates_are_recognised_by_id_and_etag() -> None:
    state = CursorState()
    a = {"id": "a", "@odata.etag": "1", "lastModifiedDateTime": "2025-01-01T00:00:00.000Z"}
    b = {"id": "b", "@odata.etag": "1", "lastModifiedDateTime": "2025-01-01T00:00:00.000Z"}
    state.advance(a)
    assert state.seen(a) and not state.seen(b)
    assert not state.seen({**a, "@odata.etag": "2"})  # changed again at the same instant: deliver
    state.advance({**b, "lastModifiedDateTime": "2025-01-02T00:00:00.000Z"})
    assert not state.seen(a) and state.boundary == {"b": "1"}
