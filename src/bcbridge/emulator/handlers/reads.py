"""GET: the service document, $metadata, companies, a list of records, one record, $expand."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa

from bcbridge import catalog
from bcbridge.catalog import EntitySet, Scope
from bcbridge.emulator import query, streams
from bcbridge.emulator.calls import Call, Result
from bcbridge.emulator.errors import bad_request
from bcbridge.emulator.handlers.places import Address
from bcbridge.emulator.metadata import edmx
from bcbridge.emulator.records import Place, Records
from bcbridge.emulator.store import STANDARD_ROUTE, Row, row_to_json


def service_document(call: Call, sets: Mapping[str, EntitySet]) -> Result:
    names = [
        n for n in ["companies", *sorted(sets)] if n != "companies" or call.route == STANDARD_ROUTE
    ]
    return Result(
        200,
        {
            "@odata.context": f"{call.root_url}/$metadata",
            "value": [{"name": n, "kind": "EntitySet", "url": n} for n in names],
        },
    )


def metadata(sets: Mapping[str, EntitySet]) -> Result:
    return Result(200, edmx(sets.values()).encode(), media_type="application/xml")


def companies(records: Records, call: Call, company_id: str | None) -> Result:
    """``companies`` or ``companies({id})``; the id has been checked by `places.company_by_id`."""
    table = records.schema.table(STANDARD_ROUTE, "companies")
    names = query.select_names(catalog.get("companies"), call.query.get("$select"))
    stmt = sa.select(table).order_by(table.c._seq)
    if company_id:
        stmt = stmt.where(table.c.id == company_id)
    rows = [row_to_json(r, names) for r in records.conn.execute(stmt).mappings()]
    if company_id:
        return Result(
            200, {"@odata.context": f"{call.root_url}/$metadata#companies/$entity", **rows[0]}
        )
    return Result(200, {"@odata.context": f"{call.root_url}/$metadata#companies", "value": rows})


def context(call: Call, place: Place, suffix: str = "", parent_segment: str | None = None) -> str:
    if place.entity_set.scope is Scope.ROOT:  # entityDefinitions, ...: outside companies
        return f"{call.root_url}/$metadata#{place.name}{suffix}"
    middle = f"{parent_segment}/" if parent_segment else ""
    return f"{call.root_url}/$metadata#companies({place.company_id})/{middle}{place.name}{suffix}"


def list_records(records: Records, call: Call, at: Address) -> Result:
    """A page of records: $filter, $orderby, $select, $expand, $top/$skip, $count, paging."""
    place = at.place
    entity_set, table = place.entity_set, records.table(place)
    clauses = records.scope(place)
    if "$filter" in call.query:
        gates = query.gates_in_force(call.query, call.gated)
        clauses.append(query.filter_clause(table, entity_set, call.query["$filter"], gates))
    keys = query.order_keys(entity_set, call.query.get("$orderby"))
    names = query.select_names(entity_set, call.query.get("$select"))
    expands = query.parse_expand(call.query.get("$expand"))
    top = query.whole_number("$top", call.query.get("$top"))
    skip = query.whole_number("$skip", call.query.get("$skip"))
    size, honoured = query.page_size(call.headers.get("prefer"))
    delivered, where = 0, list(clauses)
    token = call.query.get("$skiptoken")
    if token:
        position = query.PagePosition.decode(token)
        where.append(query.keyset_clause(table, keys, position.after))
        delivered, skip = position.delivered, None
        if position.size and not honoured:
            size = position.size
    limit = size if top is None else max(0, min(size, top - delivered))
    stmt = sa.select(table).where(*where).order_by(*query.order_by(table, keys)).limit(limit + 1)
    if skip:
        stmt = stmt.offset(skip)
    rows = list(records.conn.execute(stmt).mappings()) if limit else []
    more = len(rows) > limit
    rows = rows[:limit]
    body: dict[str, Any] = {
        "@odata.context": context(call, place, parent_segment=at.parent_segment)
    }
    if call.query.get("$count", "").lower() == "true":
        count_stmt = sa.select(sa.func.count()).select_from(table).where(*clauses)
        body["@odata.count"] = records.conn.execute(count_stmt).scalar()
    gates = query.gates_in_force(call.query, call.gated)
    body["value"] = render(records, place, rows, names, expands, gates)
    if more and (top is None or delivered + limit < top):
        after = query.PagePosition([rows[-1][name] for name, _ in keys], delivered + limit, size)
        body["@odata.nextLink"] = _next_link(call, after)
    headers = {"Preference-Applied": f"odata.maxpagesize={size}"} if honoured else {}
    return Result(200, body, headers)


def _next_link(call: Call, position: query.PagePosition) -> str:
    params = {k: v for k, v in call.query.items() if k not in ("$skiptoken", "$skip")}
    params["$skiptoken"] = position.encode()
    return f"{call.root_url}/{call.path.strip('/')}?{urlencode(params)}"


def read_record(records: Records, call: Call, at: Address) -> Result:
    assert at.key is not None, at
    row = records.get(at.place, at.key)
    names = query.select_names(at.place.entity_set, call.query.get("$select"))
    expands = query.parse_expand(call.query.get("$expand"))
    gates = query.gates_in_force(call.query, call.gated)
    body = render(records, at.place, [row], names, expands, gates)[0]
    return Result(200, {"@odata.context": context(call, at.place, "/$entity"), **body})


def render(
    records: Records,
    place: Place,
    rows: Sequence[Row],
    names: list[str],
    expands: list[query.Expand],
    gates: frozenset[str] = frozenset(),
) -> list[dict[str, Any]]:
    """Rows as BC's JSON: the selected properties, then each expanded navigation (`gates`:
    what a $filter inside $expand may not use, `query.gates_in_force`)."""
    bodies = [row_to_json(row, names) for row in rows]
    for expand in expands:
        values = _expand(records, place, rows, expand, gates)
        for body, value in zip(bodies, values, strict=True):
            body[expand.name] = value
    return bodies


def _expand(
    records: Records,
    place: Place,
    rows: Sequence[Row],
    expand: query.Expand,
    gates: frozenset[str],
) -> list[Any]:
    """For each row, its expanded navigation: a list of bodies, or one body (or None)."""
    navigation = place.entity_set.navigation(expand.name)
    target = records.schema.sets.get((place.route, navigation.target)) if navigation else None
    if navigation is None or target is None:
        raise bad_request(
            f"Could not find a navigation property named '{expand.name}' on type "
            f"'Microsoft.NAV.{place.entity_set.entity}'."
        )
    target_place = Place(place.route, target, place.company_id)
    table = records.table(target_place)
    names = query.select_names(target, expand.options.get("$select"))
    nested = query.parse_expand(expand.options.get("$expand"))
    if navigation.many:
        ids = [row[navigation.key] for row in rows]
        column = table.c[navigation.via]
    else:
        ids = sorted({str(row[navigation.via]) for row in rows})
        column = table.c[navigation.key]
        for record_id in ids:  # a document's pdfDocument, a customer's picture, ...
            streams.materialize(records, target_place, record_id)
    found: list[Row] = []
    for start in range(0, len(ids), 900):  # SQLite's limit on bound parameters
        stmt = sa.select(table).where(
            *records.scope(target_place), column.in_(ids[start : start + 900])
        )
        if navigation.many and "$filter" in expand.options:
            condition = query.filter_clause(table, target, expand.options["$filter"], gates)
            stmt = stmt.where(condition)
        found += records.conn.execute(stmt.order_by(table.c._seq)).mappings()
    rendered = render(records, target_place, found, names, nested, gates)
    if navigation.many:
        groups: dict[str, list[dict[str, Any]]] = {}
        for row, body in zip(found, rendered, strict=True):
            groups.setdefault(row[navigation.via], []).append(body)
        return [groups.get(row[navigation.key], []) for row in rows]
    by_key = {str(row[navigation.key]): body for row, body in zip(found, rendered, strict=True)}
    return [by_key.get(str(row[navigation.via])) for row in rows]
