"""Sets and navigations the catalog derives from BC's $metadata, served over HTTP: BC's property
names on reads and in $select, and BC's navigations from hand-written sets to derived ones."""

from __future__ import annotations

import httpx

from tests.emulator.conftest import assert_bc_error


def test_a_derived_set_answers_with_bcs_properties(api: httpx.Client, company: str) -> None:
    listed = api.get(f"{company}/bankAccounts", params={"$select": "number,iban"})
    assert listed.status_code == 200, listed.text
    rows = listed.json()["value"]
    assert rows and all(set(row) == {"@odata.etag", "number", "iban"} for row in rows)
    assert_bc_error(
        api.get(f"{company}/bankAccounts", params={"$select": "nosuchfield"}),
        400,
        "BadRequest",
    )


def test_bcs_collection_navigations_reach_derived_sets(api: httpx.Client, company: str) -> None:
    seeded = api.get(f"{company}/defaultDimensions", params={"$filter": "parentType eq 'Customer'"})
    customer_id = seeded.json()["value"][0]["parentId"]
    nested = api.get(f"{company}/customers({customer_id})/defaultDimensions")
    assert nested.status_code == 200, nested.text
    assert nested.json()["value"] and all(
        row["parentId"] == customer_id for row in nested.json()["value"]
    )
    expanded = api.get(
        f"{company}/customers",
        params={"$top": 2, "$expand": "defaultDimensions,paymentMethod"},
    )
    assert expanded.status_code == 200, expanded.text
    for row in expanded.json()["value"]:
        assert isinstance(row["defaultDimensions"], list)
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
    customers = api.get(f"{company}/customers", params={"$select": "id", "$top": 20000}).json()[
        "value"
    ]
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


# --- writes on derived sets: the capability annotations, BC's read-only properties --------------


def test_a_credit_memo_is_written_like_an_invoice(api: httpx.Client, company: str) -> None:
    customer = api.get(f"{company}/customers", params={"$top": 1}).json()["value"][0]
    item = api.get(f"{company}/items", params={"$top": 1}).json()["value"][0]
    body = {
        "customerNumber": customer["number"],
        "salesCreditMemoLines": [{"lineObjectNumber": item["number"], "quantity": 2}],
    }
    created = api.post(f"{company}/salesCreditMemos", json=body)
    assert created.status_code == 201, created.text
    memo = created.json()
    assert memo["number"].startswith("S-CR") and memo["customerId"] == customer["id"]
    assert memo["status"] == "Draft"
    assert memo["totalAmountExcludingTax"] == round(2 * item["unitPrice"], 2)
    lines = api.get(f"{company}/salesCreditMemos({memo['id']})/salesCreditMemoLines").json()
    assert [line["itemId"] for line in lines["value"]] == [item["id"]]
    assert_bc_error(
        api.post(f"{company}/salesCreditMemos", json={"totalTaxAmount": 1}),
        400,
        "BadRequest_InvalidOperation",
    )
    assert_bc_error(  # BC's API document pages do not let a client set pricesIncludeTax
        api.post(
            f"{company}/salesCreditMemos",
            json={"customerNumber": customer["number"], "pricesIncludeTax": True},
        ),
        400,
        "BadRequest_InvalidOperation",
    )
    deleted = api.delete(f"{company}/salesCreditMemos({memo['id']})", headers={"If-Match": "*"})
    assert deleted.status_code == 204
    assert api.get(f"{company}/salesCreditMemoLines({lines['value'][0]['id']})").status_code == 404


def test_a_payment_belongs_to_its_payment_journal(api: httpx.Client, company: str) -> None:
    customer = api.get(f"{company}/customers", params={"$top": 1}).json()["value"][0]
    journal = api.post(f"{company}/customerPaymentJournals", json={"code": "PAYTEST"}).json()
    payment = api.post(
        f"{company}/customerPaymentJournals({journal['id']})/customerPayments",
        json={"customerNumber": customer["number"], "amount": 25},
    )
    assert payment.status_code == 201, payment.text
    assert payment.json()["journalId"] == journal["id"]
    assert payment.json()["customerId"] == customer["id"]
    assert_bc_error(  # a payment needs its journal
        api.post(f"{company}/customerPayments", json={"amount": 1}),
        400,
        "BadRequest_RequiredParamNotProvided",
    )


def test_what_bcs_annotations_forbid_is_refused(api: httpx.Client, company: str) -> None:
    assert_bc_error(
        api.post(f"{company}/applyVendorEntries", json={}), 405, "BadRequest_MethodNotAllowed"
    )
    assert_bc_error(
        api.post(f"{company}/companyInformation", json={}), 405, "BadRequest_MethodNotAllowed"
    )
    assert_bc_error(
        api.post(f"{company}/generalProductPostingGroups", json={}),
        405,
        "BadRequest_MethodNotAllowed",
    )


def test_a_code_keyed_set_refuses_a_duplicate_and_numbers_a_new_record(
    api: httpx.Client, company: str
) -> None:
    first = api.post(f"{company}/shipmentMethods", json={"code": "DUPE1", "displayName": "x"})
    assert first.status_code == 201, first.text
    again = api.post(f"{company}/shipmentMethods", json={"code": "DUPE1"})
    assert again.status_code == 409, again.text
    bank = api.post(f"{company}/bankAccounts", json={"displayName": "Checking"})
    assert bank.status_code == 201 and bank.json()["number"], bank.text
    assert_bc_error(
        api.post(f"{company}/attachments", json={"byteSize": 3}),
        400,
        "BadRequest_InvalidOperation",
    )


def test_navigations_bc_links_by_another_field_than_the_id(api: httpx.Client, company: str) -> None:
    value = api.get(f"{company}/dimensionValues", params={"$top": 1}).json()["value"][0]
    customer = api.get(f"{company}/customers", params={"$top": 1}).json()["value"][0]
    order = api.post(
        f"{company}/salesOrders",
        json={"customerNumber": customer["number"], "shortcutDimension1Code": value["code"]},
    ).json()
    linked = api.get(f"{company}/salesOrders({order['id']})/dimensionValue")
    assert linked.status_code == 200, linked.text
    assert linked.json()["code"] == value["code"]
    expanded = api.get(
        f"{company}/salesOrders({order['id']})", params={"$expand": "dimensionValue"}
    ).json()
    assert expanded["dimensionValue"]["code"] == value["code"]
    entry = api.get(f"{company}/jobQueueEntries", params={"$top": 1}).json()["value"][0]
    logs = api.get(f"{company}/jobQueueEntries({entry['id']})/jobQueueLogEntries").json()
    assert logs["value"] and all(
        log["jobQueueEntryId"] == entry["jobQueueEntryId"] for log in logs["value"]
    )
    with_logs = api.get(
        f"{company}/jobQueueEntries", params={"$top": 3, "$expand": "jobQueueLogEntries"}
    ).json()["value"]
    assert any(row["jobQueueLogEntries"] for row in with_logs)
