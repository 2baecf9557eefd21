"""Sets and navigations the catalog derives from BC's $metadata, served over HTTP: BC's property
names on reads and in $select, and BC's navigations from hand-written sets to derived ones."""

from __future__ import annotations

import httpx

from tests.emulator.conftest import assert_bc_error


def test_a_derived_set_answers_with_bcs_properties(api: httpx.Client, company: str) -> None:
    listed = api.get(f"{company}/bankAccounts", params={"$select": "number,iban"})
    assert listed.status_code == 200, listed.text
    assert listed.json()["value"] == []
    assert_bc_error(
        api.get(f"{company}/bankAccounts", params={"$select": "nosuchfield"}),
        400,
        "BadRequest",
    )


def test_bcs_collection_navigations_reach_derived_sets(api: httpx.Client, company: str) -> None:
    customer = api.get(f"{company}/customers", params={"$top": 1}).json()["value"][0]
    nested = api.get(f"{company}/customers({customer['id']})/defaultDimensions")
    assert nested.status_code == 200, nested.text
    assert nested.json()["value"] == []
    expanded = api.get(
        f"{company}/customers",
        params={"$top": 2, "$expand": "defaultDimensions,paymentMethod"},
    )
    assert expanded.status_code == 200, expanded.text
    for row in expanded.json()["value"]:
        assert row["defaultDimensions"] == []
        assert "paymentMethod" in row  # single-valued: the record or null


def test_metadata_declares_enums_streams_and_capabilities(api: httpx.Client) -> None:
    text = api.get("$metadata").text
    assert '<EnumType Name="contactType">' in text
    assert '<Member Name="_x0020_" Value="0"/>' in text  # customerBlocked's blank option
    assert '<Property Name="pictureContent" Type="Edm.Stream"/>' in text
    assert '<Property Name="type" Type="Microsoft.NAV.contactType" Nullable="true"/>' in text
    assert '<Annotations Target="Microsoft.NAV.NAV/pictures">' in text


def test_a_set_bc_keys_by_another_guid(api: httpx.Client, company: str) -> None:
    listed = api.get(f"{company}/agedAccountsReceivables", params={"$select": "customerId"})
    assert listed.status_code == 200, listed.text
    customers = api.get(f"{company}/customers", params={"$select": "id"}).json()["value"]
    # one row per customer, worked out by posting (emulator/posting.py)
    assert {row["customerId"] for row in listed.json()["value"]} == {c["id"] for c in customers}
    one = api.get(f"{company}/agedAccountsReceivables({customers[0]['id']})")
    assert one.status_code == 200 and one.json()["customerId"] == customers[0]["id"]
    assert_bc_error(
        api.get(f"{company}/agedAccountsReceivables(00000000-0000-0000-0000-000000000001)"),
        404,
        "Internal_RecordNotFound",
    )
    text = api.get("$metadata").text
    aged = text[text.index('<EntityType Name="agedAccountsReceivable">') :]
    assert aged.split("</EntityType>")[0].count('<PropertyRef Name="customerId"/>') == 1
    assert '<Property Name="id"' not in aged.split("</EntityType>")[0]


def test_a_set_with_bcs_three_part_key(api: httpx.Client, company: str) -> None:
    listed = api.get(f"{company}/customerSales", params={"$select": "customerNumber,name"})
    assert listed.status_code == 200, listed.text
    text = api.get("$metadata").text
    sale = text[text.index('<EntityType Name="customerSale">') :].split("</EntityType>")[0]
    assert (
        '<Key><PropertyRef Name="customerId"/><PropertyRef Name="customerNumber"/>'
        '<PropertyRef Name="name"/></Key>'
    ) in sale
