"""Business rules the emulator applies on writes: lookups, document lines, totals, bound actions.

A deliberately small model of BC's AL logic, enough for connectors to see plausible behaviour:
- a number field fills its id field and copied names (customerNumber -> customerId, customerName);
- an item line takes its price and description from the item;
- every priced line is taxed at a flat TAX_PERCENT (BC computes tax from tax groups and areas;
  the emulator does not model those);
- document totals are the sums of their lines, less the header's discountAmount.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from bcbridge import catalog
from bcbridge.emulator.errors import dialog, record_not_found
from bcbridge.emulator.records import Place, Records
from bcbridge.emulator.store import BLANK_GUID, Row

TAX_PERCENT = 10.0


@dataclass(frozen=True)
class Reference:
    id_field: str
    number_field: str | None
    target: str
    target_field: str
    copies: Mapping[str, str] = field(default_factory=dict)
    # the sets this reference applies to; empty: every set that has `id_field`
    only_in: frozenset[str] = frozenset()


REFERENCES = (
    Reference(
        "customerId",
        "customerNumber",
        "customers",
        "number",
        {
            "customerName": "displayName",
            "sellToAddressLine1": "addressLine1",
            "sellToCity": "city",
            "sellToCountry": "country",
            "sellToPostCode": "postalCode",
            "sellToState": "state",
        },
    ),
    Reference(
        "billToCustomerId",
        "billToCustomerNumber",
        "customers",
        "number",
        {
            "billToName": "displayName",
            "billToAddressLine1": "addressLine1",
            "billToCity": "city",
            "billToCountry": "country",
            "billToPostCode": "postalCode",
        },
    ),
    Reference(
        "vendorId",
        "vendorNumber",
        "vendors",
        "number",
        {
            "vendorName": "displayName",
            "buyFromAddressLine1": "addressLine1",
            "buyFromCity": "city",
            "buyFromCountry": "country",
        },
    ),
    Reference(
        "payToVendorId", "payToVendorNumber", "vendors", "number", {"payToName": "displayName"}
    ),
    Reference("currencyId", "currencyCode", "currencies", "code"),
    Reference("itemCategoryId", "itemCategoryCode", "itemCategories", "code"),
    Reference("accountId", "accountNumber", "accounts", "number"),
    Reference(
        "journalId",
        None,
        "journals",
        "code",
        {"journalDisplayName": "code"},
        frozenset({"journalLines"}),
    ),
    *(
        Reference(
            "journalId",
            None,
            f"{party}PaymentJournals",
            "code",
            {"journalDisplayName": "code"},
            frozenset({f"{party}Payments"}),
        )
        for party in ("customer", "vendor")
    ),
    # the posted invoice a payment or a credit memo applies to
    Reference(
        "appliesToInvoiceId",
        "appliesToInvoiceNumber",
        "salesInvoices",
        "number",
        only_in=frozenset({"customerPayments"}),
    ),
    Reference(
        "appliesToInvoiceId",
        "appliesToInvoiceNumber",
        "purchaseInvoices",
        "number",
        only_in=frozenset({"vendorPayments"}),
    ),
    Reference(
        "invoiceId",
        "invoiceNumber",
        "salesInvoices",
        "number",
        only_in=frozenset({"salesCreditMemos"}),
    ),
    Reference(
        "invoiceId",
        "invoiceNumber",
        "purchaseInvoices",
        "number",
        only_in=frozenset({"purchaseCreditMemos"}),
    ),
    Reference("dimensionId", None, "dimensions", "code"),
)


def _place(place: Place, target: str) -> Place:
    return Place(place.route, catalog.get(target), place.company_id)


def resolve_references(records: Records, place: Place, values: dict[str, Any]) -> None:
    """Fill id/number pairs and copied names for the references this write touches."""
    names = set(place.entity_set.field_names)
    for ref in REFERENCES:
        if (
            ref.id_field not in names
            or _links_elsewhere(place.entity_set, ref)
            or (ref.only_in and place.name not in ref.only_in)
        ):
            continue
        given_id = values.get(ref.id_field)
        given_number = values.get(ref.number_field) if ref.number_field else None
        if given_id in (None, BLANK_GUID) and not given_number:
            continue
        target = _place(place, ref.target)
        if given_id not in (None, BLANK_GUID):
            row = records.find(target, str(given_id))
            what = f"Id='{given_id}'"
        else:
            row = records.find_by(target, ref.target_field, given_number)
            what = f"{ref.target_field}='{given_number}'"
        if row is None:
            raise record_not_found(target.entity_set.entity, what)
        if given_number and ref.number_field and row[ref.target_field] != given_number:
            raise dialog(
                f'The "{ref.number_field}" and "{ref.id_field}" do not refer to the same '
                f"{target.entity_set.entity}."
            )
        values[ref.id_field] = row["id"]
        if ref.number_field and ref.number_field in names:
            values[ref.number_field] = row[ref.target_field]
        for ours, theirs in ref.copies.items():
            if ours in names:
                values[ours] = row[theirs]
        if ref.id_field == "customerId" and "billToCustomerId" in names:
            values.setdefault("billToCustomerId", row["id"])
            values.setdefault("billToCustomerNumber", row["number"])
            values.setdefault("billToName", row["displayName"])


def _links_elsewhere(entity_set: catalog.EntitySet, ref: Reference) -> bool:
    """The set's own link through `ref.id_field` names another set (a customer payment's
    journalId is a customerPaymentJournal, not a journal)."""
    link = next((n for n in entity_set.navigations if n.via == ref.id_field and not n.many), None)
    return link is not None and link.target != ref.target


def require_party(entity_set: catalog.EntitySet, record: Row) -> None:
    fields = entity_set.required_one_of
    if fields and not any(record.get(name) not in (None, "", BLANK_GUID) for name in fields):
        raise dialog(f'A "{fields[0]}" or a "{fields[1]}" must be provided.')


def apply_create_defaults(entity_set: catalog.EntitySet, values: dict[str, Any]) -> None:
    """New documents start as drafts dated today, as BC's pages do; a payment journal line is
    dated today too (BC's work date)."""
    names = entity_set.field_names
    if entity_set.lines and "status" in names:
        values.setdefault("status", "Draft")
    dated = entity_set.lines or entity_set.parent in PAYMENT_JOURNALS
    for date_field in ("orderDate", "invoiceDate", "documentDate", "creditMemoDate", "postingDate"):
        if dated and date_field in names:
            values.setdefault(date_field, date.today().isoformat())


PAYMENT_JOURNALS = ("customerPaymentJournals", "vendorPaymentJournals")


# --- lines -------------------------------------------------------------------------------------


def price_field(line_set: catalog.EntitySet) -> str:
    """Sales lines: unitPrice; purchase order lines: directUnitCost; BC's purchase invoice
    lines: unitCost."""
    names = line_set.field_names
    return next(name for name in ("unitPrice", "directUnitCost", "unitCost") if name in names)


def prepare_line(
    records: Records, place: Place, values: dict[str, Any], existing: Row | None
) -> None:
    """Item lookups, default price/description/sequence, and the line's amounts."""
    merged = {**(existing or {}), **values}
    line_type = merged.get("lineType") or ""
    if not line_type and (
        merged.get("itemId") not in (None, "", BLANK_GUID) or merged.get("lineObjectNumber")
    ):
        line_type = values["lineType"] = "Item"
    if line_type in ("Item", "Account") and (
        "itemId" in values or "accountId" in values or "lineObjectNumber" in values
    ):
        target = "items" if line_type == "Item" else "accounts"
        id_field = "itemId" if line_type == "Item" else "accountId"
        target_place = _place(place, target)
        if values.get(id_field) not in (None, BLANK_GUID):
            row = records.find(target_place, str(values[id_field]))
        else:
            row = records.find_by(target_place, "number", merged.get("lineObjectNumber"))
        if row is None:
            raise record_not_found(
                target_place.entity_set.entity,
                f"No.='{merged.get('lineObjectNumber') or values.get(id_field)}'",
            )
        values[id_field] = row["id"]
        values["lineObjectNumber"] = row["number"]
        if not merged.get("description"):
            values["description"] = row["displayName"]
        price = price_field(place.entity_set)
        if line_type == "Item" and price not in values and not (existing or {}).get(price):
            values[price] = row["unitPrice"] if price == "unitPrice" else row["unitCost"]
    merged = {**(existing or {}), **values}
    quantity = float(merged.get("quantity") or 0)
    unit = float(merged.get(price_field(place.entity_set)) or 0)
    discount = float(merged.get("discountAmount") or 0)
    if merged.get("discountPercent") and "discountAmount" not in values:
        discount = round(quantity * unit * float(merged["discountPercent"]) / 100, 2)
        values["discountAmount"] = discount
    amount = round(quantity * unit - discount, 2)
    tax_percent = TAX_PERCENT if merged.get("lineType") in ("Item", "Account", "Resource") else 0.0
    tax = round(amount * tax_percent / 100, 2)
    values.update(
        amountExcludingTax=amount,
        taxPercent=tax_percent,
        totalTaxAmount=tax,
        amountIncludingTax=round(amount + tax, 2),
        netAmount=amount,
        netTaxAmount=tax,
        netAmountIncludingTax=round(amount + tax, 2),
    )


def next_sequence(records: Records, place: Place, parent_id: str) -> int:
    lines = records.children(place, "documentId", parent_id)
    return max((int(line["sequence"]) for line in lines), default=0) + 10000


def next_line_number(records: Records, place: Place, journal_id: str) -> int:
    lines = records.children(place, "journalId", journal_id)
    return max((int(line["lineNumber"]) for line in lines), default=0) + 10000


def recompute_totals(records: Records, header_place: Place, header: Row) -> None:
    lines_set = header_place.entity_set.lines
    if not lines_set or "totalAmountExcludingTax" not in header_place.entity_set.field_names:
        return
    line_place = _place(header_place, lines_set)
    lines = records.children(line_place, "documentId", header["id"])
    excluding = round(
        sum(line["amountExcludingTax"] for line in lines) - header["discountAmount"], 2
    )
    tax = round(sum(line["totalTaxAmount"] for line in lines), 2)
    totals = {
        "totalAmountExcludingTax": excluding,
        "totalTaxAmount": tax,
        "totalAmountIncludingTax": round(excluding + tax, 2),
    }
    if "remainingAmount" in header_place.entity_set.field_names and header.get("status") in (
        "Open",
    ):
        totals["remainingAmount"] = totals["totalAmountIncludingTax"]
    records.update(header_place, header, totals)


# --- bound actions -----------------------------------------------------------------------------

ActionHandler = Callable[[Records, Place, Row], None]


def copy_document(
    records: Records,
    source: Place,
    row: Row,
    target_name: str,
    overrides: dict[str, Any],
) -> Row:
    """A new document in `target_name` with the header fields and lines both sets share."""
    target = _place(source, target_name)
    shared = set(source.entity_set.field_names) & set(target.entity_set.field_names)
    skip = {"id", "number", "lastModifiedDateTime", "status"}
    header = {name: row[name] for name in shared - skip}
    if target.entity_set.number_series:
        header["number"] = records.next_number(target)
    header.update(overrides)
    new_header = records.insert(target, header)
    if source.entity_set.lines and target.entity_set.lines:
        source_lines = _place(source, source.entity_set.lines)
        target_lines = _place(source, target.entity_set.lines)
        line_fields = set(source_lines.entity_set.field_names) & set(
            target_lines.entity_set.field_names
        )
        for line in records.children(source_lines, "documentId", row["id"]):
            copied = {name: line[name] for name in line_fields - {"id", "documentId"}}
            copied["documentId"] = new_header["id"]
            # the price's name differs: a purchase order line's directUnitCost is the invoice
            # line's unitCost
            source_price = price_field(source_lines.entity_set)
            copied[price_field(target_lines.entity_set)] = line[source_price]
            records.insert(target_lines, copied)
        recompute_totals(records, target, records.get(target, new_header["id"]))
    return new_header


def delete_document(records: Records, place: Place, row: Row) -> None:
    if place.entity_set.lines:
        line_place = _place(place, place.entity_set.lines)
        for line in records.children(line_place, "documentId", row["id"]):
            records.delete(line_place, line)
    records.delete(place, row)


def make_document(target: str) -> ActionHandler:
    """`makeInvoice` / `makeOrder`: BC's Sales-Quote to Invoice / Sales-Quote to Order codeunits
    delete the quote (and its lines) in the transaction that makes the new document, so a quote
    is converted once: a second call finds no quote (404, as for any missing record)."""

    def action(records: Records, place: Place, row: Row) -> None:
        copy_document(records, place, row, target, {"status": "Draft"})
        delete_document(records, place, row)

    return action


# The actions that post (journals too), cancel and send are `bcbridge.emulator.lifecycle.ACTIONS`.
ACTIONS: Mapping[tuple[str, str], ActionHandler] = {
    ("salesQuotes", "makeInvoice"): make_document("salesInvoices"),
    ("salesQuotes", "makeOrder"): make_document("salesOrders"),
}
