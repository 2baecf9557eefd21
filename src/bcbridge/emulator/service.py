"""The emulator's data side: everything below ``.../api/`` once a request is authenticated.

`DataService.handle` reads the HTTP request into a `Call` and runs it on one worker thread
(SQLite takes one writer; BC's own answers are serialised per record anyway). `dispatch` asks
`routing` what the call is, `handlers.places` where it applies, and hands it to the handler for
that operation; `$batch` replays its operations through the same `dispatch`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import TypeVar

import anyio
import orjson
import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response

from bcbridge.catalog import EntitySet, _fields
from bcbridge.emulator import changes, streams
from bcbridge.emulator.calls import Call, Result, to_response
from bcbridge.emulator.errors import bad_request, not_emulated
from bcbridge.emulator.handlers import actions, batch, places, reads, subscriptions, writes
from bcbridge.emulator.handlers import streams as stream_handlers
from bcbridge.emulator.handlers.places import Address
from bcbridge.emulator.records import Records
from bcbridge.emulator.routing import (
    RUNTIME_ROUTE,
    Kind,
    Target,
    resolve,
    split_route,
    webhook_target,
)
from bcbridge.emulator.seed import SeedProgress, seed_data
from bcbridge.emulator.store import STANDARD_ROUTE, Row, Schema, make_engine
from bcbridge.emulator.webhooks import Webhooks

Handler = Callable[[Records, Call, Address], Result]
T = TypeVar("T")

# The operations on records; the others (service document, $metadata, companies) need no place.
HANDLERS: Mapping[Kind, Handler] = {
    Kind.LIST: reads.list_records,
    Kind.READ: reads.read_record,
    Kind.RELATED: reads.read_record,
    Kind.CREATE: writes.create,
    Kind.UPDATE: writes.update,
    Kind.DELETE: writes.delete,
    Kind.ACTION: actions.run_action,
}


class DataService:
    def __init__(self, url: str | None = None) -> None:
        self.engine = make_engine(url)
        self.schema = Schema()
        self.schema.metadata.create_all(self.engine)
        self.routes: dict[str, dict[str, EntitySet]] = {
            STANDARD_ROUTE: {name: s for (route, name), s in self.schema.sets.items()},
            RUNTIME_ROUTE: {},  # only companies({id})/webhookSupportedResources
        }
        self._worker = anyio.CapacityLimiter(1)
        # $filter features refused without $schemaversion=2.1 (EmulatorConfig.schemaversion_gates)
        self.gated: frozenset[str] = frozenset({"in", "nested"})
        self.webhooks = Webhooks()
        changes.watch(self.engine, self.webhooks.committed)

    # --- lifecycle ---------------------------------------------------------------------------

    def seed(
        self, seed: int, scale: Mapping[str, int], progress: SeedProgress | None = None
    ) -> None:
        self.schema.metadata.drop_all(self.engine)
        self.schema.company_ids.clear()
        self.schema.metadata.create_all(self.engine)
        with self.engine.begin() as conn:
            seed_data(self.schema, conn, seed, scale, progress)

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
        route = f"{spec['publisher']}/{spec['group']}/{spec['version']}"
        entity_set = EntitySet(
            str(spec["name"]), str(spec["entity"]), fields=_fields(str(spec["fields"]))
        )
        if "id" not in entity_set.field_names:
            raise bad_request("A custom entity needs an 'id' (guid) property.")
        served = self.routes.get(route, {}).get(entity_set.name)
        if served is not None:
            if served == entity_set:
                return False
            raise bad_request(
                f"name: '{entity_set.name}' is already served under api/{route} with other "
                "properties; use another name or restart the emulator"
            )
        table = self.schema.add(route, entity_set)
        table.create(self.engine, checkfirst=True)
        self.routes.setdefault(route, {})[entity_set.name] = entity_set
        return True

    async def in_transaction(self, work: Callable[[Schema, sa.Connection], T]) -> T:
        """Run `work` in one transaction on the worker thread (control endpoints)."""

        def run() -> T:
            with self.engine.begin() as conn:
                return work(self.schema, conn)

        return await anyio.to_thread.run_sync(run, limiter=self._worker)

    def close(self) -> None:
        self.engine.dispose()

    # --- HTTP entry ----------------------------------------------------------------------------

    async def handle(self, request: Request, api_path: str) -> Response:
        route, path = split_route(api_path, self.routes)
        content_type = request.headers.get("content-type", "")
        if path == "$batch" and "json" not in content_type:
            raise not_emulated(
                "Only JSON batches are emulated; send Content-Type: application/json."
            )
        raw = await request.body()
        body, not_json = None, False
        try:
            body = orjson.loads(raw) if raw.strip() else None
        except orjson.JSONDecodeError:
            not_json = True  # refused in `dispatch` unless the call uploads a stream
        base = str(request.url).split("?", 1)[0]
        hook_target = webhook_target(route, request.method, path)
        call = Call(
            method=request.method,
            route=route,
            path=path,
            query=dict(request.query_params),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            root_url=base[: base.index("/api/") + len("/api/")] + route,
            raw=raw,
            not_json=not_json,
            gated=self.gated,
        )
        if hook_target is not None:
            return to_response(await self._subscriptions(request, call, hook_target))
        run = self._batch if path == "$batch" else self._run
        result = await anyio.to_thread.run_sync(run, call, limiter=self._worker)
        request.state.rows_read = _rows_of(call, result)
        return to_response(result)

    async def _subscriptions(self, request: Request, call: Call, target: Target) -> Result:
        """``subscriptions`` and ``webhookSupportedResources``, on the event loop: creating
        and renewing call the subscriber, which must not hold the worker thread."""
        principal = request.state.principal
        return await subscriptions.handle(
            self.webhooks,
            call,
            target,
            # BC's userId is the user (for an app, its application user) that made the
            # subscription; the emulator derives a stable GUID from the app's identity.
            user_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"bcbridge-user/{principal.key}")),
            routes=self.routes,
            company=self._company_id,
        )

    async def _company_id(self, key: str) -> str:
        def look_up() -> str:
            with self.engine.connect() as conn:
                return places.company_by_id(Records(self.schema, conn), key)

        return await anyio.to_thread.run_sync(look_up, limiter=self._worker)

    def _run(self, call: Call) -> Result:
        with self.engine.begin() as conn:
            return self.dispatch(conn, call)

    def _batch(self, call: Call) -> Result:
        return batch.run_batch(self.engine, self.dispatch, call)

    # --- one operation -----------------------------------------------------------------------

    def dispatch(self, conn: sa.Connection, call: Call) -> Result:
        """Route `call`, find its records, and run its handler inside `conn`'s transaction."""
        sets = self.routes[call.route]
        target = resolve(call.method, call.path, call.query, sets)
        if call.not_json and target.kind is not Kind.STREAM:
            raise bad_request("Invalid Request Body: the body is not valid JSON.")
        if target.kind is Kind.SERVICE_DOCUMENT:
            return reads.service_document(call, sets)
        if target.kind is Kind.METADATA:
            return reads.metadata(sets)
        records = Records(self.schema, conn)
        if target.kind is Kind.COMPANIES:
            company_id = places.company_by_id(records, target.key) if target.key else None
            return reads.companies(records, call, company_id)
        address = places.locate(records, call, target)
        if address.key is not None:  # a picture or PDF exists for every record that has one
            streams.materialize(records, address.place, address.key)
        special = stream_handlers.handler_for(target.kind, address.place.name)
        result = (special or HANDLERS[target.kind])(records, call, address)
        return stream_handlers.with_media_links(result, call, target.kind, address.place.entity_set)


def _rows_of(call: Call, result: Result) -> int:
    """The records a GET answered (a page's `value`, or one record): what per-row time costs."""
    if call.method != "GET" or result.status != 200 or not isinstance(result.body, dict):
        return 0
    value = result.body.get("value")
    return len(value) if isinstance(value, list) else 1
