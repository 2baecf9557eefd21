"""Seeded data for every entity set (bcbridge.emulator.seed_sets): rows in each, typed, within
BC's lengths, linked to records that exist, the same for the same seed."""

from __future__ import annotations

import httpx
import pytest

from bcbridge import catalog
from bcbridge.catalog import FieldType, Scope
from bcbridge.emulator.service import DataService
from bcbridge.emulator.store import BLANK_GUID, STANDARD_ROUTE

STORED = [s for s in catalog.CATALOG.values() if s.name != "subscriptions"]


def _url(company: str, name: str) -> str:
    return name if catalog.get(name).scope is Scope.ROOT else f"{company}/{name}"


def _all(api: httpx.Client, company: str, name: str) -> list[dict[str, object]]:
    answer = api.get(_url(company, name), params={"$top": 20000})
    assert answer.status_code == 200, (name, answer.text)
    rows: list[dict[str, object]] = answer.json()["value"]
    return rows


@pytest.mark.parametrize("name", [s.name for s in STORED])
def test_every_set_has_typed_rows_within_bcs_lengths(
    api: httpx.Client, company: str, name: str
) -> None:
    entity_set = catalog.get(name)
    rows = _all(api, company, name)
    assert rows, f"{name} has no seeded rows"
    for row in rows:
        for field in entity_set.fields:
            value = row[field.name]
            if field.type is FieldType.ENUM:
                assert value in field.options, (name, field.name, value)
            if field.max_length and isinstance(value, str):
                assert len(value) <= field.max_length, (name, field.name, value)


def test_links_point_at_records_that_exist(api: httpx.Client, company: str) -> None:
    ids = {s.name: {row.get("id") for row in _all(api, company, s.name)} for s in STORED}
    checked = 0
    for entity_set in STORED:
        if not entity_set.derived:
            continue
        for nav in entity_set.navigations:
            if nav.many or nav.via == "id" or nav.target not in ids:
                continue
            for row in _all(api, company, entity_set.name):
                value = row.get(nav.via)
                if value in (None, BLANK_GUID) or str(value) not in ids[nav.target]:
                    continue  # polymorphic links (parentId) point at one of several sets
                checked += 1
    assert checked > 100
    # the unambiguous ones, every row
    for name, via, target in (
        ("salesCreditMemoLines", "documentId", "salesCreditMemos"),
        ("customerPayments", "journalId", "customerPaymentJournals"),
        ("vendorPayments", "journalId", "vendorPaymentJournals"),
        ("itemVariants", "itemId", "items"),
        ("agedAccountsReceivables", "customerId", "customers"),
    ):
        for row in _all(api, company, name):
            assert row[via] in ids[target], (name, row)


def test_dimension_values_belong_to_their_dimension(api: httpx.Client, company: str) -> None:
    values = {row["id"]: row for row in _all(api, company, "dimensionValues")}
    dimensions = {row["id"]: row for row in _all(api, company, "dimensions")}
    for row in _all(api, company, "defaultDimensions"):
        value = values[str(row["dimensionValueId"])]
        assert value["dimensionId"] == row["dimensionId"]
        assert dimensions[str(row["dimensionId"])]["code"] == row["dimensionCode"]
    for row in _all(api, company, "dimensionSetLines"):
        value = values[str(row["valueId"])]
        assert dimensions[str(value["dimensionId"])]["code"] == row["code"]


def test_a_document_reaches_its_pdf_and_a_credit_memo_adds_up(
    api: httpx.Client, company: str
) -> None:
    memo = _all(api, company, "salesCreditMemos")[0]
    pdf = api.get(f"{company}/salesCreditMemos({memo['id']})/pdfDocument")
    assert pdf.status_code == 200 and pdf.json()["parentId"] == memo["id"]
    lines = api.get(f"{company}/salesCreditMemos({memo['id']})/salesCreditMemoLines").json()
    total = round(sum(line["amountExcludingTax"] for line in lines["value"]), 2)
    assert total == memo["totalAmountExcludingTax"]


def test_a_post_continues_a_seeded_number_series(api: httpx.Client, company: str) -> None:
    numbers = {row["number"] for row in _all(api, company, "bankAccounts")}
    created = api.post(f"{company}/bankAccounts", json={"displayName": "After the seed"})
    assert created.status_code == 201, created.text
    assert created.json()["number"] not in numbers


def test_entity_definitions_list_every_set(api: httpx.Client) -> None:
    listed = {row["entitySetName"] for row in _all(api, "", "entityDefinitions")}
    assert listed == set(catalog.names())


def _snapshot(seed: int, scale: dict[str, int]) -> dict[str, list[tuple[object, ...]]]:
    service = DataService()
    service.seed(seed, scale)
    with service.engine.connect() as conn:
        out = {
            name: [tuple(row) for row in conn.execute(table.select().order_by(table.c._seq))]
            for (route, name), table in service.schema.tables.items()
            if route == STANDARD_ROUTE and catalog.get(name).derived
        }
    service.close()
    return out


def test_the_same_seed_gives_the_same_rows_and_scale_sets_counts() -> None:
    first = _snapshot(7, {"bankAccounts": 12})
    assert first == _snapshot(7, {"bankAccounts": 12})
    company_rows = [row for row in first["bankAccounts"]]
    assert len(company_rows) == 12 + 5  # the first company is scaled, the second is not
    assert first != _snapshot(8, {"bankAccounts": 12})


def test_scale_names_the_generic_sets_too() -> None:
    from bcbridge.emulator.config import parse_scale

    assert parse_scale("bankAccounts=30,customers=10") == {"bankAccounts": 30, "customers": 10}
    with pytest.raises(ValueError, match="companyInformation"):
        parse_scale("companyInformation=3")  # one per company, as in BC
    with pytest.raises(ValueError, match="agedAccountsReceivables"):
        parse_scale("agedAccountsReceivables=3")  # posting makes one per customer
    first = _snapshot(3, {"customerSales": 2})
    assert len(first["customerSales"]) == 2 + 40  # the second company: one per customer


def test_aged_receivables_add_up_to_the_open_invoices(api: httpx.Client, company: str) -> None:
    owed: dict[str, float] = {}
    for invoice in _all(api, company, "salesInvoices"):
        if invoice["status"] == "Open":
            customer = str(invoice["customerId"])
            owed[customer] = owed.get(customer, 0.0) + float(str(invoice["remainingAmount"]))
    assert owed, "the seed has open invoices"
    # a posted credit memo not applied in full lowers what its customer owes by what is left of
    # it, which only the ledger knows (the API shows no remaining amount on credit memos)
    credited = {
        str(memo["customerId"])
        for memo in _all(api, company, "salesCreditMemos")
        if memo["status"] == "Open"
    }
    customers = {row["id"]: row for row in _all(api, company, "customers")}
    balances: dict[str, object] = {}
    for aged in _all(api, company, "agedAccountsReceivables"):
        customer = str(aged["customerId"])
        balances[customer] = aged["balanceDue"]
        assert aged["balanceDue"] == customers[customer]["balanceDue"]
        periods = ("currentAmount", "period1Amount", "period2Amount", "period3Amount")
        assert round(sum(float(str(aged[period])) for period in periods), 2) == aged["balanceDue"]
        if customer not in credited:
            assert aged["balanceDue"] == round(owed.get(customer, 0.0), 2)
    for details in _all(api, company, "customerFinancialDetails"):
        assert details["balance"] == balances[str(details["id"])]
