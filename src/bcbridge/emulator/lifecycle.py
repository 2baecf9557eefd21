"""Document life cycles: the bound actions that post, cancel, correct and send documents.

Every bound action of BC API v2.0's $metadata (21, in `catalog_reference.json`) is in `ACTIONS`:

| set                 | action                   | what the emulator does                          |
|---------------------|--------------------------|-------------------------------------------------|
| salesInvoices       | post                     | posts the draft (posting.post_document): Open   |
|                     | postAndSend              | post, then send the posted invoice              |
|                     | send                     | records the e-mail (draft or posted)            |
|                     | cancel                   | posts a corrective credit memo applied to the   |
|                     |                          | invoice; the invoice becomes Canceled           |
|                     | cancelAndSend            | cancel, then send the corrective credit memo    |
|                     | makeCorrectiveCreditMemo | a draft credit memo with the invoice's lines    |
| salesCreditMemos    | post, postAndSend, send  | as for invoices (a posted credit memo: Open)    |
|                     | cancel, cancelAndSend    | posts a corrective invoice applied to the       |
|                     |                          | credit memo; the credit memo becomes Canceled   |
| purchaseInvoices    | post                     | posts the draft                                 |
| purchaseCreditMemos | post, cancel             | as for sales credit memos                       |
| salesOrders         | shipAndInvoice           | shipment + posted invoice; the order is deleted |
| purchaseOrders      | receiveAndInvoice        | receipt + posted invoice; the order is deleted  |
| salesQuotes         | makeInvoice, makeOrder   | documents.make_document                         |
|                     | send                     | status Sent, sentDate, and the e-mail recorded  |
| journals            | post                     | posting.post_general_journal                    |
| jobQueueEntries     | restart                  | status Ready, the error cleared                 |

A wrong state answers 400 ``Application_DialogException``, BC's answer to an AL ``Error()``;
the texts are the emulator's own wording of BC's checks. Whether the corrective documents BC
makes keep these exact statuses (Corrective on the new one, Canceled on the old) is taken from
BC's status enums (``Canceled``, ``Corrective``), not from a recorded answer: UNCONFIRMED.

The emulator sends no e-mail: a send writes a row that ``GET /_emulator/sent`` lists
(`sent_messages`). BC refuses to send when e-mail is not set up; `EMAIL_SET_UP` False makes
the emulator refuse the same way (the text of BC's error is UNCONFIRMED).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date
from typing import Any

import sqlalchemy as sa

from bcbridge import catalog
from bcbridge.emulator import documents, posting
from bcbridge.emulator.errors import dialog
from bcbridge.emulator.records import Place, Records
from bcbridge.emulator.store import BLANK_GUID, STANDARD_ROUTE, Row, Schema

__all__ = ["ACTIONS", "EMAIL_SET_UP", "clear_sent", "post_payment_journal", "sent_messages"]

ActionHandler = Callable[[Records, Place, Row], None]

EMAIL_SET_UP = True
DRAFT = ("Draft", "In Review")


def _at(place: Place, name: str) -> Place:
    return Place(place.route, catalog.get(name), place.company_id)


def _kind(place: Place) -> str:
    return "credit memo" if "CreditMemo" in place.entity_set.entity else "invoice"


def _require_draft(place: Place, row: Row) -> None:
    """`post` runs on drafts only; BC answers a posted document with its "draft only" error."""
    if row.get("status") not in DRAFT:
        raise dialog(f"The action can be applied to a draft {_kind(place)} only.")


def _require_cancellable(records: Records, place: Place, row: Row) -> None:
    status = row.get("status")
    if status in DRAFT:
        raise dialog(f"The action can be applied to a posted {_kind(place)} only.")
    if status == "Canceled":
        raise dialog(f"The posted {_kind(place)} {row['number']} has already been cancelled.")
    if status == "Corrective":
        raise dialog(
            f"The posted {_kind(place)} {row['number']} is a corrective document; it cannot be "
            "cancelled."
        )
    if status == "Paid" or _is_applied(records, place, row):
        raise dialog(
            f"You cannot cancel the posted {_kind(place)} {row['number']} because it is fully "
            "or partially paid or applied."
        )


def _is_applied(records: Records, place: Place, row: Row) -> bool:
    """Part of the document's ledger entry has been paid or applied. (Whether BC unapplies a
    credit memo from its invoice by itself when the credit memo is cancelled is UNCONFIRMED;
    the emulator refuses, as for a paid invoice.)"""
    side = posting.side_of(place.name)
    entries = posting.entries_of(records, place, side, str(row["id"]))
    return any(abs(e["remaining"] - e["amount"]) >= 0.005 for e in entries)


# --- post ------------------------------------------------------------------------------------


def post(records: Records, place: Place, row: Row) -> None:
    _require_draft(place, row)
    posting.post_document(records, place, row)


def ship_and_invoice(records: Records, place: Place, row: Row) -> None:
    """Sales order: a posted shipment and a posted invoice; BC then deletes the order, which is
    fully shipped and invoiced (partial quantities are not emulated)."""
    _invoice_order(records, place, row, "salesInvoices")


def receive_and_invoice(records: Records, place: Place, row: Row) -> None:
    """Purchase order: a posted receipt and a posted invoice; the order is deleted."""
    _invoice_order(records, place, row, "purchaseInvoices")


def _invoice_order(records: Records, place: Place, row: Row, invoices: str) -> None:
    if not records.children(_at(place, str(place.entity_set.lines)), "documentId", row["id"]):
        raise dialog("There is nothing to post.")
    draft = documents.copy_document(
        records,
        place,
        row,
        invoices,
        {
            "status": "Draft",
            "orderId": row["id"],
            "orderNumber": row["number"],
            "invoiceDate": row["orderDate"],
        },
    )
    invoice_place = _at(place, invoices)
    posting.post_document(
        records, invoice_place, records.get(invoice_place, draft["id"]), order=(place, row)
    )
    documents.delete_document(records, place, row)


# --- cancel and correct ----------------------------------------------------------------------

# the document a cancel makes: invoice -> credit memo, credit memo -> invoice
_OPPOSITE = {
    "salesInvoices": "salesCreditMemos",
    "salesCreditMemos": "salesInvoices",
    "purchaseInvoices": "purchaseCreditMemos",
    "purchaseCreditMemos": "purchaseInvoices",
}


def cancel(records: Records, place: Place, row: Row) -> None:
    _cancel(records, place, row)


def _cancel(records: Records, place: Place, row: Row) -> tuple[Place, Row]:
    """Post the opposite document (status Corrective) with the same lines and apply it: the
    cancelled document is Canceled and owes nothing. Returns the corrective document."""
    _require_cancellable(records, place, row)
    target = _at(place, _OPPOSITE[place.name])
    today = date.today().isoformat()
    overrides: dict[str, Any] = {"status": "Draft", "postingDate": today, "dueDate": today}
    if "invoiceId" in target.entity_set.field_names:  # a credit memo names the invoice
        overrides.update(invoiceId=row["id"], invoiceNumber=row["number"], creditMemoDate=today)
    else:
        overrides["invoiceDate"] = today
    draft = documents.copy_document(records, place, row, target.name, overrides)
    corrective = posting.post_document(
        records, target, records.get(target, draft["id"]), status="Corrective"
    )
    if "invoiceId" not in target.entity_set.field_names:
        # a corrective invoice settles the credit memo it cancels
        side = posting.side_of(place.name)
        (entry,) = posting.entries_of(records, target, side, str(corrective["id"]))
        posting.apply_to(records, target, side, int(entry["seq"]), str(row["id"]))
        posting.refresh_parties(records, place, side, [str(row[side.party_field])])
    changes: dict[str, Any] = {"status": "Canceled"}
    if "remainingAmount" in place.entity_set.field_names:
        changes["remainingAmount"] = 0.0
    records.update(place, records.get(place, row["id"]), changes)
    return target, records.get(target, corrective["id"])


def make_corrective_credit_memo(records: Records, place: Place, row: Row) -> None:
    """A draft credit memo with the posted invoice's lines, naming the invoice (BC's "Create
    corrective credit memo"); nothing is posted."""
    if row.get("status") in DRAFT:
        raise dialog("The action can be applied to a posted invoice only.")
    if row.get("status") == "Canceled":
        raise dialog(
            f"You cannot create a corrective credit memo for the posted invoice {row['number']} "
            "because it has been cancelled."
        )
    documents.copy_document(
        records,
        place,
        row,
        "salesCreditMemos",
        {
            "status": "Draft",
            "invoiceId": row["id"],
            "invoiceNumber": row["number"],
            "creditMemoDate": date.today().isoformat(),
            "postingDate": date.today().isoformat(),
            "dueDate": date.today().isoformat(),
        },
    )


# --- send ------------------------------------------------------------------------------------


def send(records: Records, place: Place, row: Row) -> None:
    _record_send(records, place, row, "send")


def post_and_send(records: Records, place: Place, row: Row) -> None:
    _require_email()
    _require_draft(place, row)
    posted = posting.post_document(records, place, row)
    _record_send(records, place, posted, "postAndSend")


def cancel_and_send(records: Records, place: Place, row: Row) -> None:
    """BC sends the corrective document the cancel made."""
    _require_email()
    target, corrective = _cancel(records, place, row)
    _record_send(records, target, corrective, "cancelAndSend")


def send_quote(records: Records, place: Place, row: Row) -> None:
    _record_send(records, place, row, "send")
    records.update(
        place, records.get(place, row["id"]), {"status": "Sent", "sentDate": records.clock()}
    )


def _require_email() -> None:
    if not EMAIL_SET_UP:
        raise dialog("E-mail is not set up: the document cannot be sent (emulator.EMAIL_SET_UP).")


def _record_send(records: Records, place: Place, row: Row, action: str) -> None:
    _require_email()
    side = posting.side_of(place.name)
    recipient = str(row.get("email") or "")
    party_id = row.get(side.party_field)
    if not recipient and party_id not in (None, "", BLANK_GUID):
        party = records.find(_at(place, side.parties), str(party_id))
        recipient = str(party["email"]) if party is not None else ""
    if not recipient:
        raise dialog(
            f"The {side.party} of {place.entity_set.entity} {row['number']} has no e-mail "
            "address to send it to."
        )
    records.conn.execute(
        records.schema.sent.insert().values(
            company=place.company_id,
            set_name=place.name,
            document_id=row["id"],
            document_number=row["number"],
            action=action,
            recipient=recipient,
            sent_at=records.clock(),
        )
    )


def sent_messages(schema: Schema, conn: sa.Connection) -> list[dict[str, str]]:
    """What the send actions would have e-mailed, oldest first (``GET /_emulator/sent``)."""
    sent = schema.sent
    rows = conn.execute(sa.select(sent).order_by(sent.c.seq)).mappings()
    return [
        {
            "companyId": row["company"],
            "entitySet": row["set_name"],
            "documentId": row["document_id"],
            "documentNumber": row["document_number"],
            "action": row["action"],
            "recipient": row["recipient"],
            "sentAt": row["sent_at"],
        }
        for row in rows
    ]


def clear_sent(schema: Schema, conn: sa.Connection) -> None:
    conn.execute(schema.sent.delete())


# --- job queue -------------------------------------------------------------------------------


def restart_job(records: Records, place: Place, row: Row) -> None:
    """BC's restart puts the entry back to Ready with its error cleared (no job runs here)."""
    records.update(place, row, {"status": "Ready", "errorMessage": ""})


ACTIONS: Mapping[tuple[str, str], ActionHandler] = {
    **documents.ACTIONS,
    ("salesInvoices", "post"): post,
    ("salesInvoices", "postAndSend"): post_and_send,
    ("salesInvoices", "send"): send,
    ("salesInvoices", "cancel"): cancel,
    ("salesInvoices", "cancelAndSend"): cancel_and_send,
    ("salesInvoices", "makeCorrectiveCreditMemo"): make_corrective_credit_memo,
    ("salesCreditMemos", "post"): post,
    ("salesCreditMemos", "postAndSend"): post_and_send,
    ("salesCreditMemos", "send"): send,
    ("salesCreditMemos", "cancel"): cancel,
    ("salesCreditMemos", "cancelAndSend"): cancel_and_send,
    ("purchaseInvoices", "post"): post,
    ("purchaseCreditMemos", "post"): post,
    ("purchaseCreditMemos", "cancel"): cancel,
    ("salesOrders", "shipAndInvoice"): ship_and_invoice,
    ("purchaseOrders", "receiveAndInvoice"): receive_and_invoice,
    ("salesQuotes", "send"): send_quote,
    ("jobQueueEntries", "restart"): restart_job,
    ("journals", "post"): posting.post_general_journal,
}


# --- payment journals ------------------------------------------------------------------------


def post_payment_journal(schema: Schema, conn: sa.Connection, journal_id: str) -> int:
    """Post the customer or vendor payment journal `journal_id` (any company); returns how many
    payments were posted. BC API v2.0 has no bound action for this (BC users post payment
    journals in the client or through a custom API), so the emulator offers it as a control
    endpoint, ``POST /_emulator/payments/post``."""
    records = Records(schema, conn)
    for name in documents.PAYMENT_JOURNALS:
        entity_set = catalog.get(name)
        table = schema.table(STANDARD_ROUTE, name)
        found = conn.execute(sa.select(table).where(table.c.id == journal_id.lower())).mappings()
        journal = found.first()
        if journal is not None:
            place = Place(STANDARD_ROUTE, entity_set, str(journal["_company"]))
            return posting.post_payments(records, place, journal)
    raise dialog(f"journalId: no customer or vendor payment journal has the id {journal_id}")


# --- posted documents stay as posted ---------------------------------------------------------

POSTABLE = ("salesInvoices", "purchaseInvoices", "salesCreditMemos", "purchaseCreditMemos")


def refuse_posted_change(records: Records, place: Place, row: Row) -> None:
    """A posted invoice or credit memo, and its lines, can no longer be changed or deleted:
    the ledger entries posting made stand for it. (BC refuses a change to a posted invoice;
    the wording here, and BC's rules for deleting posted documents, which depend on its setup,
    are UNCONFIRMED: the emulator refuses every change.)"""
    header, header_place = row, place
    if place.entity_set.parent in POSTABLE and place.entity_set.parent_field == "documentId":
        header_place = _at(place, place.entity_set.parent)
        found = records.find(header_place, str(row.get("documentId") or place.parent_id or ""))
        if found is None:
            return
        header = found
    if header_place.name in POSTABLE and header.get("status") not in (None, *DRAFT):
        raise dialog(
            f"The {_kind(header_place)} {header['number']} has been posted and can no longer "
            "be modified."
        )
