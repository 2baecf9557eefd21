"""Deterministic demo data: the same seed gives the same companies, ids, numbers and values.

Two companies: "CRONUS USA, Inc." and one whose name holds ``&``, ``'`` and a comma, so that
connectors meet the names that break naive URLs. `scale` sets row counts for the first company.
Rows are built as plain dicts and inserted with executemany: 100,000 customers take seconds.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from bcbridge import catalog
from bcbridge.emulator import changes, documents, lifecycle, posting, seed_sets
from bcbridge.emulator.records import Place, Records
from bcbridge.emulator.store import BLANK_GUID, STANDARD_ROUTE, Schema
from bcbridge.emulator.validation import blank_record

COMPANY_NAMES = ("CRONUS USA, Inc.", "Fabrikam & O'Brien, Ltd.")
DEFAULT_COUNTS = {
    "customers": 40,
    "vendors": 15,
    "items": 50,
    "contacts": 15,
    "employees": 8,
    "salesOrders": 8,
    "salesInvoices": 10,
    "salesQuotes": 4,
    "purchaseOrders": 4,
    "purchaseInvoices": 4,
    "salesCreditMemos": 2,
    "purchaseCreditMemos": 2,
    "generalLedgerEntries": 60,
}
# Seeded documents posted through emulator/posting.py (ledger entries, shipments, balances):
# at most this many invoices per company, so that a large `scale` stays fast (the others are
# drafts), and this many sales orders shipped and invoiced.
POSTED_INVOICES = 25
SHIPPED_ORDERS = 2
CITIES = [
    ("Atlanta", "GA", "31772"),
    ("Chicago", "IL", "61236"),
    ("Miami", "FL", "37125"),
    ("Seattle", "WA", "98101"),
    ("Boston", "MA", "02108"),
    ("Denver", "CO", "80202"),
]
WORDS = [
    "Adatum",
    "Trey",
    "Alpine",
    "Coho",
    "Relecloud",
    "Wingtip",
    "Contoso",
    "Litware",
    "Northwind",
    "Proseware",
    "Tailspin",
    "Woodgrove",
    "Fourth",
    "Blue Yonder",
    "Lucerne",
]
ITEMS = ["Desk", "Chair", "Lamp", "Bicycle", "Cabinet", "Table", "Monitor", "Speaker", "Tent"]
BASE_TIME = datetime(2025, 1, 1, tzinfo=UTC)
# Told what is being seeded: (what, done, total), every REPORT_EVERY rows, so a big `scale`
# shows a moving bar instead of a blank screen (`bcbridge emulator start`, `demo`).
SeedProgress = Callable[[str, int, int], None]
REPORT_EVERY = 1000
INSERT_CHUNK = 5000


class _Seeder:
    def __init__(
        self,
        schema: Schema,
        conn: sa.Connection,
        seed: int,
        company_index: int,
        progress: SeedProgress | None = None,
    ):
        self.schema, self.conn = schema, conn
        self.progress = progress
        self.rng = random.Random(seed * 1000 + company_index)
        self.seed = seed
        self.company_index = company_index
        self.company_id = str(
            uuid.uuid5(uuid.NAMESPACE_URL, f"bcbridge/{seed}/company/{company_index}")
        )
        self.counter = 0
        self.rows: dict[str, list[dict[str, Any]]] = {}
        self.blanks: dict[str, dict[str, Any]] = {}

    def uid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def stamp(self) -> str:
        self.counter += 1
        moment = BASE_TIME + timedelta(seconds=self.counter * 7 + self.company_index)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")

    def add(self, set_name: str, values: dict[str, Any]) -> dict[str, Any]:
        if set_name not in self.blanks:  # one blank record per set, copied for each row
            self.blanks[set_name] = blank_record(catalog.get(set_name))
        row = {**self.blanks[set_name], **values}
        if row["id"] == BLANK_GUID:
            row["id"] = self.uid()
        if "lastModifiedDateTime" in row:
            row["lastModifiedDateTime"] = self.stamp()
        row["_company"], row["_version"] = self.company_id, 1
        self.rows.setdefault(set_name, []).append(row)
        return row

    def counted(self, what: str, items: Sequence[str]) -> Iterator[str]:
        """`items`, telling `progress` how far through them the caller is."""
        for done, item in enumerate(items):
            if self.progress and done % REPORT_EVERY == 0:
                self.progress(f"seeding {what}", done, len(items))
            yield item
        if self.progress:
            self.progress(f"seeding {what}", len(items), len(items))

    def flush(self) -> None:
        total = sum(len(rows) for rows in self.rows.values())
        written = 0
        for set_name, rows in self.rows.items():
            table = self.schema.table(STANDARD_ROUTE, set_name)
            for start in range(0, len(rows), INSERT_CHUNK):
                chunk = rows[start : start + INSERT_CHUNK]
                self.conn.execute(table.insert(), chunk)
                written += len(chunk)
                if self.progress:
                    self.progress("writing rows", written, total)  # the SQL inserts
        self.rows.clear()

    def series(self, set_name: str, count: int) -> list[str]:
        series = catalog.get(set_name).number_series or ""
        digits = "".join(ch for ch in series if ch.isdigit())
        prefix = series[: len(series) - len(digits)]
        first = int(digits)
        if count:
            self.conn.execute(
                self.schema.number_series.insert().values(
                    company=self.company_id, set_name=set_name, last=first + count - 1
                )
            )
        return [f"{prefix}{first + i:0{len(digits)}d}" for i in range(count)]


def seed_data(
    schema: Schema,
    conn: sa.Connection,
    seed: int,
    scale: Mapping[str, int],
    progress: SeedProgress | None = None,
) -> None:
    for index, name in enumerate(COMPANY_NAMES):
        counts = {**DEFAULT_COUNTS, **(scale if index == 0 else {})}
        _seed_company(_Seeder(schema, conn, seed, index, progress), name, counts)


def _seed_company(s: _Seeder, name: str, counts: Mapping[str, int]) -> None:
    now = BASE_TIME.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    s.add(
        "companies",
        {
            "id": s.company_id,
            "name": name,
            "displayName": name,
            "systemVersion": "25.0",
            "businessProfileId": "",
            "systemCreatedAt": now,
            "systemModifiedAt": now,
        },
    )
    s.rows["companies"][0]["_company"] = s.company_id
    currencies = [
        s.add(
            "currencies",
            {
                "code": code,
                "displayName": label,
                "symbol": sym,
                "amountDecimalPlaces": "2:2",
                "amountRoundingPrecision": 0.01,
            },
        )
        for code, label, sym in (
            ("EUR", "Euro", "€"),
            ("GBP", "Pound", "£"),
            ("CAD", "Canadian dollar", "$"),
        )
    ]
    terms = [
        s.add("paymentTerms", {"code": code, "displayName": label, "dueDateCalculation": calc})
        for code, label, calc in (
            ("COD", "Cash on delivery", "0D"),
            ("14 DAYS", "Net 14 days", "14D"),
            ("30 DAYS", "Net 30 days", "30D"),
        )
    ]
    categories = [
        s.add("itemCategories", {"code": code.upper(), "displayName": code})
        for code in ("Furniture", "Misc", "Sports", "Electronics")
    ]
    customers = [
        _customer(s, number, currencies, terms)
        for number in s.counted("customers", s.series("customers", counts["customers"]))
    ]
    vendors = [
        s.add(
            "vendors",
            {
                "number": number,
                "displayName": f"{s.rng.choice(WORDS)} Supplies {number}",
                "city": s.rng.choice(CITIES)[0],
                "paymentTermsId": s.rng.choice(terms)["id"],
            },
        )
        for number in s.counted("vendors", s.series("vendors", counts["vendors"]))
    ]
    items = []
    for number in s.counted("items", s.series("items", counts["items"])):
        category = s.rng.choice(categories)
        price = round(s.rng.uniform(5, 900), 2)
        items.append(
            s.add(
                "items",
                {
                    "number": number,
                    "displayName": f"{s.rng.choice(WORDS)} {s.rng.choice(ITEMS)}",
                    "type": "Inventory",
                    "itemCategoryId": category["id"],
                    "itemCategoryCode": category["code"],
                    "unitPrice": price,
                    "unitCost": round(price * 0.6, 2),
                    "inventory": float(s.rng.randint(0, 500)),
                    "baseUnitOfMeasureCode": "PCS",
                },
            )
        )
    for number in s.counted("contacts", s.series("contacts", counts["contacts"])):
        s.add(
            "contacts",
            {
                "number": number,
                "type": "Person",
                "displayName": f"{s.rng.choice(WORDS)} Contact {number}",
            },
        )
    for number in s.counted("employees", s.series("employees", counts["employees"])):
        given, surname = s.rng.choice(WORDS), s.rng.choice(ITEMS)
        s.add(
            "employees",
            {
                "number": number,
                "givenName": given,
                "surname": surname,
                "displayName": f"{given} {surname}",
                "status": "Active",
                "employmentDate": "2020-01-01",
            },
        )
    accounts = [
        s.add(
            "accounts",
            {
                "number": number,
                "displayName": label,
                "category": category,
                "accountType": "Posting",
                "directPosting": True,
            },
        )
        for number, label, category in posting.CHART
    ]
    for entry in range(1, counts["generalLedgerEntries"] + 1):
        account = s.rng.choice(accounts[:6])
        amount = round(s.rng.uniform(10, 5000), 2)
        s.add(
            "generalLedgerEntries",
            {
                "entryNumber": entry,
                "postingDate": "2025-01-15",
                "documentNumber": f"G{entry:05d}",
                "documentType": "Invoice",
                "accountId": account["id"],
                "accountNumber": account["number"],
                "description": "Seeded entry",
                "debitAmount": amount if entry % 2 else 0.0,
                "creditAmount": 0.0 if entry % 2 else amount,
            },
        )
    cash = accounts[0]  # the lines balance against cash, so the journal can be posted
    journal = s.add(
        "journals",
        {
            "code": "DEFAULT",
            "displayName": "Default journal",
            "templateDisplayName": "GENERAL",
            "balancingAccountId": cash["id"],
            "balancingAccountNumber": cash["number"],
        },
    )
    for line_number in range(1, 4):
        account = s.rng.choice(accounts[:6])
        s.add(
            "journalLines",
            {
                "journalId": journal["id"],
                "journalDisplayName": "DEFAULT",
                "lineNumber": line_number * 10000,
                "accountType": "G/L Account",
                "accountId": account["id"],
                "accountNumber": account["number"],
                "postingDate": "2025-02-01",
                "documentNumber": f"J{line_number:04d}",
                "amount": 100.0 * line_number,
                "description": "Seeded journal line",
                "balanceAccountType": "G/L Account",
                "balancingAccountId": cash["id"],
                "balancingAccountNumber": cash["number"],
            },
        )
    for code, values in (("AREA", ("10", "20", "30")), ("DEPARTMENT", ("ADM", "PROD", "SALES"))):
        dimension = s.add("dimensions", {"code": code, "displayName": code.title()})
        for value in values:
            s.add(
                "dimensionValues",
                {
                    "code": value,
                    "dimensionId": dimension["id"],
                    "displayName": f"{code.title()} {value}",
                },
            )
    draft = {"status": "Draft"}
    invoice_count = counts["salesInvoices"]
    # half the invoices are posted: SHIPPED_ORDERS of them come from shipping orders
    to_post = min(invoice_count // 2, POSTED_INVOICES)
    shipped = min(SHIPPED_ORDERS, to_post)
    orders = _documents(s, "salesOrders", counts["salesOrders"] + shipped, customers, items, draft)
    drafts = invoice_count - to_post
    _documents(s, "salesInvoices", drafts, customers, items, draft)
    posted = _documents(
        s, "salesInvoices", to_post - shipped, customers, items, draft, numbers_from=drafts
    )
    _documents(s, "salesQuotes", counts["salesQuotes"], customers, items, draft)
    received = min(2, counts["purchaseInvoices"])  # one paid, one half paid
    purchase_orders = _documents(
        s, "purchaseOrders", counts["purchaseOrders"] + received, vendors, items, draft
    )
    _documents(s, "purchaseInvoices", counts["purchaseInvoices"] - received, vendors, items, draft)
    credit_memos = _documents(
        s, "salesCreditMemos", counts["salesCreditMemos"], customers, items, draft
    )
    if credit_memos and posted:  # the first credit memo corrects the first posted invoice
        _corrects(credit_memos[0], posted[0])
    _documents(s, "purchaseCreditMemos", counts["purchaseCreditMemos"], vendors, items, draft)
    for party, code, name in (
        ("customer", "CASHRCPT", "Cash receipts"),
        ("vendor", "PAYMENT", "Payments"),
    ):
        s.add(f"{party}PaymentJournals", {"code": code, "displayName": name})
    # every other set: generic, linked rows (made from the pools, so before they are flushed)
    seed_sets.seed_every_set(s, counts)
    s.flush()
    _post_seeded(
        s,
        posted,
        orders[:shipped],
        purchase_orders[:received],
        credit_memos[:1] if posted else [],
    )


def _customer(
    s: _Seeder, number: str, currencies: list[dict[str, Any]], terms: list[dict[str, Any]]
) -> dict[str, Any]:
    city, state, postcode = s.rng.choice(CITIES)
    currency = s.rng.choice([None, *currencies])
    word = s.rng.choice(WORDS)
    return s.add(
        "customers",
        {
            "number": number,
            "displayName": f"{word} {s.rng.choice(('Inc.', 'Ltd.', 'Corp.', '& Sons'))} {number}",
            "type": "Company",
            "addressLine1": f"{s.rng.randint(1, 999)} Main Street",
            "city": city,
            "state": state,
            "country": "US",
            "postalCode": postcode,
            "phoneNumber": f"555-{s.rng.randint(1000, 9999)}",
            "email": f"{word.lower().replace(' ', '')}{number.lower()}@example.com",
            "creditLimit": float(s.rng.choice((0, 5000, 10000))),
            "taxLiable": s.rng.random() < 0.5,
            "currencyId": currency["id"] if currency else BLANK_GUID,
            "currencyCode": currency["code"] if currency else "",
            "paymentTermsId": s.rng.choice(terms)["id"],
            "blocked": " ",
        },
    )


def _documents(
    s: _Seeder,
    set_name: str,
    count: int,
    parties: list[dict[str, Any]],
    items: list[dict[str, Any]],
    fixed: dict[str, Any],
    numbers_from: int = 0,
) -> list[dict[str, Any]]:
    """`count` documents with 1-4 item lines each; returns their headers."""
    if not count or not parties or not items:
        return []
    entity_set = catalog.get(set_name)
    numbers = (
        s.series(set_name, numbers_from + count)[numbers_from:]
        if not numbers_from
        else _continue_series(s, set_name, numbers_from, count)
    )
    line_set = catalog.get(str(entity_set.lines))
    price_field = documents.price_field(line_set)
    sales = "customerId" in entity_set.field_names
    headers = []
    for number in s.counted(set_name, numbers):
        party = s.rng.choice(parties)
        header = {"number": number, **fixed}
        if sales:
            header.update(
                customerId=party["id"],
                customerNumber=party["number"],
                customerName=party["displayName"],
                billToCustomerId=party["id"],
                billToCustomerNumber=party["number"],
                billToName=party["displayName"],
                sellToCity=party["city"],
            )
        else:
            header.update(
                vendorId=party["id"], vendorNumber=party["number"], vendorName=party["displayName"]
            )
        for date_field in (
            "orderDate",
            "invoiceDate",
            "documentDate",
            "creditMemoDate",
            "postingDate",
        ):
            if date_field in entity_set.field_names:
                header[date_field] = "2025-03-01"
        row = s.add(set_name, header)
        headers.append(row)
        total = tax_total = 0.0
        for sequence in range(1, s.rng.randint(1, 4) + 1):
            item = s.rng.choice(items)
            quantity = float(s.rng.randint(1, 10))
            price = item["unitPrice"] if price_field == "unitPrice" else item["unitCost"]
            amount = round(quantity * price, 2)
            tax = round(amount * documents.TAX_PERCENT / 100, 2)
            s.add(
                line_set.name,
                {
                    "documentId": row["id"],
                    "sequence": sequence * 10000,
                    "lineType": "Item",
                    "itemId": item["id"],
                    "lineObjectNumber": item["number"],
                    "description": item["displayName"],
                    "quantity": quantity,
                    price_field: price,
                    "amountExcludingTax": amount,
                    "taxPercent": documents.TAX_PERCENT,
                    "totalTaxAmount": tax,
                    "amountIncludingTax": round(amount + tax, 2),
                    "netAmount": amount,
                    "netTaxAmount": tax,
                    "netAmountIncludingTax": round(amount + tax, 2),
                },
            )
            total, tax_total = total + amount, tax_total + tax
        row.update(
            totalAmountExcludingTax=round(total, 2),
            totalTaxAmount=round(tax_total, 2),
            totalAmountIncludingTax=round(total + tax_total, 2),
        )
    return headers


def _corrects(credit_memo: dict[str, Any], invoice: dict[str, Any]) -> None:
    """The credit memo is for the invoice's customer and names the invoice."""
    for name in ("customerId", "customerNumber", "customerName", "billToCustomerId"):
        credit_memo[name] = invoice[name]
    for name in ("billToCustomerNumber", "billToName", "sellToCity"):
        credit_memo[name] = invoice[name]
    credit_memo.update(invoiceId=invoice["id"], invoiceNumber=invoice["number"])


def _post_seeded(
    s: _Seeder,
    invoices: list[dict[str, Any]],
    orders: list[dict[str, Any]],
    purchase_orders: list[dict[str, Any]],
    credit_memos: list[dict[str, Any]],
) -> None:
    """Post seeded documents through the emulator's own posting, so a posted invoice has its
    ledger entries, G/L entries and shipment, and every balance adds up to the open entries:
    the invoices, the shipped orders, the received purchase order, a credit memo applied to
    an invoice, and a customer and a vendor payment (one more of each is left unposted)."""
    records = Records(s.schema, s.conn, ids=s.uid, clock=s.stamp)

    def place(name: str) -> Place:
        return Place(STANDARD_ROUTE, catalog.get(name), s.company_id)

    def run(action: lifecycle.ActionHandler, name: str, row: dict[str, Any]) -> None:
        action(records, place(name), records.get(place(name), row["id"]))

    for invoice in invoices:
        run(lifecycle.post, "salesInvoices", invoice)
    for order in orders:
        run(lifecycle.ship_and_invoice, "salesOrders", order)
    for order in purchase_orders:
        run(lifecycle.receive_and_invoice, "purchaseOrders", order)
    for credit_memo in credit_memos:
        run(lifecycle.post, "salesCreditMemos", credit_memo)
    _seed_payments(records, place, posting.SALES, "salesInvoices")
    _seed_payments(records, place, posting.PURCHASE, "purchaseInvoices")
    posting.refresh_parties(records, place("customers"), posting.SALES, None)
    posting.refresh_parties(records, place("vendors"), posting.PURCHASE, None)
    changes.forget(s.conn)


def _seed_payments(
    records: Records, place: Callable[[str], Place], side: posting.Side, invoices: str
) -> None:
    """Pay the last open posted invoice in full (posted), and leave a payment of half the next
    one in the journal (not posted)."""
    journals = place(f"{side.party}PaymentJournals")
    journal = records.find_by(journals, "code", "CASHRCPT" if side is posting.SALES else "PAYMENT")
    table = records.table(place(invoices))
    open_invoices = list(
        records.conn.execute(
            sa.select(table)
            .where(table.c._company == journals.company_id, table.c.status == "Open")
            .order_by(table.c._seq.desc())
            .limit(2)
        ).mappings()
    )
    if journal is None or not open_invoices:
        return
    payments = place(side.field("Payments"))
    for index, invoice in enumerate(open_invoices):
        owed = invoice.get("remainingAmount", invoice["totalAmountIncludingTax"])
        amount = float(owed) * (1 if index == 0 else 0.5)
        records.insert(
            payments,
            {
                "journalId": journal["id"],
                "journalDisplayName": journal["code"],
                "lineNumber": 10000,
                side.party_field: invoice[side.party_field],
                side.field("Number"): invoice[side.field("Number")],
                "postingDate": "2025-03-15",
                "amount": round(amount, 2),
                "appliesToInvoiceId": invoice["id"],
                "appliesToInvoiceNumber": invoice["number"],
                "description": f"Payment of {invoice['number']}",
            },
        )
        if index == 0:
            posting.post_payments(records, journals, journal)


def _continue_series(s: _Seeder, set_name: str, already: int, count: int) -> list[str]:
    ns = s.schema.number_series
    key = (ns.c.company == s.company_id) & (ns.c.set_name == set_name)
    last = int(s.conn.execute(sa.select(ns.c.last).where(key)).scalar() or 0)
    series = catalog.get(set_name).number_series or ""
    digits = "".join(ch for ch in series if ch.isdigit())
    prefix = series[: len(series) - len(digits)]
    s.conn.execute(ns.update().where(key).values(last=last + count))
    return [f"{prefix}{last + 1 + i:0{len(digits)}d}" for i in range(count)]
