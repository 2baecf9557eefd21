"""Webhooks: BC tells `bcbridge serve` what changed (bc-api.md §9), nothing lost.

- **Subscriptions** (`SubscriptionManager`): one per incoming with ``trigger: webhook``, on
  ``<public_url>/webhooks/<incoming>``, with a random clientState of which the store keeps only
  the SHA-256 digest. Renewed (PATCH with If-Match, which repeats BC's handshake) once half of
  its lifetime is gone; re-created when BC no longer has it (BC deletes a subscription whose
  receiver once answered a status other than 408, 429 or 5xx); removed when its incoming is gone
  from the project or no longer a webhook one.
- **The receiver** (`receiver_routes`, outside the dashboard's sign-in): answers the handshake
  (``validationToken`` -> 200, the token as plain text); checks each item's clientState against
  the digest in constant time (a wrong one is refused, 401 when nothing in the POST is ours, and
  counted); writes the items to the store before it answers (one row per flow reading the
  incoming, de-duplicated on their content) and answers 503 when it cannot, so BC retries.
- **Processing** (`NotificationSource`, `process_work`): a flow's stored notifications become a
  run of the flow with these records: created and updated records read in groups (``$filter=id eq
  a or id eq b ...``), a ``collection`` as a read with BC's own ``$filter``, a ``deleted`` as the
  incoming's `on_delete` says. The run takes the flow's usual path (transformers, tasks, the
  target, exactly-once); the notifications are marked processed only after it, so a killed
  process processes them again after its restart, and the tasks already done are not delivered
  twice. With `engine: procrastinate` the run is a job that a `bcbridge worker` runs.
- **The safety net**: the flow's reconciliation run (the incoming's `reconcile:`, hourly by
  default) reads by cursor and registers the records as the same tasks (task identity is the
  payload's hash), so what a notification brought is not delivered again.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import anyio
import anyio.to_thread
import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route

from bcbridge.client import BusinessCentralClient
from bcbridge.dashboard.service import FlowService
from bcbridge.errors import BCAPIError, BCBridgeError, ConfigError
from bcbridge.flowconfig import DEFAULT_CLIENT, PUBLIC_URL_ENV, IncomingConfig, ProjectConfig
from bcbridge.flows import TOMBSTONE_FIELD, FlowRunner, RunResult, SourceFactory
from bcbridge.store import RunStatus, Store, StoreError
from bcbridge.subscriber import Subscriber

__all__ = [
    "Notification",
    "NotificationSource",
    "SubscriptionManager",
    "SubscriptionRow",
    "WebhookService",
    "WebhookStore",
    "client_state_digest",
    "process_work",
    "receiver_routes",
]

log = logging.getLogger("bcbridge.serve")

RECEIVER_PATH = "/webhooks/{incoming}"
ID_GROUP = 40  # record ids per `$filter=id eq ... or ...` read: ~2,000 characters of URL
BATCH = 5000  # notifications one run of a flow processes
# a POST of 1,000 notifications is about 400 KB; anything far larger is not BC's
MAX_BODY = 32 * 2**20
RENEW_AFTER = 0.5  # share of a subscription's lifetime after which it is renewed

_metadata = sa.MetaData()
subscriptions = sa.Table(
    "webhook_subscriptions",
    _metadata,
    sa.Column("incoming", sa.String(200), primary_key=True),
    sa.Column("subscription_id", sa.String(200), nullable=False),
    sa.Column("resource", sa.Text, nullable=False),
    sa.Column("notification_url", sa.Text, nullable=False),
    sa.Column("client_state_hash", sa.String(64), nullable=False),
    sa.Column("etag", sa.Text),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("renewed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("refused", sa.Integer, nullable=False, server_default="0"),
)
notifications = sa.Table(
    "webhook_notifications",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("flow", sa.String(200), nullable=False),
    sa.Column("incoming", sa.String(200), nullable=False),
    sa.Column("dedup_key", sa.String(64), nullable=False),
    sa.Column("subscription_id", sa.String(200), nullable=False),
    sa.Column("change_type", sa.String(20), nullable=False),
    sa.Column("resource", sa.Text, nullable=False),
    sa.Column("last_modified", sa.String(40)),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("processed_at", sa.DateTime(timezone=True)),
)


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def client_state_digest(client_state: str) -> str:
    """What the store keeps of a clientState: its SHA-256, never the secret itself."""
    return hashlib.sha256(client_state.encode()).hexdigest()


def _dedup_key(item: dict[str, Any]) -> str:
    """The same notification delivered twice (BC's retry of an answer it did not get) has the
    same key; a later change of the same record has another lastModifiedDateTime."""
    parts = [str(item.get(name)) for name in ("resource", "changeType", "lastModifiedDateTime")]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


@dataclass
class SubscriptionRow:
    """What the store knows of the subscription of one incoming."""

    incoming: str
    subscription_id: str
    resource: str
    notification_url: str
    client_state_hash: str
    etag: str | None
    expires_at: datetime
    renewed_at: datetime
    refused: int = 0

    def renew_due(self, now: datetime) -> bool:
        """Half of its lifetime gone: renewed well before BC lets it lapse."""
        return now >= self.renewed_at + (self.expires_at - self.renewed_at) * RENEW_AFTER

    def as_json(self) -> dict[str, Any]:
        return {
            "incoming": self.incoming,
            "subscriptionId": self.subscription_id,
            "resource": self.resource,
            "notificationUrl": self.notification_url,
            "expirationDateTime": self.expires_at.isoformat(),
            "renewedAt": self.renewed_at.isoformat(),
            "refused": self.refused,
        }


@dataclass
class Notification:
    id: int
    flow: str
    incoming: str
    change_type: str
    resource: str
    last_modified: str | None


class WebhookStore:
    """The webhook tables of a project's store (migration 0006)."""

    def __init__(self, store: Store):
        self.store = store

    # --- subscriptions ---------------------------------------------------------------------

    def subscription(self, incoming: str) -> SubscriptionRow | None:
        with self.store._connect() as conn:
            row = (
                conn.execute(sa.select(subscriptions).where(subscriptions.c.incoming == incoming))
                .mappings()
                .first()
            )
        return None if row is None else _subscription(row)

    def subscriptions(self) -> list[SubscriptionRow]:
        with self.store._connect() as conn:
            rows = conn.execute(sa.select(subscriptions).order_by(subscriptions.c.incoming))
            return [_subscription(row) for row in rows.mappings()]

    def save_subscription(self, row: SubscriptionRow) -> None:
        values = {
            "subscription_id": row.subscription_id,
            "resource": row.resource,
            "notification_url": row.notification_url,
            "client_state_hash": row.client_state_hash,
            "etag": row.etag,
            "expires_at": row.expires_at,
            "renewed_at": row.renewed_at,
        }
        with self.store._begin() as conn:
            updated = conn.execute(
                subscriptions.update()
                .where(subscriptions.c.incoming == row.incoming)
                .values(**values)
            )
            if not updated.rowcount:
                conn.execute(subscriptions.insert().values(incoming=row.incoming, **values))

    def forget_subscription(self, incoming: str) -> None:
        with self.store._begin() as conn:
            conn.execute(subscriptions.delete().where(subscriptions.c.incoming == incoming))

    def count_refused(self, incoming: str, count: int) -> None:
        with self.store._begin() as conn:
            conn.execute(
                subscriptions.update()
                .where(subscriptions.c.incoming == incoming)
                .values(refused=subscriptions.c.refused + count)
            )

    # --- notifications ---------------------------------------------------------------------

    def receive(self, incoming: str, flows: Sequence[str], items: Sequence[dict[str, Any]]) -> int:
        """Keep `items` for each flow of `incoming`, in one transaction; those already kept
        (BC delivered them again) are left out. Returns how many rows are new."""
        now = _now()
        rows = [
            {
                "flow": flow,
                "incoming": incoming,
                "dedup_key": _dedup_key(item),
                "subscription_id": str(item.get("subscriptionId") or ""),
                "change_type": str(item.get("changeType") or ""),
                "resource": str(item.get("resource") or ""),
                "last_modified": item.get("lastModifiedDateTime"),
                "received_at": now,
            }
            for flow in flows
            for item in items
        ]
        if not rows:
            return 0
        with self.store._begin() as conn:
            dialect = conn.dialect.name
            if dialect == "postgresql":
                insert: Any = postgresql.insert(notifications)
            elif dialect == "sqlite":
                insert = sqlite.insert(notifications)
            else:  # pragma: no cover - the store supports SQLite and PostgreSQL
                raise StoreError(f"webhooks need SQLite or PostgreSQL, not {dialect}")
            result = conn.execute(
                insert.on_conflict_do_nothing(index_elements=["flow", "dedup_key"]), rows
            )
            return max(0, result.rowcount or 0)

    def open_notifications(self, flow: str, limit: int = BATCH) -> list[Notification]:
        """The notifications of `flow` not yet processed, oldest first."""
        with self.store._connect() as conn:
            rows = conn.execute(
                sa.select(notifications)
                .where(notifications.c.flow == flow, notifications.c.processed_at.is_(None))
                .order_by(notifications.c.id)
                .limit(limit)
            ).mappings()
            return [
                Notification(
                    row["id"],
                    row["flow"],
                    row["incoming"],
                    row["change_type"],
                    row["resource"],
                    row["last_modified"],
                )
                for row in rows
            ]

    def waiting(self) -> list[str]:
        """The flows with notifications to process."""
        with self.store._connect() as conn:
            rows = conn.execute(
                sa.select(notifications.c.flow)
                .where(notifications.c.processed_at.is_(None))
                .distinct()
            )
            return sorted(rows.scalars())

    def processed(self, ids: Iterable[int]) -> None:
        chosen = list(ids)
        with self.store._begin() as conn:
            for start in range(0, len(chosen), 500):
                conn.execute(
                    notifications.update()
                    .where(notifications.c.id.in_(chosen[start : start + 500]))
                    .values(processed_at=_now())
                )

    def counts(self) -> dict[str, int]:
        """Notifications received and processed, over all flows."""
        with self.store._connect() as conn:
            total = conn.execute(sa.select(sa.func.count()).select_from(notifications)).scalar()
            done = conn.execute(
                sa.select(sa.func.count())
                .select_from(notifications)
                .where(notifications.c.processed_at.is_not(None))
            ).scalar()
        return {"received": int(total or 0), "processed": int(done or 0)}


def _subscription(row: Any) -> SubscriptionRow:
    return SubscriptionRow(
        incoming=row["incoming"],
        subscription_id=row["subscription_id"],
        resource=row["resource"],
        notification_url=row["notification_url"],
        client_state_hash=row["client_state_hash"],
        etag=row["etag"],
        expires_at=_utc(row["expires_at"]),
        renewed_at=_utc(row["renewed_at"]),
        refused=int(row["refused"] or 0),
    )


# --- the receiver ---------------------------------------------------------------------------


@dataclass
class ReceiverStats:
    """What the receiver did since the process started (the store counts the refused too)."""

    handshakes: int = 0
    received: int = 0
    duplicates: int = 0
    refused: int = 0
    unavailable: int = 0


class Receiver:
    """The endpoint BC calls: `/webhooks/<incoming>`. `project` is read at each call, so a
    reloaded project (`FlowService.reload_project`) is followed."""

    def __init__(self, project: Callable[[], ProjectConfig], store: WebhookStore):
        self._project = project  # the current project (the dashboard may reload it)
        self.store = store
        self.stats = ReceiverStats()
        self.wake = threading.Event()  # set when notifications were stored

    async def handle(self, request: Request) -> Response:
        project: ProjectConfig = self._project()
        name = request.path_params["incoming"]
        incoming = project.webhook_incoming().get(name)
        if incoming is None:
            return PlainTextResponse("no webhook incoming of that name", status_code=404)
        token = request.query_params.get("validationToken")
        if token is not None:  # BC's handshake, on create and on renewal
            self.stats.handshakes += 1
            # the token echoed as plain text, never sniffed as HTML by a browser
            return PlainTextResponse(token, headers={"X-Content-Type-Options": "nosniff"})
        if request.method != "POST":
            return PlainTextResponse("POST notifications here", status_code=405)
        if _length(request) > MAX_BODY:
            return PlainTextResponse("too large for a notification", status_code=413)
        try:
            body = orjson.loads(await request.body())
            items = [item for item in body["value"] if isinstance(item, dict)]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return PlainTextResponse('expected {"value": [...]}', status_code=400)
        return await anyio.to_thread.run_sync(self._keep, project, name, items)

    def _keep(self, project: ProjectConfig, name: str, items: list[dict[str, Any]]) -> Response:
        """Check and store; the answer is sent only after the items are committed."""
        try:
            row = self.store.subscription(name)
            ours = [item for item in items if _state_matches(item, row)]
            refused = len(items) - len(ours)
            if refused:
                self.stats.refused += refused
                log.warning(
                    "webhooks %s: %d notification(s) with a wrong clientState", name, refused
                )
                if row is not None:
                    self.store.count_refused(name, refused)
            if not ours:
                return PlainTextResponse("unknown clientState", status_code=401)
            new = self.store.receive(name, project.flows_of(name), ours)
        except StoreError as exc:  # BC retries on 5xx: nothing is lost
            self.stats.unavailable += 1
            log.warning("webhooks %s: cannot store the notifications: %s", name, exc)
            return PlainTextResponse("cannot store the notifications now", status_code=503)
        flows = max(1, len(project.flows_of(name)))
        self.stats.received += len(ours)
        self.stats.duplicates += len(ours) - min(len(ours), new // flows)
        self.wake.set()
        return Response(status_code=202)


def _length(request: Request) -> int:
    """The declared Content-Length (0 when absent or not a number: the body is read as sent)."""
    try:
        return int(request.headers.get("content-length") or 0)
    except ValueError:
        return 0


def _state_matches(item: dict[str, Any], row: SubscriptionRow | None) -> bool:
    """The item's clientState has the digest of the incoming's subscription (compared in
    constant time, so the answer's timing tells nothing about the secret)."""
    if row is None:
        return False
    sent = item.get("clientState")
    digest = client_state_digest(sent) if isinstance(sent, str) else ""
    return hmac.compare_digest(digest.encode(), row.client_state_hash.encode())


def receiver_routes(receiver: Receiver) -> list[Route]:
    """The receiver's routes, to mount outside the dashboard's sign-in."""
    return [Route(RECEIVER_PATH, receiver.handle, methods=["GET", "POST"])]


# --- subscriptions ----------------------------------------------------------------------------


def notification_url(public_url: str, incoming: str) -> str:
    return f"{public_url.rstrip('/')}/webhooks/{quote(incoming, safe='')}"


Clients = Callable[[str], Awaitable[BusinessCentralClient]]  # a BC client by its name


class SubscriptionManager:
    """Keeps BC's subscriptions as the project wants them (see the module's text)."""

    def __init__(self, project: ProjectConfig, store: WebhookStore, public_url: str | None):
        self.project = project
        self.store = store
        self.public_url = public_url
        self.failed = False  # the last `keep` round could not keep one of them

    def incoming_config(self, name: str) -> IncomingConfig:
        incoming = self.project.webhook_incoming().get(name)
        if incoming is None:
            raise ConfigError(
                f"incoming {name!r} is not a webhook incoming (trigger: webhook); webhook "
                f"incoming: {', '.join(self.project.webhook_incoming()) or 'none'}",
                field="incoming",
            )
        return incoming

    def _url(self, name: str) -> str:
        if not self.public_url:
            raise ConfigError(
                "no public_url: set serve.public_url in the project file, --public-url or "
                "BCBRIDGE_PUBLIC_URL to the URL where BC reaches bcbridge serve",
                field="public_url",
            )
        return notification_url(self.public_url, name)

    async def resource(self, client: BusinessCentralClient, incoming: IncomingConfig) -> str:
        """The resource of the subscription: ``/api/v2.0/companies(<id>)/<set>``."""
        path = await Subscriber(client, incoming.entity, company=incoming.company).path()
        return f"/api/{client.settings.api_route}/{path}"

    async def create(self, client: BusinessCentralClient, name: str) -> SubscriptionRow:
        """A new subscription for incoming `name` (BC shakes hands with the receiver first)."""
        incoming = self.incoming_config(name)
        url = self._url(name)
        client_state = secrets.token_urlsafe(32)
        body = {
            "notificationUrl": url,
            "resource": await self.resource(client, incoming),
            "clientState": client_state,
        }
        # the digest is stored before BC is asked: a notification may come before the answer
        placeholder = SubscriptionRow(
            name, "", body["resource"], url, client_state_digest(client_state), None, _now(), _now()
        )
        old = self.store.subscription(name)
        await self._remove_orphans(client, url, body["resource"])
        self.store.save_subscription(placeholder)
        try:
            response = await client.request("POST", "subscriptions", json=body)
        except BCBridgeError:
            if old is not None:
                self.store.save_subscription(old)
            else:
                self.store.forget_subscription(name)
            raise
        return self._saved(name, response.json(), placeholder.client_state_hash)

    async def _remove_orphans(self, client: BusinessCentralClient, url: str, resource: str) -> None:
        """BC refuses a second subscription for one URL and resource: one the store does not
        know (its answer was lost, the store was replaced) is deleted first. Its clientState is
        lost with it, so it could only bring refused notifications."""
        body = await client.get_json("subscriptions")
        for item in body.get("value", []):
            same_resource = _same_resource(item.get("resource"), resource)
            if item.get("notificationUrl") == url and same_resource:
                try:
                    await client.request(
                        "DELETE",
                        _key(str(item["subscriptionId"])),
                        headers={"If-Match": item.get("@odata.etag") or "*"},
                    )
                except BCAPIError as exc:
                    if exc.status != 404:
                        raise
                log.info(
                    "webhooks: deleted subscription %s that the store did not know",
                    item["subscriptionId"],
                )

    def _saved(self, name: str, answer: dict[str, Any], digest: str) -> SubscriptionRow:
        expires = _parse_time(answer.get("expirationDateTime")) or _now() + timedelta(days=3)
        row = SubscriptionRow(
            incoming=name,
            subscription_id=str(answer["subscriptionId"]),
            resource=str(answer.get("resource") or ""),
            notification_url=str(answer.get("notificationUrl") or ""),
            client_state_hash=digest,
            etag=answer.get("@odata.etag"),
            expires_at=expires,
            renewed_at=_now(),
        )
        self.store.save_subscription(row)
        return row

    async def renew(self, client: BusinessCentralClient, row: SubscriptionRow) -> SubscriptionRow:
        """PATCH with If-Match: BC shakes hands again and moves the expiry."""
        response = await client.request(
            "PATCH",
            _key(row.subscription_id),
            json={"notificationUrl": row.notification_url},
            headers={"If-Match": row.etag or "*"},
        )
        return self._saved(row.incoming, response.json(), row.client_state_hash)

    async def delete(self, client: BusinessCentralClient, row: SubscriptionRow) -> None:
        """Delete it in BC (one BC has deleted already is fine) and forget it."""
        try:
            await client.request(
                "DELETE", _key(row.subscription_id), headers={"If-Match": row.etag or "*"}
            )
        except BCAPIError as exc:
            if exc.status != 404:
                raise
        self.store.forget_subscription(row.incoming)

    async def in_bc(self, client: BusinessCentralClient, row: SubscriptionRow) -> bool:
        try:
            await client.request("GET", _key(row.subscription_id))
        except BCAPIError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def keep(self, clients: Clients) -> list[str]:
        """One round: create, renew, re-create and remove as needed. Returns the incoming
        whose subscription was (re-)created: their flows should reconcile now, to close a gap
        in which BC had nobody to notify. `clients` gives a client by name (async). An incoming
        that fails (BC unreachable, a handshake refused) is logged and sets `failed`; the
        others are kept all the same."""
        created = []
        self.failed = False
        wanted = self.project.webhook_incoming()
        for row in self.store.subscriptions():
            if row.incoming not in wanted:
                gone = self.project.incoming.get(row.incoming)
                with self._logged(row.incoming):
                    await self.delete(await clients(gone.client if gone else DEFAULT_CLIENT), row)
                    log.info("webhooks %s: subscription removed (incoming gone)", row.incoming)
        for name, incoming in wanted.items():
            with self._logged(name):
                if await self._keep_one(await clients(incoming.client), name):
                    created.append(name)
        return created

    async def _keep_one(self, client: BusinessCentralClient, name: str) -> bool:
        """Keep incoming `name`'s subscription; True when it was (re-)created."""
        kept = self.store.subscription(name)
        if kept is not None and kept.subscription_id and kept.notification_url != self._url(name):
            await self.delete(client, kept)  # public_url changed: BC must call the new one
            kept = None
        if kept is None or not kept.subscription_id or not await self.in_bc(client, kept):
            await self.create(client, name)
            log.info("webhooks %s: subscription created", name)
            return True
        if kept.renew_due(_now()):
            try:
                await self.renew(client, kept)
                log.info("webhooks %s: subscription renewed", name)
            except BCAPIError as exc:
                if exc.status != 404:
                    raise
                await self.create(client, name)  # BC deleted it meanwhile
                return True
        return False

    @contextmanager
    def _logged(self, name: str) -> Iterator[None]:
        try:
            yield
        except BCBridgeError as exc:
            self.failed = True
            log.warning("webhooks %s: the subscription could not be kept: %s", name, exc)

    def next_check(self, every: float) -> float:
        """Seconds until the next look: `every`, sooner when a renewal falls due before."""
        now = _now()
        wait = every
        for row in self.store.subscriptions():
            due = row.renewed_at + (row.expires_at - row.renewed_at) * RENEW_AFTER
            wait = min(wait, max(0.05, (due - now).total_seconds()))
        return wait


def _same_resource(given: Any, wanted: str) -> bool:
    """BC takes a relative or an absolute resource URL: compare from `api/` on."""
    if not isinstance(given, str):
        return False
    path = urlsplit(given).path
    return path[path.find("/api/") :].lower() == wanted[wanted.find("/api/") :].lower()


def _key(subscription_id: str) -> str:
    quoted = subscription_id.replace("'", "''")
    return f"subscriptions('{quoted}')"


# --- processing -------------------------------------------------------------------------------


@dataclass
class NotificationSource:
    """A run's records from stored notifications (see the module's text)."""

    client: BusinessCentralClient
    incoming: IncomingConfig
    items: list[Notification]

    async def records(self) -> AsyncIterator[dict[str, Any]]:
        changed: dict[str, None] = {}
        deleted: dict[str, str | None] = {}
        filters: list[str] = []
        for item in self.items:
            if item.change_type == "collection":
                filters.append(_filter_of(item.resource))
                continue
            record_id = _record_id(item.resource)
            if record_id is None:
                continue
            if item.change_type == "deleted":
                changed.pop(record_id, None)
                deleted[record_id] = item.last_modified
            else:
                deleted.pop(record_id, None)
                changed[record_id] = None
        seen: set[str] = set()
        for text in dict.fromkeys(filters):
            async for record in self._read(text):
                if str(record.get("id")) not in seen:
                    seen.add(str(record.get("id")))
                    yield record
        ids = [record_id for record_id in changed if record_id not in seen]
        for start in range(0, len(ids), ID_GROUP):
            group = ids[start : start + ID_GROUP]
            async for record in self._read(" or ".join(f"id eq {i}" for i in group)):
                yield record
        if self.incoming.on_delete != "ignore":
            for record_id, when in deleted.items():
                yield {"id": record_id, TOMBSTONE_FIELD: True, "lastModifiedDateTime": when}

    async def _read(self, condition: str) -> AsyncIterator[dict[str, Any]]:
        params = dict(self.incoming.params)
        if params.get("$filter"):
            condition = f"({params['$filter']}) and ({condition})"
        params["$filter"] = condition
        subscriber = Subscriber(
            self.client,
            self.incoming.entity,
            company=self.incoming.company,
            params=params,
            page_size=self.incoming.page_size,
        )
        async for record in subscriber.records():
            yield record

    def context(self) -> dict[str, Any]:
        return {"cursor": None, "company": self.incoming.company}

    def commit(self, records: Iterable[dict[str, Any]]) -> None:
        """Nothing to move: the notifications are marked processed after the run."""


def _record_id(resource: str) -> str | None:
    """The key of ``api/v2.0/companies(c)/customers(<id>)``."""
    path = urlsplit(resource).path.rstrip("/")
    last = path.rsplit("/", 1)[-1]
    if "(" not in last or not last.endswith(")"):
        return None
    return last[last.index("(") + 1 : -1].strip("'") or None


def _filter_of(resource: str) -> str:
    """BC's `$filter` of a collection notification (on lastModifiedDateTime)."""
    query = parse_qs(urlsplit(resource).query)
    found = query.get("$filter") or []
    if not found:  # a collection without a filter: everything (UNCONFIRMED that BC sends one)
        return "id ne 00000000-0000-0000-0000-000000000000"
    return found[0]


def source_of(incoming: IncomingConfig, items: list[Notification]) -> SourceFactory:
    def build(client: BusinessCentralClient) -> NotificationSource:
        return NotificationSource(client, incoming, items)

    return build


def process_work(
    flow: str, store: WebhookStore, ended: Callable[[RunResult], None] | None = None
) -> Callable[[FlowRunner], Awaitable[RunResult]]:
    """A `FlowService` work item: one run of `flow` with its waiting notifications; they are
    marked processed when the run ended (ok, or with failed tasks kept for a retry), and stay
    waiting otherwise (BC unreachable, stopped, busy elsewhere). `ended` is told the result."""

    async def work(runner: FlowRunner) -> RunResult:
        items = store.open_notifications(flow)
        incoming_name = runner.project.flow(flow).source.incoming or ""
        incoming = runner.project.incoming[incoming_name]
        result = await runner.run(flow, source=source_of(incoming, items))
        if result.status in (RunStatus.OK, RunStatus.FAILED):
            store.processed(item.id for item in items)
        if ended is not None:
            ended(result)
        return result

    return work


# --- in bcbridge serve ------------------------------------------------------------------------

PROCESS_TICK = 0.05  # seconds between looks at the receiver's wake-up
PROCESS_RECHECK = 1.0  # seconds between looks at the store all the same (a restart's backlog)
CHECK_RETRY = 5.0  # seconds before a failed subscription round is tried again
# after a processing run that ended on an error (BC unreachable...): the first wait, doubled
# at each error in a row up to the last; the notifications wait in the store meanwhile
ERROR_WAITS = (1.0, 300.0)


class WebhookService:
    """The webhook side of `bcbridge serve`: the receiver's routes, the subscriptions kept in
    BC, and the runs that process what was received (through the FlowService, so a flow has
    one run at a time here and holds its lease in the store)."""

    def __init__(
        self,
        service: FlowService,
        public_url: str | None,
        *,
        check_every: float | None = None,
    ):
        self.service = service
        self.store = WebhookStore(service.store)
        self.public_url = public_url
        self.check_every = check_every
        self.receiver = Receiver(lambda: self.service.project, self.store)
        self._reconcile: set[str] = set()  # flows to pull by cursor as soon as they are free
        self._errors: dict[str, tuple[int, float]] = {}  # flow -> (errors in a row, wait until)

    def check_ready(self) -> None:
        """A webhook incoming needs a public_url: a one-line ConfigError at start."""
        wanted = self.service.project.webhook_incoming()
        if wanted and not self.public_url:
            raise ConfigError(
                f"incoming {', '.join(wanted)}: trigger: webhook needs the URL where BC "
                f"reaches this server: set serve.public_url in the project file, --public-url "
                f"or {PUBLIC_URL_ENV}",
                field="public_url",
            )

    def app(self, dashboard: Starlette) -> Starlette:
        """The receiver's routes (no sign-in: BC cannot sign in; the clientState is checked
        instead) in front of the dashboard."""
        return Starlette(routes=[*receiver_routes(self.receiver), Mount("", app=dashboard)])

    async def run(self) -> None:
        """Keep the subscriptions and process notifications until the service's stop."""
        stop = self.service.stop
        async with AsyncExitStack() as stack:
            opened: dict[str, BusinessCentralClient] = {}

            async def client(name: str) -> BusinessCentralClient:
                if name not in opened:
                    factory = self.service.client_factory or BusinessCentralClient
                    settings = self.service.project.client_settings(name)
                    opened[name] = await stack.enter_async_context(factory(settings))
                return opened[name]

            next_check = 0.0
            next_look = 0.0
            while not stop.is_set():
                now = anyio.current_time()
                try:
                    if now >= next_check:
                        next_check = now + await self._check(client)
                    if self.receiver.wake.is_set() or now >= next_look:
                        self.receiver.wake.clear()
                        started_all = await anyio.to_thread.run_sync(self._start_work)
                        # a flow that was busy is tried again soon, not a second later
                        next_look = now + (PROCESS_RECHECK if started_all else PROCESS_TICK * 4)
                except Exception:  # a bug must not end the webhooks of a server that goes on
                    log.exception("webhooks: unexpected error; trying again")
                    next_check = now + CHECK_RETRY
                await anyio.sleep(PROCESS_TICK)

    async def _check(self, client: Clients) -> float:
        """One round of the subscriptions; seconds until the next one."""
        project = self.service.project
        every = self.check_every or project.serve.subscription_check_s
        manager = SubscriptionManager(project, self.store, self.public_url)
        created = await manager.keep(client)
        for name in created:  # BC had nobody to notify until now: pull by cursor
            self._reconcile.update(project.flows_of(name))
        if manager.failed:
            return min(every, CHECK_RETRY)
        return await anyio.to_thread.run_sync(manager.next_check, every)

    def _start_work(self) -> bool:
        """Start the runs due: a reconciliation pull asked for, and the flows with waiting
        notifications. False when one could not start (its flow was running here)."""
        started_all = True
        for flow in sorted(self._reconcile):
            if flow in self.service.project.flows and self.service.start(flow):
                self._reconcile.discard(flow)
        try:
            waiting = self.store.waiting()
        except StoreError as exc:
            log.warning("webhooks: cannot read the notifications: %s", exc)
            return True
        now = time.monotonic()
        for flow in waiting:
            if flow not in self.service.project.flows or self._errors.get(flow, (0, 0.0))[1] > now:
                continue
            if self.service.engine is not None:  # a worker runs it (one queued at most)
                try:
                    self.service.engine.defer_notified(flow)
                except StoreError as exc:  # the notifications wait in the store meanwhile
                    log.warning("webhooks %s: cannot queue the processing: %s", flow, exc)
                continue
            work = process_work(flow, self.store, functools.partial(self._ended, flow))
            started_all = self.service.start(flow, work) and started_all
        return started_all

    def _ended(self, flow: str, result: RunResult) -> None:
        """After an error, the flow's notifications wait longer each time in a row."""
        if result.status != RunStatus.ERROR:
            self._errors.pop(flow, None)
            return
        count = self._errors.get(flow, (0, 0.0))[0] + 1
        first, longest = ERROR_WAITS
        wait = min(longest, first * 2 ** (count - 1))
        self._errors[flow] = (count, time.monotonic() + wait)
        log.warning(
            "webhooks %s: processing stopped (%s); again in %.0f s", flow, result.error, wait
        )
