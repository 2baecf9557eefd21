"""Stream properties: attachment content, pictures and a document's PDF (issue 13)."""

from __future__ import annotations

import io
import struct
import zlib

import anyio
import httpx
import pypdf
import pytest

from bcbridge.emulator.inprocess import InProcessEmulator
from bcbridge.emulator.streams import ImageInfo, image_info, render_pdf
from bcbridge.errors import PreconditionFailed
from tests.emulator.conftest import assert_bc_error


def png(width: int, height: int) -> bytes:
    """A real PNG (greyscale, 8 bits), small enough to write out here."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def first_id(api: httpx.Client, company: str, set_name: str) -> str:
    response = api.get(f"{company}/{set_name}", params={"$top": "1"})
    assert response.status_code == 200, response.text
    return str(response.json()["value"][0]["id"])


def test_image_header_gives_type_and_size() -> None:
    assert image_info(png(7, 5)) == ImageInfo("image/png", 7, 5)
    gif = b"GIF89a" + struct.pack("<HH", 12, 9) + b"\x00" * 8
    jpeg = (
        b"\xff\xd8" + b"\xff\xe0\x00\x04ab" + b"\xff\xc0\x00\x11\x08" + struct.pack(">HH", 40, 64)
    )
    bmp = b"BM" + b"\x00" * 16 + struct.pack("<ii", 10, -20) + b"\x00" * 8
    found = [image_info(data) for data in (gif, jpeg + b"\x00" * 12, bmp)]
    assert [(i.content_type, i.width, i.height) for i in found if i] == [
        ("image/gif", 12, 9),
        ("image/jpeg", 64, 40),
        ("image/bmp", 10, 20),
    ]
    assert image_info(b"plain text, not a picture") is None


def test_attachment_upload_download_and_etag(api: httpx.Client, company: str) -> None:
    invoice = first_id(api, company, "salesInvoices")
    created = api.post(
        f"{company}/salesInvoices({invoice})/attachments", json={"fileName": "note.txt"}
    )
    assert created.status_code == 201, created.text
    record = created.json()
    assert record["parentId"] == invoice and record["byteSize"] == 0
    assert record["parentType"] == "Sales Invoice"
    url = f"{company}/attachments({record['id']})/attachmentContent"
    data = b"hello \x00\xff bytes"
    binary = {"Content-Type": "application/octet-stream"}
    assert_bc_error(api.patch(url, content=data, headers=binary), 400, "BadRequest_InvalidToken")
    assert_bc_error(
        api.patch(url, content=data, headers={"If-Match": record["@odata.etag"]}),
        400,
        "BadRequest",
    )
    uploaded = api.patch(url, content=data, headers={**binary, "If-Match": record["@odata.etag"]})
    assert uploaded.status_code == 204, uploaded.text
    after = api.get(f"{company}/attachments({record['id']})").json()
    assert after["byteSize"] == len(data)
    assert after["@odata.etag"] != record["@odata.etag"]
    for path in (url, f"{url}/$value"):
        got = api.get(path)
        assert got.status_code == 200 and got.content == data
        assert got.headers["content-type"].startswith("application/octet-stream")
    stale = api.patch(url, content=b"x", headers={**binary, "If-Match": record["@odata.etag"]})
    assert_bc_error(stale, 409, "Request_EntityChanged")
    assert_bc_error(
        api.post(f"{company}/attachments", json={"parentId": invoice, "byteSize": 3}),
        400,
        "BadRequest_InvalidOperation",
    )
    assert api.delete(f"{company}/attachments({record['id']})").status_code == 204
    assert_bc_error(api.get(url), 404, "Internal_RecordNotFound")


def test_document_attachment_needs_an_existing_parent(api: httpx.Client, company: str) -> None:
    customer = first_id(api, company, "customers")
    seeded = api.get(f"{company}/customers({customer})/documentAttachments").json()["value"]
    created = api.post(
        f"{company}/documentAttachments", json={"parentId": customer, "fileName": "terms.pdf"}
    )
    assert created.status_code == 201, created.text
    assert created.json()["parentType"] == "Customer"
    listed = api.get(f"{company}/customers({customer})/documentAttachments").json()["value"]
    assert [a["fileName"] for a in listed] == [a["fileName"] for a in seeded] + ["terms.pdf"]
    missing = "11111111-2222-3333-4444-555555555555"
    assert_bc_error(
        api.post(f"{company}/documentAttachments", json={"parentId": missing, "fileName": "a"}),
        404,
        "Internal_RecordNotFound",
    )
    renamed = api.patch(
        f"{company}/documentAttachments({created.json()['id']})",
        json={"fileName": "terms-2024.pdf"},
        headers={"If-Match": "*"},
    )
    assert renamed.status_code == 200 and renamed.json()["fileName"] == "terms-2024.pdf"


def test_picture_upload_sets_type_and_size(api: httpx.Client, company: str) -> None:
    item = first_id(api, company, "items")
    picture = api.get(f"{company}/items({item})/picture")
    assert picture.status_code == 200, picture.text
    before = picture.json()
    assert (before["id"], before["width"], before["height"]) == (item, 0, 0)
    assert before["parentType"] == "Item"
    url = f"{company}/items({item})/picture/pictureContent"
    assert api.get(url).status_code == 204  # no picture yet
    image = png(3, 2)
    headers = {"Content-Type": "image/png", "If-Match": before["@odata.etag"]}
    assert api.patch(url, content=image, headers=headers).status_code == 204
    after = api.get(f"{company}/pictures({item})").json()
    assert (after["contentType"], after["width"], after["height"]) == ("image/png", 3, 2)
    assert after["@odata.etag"] != before["@odata.etag"]
    got = api.get(url)
    assert got.content == image and got.headers["content-type"] == "image/png"
    not_image = api.patch(
        url, content=b"not an image", headers={"Content-Type": "image/png", "If-Match": "*"}
    )
    assert_bc_error(not_image, 400, "BadRequest")
    assert api.delete(f"{company}/items({item})/picture").status_code == 204
    cleared = api.get(f"{company}/items({item})/picture").json()
    assert (cleared["contentType"], cleared["width"]) == ("", 0)
    assert api.get(url).status_code == 204
    assert_bc_error(api.post(url, content=image), 405, "BadRequest_MethodNotAllowed")


def test_pdf_document_is_a_real_pdf_of_the_invoice(api: httpx.Client, company: str) -> None:
    invoices = api.get(f"{company}/salesInvoices", params={"$top": "1"}).json()["value"]
    invoice = invoices[0]
    document = api.get(f"{company}/salesInvoices({invoice['id']})/pdfDocument")
    assert document.status_code == 200, document.text
    assert document.json()["parentId"] == invoice["id"]
    assert document.json()["parentType"] == "Sales Invoice"
    url = f"{company}/salesInvoices({invoice['id']})/pdfDocument/pdfDocumentContent"
    pdf = api.get(url)
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    text = "".join(page.extract_text() for page in pypdf.PdfReader(io.BytesIO(pdf.content)).pages)
    assert invoice["number"] in text and invoice["customerName"] in text
    assert f"{invoice['totalAmountIncludingTax']:.2f}" in text
    lines = api.get(f"{company}/salesInvoices({invoice['id']})/salesInvoiceLines").json()["value"]
    assert lines and all(line["description"][:34] in text for line in lines)
    assert_bc_error(
        api.patch(url, content=b"%PDF", headers={"If-Match": "*", "Content-Type": "x/y"}),
        405,
        "BadRequest_MethodNotAllowed",
    )


def test_pdf_with_many_lines_and_odd_characters_stays_valid() -> None:
    text = ["Café (draft) \\ 100%"] + [f"line {n}" for n in range(150)]
    reader = pypdf.PdfReader(io.BytesIO(render_pdf(text)))
    assert len(reader.pages) == 3
    assert "Café (draft) \\ 100%" in reader.pages[0].extract_text()
    assert "line 149" in reader.pages[2].extract_text()


def test_library_downloads_and_uploads_streams(
    emulator: InProcessEmulator, api: httpx.Client, company: str
) -> None:
    vendor = first_id(api, company, "vendors")
    picture = f"{company}/vendors({vendor})/picture"
    etag = api.get(picture).json()["@odata.etag"]
    image = png(4, 4)

    async def round_trip() -> tuple[bytes, str]:
        async with emulator.client() as bc:
            await bc.upload_stream(
                f"{picture}/pictureContent", image, content_type="image/png", etag=etag
            )
            with pytest.raises(PreconditionFailed):  # the ETag changed with the upload
                await bc.upload_stream(f"{picture}/pictureContent", image, etag=etag)
            return await bc.download_stream(f"{picture}/pictureContent")

    assert anyio.run(round_trip) == (image, "image/png")
    assert api.get(picture).json()["width"] == 4


def test_records_carry_media_read_links_clients_follow(api: httpx.Client, company: str) -> None:
    invoice = first_id(api, company, "salesInvoices")
    document = api.get(f"{company}/salesInvoices({invoice})/pdfDocument").json()
    link = document["pdfDocumentContent@odata.mediaReadLink"]
    # BC's example (api/dynamics_pdfdocument_get.md): the record's URL as asked, then the property
    assert link.endswith(f"/{company}/salesInvoices({invoice})/pdfDocument/pdfDocumentContent")
    assert api.get(link).content.startswith(b"%PDF-")
    created = api.post(
        f"{company}/salesInvoices({invoice})/attachments", json={"fileName": "a.txt"}
    ).json()
    assert created["attachmentContent@odata.mediaReadLink"].endswith(
        f"/salesInvoices({invoice})/attachments({created['id']})/attachmentContent"
    )
    listed = api.get(f"{company}/attachments").json()["value"]
    assert all(
        row["attachmentContent@odata.mediaReadLink"].endswith(
            f"/{company}/attachments({row['id']})/attachmentContent"
        )
        for row in listed
    )
    assert (
        "pictureContent@odata.mediaReadLink"
        in api.get(f"{company}/customers({first_id(api, company, 'customers')})/picture").json()
    )


def test_an_empty_upload_and_one_inside_a_batch_are_refused(
    api: httpx.Client, company: str
) -> None:
    customer = first_id(api, company, "customers")
    created = api.post(
        f"{company}/documentAttachments", json={"parentId": customer, "fileName": "e.txt"}
    ).json()
    url = f"{company}/documentAttachments({created['id']})/attachmentContent"
    headers = {"Content-Type": "text/plain", "If-Match": "*"}
    assert_bc_error(api.patch(url, content=b"", headers=headers), 400, "BadRequest")
    batch = api.post(
        "$batch",
        json={
            "requests": [{"id": "1", "method": "PATCH", "url": url, "headers": headers, "body": {}}]
        },
    )
    assert batch.json()["responses"][0]["status"] == 400, batch.text
    after = api.get(f"{company}/documentAttachments({created['id']})").json()
    assert after["@odata.etag"] == created["@odata.etag"]


def test_expanded_pictures_and_pdfs_exist_and_link_their_bytes(
    api: httpx.Client, company: str
) -> None:
    invoices = api.get(
        f"{company}/salesInvoices", params={"$top": "2", "$expand": "pdfDocument"}
    ).json()["value"]
    assert len(invoices) == 2
    for invoice in invoices:
        document = invoice["pdfDocument"]
        assert document["parentId"] == invoice["id"]
        link = document["pdfDocumentContent@odata.mediaReadLink"]
        assert link.endswith(f"/salesInvoices({invoice['id']})/pdfDocument/pdfDocumentContent")
        pdf = pypdf.PdfReader(io.BytesIO(api.get(link).content))
        assert invoice["number"] in pdf.pages[0].extract_text()
    item = first_id(api, company, "items")
    expanded = api.get(f"{company}/items({item})", params={"$expand": "picture"}).json()
    assert expanded["picture"]["pictureContent@odata.mediaReadLink"].endswith(
        f"/items({item})/picture/pictureContent"
    )


def test_blocking_client_moves_stream_bytes(
    emulator: InProcessEmulator, api: httpx.Client, company: str
) -> None:
    employee = first_id(api, company, "employees")
    url = f"{company}/employees({employee})/picture/pictureContent"
    with emulator.sync_client() as bc:
        bc.upload_stream(url, png(2, 9), content_type="image/png")
        assert bc.download_stream(url) == (png(2, 9), "image/png")
    picture = api.get(f"{company}/employees({employee})/picture").json()
    assert (picture["parentType"], picture["width"], picture["height"]) == ("Employee", 2, 9)


@pytest.mark.parametrize(
    ("set_name", "party", "title"),
    [
        ("salesQuotes", "customerName", "Sales Quote"),
        ("purchaseInvoices", "vendorName", "Purchase Invoice"),
    ],
)
def test_pdf_of_other_documents(
    api: httpx.Client, company: str, set_name: str, party: str, title: str
) -> None:
    document = api.get(f"{company}/{set_name}", params={"$top": "1"}).json()["value"][0]
    pdf = api.get(f"{company}/{set_name}({document['id']})/pdfDocument/pdfDocumentContent")
    assert pdf.status_code == 200, pdf.text
    text = pypdf.PdfReader(io.BytesIO(pdf.content)).pages[0].extract_text()
    assert f"{title} {document['number']}" in text and document[party] in text
    assert f"{document['totalAmountIncludingTax']:.2f}" in text
