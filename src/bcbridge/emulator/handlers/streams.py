"""Stream properties over HTTP, and the writes of the sets that hold them.

``.../attachments({id})/attachmentContent``, ``.../items({id})/picture/pictureContent`` and
``.../salesInvoices({id})/pdfDocument/pdfDocumentContent`` (each also with ``/$value``): GET
answers the bytes with their content type; PATCH replaces them (If-Match and a Content-Type are
required, the record's ETag changes, its size or picture properties follow the bytes).

Attachments are written as BC documents it (api/dynamics_attachment_create.md): POST the record
with ``parentId`` and ``fileName``, then PATCH its ``attachmentContent``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from bcbridge import catalog
from bcbridge.catalog import EntitySet, Operation, Refusal
from bcbridge.emulator import streams
from bcbridge.emulator.calls import Call, Result
from bcbridge.emulator.errors import (
    bad_request,
    method_not_allowed,
    record_not_found,
    refused,
    required_field,
)
from bcbridge.emulator.handlers.places import Address
from bcbridge.emulator.handlers.reads import context, render
from bcbridge.emulator.query import select_names
from bcbridge.emulator.records import Place, Records, check_if_match
from bcbridge.emulator.routing import Kind
from bcbridge.emulator.validation import validate

Handler = Callable[[Records, Call, Address], Result]
ATTACHMENT_SETS = ("attachments", "documentAttachments")
# parentType of an attachment (Microsoft.NAV.attachmentEntityBufferDocumentType) by the set
# its parent is in; a parent elsewhere (generalLedgerEntries) keeps the blank member.
_PARENT_TYPES: Mapping[str, str] = {
    "journalLines": "Journal",
    "salesOrders": "Sales Order",
    "salesQuotes": "Sales Quote",
    "salesCreditMemos": "Sales Credit Memo",
    "salesInvoices": "Sales Invoice",
    "purchaseInvoices": "Purchase Invoice",
    "purchaseOrders": "Purchase Order",
    "purchaseCreditMemos": "Purchase Credit Memo",
    "employees": "Employee",
    "projects": "Job",
    "items": "Item",
    "customers": "Customer",
    "vendors": "Vendor",
}
_SERVER_SET = ("byteSize",)  # BC counts the bytes; a client cannot set the size
BINARY = "application/octet-stream"


def stream_property(path: str) -> str:
    """The stream property a routed stream path ends with (``.../pictureContent[/$value]``)."""
    parts = path.strip("/").split("/")
    return parts[-2] if parts[-1] == "$value" else parts[-1]


def content(records: Records, call: Call, at: Address) -> Result:
    assert at.key is not None, at
    prop = stream_property(call.path)
    row = records.get(at.place, at.key)
    if call.method == "GET":
        return _read_content(records, at.place, row, prop)
    if at.place.name == "pdfDocument":
        raise method_not_allowed(f"'{call.method}' is not allowed on '{prop}': it is read-only.")
    check_if_match(row, call.headers.get("if-match"), required=True)
    if call.method == "DELETE":
        streams.remove(records, at.place, row["id"], prop)
        records.update(at.place, row, _described(at.place, None))
        return Result(204)
    content_type = call.headers.get("content-type", "").split(";")[0].strip()
    if not content_type:
        # BC's wording for a stream sent without a type is UNCONFIRMED (bc-api.md has none)
        raise bad_request(
            f"A Content-Type header is required to upload '{prop}' "
            f"(e.g. {BINARY} or the file's type)."
        )
    data = call.raw
    if not data:
        # inside a $batch a body is JSON, never a stream's bytes (raw stays empty there)
        raise bad_request(
            f"Uploading '{prop}' needs the bytes as the request body; to clear it, send DELETE."
            " Stream uploads inside a $batch are not emulated."
        )
    changes = _described(at.place, data)
    streams.write(records, at.place, row["id"], prop, streams.Content(data, content_type))
    records.update(at.place, row, changes)
    # BC answers an upload with 204 No Content (api/dynamics_attachment_update.md shows
    # "HTTP/1.1 204 No Content"; assumed the same for pictures, UNCONFIRMED)
    return Result(204)


def _read_content(records: Records, place: Place, row: Any, prop: str) -> Result:
    if place.name == "pdfDocument":
        data = streams.document_pdf(records, place, str(row["parentId"] or row["id"]))
        if data is None:
            raise record_not_found("pdfDocument", f"Id='{row['id']}'")
        return Result(200, data, media_type="application/pdf")
    found = streams.read(records, place, row["id"], prop)
    if found is None or not found.data:
        # an empty stream: BC's answer (204, or 200 with no bytes) is UNCONFIRMED
        return Result(204)
    return Result(200, found.data, media_type=found.content_type)


def _described(place: Place, data: bytes | None) -> dict[str, Any]:
    """The record's properties that follow its content: a picture's type and size (read from
    the image), an attachment's byte count. `data` None: the content was removed."""
    if place.name != "pictures":
        return {"byteSize": len(data or b"")} if "byteSize" in place.entity_set.field_names else {}
    if data is None:
        return {"contentType": "", "width": 0, "height": 0}
    info = streams.image_info(data)
    if info is None:
        # BC's own message for a picture it cannot read is UNCONFIRMED
        raise bad_request("The picture content is not an image (PNG, JPEG, GIF or BMP expected).")
    return {"contentType": info.content_type, "width": info.width, "height": info.height}


# --- the records of attachments and pictures -------------------------------------------------


def create_attachment(records: Records, call: Call, at: Address) -> Result:
    """POST an attachment: its parent must exist; the size starts at 0 until content comes."""
    place = at.place
    _require(place, Operation.POST, "POST")
    values = _checked_values(place, call.body)
    parent_id = place.parent_id or values.get("parentId")
    if not parent_id:
        raise required_field("parentId")
    parent_set = _parent_set(records, place, str(parent_id))
    values["parentId"] = str(parent_id).lower()
    if "parentType" in place.entity_set.field_names and not values.get("parentType", "").strip():
        # BC takes the type from the parent the id names (UNCONFIRMED: the docs always send it)
        values["parentType"] = _PARENT_TYPES.get(parent_set, " ")
    values["byteSize"] = 0
    row = records.insert(place, values)
    body = render(records, place, [row], select_names(place.entity_set, None), [])[0]
    location = f"{call.root_url}/companies({place.company_id})/{place.name}({row['id']})"
    return Result(
        201, {"@odata.context": context(call, place, "/$entity"), **body}, {"Location": location}
    )


def update_attachment(records: Records, call: Call, at: Address) -> Result:
    assert at.key is not None, at
    place = at.place
    row = records.get(place, at.key)
    _require(place, Operation.PATCH, "PATCH")
    check_if_match(row, call.headers.get("if-match"), required=True)
    values = _checked_values(place, call.body)
    if "parentId" in values and values["parentId"] != row["parentId"]:
        _parent_set(records, place, values["parentId"])
    row = records.update(place, row, values)
    body = render(records, place, [row], select_names(place.entity_set, None), [])[0]
    return Result(200, {"@odata.context": context(call, place, "/$entity"), **body})


def delete_with_content(records: Records, call: Call, at: Address) -> Result:
    """DELETE an attachment with its content; DELETE a picture clears it (the row stays, as
    every item/customer/... has a picture in BC)."""
    assert at.key is not None, at
    place = at.place
    row = records.get(place, at.key)
    _require(place, Operation.DELETE, "DELETE")
    check_if_match(row, call.headers.get("if-match"), required=False)
    streams.remove(records, place, row["id"])
    if place.name == "pictures":
        records.update(place, row, _described(place, None))
    else:
        records.delete(place, row)
    return Result(204)


def _require(place: Place, operation: Operation, method: str) -> None:
    if not place.entity_set.allows(operation):
        raise method_not_allowed(f"'{method}' requests for '{place.name}' are not allowed.")


def _checked_values(place: Place, body: Any) -> dict[str, Any]:
    if isinstance(body, Mapping):
        for name in _SERVER_SET:
            if name in body:
                raise refused(
                    Refusal(name, "BadRequest_InvalidOperation", f"Control '{name}' is read-only.")
                )
    return validate(place.entity_set, body)


def _parent_set(records: Records, place: Place, parent_id: str) -> str:
    """The set of the record an attachment belongs to, among those BC links it to."""
    candidates = {nav.target: "" for nav in place.entity_set.navigations if not nav.many}
    found = streams.find_parent(records, place, parent_id, candidates)
    if found is None:
        raise record_not_found("parent record", f"parentId='{parent_id}'")
    return found[0]


def with_media_links(result: Result, call: Call, kind: Kind, entity_set: EntitySet) -> Result:
    """`result` with ``<stream>@odata.mediaReadLink`` on each record of a set with streams,
    expanded ones included, as BC writes it (api/dynamics_pdfdocument_get.md: the record's URL
    as requested, then the property); clients follow that link to download the bytes."""
    expanded = "$expand" in call.query
    if not isinstance(result.body, dict) or not (entity_set.streams or expanded):
        return result
    path = f"{call.root_url}/{call.path.strip('/')}"
    if kind in (Kind.READ, Kind.RELATED, Kind.UPDATE):
        _annotate(result.body, path, entity_set)
    elif kind is Kind.CREATE:
        _annotate(result.body, f"{path}({result.body.get('id')})", entity_set)
    elif kind is Kind.LIST:
        for body in result.body.get("value", []):
            _annotate(body, f"{path}({body.get('id')})", entity_set)
    return result


def _annotate(body: dict[str, Any], record_url: str, entity_set: EntitySet) -> None:
    """Links on `body` (at `record_url`) and on the records expanded inside it."""
    if entity_set.streams and "id" in body:  # a $select without the key leaves no URL
        for name in entity_set.streams:
            body[f"{name}@odata.mediaReadLink"] = f"{record_url}/{name}"
    for navigation in entity_set.navigations:
        value = body.get(navigation.name)
        target = catalog.CATALOG.get(navigation.target)
        if target is None or not isinstance(value, dict | list):
            continue
        if isinstance(value, dict):
            _annotate(value, f"{record_url}/{navigation.name}", target)
            continue
        for item in value:
            if isinstance(item, dict):
                _annotate(item, f"{record_url}/{navigation.name}({item.get('id')})", target)


def handler_for(kind: Kind, set_name: str) -> Handler | None:
    """This module's handler for an operation, or None when the general one applies."""
    if kind is Kind.STREAM:
        return content
    if set_name in ATTACHMENT_SETS:
        return {
            Kind.CREATE: create_attachment,
            Kind.UPDATE: update_attachment,
            Kind.DELETE: delete_with_content,
        }.get(kind)
    if set_name == "pictures" and kind is Kind.DELETE:
        return delete_with_content
    return None
