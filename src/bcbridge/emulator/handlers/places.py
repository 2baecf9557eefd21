"""Where a routed request applies: its company, its parent record, and the record's key."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from bcbridge.catalog import Scope
from bcbridge.emulator.calls import Call
from bcbridge.emulator.errors import company_not_found, record_not_found
from bcbridge.emulator.records import Place, Records
from bcbridge.emulator.routing import ROOT_COMPANY, Target, record_key
from bcbridge.emulator.store import STANDARD_ROUTE
from bcbridge.odata import parse_key


@dataclass(frozen=True)
class Address:
    """A routed request's records: the place, the record's key, the parent's URL segment."""

    place: Place
    key: str | None = None
    parent_segment: str | None = None  # e.g. ``salesOrders(<id>)`` in a list's @odata.context
    action: str | None = None


def locate(records: Records, call: Call, target: Target) -> Address:
    """The company and parent a target names, looked up; BC's 400/404 when one is missing."""
    assert target.entity_set is not None, target
    if target.entity_set.scope is Scope.ROOT:  # served outside companies
        company_id = ROOT_COMPANY
    elif target.company_key is not None:
        company_id = company_by_id(records, target.company_key)
    else:
        company_id = company_from_request(records, call)
    if target.parent is None:
        place = Place(call.route, target.entity_set, company_id)
        return Address(place, target.key, action=target.action)
    parent_place = Place(call.route, target.parent.entity_set, company_id)
    parent = records.get(parent_place, target.parent.key)
    if target.via is not None:  # a single-valued navigation: the parent names the record
        place = Place(call.route, target.entity_set, company_id)
        if target.match == "id":
            return Address(place, record_key(target.entity_set, str(parent[target.via])))
        found = records.find_by(place, target.match, parent[target.via])  # by code, not id
        if found is None:
            what = f"{target.match}='{parent[target.via]}'"
            raise record_not_found(target.entity_set.entity, what)
        return Address(place, str(found["id"]))
    parent_id = str(parent[target.match])  # jobQueueEntries(..)/jobQueueLogEntries: not the id
    place = Place(call.route, target.entity_set, company_id, parent_id=parent_id)
    segment = f"{target.parent.entity_set.name}({parent['id']})"
    return Address(place, target.key, segment)


def company_by_id(records: Records, key: str) -> str:
    company_id = parse_key(key).lower()
    if company_id in records.schema.company_ids:
        return company_id
    stmt = records.schema.statements.get("company_by_id")
    if stmt is None:  # built once: every request under companies(...) runs it
        table = records.schema.table(STANDARD_ROUTE, "companies")
        stmt = sa.select(table.c.id).where(table.c.id == sa.bindparam("p_id"))
        records.schema.statements["company_by_id"] = stmt
    found = records.conn.execute(stmt, {"p_id": company_id}).first()
    if found is None:
        raise company_not_found(f"The company '{company_id}' does not exist.")
    records.schema.company_ids.add(company_id)
    return company_id


def company_from_request(records: Records, call: Call) -> str:
    """``?company=<id or name>``, or the ``Company: <name>`` header used in batches."""
    wanted = call.query.get("company") or call.headers.get("company")
    if not wanted:
        raise company_not_found(
            "No company was given: use companies({id})/..., ?company={id} or a Company header."
        )
    table = records.schema.table(STANDARD_ROUTE, "companies")
    text = parse_key(wanted)
    row = records.conn.execute(
        sa.select(table.c.id).where(sa.or_(table.c.id == text.lower(), table.c.name == text))
    ).first()
    if row is None:
        raise company_not_found(f"The company '{text}' does not exist.")
    return str(row.id)
