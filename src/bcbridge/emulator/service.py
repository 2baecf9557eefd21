"""The emulator's data side: everything below ``.../api/`` once a request is authenticated.

`DataService.handle` parses the route (``v2.0`` or ``publisher/group/version``) and the path,
runs the operation on one worker thread (SQLite takes one writer; BC's own answers are
serialised per record anyway), and answers with BC's JSON. `$batch` replays its operations
through the same `dispatch`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import anyio
import orjson
import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response

from bcbridge import catalog
from bcbridge.catalog import EntitySet, Operation, Scope
from bcbridge.emulator import documents, query
from bcbridge.emulator.errors import BCError, error_body
from bcbridge.emulator.records import Place, Records, check_if_match
from bcbridge.emulator.store import STANDARD_ROUTE, Row, Schema, make_engine, row_to_json
from bcbridge.emulator.writes import validate
from bcbridge.odata import parse_key

JSON_TYPE = "application/json; odata.metadata=minimal"
_SEGMENT = re.compile(r"^(?P<name>[A-Za-z_$][\w.$]*)(?:\((?P<key>.*)\))?$")
_ROUTE = re.compile(r"^(?P<route>v2\.0|[\w-]+/[\w-]+/v[\w.]+)(?:/(?P<path>.*))?$")


@dataclass
class Call:
    """One OData operation, from HTTP or from inside a `$batch`."""

    method: str
    route: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]  # lower-case names
    body: Any
    root_url: str  # absolute URL of the route's root, no trailing slash


@dataclass
class Result:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    media_type: str = JSON_TYPE


class DataService:
    def __init__(self, url: str | None = None) -> None:
        self.engine = make_engine(url)
        self.schema = Schema()
        self.schema.metadata.create_all(self.engine)
        self.routes: dict[str, dict[str, EntitySet]] = {
            STANDARD_ROUTE: {name: s for (route, name), s in self.schema.sets.items()}
        }
        self._worker = anyio.CapacityLimiter(1)

    # --- lifecycle ---------------------------------------------------------------------------

    def seed(self, seed: int, scale: Mapping[str, int]) -> None:
        from bcbridge.emulator.seed import seed_data

        self.schema.metadata.drop_all(self.engine)
        self.schema.metadata.create_all(self.engine)
        with self.engine.begin() as conn:
            seed_data(self.schema, conn, seed, scale)

    def companies(self) -> list[dict[str, str]]:
        table = self.schema.table(STANDARD_ROUTE, "companies")
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(table.c.id, table.c.name).order_by(table.c._seq))
            return [{"id": row.id, "name": row.name} for row in rows]

    def register_custom_entity(self, spec: Row) -> bool:
        """Serve a custom API entity set; False when the same one is already served.

        `spec` is checked by `bcbridge.emulator.control.EntitySpec`. Registering another
        property list under a served name is refused: its table already exists.
        """
        from bcbridge.catalog import _fields

        route = f"{spec['publisher']}/{spec['group']}/{spec['version']}"
        entity_set = EntitySet(
            str(spec["name"]), str(spec["entity"]), fields=_fields(str(spec["fields"]))
        )
        if "id" not in entity_set.field_names:
            raise BCError(400, "BadRequest", "A custom entity needs an 'id' (guid) property.")
        served = self.routes.get(route, {}).get(entity_set.name)
        if served is not None:
            if served == entity_set:
                return False
            raise BCError(
                400,
                "BadRequest",
                f"name: '{entity_set.name}' is already served under api/{route} with other "
                "properties; use another name or restart the emulator",
            )
        table = self.schema.add(route, entity_set)
        table.create(self.engine, checkfirst=True)
        self.routes.setdefault(route, {})[entity_set.name] = entity_set
        return True

    def close(self) -> None:
        self.engine.dispose()

    # --- HTTP entry ----------------------------------------------------------------------------

    async def handle(self, request: Request, api_path: str) -> Response:
        match = _ROUTE.match(api_path)
        if not match or match["route"] not in self.routes:
            raise BCError(
                404, "BadRequest_ResourceNotFound", f"No API is served at 'api/{api_path}'."
            )
        if (match["path"] or "") == "$batch" and "json" not in request.headers.get(
            "content-type", ""
        ):
            raise BCError(
                501,
                "BadRequest_MethodNotImplemented",
                "Only JSON batches are emulated; send Content-Type: application/json.",
            )
        raw = await request.body()
        try:
            body = orjson.loads(raw) if raw.strip() else None
        except orjson.JSONDecodeError:
            raise BCError(
                400, "BadRequest", "Invalid Request Body: the body is not valid JSON."
            ) from None
        base = str(request.url).split("?", 1)[0]
        route_root = base[: base.index("/api/") + len("/api/")] + match["route"]
        call = Call(
            method=request.method,
            route=match["route"],
            path=match["path"] or "",
            query=dict(request.query_params),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            root_url=route_root,
        )
        if call.path == "$batch":
            result = await anyio.to_thread.run_sync(self._batch, call, limiter=self._worker)
        else:
            result = await anyio.to_thread.run_sync(self._run, call, limiter=self._worker)
        return to_response(result)

    def _run(self, call: Call) -> Result:
        with self.engine.begin() as conn:
            return self.dispatch(conn, call)

    def _batch(self, call: Call) -> Result:
        from bcbridge.emulator.batch import run_batch

        return run_batch(self, call)

    # --- routing ----------------------------------------------------------------------------

    def dispatch(self, conn: sa.Connection, call: Call) -> Result:
        for option in query.UNSUPPORTED_OPTIONS:
            if option in call.query:
                raise BCError(501, "BadRequest_MethodNotImplemented", f"{option} is not supported.")
        path = call.path.strip("/")
        if path == "":
            return self._service_document(call)
        if path == "$metadata":
            from bcbridge.emulator.metadata import edmx

            return Result(
                200, edmx(self.routes[call.route].values()).encode(), media_type="application/xml"
            )
        segments = [_segment(part) for part in _split_path(path)]
        records = Records(self.schema, conn)
        sets = self.routes[call.route]
        name, key = segments[0]
        if name == "subscriptions":
            raise BCError(
                501,
                "BadRequest_MethodNotImplemented",
                "Webhook subscriptions are not emulated (they need a reachable notificationUrl).",
            )
        if name == "companies":
            if key is None:
                if len(segments) > 1:
                    raise BCError(
                        400, "BadRequest_InvalidRequestUrl", "A company key is required here."
                    )
                return self._companies(records, call, None)
            company_id = self._company_by_id(records, key)
            if len(segments) == 1:
                return self._companies(records, call, company_id)
            segments = segments[1:]
        else:
            company_id = self._company_from_request(records, call)
        set_name, set_key = segments[0]
        entity_set = sets.get(set_name)
        if entity_set is None or entity_set.scope is Scope.ROOT:
            raise BCError(
                404,
                "BadRequest_ResourceNotFound",
                f"Resource not found for the segment '{set_name}'.",
            )
        place = Place(call.route, entity_set, company_id)
        if len(segments) == 1:
            return (
                self._on_set(records, call, place)
                if set_key is None
                else self._on_record(records, call, place, set_key)
            )
        if set_key is None:
            raise BCError(
                400,
                "BadRequest_InvalidRequestUrl",
                f"'{set_name}' needs a key before '{segments[1][0]}'.",
            )
        parent = records.get(place, set_key)
        next_name, next_key = segments[1]
        if next_name.startswith("Microsoft.NAV."):
            if len(segments) > 2 or next_key is not None:
                raise BCError(
                    400, "BadRequest_InvalidRequestUrl", "Nothing can follow a bound action."
                )
            return self._action(
                records, call, place, parent, next_name.removeprefix("Microsoft.NAV.")
            )
        navigation = entity_set.navigation(next_name)
        if navigation is None:
            raise BCError(
                404,
                "BadRequest_ResourceNotFound",
                f"Resource not found for the segment '{next_name}'.",
            )
        target = sets.get(navigation.target)
        if target is None or (len(segments) > 2 and next_key is None):
            raise BCError(
                501, "BadRequest_MethodNotImplemented", "This navigation path is not emulated."
            )
        if navigation.many:
            child = Place(call.route, target, company_id, parent_id=parent["id"])
            if next_key is None:
                return self._on_set(
                    records, call, child, parent_segment=f"{set_name}({parent['id']})"
                )
            return self._on_record(records, call, child, next_key)
        if call.method != "GET":
            raise BCError(
                405,
                "BadRequest_MethodNotAllowed",
                f"'{call.method}' is not allowed on '{next_name}'.",
            )
        related = Place(call.route, target, company_id)
        return self._on_record(records, call, related, str(parent[navigation.via]))

    def _company_by_id(self, records: Records, key: str) -> str:
        company_id = parse_key(key).lower()
        table = self.schema.table(STANDARD_ROUTE, "companies")
        if (
            records.conn.execute(sa.select(table.c.id).where(table.c.id == company_id)).first()
            is None
        ):
            # BC's status for an unknown company is UNCONFIRMED (bc-api.md §7)
            raise BCError(
                404, "Internal_CompanyNotFound", f"The company '{company_id}' does not exist."
            )
        return company_id

    def _company_from_request(self, records: Records, call: Call) -> str:
        """``?company=<id or name>``, or the ``Company: <name>`` header used in batches."""
        wanted = call.query.get("company") or call.headers.get("company")
        if not wanted:
            raise BCError(
                400,
                "Internal_CompanyNotFound",
                "No company was given: use companies({id})/..., ?company={id} or a Company header.",
            )
        table = self.schema.table(STANDARD_ROUTE, "companies")
        text = parse_key(wanted)
        row = records.conn.execute(
            sa.select(table.c.id).where(sa.or_(table.c.id == text.lower(), table.c.name == text))
        ).first()
        if row is None:
            raise BCError(404, "Internal_CompanyNotFound", f"The company '{text}' does not exist.")
        return str(row.id)

    # --- reads ------------------------------------------------------------------------------------

    def _service_document(self, call: Call) -> Result:
        names = sorted(self.routes[call.route])
        return Result(
            200,
            {
                "@odata.context": f"{call.root_url}/$metadata",
                "value": [
                    {"name": n, "kind": "EntitySet", "url": n}
                    for n in ["companies", *names]
                    if n != "companies" or call.route == STANDARD_ROUTE
                ],
            },
        )

    def _companies(self, records: Records, call: Call, company_id: str | None) -> Result:
        if call.method != "GET":
            raise BCError(405, "BadRequest_MethodNotAllowed", "'companies' is read-only.")
        table = self.schema.table(STANDARD_ROUTE, "companies")
        names = query.select_names(catalog.get("companies"), call.query.get("$select"))
        stmt = sa.select(table).order_by(table.c._seq)
        if company_id:
            stmt = stmt.where(table.c.id == company_id)
        rows = [row_to_json(r, names) for r in records.conn.execute(stmt).mappings()]
        if company_id:
            return Result(
                200, {"@odata.context": f"{call.root_url}/$metadata#companies/$entity", **rows[0]}
            )
        return Result(
            200, {"@odata.context": f"{call.root_url}/$metadata#companies", "value": rows}
        )

    def _context(
        self, call: Call, place: Place, suffix: str = "", parent_segment: str | None = None
    ) -> str:
        middle = f"{parent_segment}/" if parent_segment else ""
        return (
            f"{call.root_url}/$metadata#companies({place.company_id})/{middle}{place.name}{suffix}"
        )

    def _on_set(
        self, records: Records, call: Call, place: Place, parent_segment: str | None = None
    ) -> Result:
        if call.method == "GET":
            return self._list(records, call, place, parent_segment)
        if call.method == "POST":
            return self._create(records, call, place)
        raise BCError(
            405,
            "BadRequest_MethodNotAllowed",
            f"'{call.method}' requests for '{place.name}' collections are not allowed.",
        )

    def _list(
        self, records: Records, call: Call, place: Place, parent_segment: str | None
    ) -> Result:
        entity_set, table = place.entity_set, records.table(place)
        clauses = records.scope(place)
        if "$filter" in call.query:
            clauses.append(query.filter_clause(table, entity_set, call.query["$filter"]))
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
        stmt = (
            sa.select(table).where(*where).order_by(*query.order_by(table, keys)).limit(limit + 1)
        )
        if skip:
            stmt = stmt.offset(skip)
        rows = list(records.conn.execute(stmt).mappings()) if limit else []
        more = len(rows) > limit
        rows = rows[:limit]
        body: dict[str, Any] = {
            "@odata.context": self._context(call, place, parent_segment=parent_segment)
        }
        if call.query.get("$count", "").lower() == "true":
            count_stmt = sa.select(sa.func.count()).select_from(table).where(*clauses)
            body["@odata.count"] = records.conn.execute(count_stmt).scalar()
        body["value"] = self._render(records, place, rows, names, expands)
        if more and (top is None or delivered + limit < top):
            position = query.PagePosition(
                [rows[-1][name] for name, _ in keys], delivered + limit, size
            )
            params = {k: v for k, v in call.query.items() if k not in ("$skiptoken", "$skip")}
            params["$skiptoken"] = position.encode()
            body["@odata.nextLink"] = f"{call.root_url}/{call.path.strip('/')}?{urlencode(params)}"
        headers = {"Preference-Applied": f"odata.maxpagesize={size}"} if honoured else {}
        return Result(200, body, headers)

    def _render(
        self,
        records: Records,
        place: Place,
        rows: Sequence[Row],
        names: list[str],
        expands: list[query.Expand],
    ) -> list[dict[str, Any]]:
        bodies = [row_to_json(row, names) for row in rows]
        for expand in expands:
            values = self._expand(records, place, rows, expand)
            for body, value in zip(bodies, values, strict=True):
                body[expand.name] = value
        return bodies

    def _expand(
        self, records: Records, place: Place, rows: Sequence[Row], expand: query.Expand
    ) -> list[Any]:
        navigation = place.entity_set.navigation(expand.name)
        target = self.routes[place.route].get(navigation.target) if navigation else None
        if navigation is None or target is None:
            raise query.bad_request(
                f"Could not find a navigation property named '{expand.name}' on type "
                f"'Microsoft.NAV.{place.entity_set.entity}'."
            )
        target_place = Place(place.route, target, place.company_id)
        table = records.table(target_place)
        names = query.select_names(target, expand.options.get("$select"))
        nested = query.parse_expand(expand.options.get("$expand"))
        if navigation.many:
            ids = [row["id"] for row in rows]
            column = table.c[navigation.via]
        else:
            ids = sorted({str(row[navigation.via]) for row in rows})
            column = table.c.id
        found: list[Row] = []
        for start in range(0, len(ids), 900):
            stmt = sa.select(table).where(
                *records.scope(target_place), column.in_(ids[start : start + 900])
            )
            if navigation.many and "$filter" in expand.options:
                stmt = stmt.where(query.filter_clause(table, target, expand.options["$filter"]))
            found += records.conn.execute(stmt.order_by(table.c._seq)).mappings()
        rendered = self._render(records, target_place, found, names, nested)
        if navigation.many:
            groups: dict[str, list[dict[str, Any]]] = {}
            for row, body in zip(found, rendered, strict=True):
                groups.setdefault(row[navigation.via], []).append(body)
            return [groups.get(row["id"], []) for row in rows]
        by_id = {row["id"]: body for row, body in zip(found, rendered, strict=True)}
        return [by_id.get(str(row[navigation.via])) for row in rows]

    # --- writes -------------------------------------------------------------------------------

    def _on_record(self, records: Records, call: Call, place: Place, key: str) -> Result:
        record_id = parse_key(key)
        from bcbridge.odata import is_guid

        if not place.entity_set.key_is_string and not is_guid(record_id):
            raise BCError(
                400,
                "BadRequest_NotFound",
                f"Bad Request - Error in query syntax: '{record_id}' is not a valid key.",
            )
        row = records.get(place, record_id)
        if call.method == "GET":
            names = query.select_names(place.entity_set, call.query.get("$select"))
            body = self._render(
                records, place, [row], names, query.parse_expand(call.query.get("$expand"))
            )[0]
            return Result(200, {"@odata.context": self._context(call, place, "/$entity"), **body})
        self._require(
            place,
            Operation(call.method) if call.method in ("PATCH", "DELETE") else None,
            call.method,
        )
        if call.method == "PATCH":
            return self._update(records, call, place, row)
        check_if_match(row, call.headers.get("if-match"), required=False)
        self._delete(records, place, row)
        return Result(204)

    def _require(self, place: Place, operation: Operation | None, method: str) -> None:
        if operation is None or not place.entity_set.allows(operation):
            raise BCError(
                405,
                "BadRequest_MethodNotAllowed",
                f"'{method}' requests for '{place.name}' are not allowed.",
            )
        if not place.entity_set.described:
            raise BCError(
                501,
                "BadRequest_MethodNotImplemented",
                f"The emulator has no property list for '{place.name}', "
                "so it cannot accept writes to it.",
            )

    def _create(self, records: Records, call: Call, place: Place) -> Result:
        self._require(place, Operation.POST, "POST")
        entity_set = place.entity_set
        parent_field = entity_set.parent_field
        allowed = frozenset({parent_field}) if parent_field else frozenset()
        values = validate(entity_set, call.body, allow_read_only=allowed)
        lines_body = (call.body or {}).get(entity_set.lines) if entity_set.lines else None
        if lines_body is not None and not isinstance(lines_body, list):
            raise BCError(400, "BadRequest", f"'{entity_set.lines}' must be an array of lines.")
        line_set = catalog.get(entity_set.lines) if entity_set.lines and lines_body else None
        line_values = [validate(line_set, line) for line in lines_body or []] if line_set else []
        row = self._insert(records, place, values)
        if line_set:
            line_place = Place(place.route, line_set, place.company_id, parent_id=row["id"])
            for line in line_values:
                self._insert(records, line_place, line)
            row = records.get(place, row["id"])
        if (
            "prefer" in call.headers and "return=minimal" in call.headers["prefer"]
        ) or "return-no-content" in call.headers.get("prefer", ""):
            return Result(204)
        body = self._render(
            records,
            place,
            [row],
            query.select_names(entity_set, None),
            query.parse_expand(call.query.get("$expand")),
        )[0]
        return Result(
            201,
            {"@odata.context": self._context(call, place, "/$entity"), **body},
            {
                "Location": f"{call.root_url}/companies({place.company_id})/"
                f"{place.name}({row['id']})"
            },
        )

    def _insert(self, records: Records, place: Place, values: dict[str, Any]) -> Row:
        entity_set = place.entity_set
        parent = self._parent_of(records, place, values)
        documents.resolve_references(records, place, values)
        documents.require_party(entity_set, values)
        documents.apply_create_defaults(entity_set, values)
        natural = entity_set.natural_key
        if natural and entity_set.number_series and not values.get(natural):
            values[natural] = records.next_number(place)
        elif natural and values.get(natural) and records.find_by(place, natural, values[natural]):
            raise BCError(
                409,
                "Internal_EntityWithSameKeyExists",
                f"The record in table {entity_set.entity} already exists. Identification "
                f"fields and values: {natural}='{values[natural]}'",
            )
        if parent is not None and entity_set.parent_field == "documentId":
            values.setdefault("sequence", documents.next_sequence(records, place, parent[1]["id"]))
            documents.prepare_line(records, place, values, None)
        row = records.insert(place, values)
        if parent is not None:
            documents.recompute_totals(records, parent[0], records.get(parent[0], parent[1]["id"]))
        return row

    def _parent_of(
        self, records: Records, place: Place, values: dict[str, Any]
    ) -> tuple[Place, Row] | None:
        """The document a line belongs to: from the URL, or from documentId on the flat route."""
        entity_set = place.entity_set
        if not entity_set.parent or not entity_set.parent_field:
            return None
        parent_place = Place(place.route, catalog.get(entity_set.parent), place.company_id)
        parent_id = place.parent_id or values.get(entity_set.parent_field)
        if not parent_id:
            raise BCError(
                400,
                "BadRequest_RequiredParamNotProvided",
                f"Field '{entity_set.parent_field}' must not be blank or empty.",
            )
        if (
            place.parent_id
            and values.get(entity_set.parent_field, place.parent_id) != place.parent_id
        ):
            raise BCError(
                400,
                "BadRequest",
                f"'{entity_set.parent_field}' does not match the parent in the URL.",
            )
        values[entity_set.parent_field] = parent_id
        return parent_place, records.get(parent_place, str(parent_id))

    def _update(self, records: Records, call: Call, place: Place, row: Row) -> Result:
        check_if_match(row, call.headers.get("if-match"), required=True)
        values = validate(place.entity_set, call.body)
        documents.resolve_references(records, place, values)
        if place.entity_set.parent_field == "documentId":
            documents.prepare_line(records, place, values, row)
        row = records.update(place, row, values)
        if place.entity_set.lines:
            documents.recompute_totals(records, place, row)
            row = records.get(place, row["id"])
        parent = (
            self._parent_of(
                records, place, {place.entity_set.parent_field: row[place.entity_set.parent_field]}
            )
            if place.entity_set.parent_field
            else None
        )
        if parent is not None:
            documents.recompute_totals(records, parent[0], parent[1])
        names = query.select_names(place.entity_set, None)
        body = self._render(records, place, [row], names, [])[0]
        return Result(200, {"@odata.context": self._context(call, place, "/$entity"), **body})

    def _delete(self, records: Records, place: Place, row: Row) -> None:
        entity_set = place.entity_set
        if entity_set.lines:
            line_place = Place(place.route, catalog.get(entity_set.lines), place.company_id)
            for line in records.children(
                line_place, str(catalog.get(entity_set.lines).parent_field), row["id"]
            ):
                records.delete(line_place, line)
        records.delete(place, row)
        if entity_set.parent and entity_set.parent_field:
            parent_place = Place(place.route, catalog.get(entity_set.parent), place.company_id)
            parent = records.find(parent_place, str(row[entity_set.parent_field]))
            if parent is not None:
                documents.recompute_totals(records, parent_place, parent)

    def _action(self, records: Records, call: Call, place: Place, row: Row, action: str) -> Result:
        if call.method != "POST":
            raise BCError(405, "BadRequest_MethodNotAllowed", "Bound actions are called with POST.")
        if action not in place.entity_set.actions:
            raise BCError(
                400,
                "BadRequest_MethodNotImplemented",
                f"The action '{action}' is not supported by '{place.name}'.",
            )
        handler = documents.ACTIONS.get((place.name, action))
        if handler is None:
            raise BCError(
                501,
                "BadRequest_MethodNotImplemented",
                f"The bound action '{action}' on '{place.name}' is not emulated "
                "(it needs email or posting setup).",
            )
        handler(records, place, row)
        return Result(204)


def _split_path(path: str) -> list[str]:
    """Split on '/' outside quotes and parentheses."""
    return query.split_top_level(path, "/")


def _segment(text: str) -> tuple[str, str | None]:
    match = _SEGMENT.match(text)
    if not match:
        raise BCError(400, "BadRequest_NotFound", f"Bad Request - Error in query syntax: '{text}'.")
    key = match["key"]
    if key is not None and ("," in key and not key.startswith("'")):
        raise BCError(
            400, "BadRequest_NotFound", f"'|' or ',' expected at position 3 in '({key})'."
        )
    return match["name"], key


def to_response(result: Result) -> Response:
    if result.body is None:
        return Response(status_code=result.status, headers=result.headers)
    content = result.body if isinstance(result.body, bytes) else orjson.dumps(result.body)
    return Response(
        content, status_code=result.status, headers=result.headers, media_type=result.media_type
    )


def error_result(error: BCError, correlation_id: str) -> Result:
    return Result(
        error.status,
        error_body(error.code, error.message, correlation_id),
        {"request-id": correlation_id, **error.headers},
    )
