"""The catalog is the single source of entity sets: check its facts against bc-api.md §3."""

from __future__ import annotations

import pytest

from bcbridge import catalog
from bcbridge.catalog import FieldType, Operation, Scope
from bcbridge.errors import ConfigError

DESCRIBED = [
    "customers",
    "vendors",
    "items",
    "contacts",
    "employees",
    "itemCategories",
    "currencies",
    "paymentTerms",
    "salesOrders",
    "salesOrderLines",
    "salesInvoices",
    "salesInvoiceLines",
    "salesQuotes",
    "salesQuoteLines",
    "purchaseOrders",
    "purchaseOrderLines",
    "purchaseInvoices",
    "purchaseInvoiceLines",
    "accounts",
    "generalLedgerEntries",
    "journals",
    "journalLines",
    "dimensions",
    "dimensionValues",
]


@pytest.mark.parametrize("name", DESCRIBED)
def test_required_sets_carry_typed_properties_with_a_read_only_id(name: str) -> None:
    entity_set = catalog.get(name)
    assert entity_set.described
    key = entity_set.field("id")
    assert key.type is FieldType.GUID and key.read_only
    if entity_set.parent is None:  # BC's document lines carry no lastModifiedDateTime (§3.2)
        assert entity_set.field("lastModifiedDateTime").read_only


def test_every_set_of_the_fact_sheet_is_listed() -> None:
    # A sample across the table in bc-api.md §3.1, including the odd spellings.
    for name in ("salespeoplePurchasers", "companyInformation", "subscriptions", "trialBalances"):
        assert name in catalog.CATALOG
    assert len(catalog.CATALOG) >= 80


def test_routes_keys_and_operations() -> None:
    assert catalog.get("companies").scope is Scope.ROOT
    assert catalog.get("companies").read_only
    subscriptions = catalog.get("subscriptions")
    assert subscriptions.scope is Scope.ROOT and subscriptions.key_is_string
    lines = catalog.get("salesOrderLines")
    assert (lines.parent, lines.parent_field) == ("salesOrders", "documentId")
    assert catalog.get("salesOrders").lines == "salesOrderLines"
    assert not catalog.get("accounts").allows(Operation.POST)
    assert catalog.get("customers").allows("PATCH")
    assert "shipAndInvoice" in catalog.get("salesOrders").actions
    assert "post" in catalog.get("salesInvoices").actions


def test_enums_keep_blank_and_spaced_options() -> None:
    assert catalog.get("customers").field("blocked").options == (" ", "Ship", "Invoice", "All")
    assert "In Review" in catalog.get("salesOrders").field("status").options


def test_sales_documents_require_a_customer() -> None:
    assert catalog.get("salesInvoices").required_one_of == ("customerNumber", "customerId")
    assert catalog.get("purchaseOrders").required_one_of == ("vendorNumber", "vendorId")


def test_unknown_names_list_valid_ones_and_suggest() -> None:
    with pytest.raises(ConfigError, match=r"did you mean customers") as info:
        catalog.get("customer")
    assert info.value.field == "entity"
    with pytest.raises(ConfigError, match=r"unknown property 'nope'.*displayName"):
        catalog.get("customers").field("nope")


def test_a_decimal_from_convert_is_a_number_to_bc() -> None:
    """`convert: decimal` yields a Decimal, sent as a JSON number: the dry run must not refuse
    it as if it were the string a CSV gives."""
    from decimal import Decimal

    from bcbridge.catalog import get, refusal

    assert refusal(get("items"), "unitPrice", Decimal("649.00")) is None
    assert refusal(get("items"), "unitPrice", "649.00") is not None
