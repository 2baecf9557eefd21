"""Posting: what BC writes when a document or a payment journal is posted.

Posting a sales or purchase invoice or credit memo writes, in the caller's transaction:
- a customer or vendor ledger entry (the emulator's own ``_ledger`` table: BC's API v2.0 serves
  no set for them), applied to the invoice a credit memo names (``invoiceId``);
- general ledger entries whose debits equal their credits: the receivables or payables account
  against sales (or the line's own account), sales tax, and for item lines cost of goods sold
  against inventory (BC's automatic cost posting);
- an item ledger entry per item line, and the item's ``inventory``;
- a posted shipment (``salesShipments`` + lines) or receipt (``purchaseReceipts`` + lines) for
  orders, and for invoices with item lines when `PostingSetup` says so (BC's "Shipment on
  Invoice" / "Receipt on Invoice" setup fields; their default in a new company is UNCONFIRMED).

A posted payment (`post_payments`) is a ledger entry against cash, applied to the invoice the line
names. After each posting the parties' figures are worked out again from their open ledger
entries: ``customers.balanceDue``, ``vendors.balance``, ``customerFinancialDetails``,
``agedAccountsReceivables``/``agedAccountsPayables`` and the invoices' ``remainingAmount`` and
``Paid`` status, so that they always add up to the open entries.

The model is small on purpose: one currency (LCY), a flat tax rate (documents.TAX_PERCENT), no
dimensions, no partial shipments, no posting groups: the G/L accounts are the `PostingSetup`
numbers, which the seed creates.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import sqlalchemy as sa

from bcbridge import catalog
from bcbridge.emulator import documents
from bcbridge.emulator.errors import dialog
from bcbridge.emulator.records import Place, Records
from bcbridge.emulator.store import BLANK_DATE, BLANK_GUID, Row
from bcbridge.emulator.validation import blank_record

__all__ = [
    "CHART",
    "OWNED_SETS",
    "PURCHASE",
    "SALES",
    "SETUP",
    "PostingSetup",
    "Side",
    "apply_to",
    "due_date",
    "entries_of",
    "post_document",
    "post_general_journal",
    "post_payments",
    "refresh_parties",
    "side_of",
]


@dataclass(frozen=True)
class PostingSetup:
    """Which G/L accounts posting uses (by number) and which posted documents it makes."""

    cash: str = "10000"
    receivables: str = "10010"
    payables: str = "10020"
    sales: str = "10030"
    cost_of_goods: str = "10040"
    inventory: str = "10060"
    tax: str = "10070"  # sales tax collected and paid: one account (no VAT model)
    shipment_on_invoice: bool = True
    receipt_on_invoice: bool = True
    period_days: int = 30  # the length of an ageing period (BC's periodLengthFilter)


SETUP = PostingSetup()

# The chart of accounts the seed makes: (number, name, BC's glAccountCategory).
CHART = (
    (SETUP.cash, "Cash", "Assets"),
    (SETUP.receivables, "Receivables", "Assets"),
    (SETUP.payables, "Payables", "Liabilities"),
    (SETUP.sales, "Sales", "Income"),
    (SETUP.cost_of_goods, "Cost of goods", "Cost of Goods Sold"),
    ("10050", "Rent", "Expense"),
    (SETUP.inventory, "Inventory", "Assets"),
    (SETUP.tax, "Sales tax", "Liabilities"),
)

# Sets whose rows posting writes and keeps consistent with the ledger: a generic seeder must
# leave them to it (they would not add up to the open entries otherwise).
OWNED_SETS = frozenset(
    {
        "agedAccountsReceivables",
        "agedAccountsPayables",
        "customerFinancialDetails",
        "itemLedgerEntries",
        "salesShipments",
        "salesShipmentLines",
        "purchaseReceipts",
        "purchaseReceiptLines",
        "generalLedgerEntries",
        "customerPayments",
        "vendorPayments",
    }
)


@dataclass(frozen=True)
class Side:
    """Sales or purchase: who the party is and which way its amounts go."""

    party: str  # "customer" / "vendor"
    parties: str  # the set: customers / vendors
    party_field: str  # customerId / vendorId on documents and payments
    control: str  # the PostingSetup account the party's entries post to
    sign: int  # +1: an invoice is owed to us (sales); -1: we owe it (purchase)
    posted_copy: str  # shipment / receipt set
    aged: str  # agedAccountsReceivables / agedAccountsPayables

    def field(self, suffix: str) -> str:
        return f"{self.party}{suffix}"


SALES = Side(
    "customer",
    "customers",
    "customerId",
    "receivables",
    1,
    "salesShipments",
    "agedAccountsReceivables",
)
PURCHASE = Side(
    "vendor",
    "vendors",
    "vendorId",
    "payables",
    -1,
    "purchaseReceipts",
    "agedAccountsPayables",
)

# Number series of what posting creates (CRONUS-like; BC's real series are set up per company).
_SERIES = {
    "salesShipments": "S-SHP102001",
    "purchaseReceipts": "P-RCP107001",
    "customerPayments": "C-PMT1001",
    "vendorPayments": "V-PMT1001",
}
_DAYS = re.compile(r"^(\d+)D$")


def _at(place: Place, name: str) -> Place:
    return Place(place.route, catalog.get(name), place.company_id)


def side_of(set_name: str) -> Side:
    return PURCHASE if set_name.startswith(("purchase", "vendor")) else SALES


def _today() -> str:
    return date.today().isoformat()


def _posting_date(header: Row) -> str:
    value = str(header.get("postingDate") or BLANK_DATE)
    return _today() if value == BLANK_DATE else value


def due_date(records: Records, place: Place, header: Row, posting_date: str) -> str:
    """The header's dueDate, or the posting date plus the payment terms' days ("30D")."""
    given = str(header.get("dueDate") or BLANK_DATE)
    if given != BLANK_DATE:
        return given
    terms_id = header.get("paymentTermsId")
    terms = records.find(_at(place, "paymentTerms"), str(terms_id)) if terms_id else None
    match = _DAYS.match(str(terms["dueDateCalculation"])) if terms else None
    days = int(match.group(1)) if match else 0
    return (date.fromisoformat(posting_date) + timedelta(days=days)).isoformat()


def next_number(records: Records, place: Place, set_name: str) -> str:
    """The next number of a series posting owns (shipments, receipts, payments)."""
    entity_set = dataclasses.replace(catalog.get(set_name), number_series=_SERIES[set_name])
    return records.next_number(Place(place.route, entity_set, place.company_id))


# --- G/L, item and party ledgers -------------------------------------------------------------


@dataclass
class Journal:
    """The G/L lines of one posting: (account number, amount: debit > 0, credit < 0)."""

    lines: list[tuple[str, float]] = dataclasses.field(default_factory=list)

    def add(self, account: str, amount: float) -> None:
        if round(amount, 2):
            self.lines.append((account, round(amount, 2)))

    def balance_with(self, account: str) -> None:
        """Post the difference to `account`, so debits equal credits to the cent."""
        self.add(account, -sum(amount for _, amount in self.lines))


def _account(records: Records, place: Place, number: str) -> Row:
    row = records.find_by(_at(place, "accounts"), "number", number)
    if row is None:
        raise dialog(
            f"The G/L Account {number} that posting uses does not exist in this company; "
            "seed the company again (POST /_emulator/seed) or change emulator.posting.SETUP."
        )
    return row


def _next_entry(records: Records, place: Place, set_name: str) -> int:
    table = records.schema.table(place.route, set_name)
    last = records.conn.execute(
        sa.select(sa.func.max(table.c.entryNumber)).where(table.c._company == place.company_id)
    ).scalar()
    return int(last or 0) + 1


def write_gl(
    records: Records,
    place: Place,
    journal: Journal,
    *,
    posting_date: str,
    document_number: str,
    document_type: str,
    description: str,
) -> None:
    assert abs(sum(amount for _, amount in journal.lines)) < 0.005, journal.lines
    entries = _at(place, "generalLedgerEntries")
    number = _next_entry(records, place, "generalLedgerEntries")
    for offset, (account_number, amount) in enumerate(journal.lines):
        account = _account(records, place, account_number)
        records.insert(
            entries,
            {
                "entryNumber": number + offset,
                "postingDate": posting_date,
                "documentNumber": document_number,
                "documentType": document_type,
                "accountId": account["id"],
                "accountNumber": account["number"],
                "description": description,
                "debitAmount": max(amount, 0.0),
                "creditAmount": max(-amount, 0.0),
            },
        )


def _item_entry(records: Records, place: Place, item_id: str, values: dict[str, Any]) -> None:
    """One item ledger entry, and the item's inventory moved by its quantity. The inventory is
    a FlowField in BC: it changes without a new lastModifiedDateTime or ETag, so it is written
    straight to the table."""
    values["entryNumber"] = _next_entry(records, place, "itemLedgerEntries")
    records.insert(_at(place, "itemLedgerEntries"), values)
    items = records.table(_at(place, "items"))
    records.conn.execute(
        items.update()
        .where(items.c._company == place.company_id, items.c.id == item_id)
        .values(inventory=items.c.inventory + values["quantity"])
    )


def _ledger_entry(records: Records, place: Place, side: Side, values: dict[str, Any]) -> int:
    ledger = records.schema.ledger
    result = records.conn.execute(
        ledger.insert().values(
            company=place.company_id, party=side.party, remaining=values["amount"], **values
        )
    )
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def entries_of(records: Records, place: Place, side: Side, document_id: str) -> list[Row]:
    ledger = records.schema.ledger
    return list(
        records.conn.execute(
            sa.select(ledger).where(
                ledger.c.company == place.company_id,
                ledger.c.party == side.party,
                ledger.c.document_id == document_id,
            )
        ).mappings()
    )


def apply_to(records: Records, place: Place, side: Side, entry_seq: int, document_id: str) -> None:
    """Apply the open entry `entry_seq` to the open entries of the document `document_id` (an
    invoice): both remaining amounts move towards zero by the smaller of the two."""
    ledger = records.schema.ledger
    entry = (
        records.conn.execute(sa.select(ledger).where(ledger.c.seq == entry_seq)).mappings().one()
    )
    remaining = float(entry["remaining"])
    targets = entries_of(records, place, side, document_id)
    if not any(target["party_id"] == entry["party_id"] for target in targets):
        raise dialog(
            f"{entry['document_type']} {entry['document_number']} cannot be applied: the "
            f"invoice it names is not a posted document of the same {side.party}."
        )
    for target in targets:
        other = float(target["remaining"])
        if not remaining or not other or (remaining > 0) == (other > 0):
            continue
        applied = min(abs(remaining), abs(other))
        remaining = round(remaining - applied * (1 if remaining > 0 else -1), 2)
        other = round(other - applied * (1 if other > 0 else -1), 2)
        records.conn.execute(
            ledger.update().where(ledger.c.seq == target["seq"]).values(remaining=other)
        )
    records.conn.execute(
        ledger.update().where(ledger.c.seq == entry_seq).values(remaining=remaining)
    )
    _settle(records, place, side, document_id)
    _settle(records, place, side, str(entry["document_id"]))


def _settle(records: Records, place: Place, side: Side, document_id: str) -> None:
    """A posted invoice's remainingAmount follows its ledger entry; an Open invoice or credit
    memo that owes nothing more is Paid."""
    kinds = ("Invoices", "CreditMemos")
    prefix = "sales" if side is SALES else "purchase"
    for found_place in (_at(place, f"{prefix}{kind}") for kind in kinds):
        document = records.find(found_place, document_id)
        if document is None:
            continue
        entries = entries_of(records, place, side, document_id)
        remaining = abs(sum(float(entry["remaining"]) for entry in entries))
        changes: dict[str, Any] = {}
        if "remainingAmount" in found_place.entity_set.field_names:
            changes["remainingAmount"] = round(remaining, 2)
        if document["status"] == "Open" and remaining < 0.005:
            changes["status"] = "Paid"
        if changes:
            records.update(found_place, document, changes)


# --- documents -------------------------------------------------------------------------------


def _lines(records: Records, place: Place, header: Row) -> list[Row]:
    line_set = place.entity_set.lines
    assert line_set, place.name
    return records.children(_at(place, line_set), "documentId", str(header["id"]))


def _party(records: Records, place: Place, side: Side, header: Row) -> Row:
    party = records.find(_at(place, side.parties), str(header.get(side.party_field)))
    if party is None:
        raise dialog(
            f"The {side.party} of {place.entity_set.entity} {header['number']} is missing."
        )
    if str(party.get("blocked", "")).strip() in ("Invoice", "All"):
        raise dialog(
            f"You cannot post this document: {side.party} {party['number']} is blocked "
            f"({party['blocked']})."
        )
    return party


def post_document(
    records: Records,
    place: Place,
    header: Row,
    *,
    status: str = "Open",
    order: tuple[Place, Row] | None = None,
) -> Row:
    """Post the draft invoice or credit memo `header` in `place`: its ledger entry (applied to
    the invoice a credit memo names), G/L entries, item ledger entries and shipment/receipt.
    Returns the posted header, with status `status`.

    `order`: the order being shipped (received) and invoiced; it always gets a shipment
    (receipt), made from its own lines.
    """
    side = side_of(place.name)
    credit = "CreditMemo" in place.entity_set.entity
    lines = [line for line in _lines(records, place, header) if line["lineType"] != "Comment"]
    if not any(float(line["quantity"] or 0) for line in lines):
        raise dialog("There is nothing to post.")
    party = _party(records, place, side, header)
    posting_date = _posting_date(header)
    due = due_date(records, place, header, posting_date)
    document_type = "Credit Memo" if credit else "Invoice"
    # +1 when the party owes us more after this document (sales invoice), -1 when less
    direction = side.sign * (-1 if credit else 1)
    number = str(header["number"])
    total = float(header["totalAmountIncludingTax"])
    item_lines = [line for line in lines if line["lineType"] == "Item"]
    wants_copy = SETUP.shipment_on_invoice if side is SALES else SETUP.receipt_on_invoice
    copy_number = None
    if item_lines and not credit and (order is not None or wants_copy):
        copy_number = _posted_copy(records, order or (place, header), side, posting_date)
    journal = _document_journal(records, place, side, header, lines, direction)
    write_gl(
        records,
        place,
        journal,
        posting_date=posting_date,
        document_number=number,
        document_type=document_type,
        description=f"{document_type} {number}",
    )
    kind = "Sales" if side is SALES else "Purchase"
    copy_type = "Sales Shipment" if side is SALES else "Purchase Receipt"
    for line in item_lines:
        _post_item_line(
            records,
            place,
            side,
            line,
            party,
            credit=credit,
            posting_date=posting_date,
            document=(copy_number, copy_type)
            if copy_number
            else (number, f"{kind} {document_type}"),
        )
    entry = _ledger_entry(
        records,
        place,
        side,
        {
            "party_id": party["id"],
            "document_type": document_type,
            "document_id": header["id"],
            "document_number": number,
            "posting_date": posting_date,
            "due_date": due,
            "amount": round(direction * total, 2),
            "amount_excluding_tax": round(direction * float(header["totalAmountExcludingTax"]), 2),
        },
    )
    changes: dict[str, Any] = {"status": status, "postingDate": posting_date, "dueDate": due}
    if "remainingAmount" in place.entity_set.field_names:
        changes["remainingAmount"] = round(total, 2)
    records.update(place, header, changes)
    applies_to = header.get("invoiceId")
    if credit and applies_to not in (None, "", BLANK_GUID):
        apply_to(records, place, side, entry, str(applies_to))
    refresh_parties(records, place, side, [str(party["id"])])
    return records.get(place, str(header["id"]))


def _document_journal(
    records: Records, place: Place, side: Side, header: Row, lines: Sequence[Row], direction: int
) -> Journal:
    """The G/L lines of a document: each line against sales (purchases: inventory) or its own
    account, the header discount, tax, cost of goods sold for sold items, and the party's
    receivables (payables) account for the balance."""
    journal = Journal()
    default_account = SETUP.sales if side is SALES else SETUP.inventory
    for line in lines:
        account = default_account
        if line["lineType"] == "Account" and line["accountId"] not in (None, BLANK_GUID):
            account = str(records.get(_at(place, "accounts"), str(line["accountId"]))["number"])
        journal.add(account, -direction * float(line["amountExcludingTax"]))
        if line["lineType"] == "Item" and side is SALES:
            cost = _line_cost(records, place, line)
            journal.add(SETUP.cost_of_goods, direction * cost)
            journal.add(SETUP.inventory, -direction * cost)
    journal.add(default_account, direction * float(header["discountAmount"] or 0))
    journal.add(SETUP.tax, -direction * float(header["totalTaxAmount"]))
    journal.balance_with(getattr(SETUP, side.control))
    return journal


def _line_cost(records: Records, place: Place, line: Row) -> float:
    item = records.find(_at(place, "items"), str(line["itemId"]))
    unit_cost = float(item["unitCost"]) if item else 0.0
    return round(float(line["quantity"]) * unit_cost, 2)


def _post_item_line(
    records: Records,
    place: Place,
    side: Side,
    line: Row,
    party: Row,
    *,
    credit: bool,
    posting_date: str,
    document: tuple[str, str],
) -> None:
    """The item ledger entry of one item line. With a shipment or receipt BC's entry names it
    (document type Sales Shipment / Purchase Receipt), otherwise the invoice or credit memo."""
    way = -1 if credit else 1
    quantity = float(line["quantity"])
    amount = float(line["amountExcludingTax"])
    if side is SALES:
        moved, sales, cost = -quantity, amount, -_line_cost(records, place, line)
    else:
        moved, sales, cost = quantity, 0.0, amount
    _item_entry(
        records,
        place,
        str(line["itemId"]),
        {
            "itemNumber": line["lineObjectNumber"],
            "postingDate": posting_date,
            "entryType": "Sale" if side is SALES else "Purchase",
            "sourceNumber": party["number"],
            "sourceType": side.party.title(),
            "documentNumber": document[0],
            "documentType": document[1],
            "description": line["description"],
            "quantity": way * moved,
            "salesAmountActual": way * sales,
            "costAmountActual": way * cost,
        },
    )


def _posted_copy(records: Records, source: tuple[Place, Row], side: Side, posting_date: str) -> str:
    """The posted shipment (sales) or receipt (purchase) of a document or order, with the
    header and line fields both sets share; returns its number."""
    place, header = source
    target = _at(place, side.posted_copy)
    shared = set(place.entity_set.field_names) & set(target.entity_set.field_names)
    values = {name: header[name] for name in shared - {"id", "number", "lastModifiedDateTime"}}
    values.update(number=next_number(records, place, side.posted_copy), postingDate=posting_date)
    if place.name.endswith("Orders"):
        values["orderNumber"] = header["number"]
    copy = records.insert(target, values)
    source_lines = _at(place, str(place.entity_set.lines))
    copy_lines = _at(place, side.posted_copy.removesuffix("s") + "Lines")
    names = set(copy_lines.entity_set.field_names)
    price = "unitPrice" if side is SALES else "unitCost"
    for line in records.children(source_lines, "documentId", str(header["id"])):
        copied = {name: line[name] for name in names & set(line.keys()) - {"id", "documentId"}}
        copied[price] = line[documents.price_field(source_lines.entity_set)]
        copied["documentId"] = copy["id"]
        if "documentNo" in names:
            copied["documentNo"] = copy["number"]
        records.insert(copy_lines, copied)
    return str(copy["number"])


# --- general journals ------------------------------------------------------------------------


def post_general_journal(records: Records, place: Place, journal: Row) -> None:
    """``journals(..)/Microsoft.NAV.post``: each line's amount to its G/L account, against its
    balancing account (or the journal's) when it has one; every document number must balance
    on its posting date, as BC requires, or nothing is posted. The lines leave the journal.
    Lines on customer or vendor accounts are not emulated (only G/L accounts)."""
    line_place = _at(place, "journalLines")
    lines = records.children(line_place, "journalId", str(journal["id"]))
    if not lines:
        raise dialog("There is nothing to post.")
    batches: dict[tuple[str, str], Journal] = {}
    descriptions: dict[tuple[str, str], str] = {}
    for line in lines:
        if line["accountType"] != "G/L Account":
            raise not_emulated_line(line)
        if not line["documentNumber"]:
            raise dialog(f"Document No. must have a value in journal line {line['lineNumber']}.")
        key = (_posting_date(line), str(line["documentNumber"]))
        batch = batches.setdefault(key, Journal())
        descriptions.setdefault(key, str(line["description"]))
        amount = float(line["amount"])
        batch.add(_line_account(records, place, line["accountId"], line["accountNumber"]), amount)
        balancing = _line_account(
            records,
            place,
            line["balancingAccountId"]
            if line["balancingAccountId"] not in (None, "", BLANK_GUID)
            else journal["balancingAccountId"],
            line["balancingAccountNumber"],
            required=False,
        )
        if balancing:
            batch.add(balancing, -amount)
    for (posting_date, number), batch in batches.items():
        off = round(sum(amount for _, amount in batch.lines), 2)
        if off:
            raise dialog(
                f"Document No. {number} is out of balance by {off:.2f} on {posting_date}; check "
                "the posting dates, document numbers and amounts of the journal lines."
            )
    for (posting_date, number), batch in batches.items():
        write_gl(
            records,
            place,
            batch,
            posting_date=posting_date,
            document_number=number,
            document_type=" ",
            description=descriptions[(posting_date, number)],
        )
    for line in lines:
        records.delete(line_place, line)


def not_emulated_line(line: Row) -> Exception:
    return dialog(
        f"Journal line {line['lineNumber']}: posting to a {line['accountType']} account is not "
        "emulated; the emulator posts G/L account lines only."
    )


def _line_account(
    records: Records, place: Place, account_id: Any, number: Any, *, required: bool = True
) -> str:
    """The number of the G/L account a journal line names, by id or number."""
    accounts = _at(place, "accounts")
    if account_id not in (None, "", BLANK_GUID):
        return str(records.get(accounts, str(account_id))["number"])
    if number:
        return str(_account(records, place, str(number))["number"])
    if required:
        raise dialog("Account No. must have a value in the journal line.")
    return ""


# --- payments --------------------------------------------------------------------------------


def post_payments(records: Records, journal_place: Place, journal: Row) -> int:
    """Post every line of a customer (vendor) payment journal: a payment ledger entry against
    cash (the journal's balancing account when it has one), applied to the invoice the line
    names; the posted lines leave the journal, as in BC. Returns how many were posted.

    The sign of `amount` is UNCONFIRMED: Microsoft's v2.0 example posts 1500 for a payment
    received, its v1.0 example -1500; the emulator takes the amount's size as what was paid."""
    side = side_of(journal_place.name)
    payments = _at(journal_place, side.field("Payments"))
    lines = records.children(payments, "journalId", str(journal["id"]))
    cash = SETUP.cash
    if journal.get("balancingAccountId") not in (None, "", BLANK_GUID):
        cash = str(
            records.get(_at(journal_place, "accounts"), str(journal["balancingAccountId"]))[
                "number"
            ]
        )
    touched: list[str] = []
    for line in lines:
        party_id = str(line[side.party_field])
        if party_id in ("", BLANK_GUID):
            raise dialog(
                f"{side.field('Number')} must have a value in {payments.entity_set.entity} "
                f"line {line['lineNumber']}."
            )
        paid = abs(float(line["amount"]))
        if not paid:
            raise dialog(
                f"amount must not be 0 in {payments.entity_set.entity} line {line['lineNumber']}."
            )
        number = str(line["documentNumber"] or next_number(records, journal_place, payments.name))
        posting_date = _posting_date(line)
        journal_lines = Journal()
        journal_lines.add(cash, side.sign * paid)
        journal_lines.balance_with(getattr(SETUP, side.control))
        write_gl(
            records,
            journal_place,
            journal_lines,
            posting_date=posting_date,
            document_number=number,
            document_type="Payment",
            description=str(line["description"] or f"Payment {number}"),
        )
        entry = _ledger_entry(
            records,
            journal_place,
            side,
            {
                "party_id": party_id,
                "document_type": "Payment",
                "document_id": line["id"],
                "document_number": number,
                "posting_date": posting_date,
                "due_date": posting_date,
                "amount": round(-side.sign * paid, 2),
                "amount_excluding_tax": round(-side.sign * paid, 2),
            },
        )
        invoice = line["appliesToInvoiceId"]
        if invoice not in (None, "", BLANK_GUID):
            apply_to(records, journal_place, side, entry, str(invoice))
        records.delete(payments, line)
        touched.append(party_id)
    refresh_parties(records, journal_place, side, touched)
    return len(lines)


# --- balances and ageing ---------------------------------------------------------------------


_PAGE = 500  # parties refreshed at a time: bounds memory and the size of IN (...) lists


def refresh_parties(
    records: Records, place: Place, side: Side, party_ids: Iterable[str] | None
) -> None:
    """Work out the parties' balance, aged amounts and (customers) financial details again
    from their open ledger entries. `party_ids` None: every party of the company (the seed),
    a page of parties at a time."""
    table = records.table(_at(place, side.parties))
    balance = "balanceDue" if side is SALES else "balance"
    columns = [table.c[name] for name in ("_seq", "id", "number", "displayName", "currencyCode")]
    query = sa.select(*columns, table.c[balance]).where(table.c._company == place.company_id)
    as_of = date.today()
    if party_ids is None:
        everyone = sa.select(table.c.id).where(table.c._company == place.company_id)
        party_ids = [str(found) for found in records.conn.execute(everyone).scalars()]
    for chunk in _chunks(sorted(set(party_ids)), _PAGE):
        page = list(records.conn.execute(query.where(table.c.id.in_(chunk))).mappings())
        _refresh_page(records, place, side, page, as_of)


def _refresh_page(
    records: Records, place: Place, side: Side, parties: Sequence[Row], as_of: date
) -> None:
    ids = [str(party["id"]) for party in parties]
    open_entries = _open_entries(records, place, side, ids)
    sales = _sales_totals(records, place, ids) if side is SALES else {}
    table = records.table(_at(place, side.parties))
    field = "balanceDue" if side is SALES else "balance"
    aged_rows, details = [], []
    for party in parties:
        entries = open_entries.get(str(party["id"]), [])
        aged = _aged(side, party, entries, as_of)
        aged_rows.append(aged)
        if side is SALES:
            details.append(_financial_details(party, entries, sales.get(str(party["id"])), as_of))
        if float(party[field]) != aged["balanceDue"]:
            # a FlowField in BC: no new ETag or lastModifiedDateTime
            records.conn.execute(
                table.update()
                .where(table.c._seq == party["_seq"])
                .values({field: aged["balanceDue"]})
            )
    _replace_rows(records, _at(place, side.aged), aged_rows, side.party_field)
    if side is SALES:
        _replace_rows(records, _at(place, "customerFinancialDetails"), details, "id")


def _open_entries(
    records: Records, place: Place, side: Side, ids: Sequence[str] | None
) -> dict[str, list[Row]]:
    ledger = records.schema.ledger
    query = sa.select(ledger).where(
        ledger.c.company == place.company_id, ledger.c.party == side.party, ledger.c.remaining != 0
    )
    if ids is not None:
        query = query.where(ledger.c.party_id.in_(ids))
    found: dict[str, list[Row]] = {}
    for entry in records.conn.execute(query).mappings():
        found.setdefault(str(entry["party_id"]), []).append(entry)
    return found


def _buckets(entries: Iterable[Row], as_of: date, sign: int) -> list[float]:
    """[current, period 1, 2, 3]: not yet due, then overdue by up to 1, 2, more periods.
    BC's exact bucket edges (due date vs. posting date, inclusive ends) are UNCONFIRMED."""
    sums = [0.0, 0.0, 0.0, 0.0]
    for entry in entries:
        overdue = (as_of - date.fromisoformat(str(entry["due_date"]))).days
        bucket = 0 if overdue <= 0 else min(3, 1 + (overdue - 1) // SETUP.period_days)
        sums[bucket] += sign * float(entry["remaining"])
    return [round(value, 2) for value in sums]


def _aged(side: Side, party: Row, entries: Sequence[Row], as_of: date) -> dict[str, Any]:
    current, first, second, third = _buckets(entries, as_of, side.sign)
    days = SETUP.period_days
    row: dict[str, Any] = {
        side.party_field: party["id"],
        side.field("Number"): party["number"],
        "name": party["displayName"],
        "currencyCode": party["currencyCode"],
        "balanceDue": round(current + first + second + third, 2),
        "currentAmount": current,
        "period1Amount": first,
        "period2Amount": second,
        "period3Amount": third,
        "agedAsOfDate": as_of.isoformat(),
        "periodLengthFilter": f"{days}D",
    }
    if side is SALES:  # BC's labels are UNCONFIRMED; agedAccountsPayables has none
        row.update(
            period1Label=f"1-{days} days",
            period2Label=f"{days + 1}-{2 * days} days",
            period3Label=f"Over {2 * days} days",
        )
    return row


def _sales_totals(records: Records, place: Place, ids: Sequence[str] | None) -> dict[str, float]:
    """Each customer's invoiced less credited amount excluding tax, from its ledger entries."""
    ledger = records.schema.ledger
    query = (
        sa.select(ledger.c.party_id, sa.func.sum(ledger.c.amount_excluding_tax))
        .where(
            ledger.c.company == place.company_id,
            ledger.c.party == "customer",
            ledger.c.document_type != "Payment",
        )
        .group_by(ledger.c.party_id)
    )
    if ids is not None:
        query = query.where(ledger.c.party_id.in_(ids))
    return {str(party): float(total) for party, total in records.conn.execute(query)}


def _financial_details(
    party: Row, entries: Sequence[Row], sales: float | None, as_of: date
) -> dict[str, Any]:
    overdue = sum(
        float(e["remaining"]) for e in entries if date.fromisoformat(str(e["due_date"])) < as_of
    )
    return {
        "id": party["id"],
        "number": party["number"],
        "balance": round(sum(float(e["remaining"]) for e in entries), 2),
        "totalSalesExcludingTax": round(sales or 0.0, 2),
        "overdueAmount": round(overdue, 2),
    }


def _replace_rows(records: Records, place: Place, rows: Sequence[dict[str, Any]], key: str) -> None:
    """Write computed rows (one per party) in place of the ones there; a changed row gets a new
    version (ETag) and lastModifiedDateTime, an unchanged one keeps them."""
    if not rows:
        return
    table = records.table(place)
    ids = [str(row[key]) for row in rows]
    company = table.c._company == place.company_id
    old: dict[str, Row] = {}
    for chunk in _chunks(ids, _PAGE):
        query = sa.select(table).where(company, table.c.id.in_(chunk))
        old.update((str(row["id"]), row) for row in records.conn.execute(query).mappings())
    stamp = records.clock()
    fresh: list[dict[str, Any]] = []
    template = blank_record(place.entity_set)
    for row in rows:
        record = {**template, **row, "id": str(row[key])}
        before = old.get(record["id"])
        if before is not None:
            if all(
                before[name] == value
                for name, value in record.items()
                if name != "lastModifiedDateTime"
            ):
                continue
            records.conn.execute(table.delete().where(table.c._seq == before["_seq"]))
        if "lastModifiedDateTime" in table.c:
            record["lastModifiedDateTime"] = stamp
        record.update(
            _company=place.company_id, _version=1 + int(before["_version"] if before else 0)
        )
        fresh.append(record)
    if not fresh:
        return
    # one driver-level executemany: a scaled seed writes a row per customer and per vendor,
    # and SQLAlchemy's per-row parameter handling would double its time
    columns = list(fresh[0])
    names = ", ".join(f'"{name}"' for name in columns)
    marks = ", ".join("?" * len(columns))
    records.conn.exec_driver_sql(
        f'INSERT INTO "{table.name}" ({names}) VALUES ({marks})',
        [tuple(record[name] for name in columns) for record in fresh],
    )


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
