"""Edm.Stream properties: attachment content, pictures and a document's PDF (bc-api.md §3.1).

Content is kept apart from the records, in the ``_streams`` table (one row per record and stream
property), so a list of records never reads it. A picture and a PDF document exist in BC for
every record that can have one; the emulator makes their row the first time one is asked for
(`materialize`). A PDF is never stored: it is drawn from the document and its lines when read.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from bcbridge import catalog
from bcbridge.catalog import EntitySet
from bcbridge.emulator.records import Place, Records
from bcbridge.emulator.store import Row

PICTURE_PARENTS: Mapping[str, str] = {
    "items": "Item",
    "customers": "Customer",
    "vendors": "Vendor",
    "employees": "Employee",
    "contacts": "Contact",
}
PDF_PARENTS: Mapping[str, str] = {
    "salesInvoices": "Sales Invoice",
    "salesQuotes": "Sales Quote",
    "salesCreditMemos": "Sales Credit Memo",
    "purchaseInvoices": "Purchase Invoice",
    "purchaseCreditMemos": "Purchase Credit Memo",
}
# The sets whose single row per parent record BC makes by itself (the row's id is the parent's).
_VIRTUAL: Mapping[str, Mapping[str, str]] = {
    "pictures": PICTURE_PARENTS,
    "pdfDocument": PDF_PARENTS,
}


@dataclass(frozen=True)
class Content:
    data: bytes
    content_type: str


def _content_key(table: sa.Table, place: Place, record_id: str, prop: str | None) -> Any:
    """The record's stream `prop`; all of the record's streams when `prop` is None."""
    clauses = [
        table.c.route == place.route,
        table.c.set_name == place.name,
        table.c.company == place.company_id,
        table.c.record_id == record_id,
    ]
    if prop is not None:
        clauses.append(table.c.property == prop)
    return sa.and_(*clauses)


def read(records: Records, place: Place, record_id: str, prop: str) -> Content | None:
    table = records.schema.streams
    stmt = sa.select(table.c.content, table.c.content_type).where(
        _content_key(table, place, record_id, prop)
    )
    found = records.conn.execute(stmt).first()
    return Content(bytes(found.content), str(found.content_type)) if found else None


def write(records: Records, place: Place, record_id: str, prop: str, content: Content) -> None:
    remove(records, place, record_id, prop)
    records.conn.execute(
        records.schema.streams.insert().values(
            route=place.route,
            set_name=place.name,
            company=place.company_id,
            record_id=record_id,
            property=prop,
            content_type=content.content_type,
            content=content.data,
        )
    )


def remove(records: Records, place: Place, record_id: str, prop: str | None = None) -> None:
    table = records.schema.streams
    records.conn.execute(table.delete().where(_content_key(table, place, record_id, prop)))


# --- pictures and PDF documents exist for every record that can have one ------------------------


def materialize(records: Records, place: Place, record_id: str) -> None:
    """Make the picture or PDF document row of the record `record_id` names, if BC would have
    one and it is not there yet; nothing for any other set."""
    parents = _VIRTUAL.get(place.name)
    if parents is None or records.find(place, record_id) is not None:
        return
    found = find_parent(records, place, record_id, parents)
    if found is None:
        return  # the caller's lookup answers BC's 404
    parent_set, _ = found
    values: dict[str, Any] = {"id": record_id.lower(), "parentType": parents[parent_set]}
    if "parentId" in place.entity_set.field_names:
        values["parentId"] = record_id.lower()
    records.insert(Place(place.route, place.entity_set, place.company_id), values)


def find_parent(
    records: Records, place: Place, record_id: str, parents: Mapping[str, str]
) -> tuple[str, Row] | None:
    """The record (set name, row) with this id among the sets that `parents` names."""
    for set_name in parents:
        parent_set = records.schema.sets.get((place.route, set_name))
        if parent_set is None:
            continue
        row = records.find(Place(place.route, parent_set, place.company_id), record_id)
        if row is not None:
            return set_name, row
    return None


# --- images: the properties BC fills in from a picture's bytes ---------------------------------


@dataclass(frozen=True)
class ImageInfo:
    content_type: str
    width: int
    height: int


def image_info(data: bytes) -> ImageInfo | None:
    """The format and size of a PNG, GIF, BMP or JPEG image from its header; None otherwise.

    Read from the header alone (a few bytes); an image library would decode far more than the
    three values BC shows for a picture.
    """
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24 and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return ImageInfo("image/png", width, height)
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return ImageInfo("image/gif", width, height)
    if data[:2] == b"BM" and len(data) >= 26:
        width, height = struct.unpack("<ii", data[18:26])
        return ImageInfo("image/bmp", abs(width), abs(height))
    if data[:2] == b"\xff\xd8":
        return _jpeg_info(data)
    return None


_JPEG_FRAMES = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_info(data: bytes) -> ImageInfo | None:
    """Walk the JPEG markers to the start-of-frame segment, which holds the size."""
    position = 2
    while position + 9 <= len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        (length,) = struct.unpack(">H", data[position + 2 : position + 4])
        if marker in _JPEG_FRAMES:
            height, width = struct.unpack(">HH", data[position + 5 : position + 9])
            return ImageInfo("image/jpeg", width, height)
        position += 2 + length
    return None


# --- a document as a small PDF -----------------------------------------------------------------


def document_pdf(records: Records, place: Place, document_id: str) -> bytes | None:
    """The PDF of the document whose id is `document_id` (a pdfDocument's parentId), or None
    when no such document exists."""
    found = find_parent(records, place, document_id, PDF_PARENTS)
    if found is None:
        return None
    set_name, document = found
    document_set = catalog.get(set_name)
    lines = _lines_of(records, place, document_set, str(document["id"]))
    return render_pdf(_document_text(PDF_PARENTS[set_name], document, lines))


def _lines_of(records: Records, place: Place, document_set: EntitySet, doc_id: str) -> list[Row]:
    line_name = document_set.lines or next(
        (n.target for n in document_set.navigations if n.many and n.name.endswith("Lines")), None
    )
    line_set = records.schema.sets.get((place.route, line_name)) if line_name else None
    if line_set is None or "documentId" not in line_set.field_names:
        return []
    return records.children(Place(place.route, line_set, place.company_id), "documentId", doc_id)


def _document_text(title: str, document: Row, lines: Sequence[Row]) -> list[str]:
    """The printed lines: title and number, party, dates, one line per document line, totals."""
    get = document.get
    party = get("customerName") or get("vendorName") or ""
    party_number = get("customerNumber") or get("vendorNumber") or ""
    date = next((get(n) for n in ("invoiceDate", "documentDate", "creditMemoDate") if get(n)), "")
    currency = get("currencyCode") or ""
    text = [
        f"{title} {get('number', '')}",
        f"{party_number} {party}".strip(),
        f"Date: {date}",
        "",
        "No.        Description                         Qty      Unit price        Amount",
    ]
    for line in lines:
        amount = line.get("amountExcludingTax", line.get("netAmount", 0.0)) or 0.0
        text.append(
            f"{str(line.get('lineObjectNumber') or '')[:10]:<10} "
            f"{str(line.get('description') or '')[:34]:<34} "
            f"{float(line.get('quantity') or 0):>6.2f} "
            f"{float(line.get('unitPrice') or line.get('unitCost') or 0):>14.2f} "
            f"{float(amount):>13.2f}"
        )
    text += [
        "",
        f"Total excl. tax: {float(get('totalAmountExcludingTax') or 0):.2f} {currency}".rstrip(),
        f"Tax: {float(get('totalTaxAmount') or 0):.2f} {currency}".rstrip(),
        f"Total incl. tax: {float(get('totalAmountIncludingTax') or 0):.2f} {currency}".rstrip(),
    ]
    return text


_LINES_PER_PAGE = 60


def render_pdf(text: Sequence[str]) -> bytes:
    """A valid PDF 1.4 of A4 pages with `text` in Courier, one string per line.

    Written out by hand (six kinds of object and a cross-reference table): a PDF library would
    be a runtime dependency for what is a few hundred bytes of fixed structure.
    """
    pages = [text[i : i + _LINES_PER_PAGE] for i in range(0, len(text), _LINES_PER_PAGE)] or [[]]
    font_number = 3 + 2 * len(pages)
    objects: list[bytes] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids ["
        + b" ".join(f"{3 + 2 * i} 0 R".encode() for i in range(len(pages)))
        + f"] /Count {len(pages)} >>".encode(),
    ]
    for index, page in enumerate(pages):
        contents = 4 + 2 * index
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents {contents} 0 R "
            f"/Resources << /Font << /F1 {font_number} 0 R >> >> >>".encode()
        )
        stream = _page_stream(page)
        objects.append(f"<< /Length {len(stream)} >>\nstream\n".encode() + stream + b"\nendstream")
    objects.append(
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Courier /Encoding /WinAnsiEncoding >>"
    )
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\n".encode()
    out += f"startxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def _page_stream(lines: Sequence[str]) -> bytes:
    body = [b"BT", b"/F1 9 Tf", b"11 TL", b"40 800 Td"]
    for line in lines:
        body.append(b"(" + _pdf_string(line) + b") Tj T*")
    body.append(b"ET")
    return b"\n".join(body)


def _pdf_string(text: str) -> bytes:
    """A PDF literal string in the font's WinAnsi encoding (cp1252), with \\, ( and ) escaped;
    a character outside it prints as '?'."""
    raw = text.encode("cp1252", errors="replace")
    return raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")
