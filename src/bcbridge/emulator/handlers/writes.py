"""POST, PATCH and DELETE on records: validation, deep insert, and the document rules they run.

The rules themselves (references, lines, totals) are `bcbridge.emulator.documents`; the checks
on a body are `bcbridge.emulator.validation`.
"""

from __future__ import annotations

from typing import Any

from bcbridge import catalog
from bcbridge.catalog import Operation, Scope
from bcbridge.emulator import documents, lifecycle, query
from bcbridge.emulator.calls import Call, Result
from bcbridge.emulator.errors import (
    bad_request,
    duplicate_key,
    method_not_allowed,
    not_emulated,
    required_field,
)
from bcbridge.emulator.handlers.places import Address
from bcbridge.emulator.handlers.reads import context, render
from bcbridge.emulator.records import Place, Records, check_if_match
from bcbridge.emulator.store import Row
from bcbridge.emulator.validation import validate


def create(records: Records, call: Call, at: Address) -> Result:
    """POST to a collection, with the document's lines when the body has them (deep insert)."""
    place = at.place
    require_writable(place, Operation.POST, "POST")
    entity_set = place.entity_set
    parent_field = entity_set.parent_field
    allowed = frozenset({parent_field}) if parent_field else frozenset()
    values = validate(entity_set, call.body, allow_read_only=allowed)
    lines_body = (call.body or {}).get(entity_set.lines) if entity_set.lines else None
    if lines_body is not None and not isinstance(lines_body, list):
        raise bad_request(f"'{entity_set.lines}' must be an array of lines.")
    line_set = catalog.get(entity_set.lines) if entity_set.lines and lines_body else None
    line_values = [validate(line_set, line) for line in lines_body or []] if line_set else []
    row = insert(records, place, values)
    if line_set:
        line_place = Place(place.route, line_set, place.company_id, parent_id=row["id"])
        for line in line_values:
            insert(records, line_place, line)
        row = records.get(place, row["id"])
    if _wants_no_content(call):
        return Result(204)
    expands = query.parse_expand(call.query.get("$expand"))
    body = render(records, place, [row], query.select_names(entity_set, None), expands)[0]
    company = "" if place.entity_set.scope is Scope.ROOT else f"companies({place.company_id})/"
    location = f"{call.root_url}/{company}{place.name}({row['id']})"
    return Result(
        201,
        {"@odata.context": context(call, place, "/$entity"), **body},
        {"Location": location},
    )


def _wants_no_content(call: Call) -> bool:
    prefer = call.headers.get("prefer", "")
    return "return=minimal" in prefer or "return-no-content" in prefer


def update(records: Records, call: Call, at: Address) -> Result:
    """PATCH one record: If-Match is required (bc-api.md §5.2); totals follow line changes."""
    assert at.key is not None, at
    place = at.place
    row = records.get(place, at.key)
    require_writable(place, Operation.PATCH, "PATCH")
    check_if_match(row, call.headers.get("if-match"), required=True)
    lifecycle.refuse_posted_change(records, place, row)
    values = validate(place.entity_set, call.body)
    documents.resolve_references(records, place, values)
    if place.entity_set.parent_field == "documentId":
        documents.prepare_line(records, place, values, row)
    row = records.update(place, row, values)
    if place.entity_set.lines:
        documents.recompute_totals(records, place, row)
        row = records.get(place, row["id"])
    parent_field = place.entity_set.parent_field
    parent = parent_of(records, place, {parent_field: row[parent_field]}) if parent_field else None
    if parent is not None:
        documents.recompute_totals(records, parent[0], parent[1])
    body = render(records, place, [row], query.select_names(place.entity_set, None), [])[0]
    return Result(200, {"@odata.context": context(call, place, "/$entity"), **body})


def delete(records: Records, call: Call, at: Address) -> Result:
    """DELETE one record (If-Match checked when sent, §5.3), a document with its lines."""
    assert at.key is not None, at
    place = at.place
    row = records.get(place, at.key)
    require_writable(place, Operation.DELETE, "DELETE")
    check_if_match(row, call.headers.get("if-match"), required=False)
    lifecycle.refuse_posted_change(records, place, row)
    entity_set = place.entity_set
    if entity_set.lines:
        line_set = catalog.get(entity_set.lines)
        line_place = Place(place.route, line_set, place.company_id)
        for line in records.children(line_place, str(line_set.parent_field), row["id"]):
            records.delete(line_place, line)
    records.delete(place, row)
    if entity_set.parent and entity_set.parent_field:
        parent_place = Place(place.route, catalog.get(entity_set.parent), place.company_id)
        parent = records.find(parent_place, str(row[entity_set.parent_field]))
        if parent is not None:
            documents.recompute_totals(records, parent_place, parent)
    return Result(204)


def require_writable(place: Place, operation: Operation, method: str) -> None:
    if not place.entity_set.allows(operation):
        raise method_not_allowed(f"'{method}' requests for '{place.name}' are not allowed.")
    if not place.entity_set.fields:  # every set of BC's $metadata has its properties
        raise not_emulated(f"The emulator does not know the properties of '{place.name}'.")


def insert(records: Records, place: Place, values: dict[str, Any]) -> Row:
    """One new record with BC's defaults, number series and references; a line updates its
    document's totals."""
    entity_set = place.entity_set
    parent = parent_of(records, place, values)
    documents.resolve_references(records, place, values)
    documents.require_party(entity_set, values)
    documents.apply_create_defaults(entity_set, values)
    natural = entity_set.natural_key
    if natural and entity_set.number_series and not values.get(natural):
        values[natural] = records.next_number(place)
    elif natural and values.get(natural) and records.find_by(place, natural, values[natural]):
        raise duplicate_key(entity_set.entity, natural, values[natural])
    if parent is not None and entity_set.parent_field == "documentId":
        lifecycle.refuse_posted_change(records, parent[0], parent[1])
        values.setdefault("sequence", documents.next_sequence(records, place, parent[1]["id"]))
        documents.prepare_line(records, place, values, None)
    elif (
        parent is not None
        and "lineNumber" in entity_set.field_names
        and not values.get("lineNumber")
    ):  # journal lines and payments: BC numbers them 10000, 20000, ...
        values["lineNumber"] = documents.next_line_number(records, place, parent[1]["id"])
    row = records.insert(place, values)
    if parent is not None:
        documents.recompute_totals(records, parent[0], records.get(parent[0], parent[1]["id"]))
    return row


def parent_of(records: Records, place: Place, values: dict[str, Any]) -> tuple[Place, Row] | None:
    """The document a line belongs to: from the URL, or from documentId on the flat route."""
    entity_set = place.entity_set
    if not entity_set.parent or not entity_set.parent_field:
        return None
    parent_place = Place(place.route, catalog.get(entity_set.parent), place.company_id)
    parent_id = place.parent_id or values.get(entity_set.parent_field)
    if not parent_id:
        raise required_field(entity_set.parent_field)
    if place.parent_id and values.get(entity_set.parent_field, place.parent_id) != place.parent_id:
        raise bad_request(f"'{entity_set.parent_field}' does not match the parent in the URL.")
    values[entity_set.parent_field] = parent_id
    return parent_place, records.get(parent_place, str(parent_id))
