"""Routes and OData reads (bc-api.md §1, §4)."""

from __future__ import annotations

import httpx

from bcbridge.testing import RunningEmulator
from tests.emulator.conftest import assert_bc_error


def test_service_document_metadata_and_companies(
    api: httpx.Client, emulator: RunningEmulator
) -> None:
    names = {entry["name"] for entry in api.get("").json()["value"]}
    assert {"customers", "salesOrders", "companies"} <= names
    metadata = api.get("$metadata")
    assert metadata.headers["content-type"].startswith("application/xml")
    assert '<EntitySet Name="customers" EntityType="Microsoft.NAV.customer"/>' in metadata.text
    assert '<Action Name="shipAndInvoice" IsBound="true">' in metadata.text
    companies = api.get("companies").json()
    assert companies["@odata.context"].endswith("$metadata#companies")
    assert [c["name"] for c in companies["value"]] == [
        "CRONUS USA, Inc.",
        "Fabrikam & O'Brien, Ltd.",
    ]


def test_company_by_query_parameter_even_with_awkward_names(
    api: httpx.Client, emulator: RunningEmulator
) -> None:
    second = emulator.info.companies[1]
    by_path = api.get(f"companies({second['id']})/customers", params={"$top": 1}).json()
    by_name = api.get("customers", params={"company": second["name"], "$top": 1}).json()
    assert by_path["value"] == by_name["value"]
    assert_bc_error(api.get("customers"), 400, "Internal_CompanyNotFound")


def test_unknown_sets_bad_keys_and_missing_records(api: httpx.Client, company: str) -> None:
    assert_bc_error(api.get(f"{company}/customerz"), 404, "BadRequest_ResourceNotFound")
    assert_bc_error(api.get(f"{company}/customers(10000)"), 400, "BadRequest_NotFound")
    missing = "00000000-0000-0000-0000-0000000000aa"
    assert_bc_error(api.get(f"{company}/customers({missing})"), 404, "Internal_RecordNotFound")


def test_filter_select_orderby_top_skip_count(api: httpx.Client, company: str) -> None:
    page = api.get(
        f"{company}/customers",
        params={
            "$filter": "startswith(number,'C0001') and creditLimit ge 0",
            "$select": "number,displayName",
            "$orderby": "number desc",
            "$top": "3",
            "$skip": "1",
            "$count": "true",
        },
    ).json()
    numbers = [row["number"] for row in page["value"]]
    assert numbers == ["C00018", "C00017", "C00016"]
    assert page["@odata.count"] == 10
    assert set(page["value"][0]) == {"@odata.etag", "number", "displayName"}
    assert "@odata.nextLink" not in page


def test_or_across_fields_is_refused_but_allowed_on_one_field(
    api: httpx.Client, company: str
) -> None:
    message = assert_bc_error(
        api.get(
            f"{company}/customers", params={"$filter": "number eq 'C00010' or city eq 'Miami'"}
        ),
        400,
        "BadRequest",
    )
    assert "'OR' operator is not supported on distinct fields" in message
    same = api.get(
        f"{company}/customers", params={"$filter": "number eq 'C00010' or number eq 'C00011'"}
    )
    assert [r["number"] for r in same.json()["value"]] == ["C00010", "C00011"]


def test_filter_literals_datetimes_guids_and_case_functions(
    api: httpx.Client, company: str
) -> None:
    first = api.get(f"{company}/customers", params={"$top": 1}).json()["value"][0]
    by_guid = api.get(f"{company}/customers", params={"$filter": f"id eq {first['id'].upper()}"})
    assert [r["id"] for r in by_guid.json()["value"]] == [first["id"]]
    stamp = first["lastModifiedDateTime"]
    later = api.get(f"{company}/customers", params={"$filter": f"lastModifiedDateTime gt {stamp}"})
    assert first["id"] not in {r["id"] for r in later.json()["value"]}
    lowered = first["displayName"].lower()
    found = api.get(
        f"{company}/customers", params={"$filter": f"tolower(displayName) eq '{lowered}'"}
    ).json()["value"]
    assert first["id"] in {r["id"] for r in found}


def test_expand_lines_and_single_valued_navigations(api: httpx.Client, company: str) -> None:
    orders = api.get(
        f"{company}/salesOrders",
        params={
            "$top": 2,
            "$expand": "salesOrderLines($select=sequence,itemId;$expand=item),customer",
        },
    ).json()["value"]
    for order in orders:
        assert order["customer"]["id"] == order["customerId"]
        assert order["salesOrderLines"], order
        for line in order["salesOrderLines"]:
            assert line["item"]["id"] == line["itemId"]
    nested = api.get(f"{company}/salesOrders({orders[0]['id']})/salesOrderLines").json()
    flat = api.get(
        f"{company}/salesOrderLines", params={"$filter": f"documentId eq {orders[0]['id']}"}
    ).json()
    assert [r["id"] for r in nested["value"]] == [r["id"] for r in flat["value"]]
    assert nested["@odata.context"].endswith(f"salesOrders({orders[0]['id']})/salesOrderLines")


def test_paging_is_keyset_so_inserts_between_pages_lose_and_repeat_nothing(
    api: httpx.Client, company: str
) -> None:
    prefer = {"Prefer": "odata.maxpagesize=7"}
    first = api.get(f"{company}/customers", headers=prefer)
    assert first.headers["preference-applied"] == "odata.maxpagesize=7"
    seen = [r["id"] for r in first.json()["value"]]
    created = api.post(f"{company}/customers", json={"displayName": "Inserted mid-paging"}).json()
    link = first.json()["@odata.nextLink"]
    while link:
        page = api.get(link, headers=prefer).json()
        seen += [r["id"] for r in page["value"]]
        link = page.get("@odata.nextLink")
    assert len(seen) == len(set(seen))
    assert created["id"] in seen
    total = api.get(f"{company}/customers", params={"$count": "true", "$top": 0}).json()
    assert total["@odata.count"] == len(seen)


def test_no_next_link_past_top(api: httpx.Client, company: str) -> None:
    prefer = {"Prefer": "odata.maxpagesize=4"}
    page = api.get(f"{company}/items", params={"$top": 6}, headers=prefer).json()
    rows = page["value"]
    page = api.get(page["@odata.nextLink"], headers=prefer).json()
    rows += page["value"]
    assert len(rows) == 6 and "@odata.nextLink" not in page


def test_an_unsupported_query_option_is_a_501(api: httpx.Client, company: str) -> None:
    # (writes to the sets derived from BC's $metadata: tests/contract/test_contract_sets.py)
    assert_bc_error(
        api.get(f"{company}/customers", params={"$apply": "x"}),
        501,
        "BadRequest_MethodNotImplemented",
    )
