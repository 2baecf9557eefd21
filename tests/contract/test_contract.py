"""BC API v2.0's contract, checked against the emulator and, with `-m live`, against a real
sandbox: what bcbridge relies on (bc-api.md), so where the two disagree the sandbox wins and the
emulator is fixed.

Against a sandbox of your own (read-only unless asked; writes touch only records the tests
create and then delete):

    export BC_TENANT_ID=... BC_CLIENT_ID=... BC_CLIENT_SECRET=... BC_ENVIRONMENT=sandbox
    export BC_COMPANY="CRONUS USA, Inc."        # a company of that environment
    BCBRIDGE_LIVE=1 .venv/bin/pytest -m live tests/contract            # reads only
    BCBRIDGE_LIVE=1 BCBRIDGE_LIVE_WRITE=1 .venv/bin/pytest -m live tests/contract

Without BCBRIDGE_LIVE=1 the live side is skipped, whatever BC_* variables are set (test
fixtures set them for the emulator).
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator

import pytest

from bcbridge.config import ClientSettings
from bcbridge.errors import BCAPIError, NotFound
from bcbridge.sync import Client
from bcbridge.testing import InProcessEmulator

GUID = re.compile(r"^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}$")
CORRELATION = re.compile(r"CorrelationId:\s+[0-9a-f-]{36}\.?$")
LIVE = os.environ.get("BCBRIDGE_LIVE") == "1"
LIVE_WRITES = LIVE and os.environ.get("BCBRIDGE_LIVE_WRITE") == "1"


@pytest.fixture(
    scope="module", params=["emulator", pytest.param("sandbox", marks=pytest.mark.live)]
)
def target(request: pytest.FixtureRequest, inprocess_emulator: InProcessEmulator) -> str:
    if request.param == "sandbox" and not LIVE:
        pytest.skip("a real sandbox: set BCBRIDGE_LIVE=1 and the BC_* variables (module doc)")
    return str(request.param)


@pytest.fixture(scope="module")
def bc(target: str, inprocess_emulator: InProcessEmulator) -> Iterator[Client]:
    if target == "emulator":
        client = inprocess_emulator.sync_client(company="CRONUS USA, Inc.")
    else:
        client = Client(ClientSettings.from_env())
    yield client
    client.close()


@pytest.fixture(scope="module")
def company(bc: Client, target: str) -> str:
    if target == "sandbox":
        name = os.environ.get("BC_COMPANY")
        return f"companies({bc.resolve_company(name).id if name else bc.companies()[0].id})"
    return f"companies({bc.resolve_company('CRONUS USA, Inc.').id})"


def test_companies_have_guid_ids_and_names(bc: Client) -> None:
    companies = bc.companies()
    assert companies
    for found in companies:
        assert GUID.match(found.id) and found.name


def test_metadata_declares_the_sets_bcbridge_reads(bc: Client) -> None:
    answer = bc.request("GET", "$metadata")
    assert answer.status_code == 200
    for name in ("customers", "items", "salesInvoices", "salesOrders"):
        assert f'<EntitySet Name="{name}"' in answer.text, name


def test_select_top_and_the_etag(bc: Client, company: str) -> None:
    page = bc.get_json(f"{company}/customers", {"$top": 2, "$select": "id,number,displayName"})
    assert 0 < len(page["value"]) <= 2
    for record in page["value"]:
        assert set(record) <= {"id", "number", "displayName", "@odata.etag"}
        assert record["@odata.etag"].startswith('W/"')
    one = page["value"][0]
    again = bc.get_json(f"{company}/customers({one['id']})")
    assert again["@odata.etag"] == one["@odata.etag"] and again["number"] == one["number"]


def test_next_links_page_without_repeats(bc: Client, company: str) -> None:
    pages = bc.iter_pages(f"{company}/customers", params={"$select": "id"}, page_size=2)
    seen: list[str] = []
    for number, page in enumerate(pages):
        seen += [record["id"] for record in page.records]
        if number == 2:
            break
    assert len(seen) == len(set(seen)) and len(seen) > 2  # BC honours the page size it was given


def test_a_missing_record_is_a_404_with_a_correlation_id(bc: Client, company: str) -> None:
    with pytest.raises(NotFound) as refused:
        bc.request("GET", f"{company}/customers({uuid.uuid4()})")
    assert refused.value.status == 404
    assert CORRELATION.search(refused.value.message), refused.value.message
    assert refused.value.correlation_id


def test_an_unknown_filter_field_is_a_400_naming_it(bc: Client, company: str) -> None:
    with pytest.raises(BCAPIError) as refused:
        bc.request("GET", f"{company}/customers", params={"$filter": "nosuchfield eq 1"})
    assert refused.value.status == 400 and refused.value.code == "BadRequest"
    assert "nosuchfield" in refused.value.message


def test_create_change_with_if_match_and_delete_an_item(
    bc: Client, company: str, target: str
) -> None:
    if target == "sandbox" and not LIVE_WRITES:
        pytest.skip("writes to the sandbox: set BCBRIDGE_LIVE_WRITE=1")
    number = f"BCB{uuid.uuid4().hex[:8].upper()}"
    created = bc.request("POST", f"{company}/items", json={"number": number, "displayName": "x"})
    item = created.json()
    try:
        assert created.status_code == 201 and GUID.match(item["id"])
        changed = bc.request(
            "PATCH",
            f"{company}/items({item['id']})",
            json={"displayName": "bcbridge contract test"},
            headers={"If-Match": item["@odata.etag"]},
        ).json()
        assert changed["displayName"] == "bcbridge contract test"
        assert changed["@odata.etag"] != item["@odata.etag"]
        with pytest.raises(BCAPIError) as stale:  # the old ETag no longer matches
            bc.request(
                "PATCH",
                f"{company}/items({item['id']})",
                json={"displayName": "stale"},
                headers={"If-Match": item["@odata.etag"]},
            )
        assert stale.value.status in (409, 412)
    finally:
        bc.request("DELETE", f"{company}/items({item['id']})", headers={"If-Match": "*"})
    with pytest.raises(NotFound):
        bc.request("GET", f"{company}/items({item['id']})")
