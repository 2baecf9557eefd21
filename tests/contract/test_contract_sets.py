"""BC API v2.0's contract for every entity set of the catalog: a read on each, a write on each
set BC lets clients write (create -> read back -> change -> delete, as far as BC allows), BC's
refusal of read-only properties, and 405 for what BC's capability annotations forbid.

Runs against the emulator, and with `-m live` against a real sandbox (the fixtures and the
environment variables of tests/contract/test_contract.py): reads only unless
BCBRIDGE_LIVE_WRITE=1, and then writes only to records the tests create and delete. A body to
create is made from a record the set already holds (its writable linking values: a line's
document, a default dimension's parent and dimension), with a new code where the set is keyed by
one, so that the same test fits every set.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from bcbridge import catalog
from bcbridge.catalog import EntitySet, Field, FieldType, Operation, Scope
from bcbridge.errors import BCAPIError, NotFound, ValidationFailed
from bcbridge.sync import Client
from tests.contract import test_contract as shared

# the contract fixtures (emulator, and the sandbox under -m live), shared with test_contract.py
target, bc, company = shared.target, shared.bc, shared.company
LIVE_WRITES = shared.LIVE_WRITES

BLANKS = (None, "", "00000000-0000-0000-0000-000000000000", "0001-01-01", "0001-01-01T00:00:00Z")
# subscriptions need a webhook handshake: tests/emulator/test_em_webhooks.py
SETS = [s for s in catalog.CATALOG.values() if s.name not in ("subscriptions",)]
CREATABLE = [s.name for s in SETS if s.allows(Operation.POST)]
# changed in place, not created: a seeded record is changed and changed back
UPDATABLE_ONLY = [
    s.name for s in SETS if s.allows(Operation.PATCH) and not s.allows(Operation.POST)
]
FORBIDDEN_POST = [s.name for s in SETS if not s.allows(Operation.POST) and s.name != "companies"]


def _url(company: str, entity_set: EntitySet) -> str:
    return entity_set.name if entity_set.scope is Scope.ROOT else f"{company}/{entity_set.name}"


def _record_url(company: str, entity_set: EntitySet, record: dict[str, Any]) -> str:
    key = record[entity_set.key]
    shown = f"'{key}'" if entity_set.key_is_string else key
    return f"{_url(company, entity_set)}({shown})"


def _rows(bc: Client, company: str, entity_set: EntitySet) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = bc.get_json(_url(company, entity_set), {"$top": 5})["value"]
    return rows


def _needs_writes(target: str) -> None:
    if target == "sandbox" and not LIVE_WRITES:
        pytest.skip("writes to the sandbox: set BCBRIDGE_LIVE_WRITE=1")


def _unique(field: Field) -> str:
    text = f"BCB{uuid.uuid4().hex[:12].upper()}"
    return text[-field.max_length :] if field.max_length else text


def _body_like(entity_set: EntitySet, example: dict[str, Any]) -> dict[str, Any]:
    """What a client writes to create a record like `example`: its writable, non-blank values,
    a new natural key (left to BC's number series where it has one)."""
    body: dict[str, Any] = {}
    for field in entity_set.fields:
        value = example.get(field.name)
        if field.read_only or field.name in (entity_set.key, "sequence", "lineNumber"):
            continue
        if field.name == entity_set.natural_key:
            if not entity_set.number_series:
                body[field.name] = _unique(field)
            continue
        if value not in BLANKS:
            body[field.name] = value
    return body


def _a_text_to_change(entity_set: EntitySet) -> Field | None:
    """A writable free text (a name or description), safe to change and compare."""
    for field in entity_set.fields:
        lower = field.name.lower()
        free = any(word in lower for word in ("name", "description", "comment"))
        if (
            field.type is FieldType.STRING
            and not field.read_only
            and free
            and field.name != entity_set.natural_key
            and not lower.endswith(("number", "code", "email"))
        ):
            return field
    return None


@pytest.mark.parametrize("name", [s.name for s in SETS])
def test_every_set_reads(bc: Client, company: str, name: str) -> None:
    entity_set = catalog.get(name)
    rows = _rows(bc, company, entity_set)
    for row in rows:
        assert row["@odata.etag"].startswith('W/"')
        properties = {key for key in row if "@" not in key}
        assert properties <= set(entity_set.field_names), name
        # the only other annotation: `<stream>@odata.mediaReadLink`, for a stream the set has
        links = {key.split("@", 1)[0] for key in row if "@" in key} - {""}
        assert links <= set(entity_set.streams), name
    if rows and not entity_set.composite_key:
        again = bc.get_json(_record_url(company, entity_set, rows[0]))
        assert again[entity_set.key] == rows[0][entity_set.key]


@pytest.mark.parametrize("name", CREATABLE)
def test_create_read_change_delete(bc: Client, company: str, target: str, name: str) -> None:
    _needs_writes(target)
    entity_set = catalog.get(name)
    examples = _rows(bc, company, entity_set)
    if not examples:
        pytest.skip(f"{name} holds no record to model a new one on")
    for example in examples:  # a line of a posted document is refused: another example
        body = _body_like(entity_set, example)
        try:
            created = bc.request("POST", _url(company, entity_set), json=body)
            break
        except ValidationFailed as exc:
            if "has been posted" not in str(exc):
                raise
    else:
        pytest.skip(f"{name}: every example belongs to a posted document")
    assert created.status_code == 201, created.text
    record = created.json()
    url = _record_url(company, entity_set, record)
    try:
        read = bc.get_json(url)
        assert {k: read[k] for k in body} == body
        field = _a_text_to_change(entity_set)
        if entity_set.allows(Operation.PATCH) and field is not None:
            text = "bcbridge contract"[: field.max_length or None]
            changed = bc.request(
                "PATCH", url, json={field.name: text}, headers={"If-Match": read["@odata.etag"]}
            )
            assert changed.status_code == 200 and changed.json()[field.name] == text
            assert bc.get_json(url)[field.name] == text
    finally:
        if entity_set.allows(Operation.DELETE):
            deleted = bc.request("DELETE", url, headers={"If-Match": "*"})
            assert deleted.status_code == 204
    if entity_set.allows(Operation.DELETE):
        with pytest.raises(NotFound):
            bc.request("GET", url)


@pytest.mark.parametrize("name", UPDATABLE_ONLY)
def test_a_set_bc_only_lets_clients_change(
    bc: Client, company: str, target: str, name: str
) -> None:
    if target == "sandbox":
        pytest.skip("changes a record the tests did not create")
    entity_set = catalog.get(name)
    rows = _rows(bc, company, entity_set)
    assert rows, name
    url = _record_url(company, entity_set, rows[0])
    field = _a_text_to_change(entity_set)
    writable = [f for f in entity_set.fields if not f.read_only]
    if field is None:  # e.g. applyVendorEntries: only `applied`; pictures: only the content
        body = {f.name: rows[0][f.name] for f in writable}
    else:
        body = {field.name: "bcbridge contract"[: field.max_length or None]}
    changed = bc.request("PATCH", url, json=body, headers={"If-Match": rows[0]["@odata.etag"]})
    assert changed.status_code == 200, changed.text
    assert {k: changed.json()[k] for k in body} == body
    if field is not None:  # put the shared record back
        bc.request("PATCH", url, json={field.name: rows[0][field.name]}, headers={"If-Match": "*"})


def _a_value_for(field: Field) -> Any:
    return {
        FieldType.GUID: str(uuid.uuid4()),
        FieldType.INT: 1,
        FieldType.DECIMAL: 1.5,
        FieldType.BOOL: True,
        FieldType.DATE: "2025-01-31",
        FieldType.DATETIME: "2025-01-31T10:00:00Z",
        FieldType.ENUM: field.options[-1] if field.options else "x",
    }.get(field.type, "x")


@pytest.mark.parametrize("name", CREATABLE)
def test_read_only_properties_are_refused(bc: Client, company: str, target: str, name: str) -> None:
    """BC answers BadRequest_InvalidOperation and creates nothing. (`id` is left out: whether BC
    takes a client's SystemId on create is UNCONFIRMED.)"""
    _needs_writes(target)  # were BC to take the property, it would create a record
    entity_set = catalog.get(name)
    read_only = [f for f in entity_set.fields if f.read_only and f.name != "id"]
    for field in read_only:
        with pytest.raises(BCAPIError) as refused:
            bc.request("POST", _url(company, entity_set), json={field.name: _a_value_for(field)})
        assert (refused.value.status, refused.value.code) == (400, "BadRequest_InvalidOperation")
        assert field.name in refused.value.message


@pytest.mark.parametrize("name", FORBIDDEN_POST)
def test_a_create_bc_forbids_is_405(bc: Client, company: str, name: str) -> None:
    with pytest.raises(BCAPIError) as refused:
        bc.request("POST", _url(company, catalog.get(name)), json={})
    assert (refused.value.status, refused.value.code) == (405, "BadRequest_MethodNotAllowed")


@pytest.mark.parametrize(
    ("name", "method"),
    [
        (s.name, method)
        for s in SETS
        for method in ("PATCH", "DELETE")
        if not s.allows(method) and not s.composite_key
    ],
)
def test_a_change_bc_forbids_is_405(
    bc: Client, company: str, target: str, name: str, method: str
) -> None:
    if target == "sandbox":
        pytest.skip("would change a record the tests did not create, were BC to allow it")
    entity_set = catalog.get(name)
    rows = _rows(bc, company, entity_set)
    if not rows:
        pytest.skip(f"{name} holds no record")
    url = (
        f"companies({rows[0]['id']})"
        if name == "companies"
        else _record_url(company, entity_set, rows[0])
    )
    with pytest.raises(BCAPIError) as refused:
        bc.request(method, url, json={}, headers={"If-Match": "*"})
    assert (refused.value.status, refused.value.code) == (405, "BadRequest_MethodNotAllowed")
