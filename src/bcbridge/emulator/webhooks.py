"""Webhook subscriptions and the notifications BC sends for them (bc-api.md §9).

Subscriptions live in memory (a reset or a restart drops them, as it drops the data of an
in-memory emulator). Everything here runs on the emulator's event loop, except `committed`,
which the worker thread calls after a transaction commits (`bcbridge.emulator.changes`).

How notifications go out, as BC sends them:
- the first change after a quiet spell opens a window of `delay_s` (BC: 30 s); when it closes,
  everything noted in it is sent. Several changes to one record inside the window become one
  item (`merge`), and a change to a document line is an ``updated`` item for its header;
- a subscription with more than `collection_threshold` records changed in the window (BC: 1,000)
  gets one ``collection`` item instead, whose resource filters on lastModifiedDateTime;
- items for subscriptions with the same notification URL share one POST ``{"value": [...]}``;
- a 2xx answer delivers; 408, 429, 5xx or no answer at all is retried with doubling waits over
  36 hours (compressed by `time_scale`), then dropped; any other status deletes every
  subscription whose items the POST carried (BC: "no retry, and the subscription is deleted").
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import ssl
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson

from bcbridge.catalog import WEBHOOK_ENTITIES
from bcbridge.emulator.changes import Change
from bcbridge.emulator.errors import handshake_failed
from bcbridge.emulator.store import STANDARD_ROUTE, etag, now_text

MAX_SUBSCRIPTIONS = 200  # bc-api.md §8
# BC retries "over the next 36 hours" (§9.2); its schedule is not documented: UNCONFIRMED. The
# emulator waits 1 minute, then doubles each wait up to 6 hours, and gives up once the next
# attempt would fall beyond 36 hours after the first.
RETRY_FIRST_WAIT_S = 60.0
RETRY_MAX_WAIT_S = 6 * 3600.0
RETRY_WINDOW_S = 36 * 3600.0
# How long BC waits for the subscriber's answer to a notification: UNCONFIRMED (the handshake
# is said to need an answer within about 5 s, §9.1); a timeout counts as "no answer".
DELIVERY_TIMEOUT_S = 30.0
LOG_LIMIT = 10_000  # delivery log entries kept for the control endpoint


@dataclass
class WebhookSettings:
    """The knobs a test turns (``/_emulator/config``: ``webhook_*``, ``subscription_*``)."""

    delay_s: float = 30.0
    collection_threshold: int = 1000
    time_scale: float = 1.0  # emulated seconds of the retry schedule per real second
    lifetime_s: float = 3 * 86_400.0
    handshake_timeout_s: float = 5.0
    # The method of BC's validation request is UNCONFIRMED (believed POST, bc-api.md §9.1).
    handshake_method: str = "POST"


@dataclass
class Subscription:
    subscription_id: str
    route: str
    notification_url: str
    resource: str  # as the subscriber wrote it
    company_id: str
    set_name: str
    client_state: str
    user_id: str
    seq: int
    expires: datetime
    created_at: str = field(default_factory=now_text)
    modified_at: str = field(default_factory=now_text)
    version: int = 1

    @property
    def etag(self) -> str:
        return etag(self.seq, self.version)

    @property
    def expiration_text(self) -> str:
        return _iso(self.expires)

    def as_json(self) -> dict[str, Any]:
        return {
            "@odata.etag": self.etag,
            "subscriptionId": self.subscription_id,
            "notificationUrl": self.notification_url,
            "resource": self.resource,
            "timestamp": self.version,
            "userId": self.user_id,
            "lastModifiedDateTime": self.modified_at,
            "clientState": self.client_state,
            "expirationDateTime": self.expiration_text,
            "systemCreatedAt": self.created_at,
            "systemCreatedBy": self.user_id,
            "systemModifiedAt": self.modified_at,
            "systemModifiedBy": self.user_id,
        }


@dataclass
class Pending:
    """One record's changes inside the current window, already merged."""

    change_type: str
    first_modified: str
    last_modified: str


def merge(earlier: str, later: str) -> str:
    """The change type of one record changed twice in a window.

    BC documents only that several changes become one notification; which type survives is
    UNCONFIRMED. Here: created stays created until deleted; deleted stays deleted unless the
    record comes back (then it was updated); anything else is an update.
    """
    if later == "deleted":
        return "deleted"
    if earlier == "deleted":
        return "updated" if later == "created" else "deleted"
    if earlier == "created":
        return "created"
    return "updated"


@dataclass
class DeliveryLog:
    """What the notifier did, for ``GET /_emulator/webhooks``."""

    entries: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=LOG_LIMIT))
    counts: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("delivered", "retried", "dropped", "notifications", "handshakes"), 0
        )
    )

    def add(self, outcome: str, **details: Any) -> None:
        self.entries.append({"at": now_text(), "outcome": outcome, **details})

    def as_json(self) -> dict[str, Any]:
        return {**self.counts, "log": list(self.entries)}


class Webhooks:
    def __init__(self, settings: WebhookSettings | None = None) -> None:
        self.settings = settings or WebhookSettings()
        self.subscriptions: dict[str, Subscription] = {}
        self.log = DeliveryLog()
        self._pending: dict[str, dict[str, Pending]] = {}  # subscription id -> resource -> ...
        self._loop: asyncio.AbstractEventLoop | None = None
        self._window: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._seq = 0
        self._tls: ssl.SSLContext | None = None

    def _http(self, timeout: float) -> httpx.AsyncClient:
        """A client for one call to a subscriber; the TLS context (slow to build) is shared."""
        if self._tls is None:
            self._tls = httpx.create_ssl_context()
        return httpx.AsyncClient(timeout=timeout, verify=self._tls)

    # --- subscriptions -----------------------------------------------------------------------

    def live(self) -> list[Subscription]:
        """The subscriptions that have not expired; expired ones are forgotten (BC removes them)."""
        now = datetime.now(UTC)
        for gone in [s for s in self.subscriptions.values() if s.expires <= now]:
            self.forget(gone.subscription_id)
        return list(self.subscriptions.values())

    def find(self, subscription_id: str) -> Subscription | None:
        return next((s for s in self.live() if s.subscription_id == subscription_id), None)

    def add(self, **values: Any) -> Subscription:
        self._loop = asyncio.get_running_loop()
        self._seq += 1
        subscription = Subscription(
            subscription_id=uuid.uuid4().hex,
            seq=self._seq,
            expires=self._expiry(),
            **values,
        )
        self.subscriptions[subscription.subscription_id] = subscription
        return subscription

    def renew(self, subscription: Subscription, changes: dict[str, Any]) -> None:
        for name, value in changes.items():
            setattr(subscription, name, value)
        subscription.expires = self._expiry()
        subscription.version += 1
        subscription.modified_at = now_text()

    def forget(self, subscription_id: str) -> None:
        self.subscriptions.pop(subscription_id, None)
        self._pending.pop(subscription_id, None)

    def _expiry(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.settings.lifetime_s)

    async def handshake(self, url: str) -> None:
        """BC's validation request: the subscriber must answer 200 with the token as its body."""
        token = secrets.token_urlsafe(24)
        target = httpx.URL(url).copy_merge_params({"validationToken": token})
        self.log.counts["handshakes"] += 1
        try:
            async with self._http(self.settings.handshake_timeout_s) as http:
                response = await http.request(self.settings.handshake_method, target)
        except httpx.HTTPError as exc:
            self.log.add("handshake failed", url=url, error=type(exc).__name__)
            raise handshake_failed(url, f"could not be reached ({type(exc).__name__})") from None
        # Surrounding whitespace is forgiven (a trailing newline is common); BC's exact
        # comparison is UNCONFIRMED.
        if response.status_code != 200 or response.text.strip() != token:
            self.log.add("handshake failed", url=url, status=response.status_code)
            why = (
                f"answered {response.status_code}"
                if response.status_code != 200
                else "answered 200 without the validationToken as its body"
            )
            raise handshake_failed(url, why)
        self.log.add("handshake", url=url, status=200)

    def clear_log(self) -> None:
        self.log = DeliveryLog()

    def reset(self) -> None:
        """Back to no subscriptions, nothing pending, nothing in flight, an empty log."""
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()
        if self._window is not None:
            self._window.cancel()
            self._window = None
        self.subscriptions.clear()
        self._pending.clear()
        self.log = DeliveryLog()

    # --- changes -> pending items ------------------------------------------------------------

    def committed(self, changes: list[Change]) -> None:
        """Called on the worker thread after a commit: hand the changes to the event loop."""
        loop = self._loop
        if loop is None or not self.subscriptions:
            return  # nobody subscribed: BC notifies nothing retroactively either
        with contextlib.suppress(RuntimeError):  # the loop has closed: the emulator stopped
            loop.call_soon_threadsafe(self._accept, changes)

    def _accept(self, changes: list[Change]) -> None:
        by_place: dict[tuple[str, str, str], list[Subscription]] = {}
        for subscription in self.live():
            place = (subscription.route, subscription.company_id, subscription.set_name)
            by_place.setdefault(place, []).append(subscription)
        for change in _with_headers(changes):
            place = (change.route, change.company_id, change.set_name)
            for subscription in by_place.get(place, ()):
                self._note(subscription, change)
        if self._pending and self._window is None:
            loop = asyncio.get_running_loop()
            self._window = loop.call_later(self.settings.delay_s, self._close_window)

    def _note(self, subscription: Subscription, change: Change) -> None:
        resource = (
            f"api/{change.route}/companies({change.company_id})/{change.set_name}"
            f"({change.record_id})"
        )
        items = self._pending.setdefault(subscription.subscription_id, {})
        known = items.get(resource)
        if known is None:
            modified = change.last_modified
            items[resource] = Pending(change.change_type, modified, modified)
        else:
            known.change_type = merge(known.change_type, change.change_type)
            known.last_modified = max(known.last_modified, change.last_modified)

    # --- pending items -> POSTs --------------------------------------------------------------

    def _close_window(self) -> None:
        self._window = None
        self.live()  # a subscription that expired inside the window gets nothing
        pending, self._pending = self._pending, {}
        by_url: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for subscription_id, records in pending.items():
            subscription = self.subscriptions.get(subscription_id)
            if subscription is None:
                continue
            for item in self._items(subscription, records):
                by_url.setdefault(subscription.notification_url, []).append((subscription_id, item))
        for url, items in by_url.items():
            task = asyncio.get_running_loop().create_task(self._deliver(url, items))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _items(self, subscription: Subscription, items: dict[str, Pending]) -> list[dict[str, Any]]:
        """The notification items for one subscription: one per record, or one collection."""
        if len(items) > self.settings.collection_threshold:
            since = min(p.first_modified for p in items.values())
            # BC's exact filter text is UNCONFIRMED ("a $filter on the last-modified time").
            resource = (
                f"api/{subscription.route}/companies({subscription.company_id})/"
                f"{subscription.set_name}?$filter=lastModifiedDateTime ge {since}"
            )
            latest = max(p.last_modified for p in items.values())
            return [_item(resource, "collection", latest)]
        return [_item(resource, p.change_type, p.last_modified) for resource, p in items.items()]

    async def _deliver(self, url: str, items: list[tuple[str, dict[str, Any]]]) -> None:
        """POST the items to `url` until delivered, dropped, or their subscriptions are gone."""
        waited, wait, attempt = 0.0, RETRY_FIRST_WAIT_S, 0
        while True:
            value = self._payload(items)
            if not value:
                return  # every subscription in it was deleted or expired meanwhile
            attempt += 1
            status, error = await self._post(url, value)
            details = {"url": url, "attempt": attempt, "status": status, "value": value}
            if error is not None:
                details["error"] = error
            if status is not None and 200 <= status < 300:
                self.log.counts["delivered"] += 1
                self.log.counts["notifications"] += len(value)
                self.log.add("delivered", **details)
                return
            if status is not None and not _retryable(status):
                deleted = sorted({item["subscriptionId"] for item in value})
                for subscription_id in deleted:
                    self.forget(subscription_id)
                self.log.counts["dropped"] += 1
                self.log.add("dropped", reason="subscription deleted", deleted=deleted, **details)
                return
            if waited + wait > RETRY_WINDOW_S:
                self.log.counts["dropped"] += 1
                self.log.add("dropped", reason="retries exhausted (36 hours)", **details)
                return
            self.log.counts["retried"] += 1
            self.log.add("retrying", wait_s=wait, **details)
            await asyncio.sleep(wait / self.settings.time_scale)
            waited += wait
            wait = min(wait * 2, RETRY_MAX_WAIT_S)

    async def _post(self, url: str, value: list[dict[str, Any]]) -> tuple[int | None, str | None]:
        """One notification POST: (status, None), or (None, what went wrong) with no answer."""
        try:
            async with self._http(DELIVERY_TIMEOUT_S) as http:
                response = await http.post(
                    url,
                    content=orjson.dumps({"value": value}),
                    headers={"Content-Type": "application/json"},
                )
        except httpx.HTTPError as exc:
            return None, type(exc).__name__
        return response.status_code, None

    def _payload(self, items: Iterable[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
        """The items whose subscriptions still exist, with their current state and expiry."""
        self.live()
        value = []
        for subscription_id, item in items:
            subscription = self.subscriptions.get(subscription_id)
            if subscription is None:
                continue
            value.append(
                {
                    "subscriptionId": subscription_id,
                    "clientState": subscription.client_state,
                    "expirationDateTime": subscription.expiration_text,
                    **item,
                }
            )
        return value

    def status(self) -> dict[str, Any]:
        return {
            "subscriptions": [s.as_json() for s in self.live()],
            "pending": sum(len(items) for items in self._pending.values()),
            "in_flight": len(self._tasks),
            **self.log.as_json(),
        }


def _with_headers(changes: Iterable[Change]) -> Iterable[Change]:
    """Each change, and for a document line an ``updated`` change of its header (§9.2)."""
    for change in changes:
        yield change
        if change.header_set and change.header_id:
            yield Change(
                change.route,
                change.header_set,
                change.company_id,
                change.header_id,
                "updated",
                change.last_modified,
            )


def _item(resource: str, change_type: str, last_modified: str) -> dict[str, Any]:
    return {"resource": resource, "changeType": change_type, "lastModifiedDateTime": last_modified}


def _retryable(status: int) -> bool:
    return status in (408, 429) or status >= 500


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def supported_resources(routes: dict[str, Iterable[str]]) -> list[str]:
    """``v2.0/customers`` for BC's list, and every set of each custom API route (UNCONFIRMED:
    the entries' exact text; BC filters them with ``resource eq 'v2.0*'``)."""
    names = [f"{STANDARD_ROUTE}/{name}" for name in WEBHOOK_ENTITIES]
    for route, sets in routes.items():
        if route != STANDARD_ROUTE:
            names += [f"{route}/{name}" for name in sorted(sets)]
    return names
