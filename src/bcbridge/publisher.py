"""Publisher: write records to BC — create, update, upsert, delete, bound actions — in `$batch`es.

Every record gets one `RecordResult`; a record that fails never stops the others.

ETag policies (bc-api.md §5.2):
- ``fetch`` (default): write with the ETag read from BC just before (in the same lookup that
  finds the record). If BC answers 409/412 because someone changed the record in between, the
  record is read again: when the other change touched none of the fields we write, ours is
  applied on top with the new ETag (up to `conflict_retries` times); otherwise the record fails
  with the conflict, and the other user's change stands.
- ``record``: use ``@odata.etag`` from the input record; a conflict fails the record.
- ``force``: ``If-Match: *``, overwriting whatever is there. Only when asked for.

Lost answers. BC has no idempotency keys: a request whose answer never came (dropped connection,
retries spent, a `$batch` cut off) may or may not have been carried out. Updates, upserts,
deletes and creates matched on `key_field` are `repeatable`: sent again, they are matched first
and cannot do the work twice, so a lost answer raises and the caller may deliver them again. For
everything else (bound actions, creates without a key field) a lost answer is not an error to
retry: the record comes back `UNKNOWN` and is never sent again here. `Publisher.verify` reads BC,
where BC's state tells, whether such an action happened (the `PROBES` table).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from bcbridge import _json, _retry, catalog
from bcbridge.catalog import EntitySet, Scope
from bcbridge.client import (
    MAX_BATCH,
    BatchOperation,
    BatchResult,
    BusinessCentralClient,
    task_group,
)
from bcbridge.errors import (
    BCAPIError,
    BCBridgeError,
    ConfigError,
    RetriableAPIError,
    TransformError,
    TransportError,
)
from bcbridge.odata import entity_path, is_guid, literal
from bcbridge.transform import Chain

__all__ = [
    "PROBES",
    "FailedRecord",
    "Outcome",
    "Preview",
    "Publisher",
    "RecordResult",
    "Verdict",
    "Verification",
    "preview",
    "read_failed",
    "write_failed",
]

WRITE_ACTIONS = ("create", "update", "upsert", "delete")
ETAG_POLICIES = ("fetch", "record", "force")
LOOKUP_CHUNK = 40  # values per `or` filter: keeps URLs well under gateway limits


class Outcome(StrEnum):
    """What became of one record (`RecordResult.outcome`)."""

    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"
    UNCHANGED = "unchanged"
    DONE = "done"  # a bound action ran
    FILTERED = "filtered"  # a transformer dropped the record
    FAILED = "failed"
    UNKNOWN = "unknown"  # sent, but the answer was lost: BC may or may not have carried it out


@dataclass
class RecordResult:
    """The result of one record given to `Publisher.publish`: its position in the input, its
    outcome, the record, BC's id (or the key_field value) and, when it failed, BC's HTTP status,
    error code and message."""

    index: int
    outcome: Outcome
    record: dict[str, Any]
    id: str | None = None
    status: int | None = None
    code: str | None = None
    message: str | None = None
    method: str | None = None  # of the request (or $batch part) that wrote it, if one did
    request_id: str | None = None  # BC's request-id of that answer, to quote to Microsoft

    @property
    def ok(self) -> bool:
        """Neither failed nor unknown."""
        return self.outcome not in (Outcome.FAILED, Outcome.UNKNOWN)


@dataclass
class _Item:
    index: int
    record: dict[str, Any]
    payload: dict[str, Any] = field(default_factory=dict)
    target: str | None = None  # the BC id to write to
    existing: dict[str, Any] | None = None  # as read from BC before writing
    etag: str | None = None
    method: str | None = None  # of the request sent for it
    result: RecordResult | None = None

    def finish(self, outcome: Outcome, **details: Any) -> None:
        self.result = RecordResult(self.index, outcome, self.record, method=self.method, **details)

    def fail(
        self, error: BaseException | str, status: int | None = None, code: str | None = None
    ) -> None:
        if isinstance(error, BCAPIError):
            self.finish(
                Outcome.FAILED,
                id=self.target,
                status=error.status,
                code=error.code,
                message=error.message,
                request_id=error.correlation_id,
            )
        else:
            self.finish(
                Outcome.FAILED, id=self.target, status=status, code=code, message=str(error)
            )

    def lost(self, action: str, entity: str, error: BaseException) -> None:
        self.finish(
            Outcome.UNKNOWN,
            id=self.target,
            code="AnswerLost",
            message=(
                f"sent, but the answer was lost ({error}): BC may or may not have carried out "
                f"{action} on this {entity}, so it is not sent again by itself; check it in BC "
                "before sending it again"
            ),
        )


# --- did it happen? ----------------------------------------------------------------------------


class Verdict(StrEnum):
    """What reading BC says about an action whose answer was lost."""

    DONE = "done"  # BC's state shows the action was carried out
    NOT_DONE = "not_done"  # BC's state shows it was not: safe to send
    UNKNOWN = "unknown"  # BC's state cannot tell (or there is no way to ask): a person decides


@dataclass
class Verification:
    """The verdict of `Publisher.verify` on one record, why, and the id of the record read."""

    verdict: Verdict
    reason: str
    id: str | None = None  # the BC record read


Probe = Callable[[dict[str, Any] | None], tuple[Verdict, str]]  # the record now (None: gone)


def _posted(invoice: dict[str, Any] | None) -> tuple[Verdict, str]:
    """`post` makes a draft invoice Open (later Paid, ...); BC refuses to post it twice."""
    if invoice is None:
        # Whether a posted invoice keeps the draft's id is UNCONFIRMED (bc-api.md §5.5): a draft
        # that is gone may have been posted under a new id, or deleted.
        return Verdict.UNKNOWN, "the invoice is not there any more (posted under a new id?)"
    status = invoice.get("status")
    if status in ("Draft", "In Review"):
        return Verdict.NOT_DONE, f"the invoice is still {status}: it was not posted"
    if status in ("Open", "Paid", "Canceled", "Corrective"):
        return Verdict.DONE, f"the invoice is {status}: it was posted"
    return Verdict.UNKNOWN, f"the invoice has status {status!r}"


def _converted(quote: dict[str, Any] | None) -> tuple[Verdict, str]:
    """`makeInvoice`/`makeOrder` delete the quote in the transaction that makes the new
    document (BC's Sales-Quote to Invoice/Order codeunits), so a quote still there was not
    converted, whatever its status."""
    if quote is None:
        return Verdict.DONE, "the quote is gone: BC deletes a quote when it converts it"
    return Verdict.NOT_DONE, f"the quote is still there ({quote.get('status')}): not converted"


def _order_posted(order: dict[str, Any] | None) -> tuple[Verdict, str]:
    """`shipAndInvoice`/`receiveAndInvoice` delete a fully posted order. An order still there may
    have been posted in part (shipped quantities), which this check does not read."""
    if order is None:
        return Verdict.DONE, "the order is gone: BC deletes an order once it is fully posted"
    return Verdict.UNKNOWN, "the order is still there: check its lines' shipped quantities"


PROBES: Mapping[tuple[str, str], Probe] = {
    ("salesInvoices", "post"): _posted,
    ("purchaseInvoices", "post"): _posted,
    ("salesQuotes", "makeInvoice"): _converted,
    ("salesQuotes", "makeOrder"): _converted,
    ("salesOrders", "shipAndInvoice"): _order_posted,
    ("purchaseOrders", "receiveAndInvoice"): _order_posted,
}


@dataclass
class Publisher:
    """Writes records to one entity set of BC: create, update, upsert, delete or a bound action.

    ``async for result in publisher.publish(records)`` gives one `RecordResult` per record, so a
    record BC refuses never loses the others. `key_field` (``number``, ``code``, ...) looks
    records up before writing (required by upsert, and by create unless `allow_duplicates`);
    `key` names the record to update, delete or act on (a GUID or a template such as
    ``"{id}"``). `etag`: ``fetch`` reads the current ETag, ``record`` uses the record's
    ``@odata.etag``, ``force`` sends ``If-Match: *``. A record whose answer was lost is retried
    when that cannot do the work twice (`repeatable`), else it comes back `Outcome.UNKNOWN`;
    `verify` reads BC to settle such records.
    """

    client: BusinessCentralClient
    entity: str | EntitySet
    action: str
    company: str | None = None
    key: str | None = None  # a GUID, or a template over the record such as "{id}"
    key_field: str | None = None  # alternate key to look records up by: number, code, ...
    params: dict[str, str] = field(default_factory=dict)
    transform: Chain | None = None  # applied to each payload before it is sent
    etag: str = "fetch"
    batch_size: int = 500  # records per round; the client sends them 100 per $batch, concurrently
    conflict_retries: int = 3
    allow_duplicates: bool = False  # create without key_field: a lost answer may mean a double

    def __post_init__(self) -> None:
        entity_set = self.entity_set
        if self.etag not in ETAG_POLICIES:
            raise ConfigError(
                f"unknown ETag policy {self.etag!r}; valid: {', '.join(ETAG_POLICIES)}",
                field="etag",
            )
        if self.action not in WRITE_ACTIONS and self.action not in entity_set.actions:
            valid = ", ".join([*WRITE_ACTIONS, *entity_set.actions])
            raise ConfigError(
                f"{entity_set.name} has no action {self.action!r}; valid: {valid}", field="action"
            )
        needed = {"create": "POST", "upsert": "PATCH", "update": "PATCH", "delete": "DELETE"}.get(
            self.action
        )
        if (needed and not entity_set.allows(needed)) or (
            self.action == "upsert" and not entity_set.allows("POST")
        ):
            raise ConfigError(f"{entity_set.name} does not allow {self.action}", field="action")
        if self.action == "upsert" and not self.key_field:
            raise ConfigError(
                "upsert matches records on a key field: give key_field (e.g. number)",
                field="key_field",
            )
        if self.action == "create" and not self.key_field and not self.allow_duplicates:
            raise ConfigError(
                "create needs key_field (e.g. number) to find records BC already holds: BC has "
                "no idempotency keys, so a create sent again after a lost answer would make a "
                "second record; give key_field, or allow_duplicates=True "
                "(bcbridge push --allow-duplicates) to create without one",
                field="key_field",
            )
        self._company_id: str | None = None

    @property
    def repeatable(self) -> bool:
        """Whether a record may be sent again after a lost answer without doing the work twice:
        updates, upserts and deletes, and creates matched on `key_field` first."""
        return self.action in ("update", "upsert", "delete") or (
            self.action == "create" and bool(self.key_field)
        )

    @property
    def entity_set(self) -> EntitySet:
        """The catalog's entity set this publisher writes."""
        return self.entity if isinstance(self.entity, EntitySet) else catalog.get(self.entity)

    # --- the public entry ------------------------------------------------------------------------

    async def publish(
        self,
        records: Iterable[dict[str, Any]],
        *,
        before_write: Callable[[], None] | None = None,
    ) -> AsyncIterator[RecordResult]:
        """Write `records`; yield one result per record, in input order, round by round.
        `before_write` is called before each round (and its lookups) and before each `$batch`
        goes out; what it raises stops the writing (a run that lost its lease)."""
        await self._resolve_company()
        round_: list[_Item] = []
        for index, record in enumerate(records):
            round_.append(_Item(index, record))
            if len(round_) >= self.batch_size:
                for result in await self._round(round_, before_write):
                    yield result
                round_ = []
        if round_:
            for result in await self._round(round_, before_write):
                yield result

    async def _resolve_company(self) -> None:
        if self.entity_set.scope is Scope.COMPANY and self._company_id is None:
            name = self.company or self.client.settings.company
            if not name:
                raise ConfigError(
                    "no company given (set company, --company or BC_COMPANY)", field="company"
                )
            self._company_id = (await self.client.resolve_company(name)).id

    def path(self, key: str | None = None, action: str | None = None) -> str:
        """The API path of the entity set, of one record by `key`, or of its bound `action`."""
        return entity_path(self.entity_set, company_id=self._company_id, key=key, action=action)

    async def verify(self, records: Sequence[dict[str, Any]]) -> list[Verification]:
        """For records whose answer was lost: did BC carry out this publisher's action on them?
        One verification per record, in order. Read from BC where a probe in `PROBES` knows how
        to tell; every other action (and a create) is UNKNOWN: only a person can decide."""
        probe = PROBES.get((self.entity_set.name, self.action))
        if probe is None:
            return [
                Verification(Verdict.UNKNOWN, f"BC's state does not show whether {self.action} ran")
                for _ in records
            ]
        await self._resolve_company()
        keys = [_key_value(self.key, record)[0] for record in records]
        wanted = sorted({key for key in keys if key is not None and is_guid(key)})
        found = await self._lookup("id", wanted) if wanted else {}
        checks = []
        for key in keys:
            if key is None or not is_guid(key):
                checks.append(Verification(Verdict.UNKNOWN, "the record has no id to read"))
                continue
            verdict, reason = probe(found.get(key))
            checks.append(Verification(verdict, reason, id=key))
        return checks

    # --- one round --------------------------------------------------------------------------

    async def _round(
        self, items: list[_Item], before_write: Callable[[], None] | None = None
    ) -> list[RecordResult]:
        if before_write is not None:
            before_write()
        live = [item for item in items if self._prepare(item)]
        await self._find_targets(live)
        pending = [item for item in live if item.result is None]
        for attempt in range(self.conflict_retries + 1):
            operations = [
                op for op in (self._operation(item) for item in pending) if op is not None
            ]
            sent = [item for item in pending if item.result is None]
            if not operations:
                break
            if before_write is not None:
                before_write()
            answers = await self._send(operations)
            conflicts = [
                item
                for item, answer in zip(sent, answers, strict=True)
                if not self._settle(item, answer)
            ]
            if not conflicts:
                break
            pending = await self._reapply(conflicts, last=attempt == self.conflict_retries)
        return [item.result for item in items if item.result is not None]

    def _prepare(self, item: _Item) -> bool:
        """Transform the record into the payload BC gets; False when it needs no request."""
        try:
            payload = (
                self.transform.apply(item.record, {"action": self.action})
                if self.transform
                else dict(item.record)
            )
        except TransformError as exc:
            item.fail(exc, code="TransformError")
            return False
        if payload is None:
            item.finish(Outcome.FILTERED)
            return False
        item.etag = payload.get("@odata.etag") if self.etag == "record" else None
        item.payload = _writable(self.entity_set, payload)
        if (name := _not_finite(item.payload)) is not None:
            # JSON has no NaN or infinity: sent, it would reach BC as null (a silent 0)
            item.fail(f"{name} is not a finite number", code="TransformError")
            return False
        return True

    async def _find_targets(self, items: list[_Item]) -> None:
        """Which BC record each item writes to, and that record as it is now (for ETag and diff)."""
        if self.action == "create" and not self.key_field:
            return
        by_field = self.key_field or "id"
        values: dict[str, list[_Item]] = {}
        for item in items:
            value, missing = _target_key(self.key, self.key_field, item.record, item.payload)
            if value is None:
                item.fail(str(missing), code="KeyMissing")
                continue
            values.setdefault(value, []).append(item)
        found = await self._lookup(by_field, list(values)) if values else {}
        for value, group in values.items():
            for item in group:
                existing = found.get(value)
                item.existing = existing
                item.target = (
                    str(existing["id"]) if existing else (value if by_field == "id" else None)
                )
                if self.etag == "fetch" and existing is not None:
                    item.etag = existing.get("@odata.etag")
                if existing is None and self.action not in ("create", "upsert"):
                    item.fail(
                        f"no {self.entity_set.entity} with {by_field} = {value}",
                        status=404,
                        code="Internal_RecordNotFound",
                    )
                elif existing is not None and self.action == "create":
                    item.finish(
                        Outcome.UNCHANGED,
                        id=str(existing["id"]),
                        message="already exists; not created again",
                    )

    async def _lookup(self, by_field: str, values: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Existing records whose `by_field` is in `values`: one GET per chunk, not per record;
        the chunks run concurrently inside the client's limits."""
        found: dict[str, dict[str, Any]] = {}
        path = self.path()
        spell = (lambda v: v) if by_field == "id" else literal

        async def fetch(chunk: Sequence[str]) -> None:
            condition = " or ".join(f"{by_field} eq {spell(v)}" for v in chunk)
            async for record in self.client.iter_records(path, params={"$filter": condition}):
                found[str(record.get(by_field))] = record

        async with task_group() as group:
            for start in range(0, len(values), LOOKUP_CHUNK):
                group.start_soon(fetch, values[start : start + LOOKUP_CHUNK])
        return found

    def _operation(self, item: _Item) -> BatchOperation | None:
        if item.result is not None:
            return None
        if_match = {"If-Match": "*" if self.etag == "force" else (item.etag or "")}
        if (
            self.etag == "record"
            and not item.etag
            and self.action in ("update", "upsert", "delete")
            and item.existing is not None
        ):
            item.fail(
                "the record carries no @odata.etag (etag policy 'record')", code="ETagMissing"
            )
            return None
        query = "?" + "&".join(f"{k}={v}" for k, v in self.params.items()) if self.params else ""
        op_id = str(item.index)
        if self.action == "create" or (self.action == "upsert" and item.existing is None):
            item.method = "POST"
            return BatchOperation("POST", self.path() + query, item.payload, id=op_id)
        assert item.target is not None
        if self.action == "delete":
            item.method = "DELETE"
            return BatchOperation("DELETE", self.path(item.target), headers=if_match, id=op_id)
        if self.action not in WRITE_ACTIONS:
            item.method = "POST"
            return BatchOperation("POST", self.path(item.target, self.action), id=op_id)
        if self.action == "upsert" and _unchanged(item.payload, item.existing or {}):
            item.finish(Outcome.UNCHANGED, id=item.target)
            return None
        item.method = "PATCH"
        url = self.path(item.target) + query
        return BatchOperation("PATCH", url, item.payload, headers=if_match, id=op_id)

    async def _send(self, operations: list[BatchOperation]) -> list[BatchResult | BCBridgeError]:
        """The answers to `operations`. Repeatable writes go out as one `client.batch` whose lost
        answer raises (the caller may send them again). Other writes go 100 per `$batch`, each on
        its own: a `$batch` that fails leaves its error in place of its answers, the others stand.
        """
        if self.repeatable:
            return list(await self.client.batch(operations, continue_on_error=True))
        answers: list[BatchResult | BCBridgeError] = [BCBridgeError("not sent") for _ in operations]

        async def send(start: int) -> None:
            chunk = operations[start : start + MAX_BATCH]
            try:
                got: list[BatchResult | BCBridgeError] = list(
                    await self.client.batch(chunk, continue_on_error=True)
                )
            except (TransportError, BCAPIError) as exc:
                got = [exc] * len(chunk)
            answers[start : start + len(chunk)] = got

        async with task_group() as group:
            for start in range(0, len(operations), MAX_BATCH):
                group.start_soon(send, start)
        return answers

    def _settle(self, item: _Item, answer: BatchResult | BCBridgeError) -> bool:
        """Record the outcome; False for an ETag conflict that `fetch` may re-apply."""
        if isinstance(answer, BCBridgeError):
            if _surely_not_run(answer):
                status = answer.status if isinstance(answer, BCAPIError) else None
                item.fail(f"not sent: {answer}; it can be sent again", status, code="NotSent")
            else:
                item.lost(self.action, self.entity_set.entity, answer)
            return True
        if answer.ok:
            body = answer.body if isinstance(answer.body, dict) else {}
            created = Outcome.CREATED if self.action in ("create", "upsert") else Outcome.DONE
            outcome = {"POST": created, "PATCH": Outcome.UPDATED, "DELETE": Outcome.DELETED}
            record_id = str(body.get("id") or item.target or "") or None
            item.finish(
                outcome[str(item.method)],
                id=record_id,
                status=answer.status,
                request_id=answer.headers.get("request-id"),
            )
            return True
        conflict = (
            answer.status in (409, 412)
            and answer.error is not None
            and answer.error.code in ("Request_EntityChanged", "")
        )
        if (
            conflict
            and self.etag == "fetch"
            and self.action in ("update", "upsert")
            and item.existing is not None
        ):
            return False
        item.fail(answer.error or f"HTTP {answer.status}", status=answer.status)
        return True

    async def _reapply(self, items: list[_Item], *, last: bool) -> list[_Item]:
        """Re-read conflicted records; re-apply only where the other change spared our fields."""
        current = await self._lookup("id", [str(item.target) for item in items])
        again = []
        for item in items:
            now = current.get(str(item.target))
            if now is None:
                item.fail(
                    "the record was deleted by another user",
                    status=404,
                    code="Internal_RecordNotFound",
                )
                continue
            touched = sorted(
                name for name in item.payload if (item.existing or {}).get(name) != now.get(name)
            )
            if touched or last:
                reason = f"fields {', '.join(touched)}" if touched else "the record, repeatedly"
                item.fail(
                    f"another user changed {reason} since it was read; not overwritten",
                    status=409,
                    code="Request_EntityChanged",
                )
                continue
            item.existing, item.etag = now, now.get("@odata.etag")
            again.append(item)
        return again


def _key_value(key: str | None, record: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """The id `key` names for `record` (a GUID, or a template such as ``{id}``; by default
    the record's id), or None and why there is none."""
    if key is None:
        value = record.get("id")
        return (str(value), None) if value else (None, None)
    if "{" not in key:
        return key, None
    try:
        return key.format(**record), None
    except (KeyError, IndexError) as exc:
        return None, f"the key template {key!r} needs field {exc} which the record lacks"


def _target_key(
    key: str | None, key_field: str | None, record: Mapping[str, Any], payload: Mapping[str, Any]
) -> tuple[str | None, str | None]:
    """The value a record's BC record is found by: its `key_field` value, else its GUID key;
    or None and why it has none (the record fails with KeyMissing)."""
    if key_field:
        found = record.get(key_field, payload.get(key_field))
        if found in (None, ""):
            return None, f"the record has no {key_field!r} to match on"
        return str(found), None
    value, why = _key_value(key, record)
    if value is None:
        return None, why or "the record has no id: give key, key_field or an id field"
    if not is_guid(value):
        return None, f"{value!r} is not a GUID key"
    return value, None


@dataclass
class Preview:
    """What a `Publisher` would do with one record, worked out without BC (`push --dry-run`):
    the body it would send (None for a delete or a bound action, which send none), the record's
    properties it leaves out (read-only ones), the id or key_field value it looks the BC record
    up by, and, when the record would fail, BC's status, code and message as predicted."""

    body: dict[str, Any] | None
    left_out: list[str]
    target: str | None = None
    status: int | None = None
    code: str | None = None
    message: str | None = None

    @property
    def ok(self) -> bool:
        """No failure predicted (BC may still refuse for reasons of its own)."""
        return self.code is None


def preview(
    entity: str | EntitySet,
    action: str,
    record: Mapping[str, Any],
    *,
    key: str | None = None,
    key_field: str | None = None,
) -> Preview:
    """The checks a publisher makes before it sends `record` (finite numbers, a key to find
    the BC record by), and for a create, update or upsert the catalog's prediction of BC's
    answer to the body (`catalog.refusal`: unknown properties, types, lengths, enum options).
    A preview that passes is no promise: BC also checks business rules and references."""
    entity_set = entity if isinstance(entity, EntitySet) else catalog.get(entity)
    body = _writable(entity_set, record)
    sends_body = action in ("create", "update", "upsert")
    shown = body if sends_body else None
    left_out = [
        name
        for name in record
        if sends_body and name not in body and not name.startswith("@odata.")
    ]
    if (name := _not_finite(body)) is not None:
        return Preview(
            shown, left_out, code="TransformError", message=f"{name} is not a finite number"
        )
    target = None
    if action != "create" or key_field:
        target, missing = _target_key(key, key_field, record, body)
        if target is None:
            return Preview(shown, left_out, code="KeyMissing", message=missing)
    refusal = _body_refusal(entity_set, body) if sends_body else None
    if refusal is not None:
        return Preview(shown, left_out, target, refusal.status, refusal.code, refusal.message)
    return Preview(shown, left_out, target)


def _body_refusal(entity_set: EntitySet, body: Mapping[str, Any]) -> catalog.Refusal | None:
    """BC's refusal of the first property it will not take, lines (deep insert) included; None
    for a set whose properties the catalog does not list (nothing to check against)."""
    if not entity_set.described:
        return None
    for name, value in body.items():
        if entity_set.lines and name == entity_set.lines and isinstance(value, list):
            line_set = catalog.get(entity_set.lines)
            for line in value:
                if isinstance(line, Mapping) and (found := _body_refusal(line_set, line)):
                    return found
            continue
        if (found := catalog.refusal(entity_set, name, value)) is not None:
            return found
    return None


def _surely_not_run(error: BCBridgeError) -> bool:
    """Whether BC certainly did not act on a request that ended in `error`: it refused it before
    processing (429/503, or any answer that is not a server error), or no connection was made."""
    if isinstance(error, BCAPIError):
        return not isinstance(error, RetriableAPIError) or (
            error.status in _retry.NOT_PROCESSED_STATUSES
        )
    if isinstance(error, TransportError):
        never_sent = {kind.__name__ for kind in _retry._NEVER_SENT}
        return bool(error.attempts) and all(a.error in never_sent for a in error.attempts)
    return False


def _writable(entity_set: EntitySet, payload: Mapping[str, Any]) -> dict[str, Any]:
    """The payload without OData annotations and read-only properties (lines cleaned too)."""
    read_only = {f.name for f in entity_set.fields if f.read_only}
    lines = entity_set.lines
    clean: dict[str, Any] = {}
    for name, value in payload.items():
        if name.startswith("@odata.") or name in read_only:
            continue
        if lines and name == lines and isinstance(value, list):
            line_set = catalog.get(lines)
            value = [_writable(line_set, line) for line in value if isinstance(line, Mapping)]
        clean[name] = value
    return clean


def _not_finite(payload: Mapping[str, Any], prefix: str = "") -> str | None:
    """The first field (lines included) holding a NaN or an infinity, if any."""
    for name, value in payload.items():
        if isinstance(value, float | Decimal) and not math.isfinite(value):
            return prefix + name
        if isinstance(value, list):
            for index, line in enumerate(value):
                if isinstance(line, Mapping) and (
                    found := _not_finite(line, f"{prefix}{name}[{index}].")
                ):
                    return found
    return None


def _unchanged(payload: Mapping[str, Any], existing: Mapping[str, Any]) -> bool:
    return all(_same(value, existing.get(name)) for name, value in payload.items())


def _same(ours: Any, theirs: Any) -> bool:
    if _is_number(ours) and _is_number(theirs):
        if isinstance(ours, Decimal) or isinstance(theirs, Decimal):
            # exact: a float read from BC counts as the digits BC wrote (its shortest repr). A BC
            # value with more digits than a float holds reads as changed: one redundant PATCH.
            return _exact(ours) == _exact(theirs)
        return float(ours) == float(theirs)
    return bool(ours == theirs)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def _exact(number: int | float | Decimal) -> Decimal:
    return Decimal(repr(number)) if isinstance(number, float) else Decimal(number)


# --- failed records ---------------------------------------------------------------------------


@dataclass
class FailedRecord:
    """A record that did not reach BC, as kept in a failed-records file: enough to see why and
    to send it again without the original input or transformers."""

    record: dict[str, Any] | None  # as read from the input
    payload: dict[str, Any] | None  # as it would be sent; None when the transform failed on it
    status: int | None = None  # HTTP status BC answered with
    code: str | None = None  # BC's error code (or ours: TransformError, KeyMissing, ...)
    message: str | None = None
    record_key: str | None = None  # the record's key_field value (or id), for people reading
    task: int | None = None  # the task in the push store
    # the transformer steps a replay applies again to `record` when there is no payload
    transform: list[Any] | None = None

    @classmethod
    def of(cls, result: RecordResult, payload: dict[str, Any] | None = None) -> FailedRecord:
        """From a publisher result; `payload` defaults to the record (a publisher without a
        transform sends the record as it is)."""
        return cls(
            result.record,
            result.record if payload is None else payload,
            status=result.status,
            code=result.code,
            message=result.message,
            record_key=result.id,
        )


def write_failed(
    path: Path,
    failures: Iterable[FailedRecord],
    *,
    entity: str,
    action: str,
    company: str | None = None,
    key: str | None = None,
    key_field: str | None = None,
    flow: str | None = None,
) -> int:
    """Append failed records as JSON Lines, one object each, and return how many.

    Each line names everything a replay needs (entity, action, company, key, key_field), so
    `push --retry-failed FILE` needs no other flag. The file is opened only when there is
    something to write: nothing failed, no file."""
    count = 0
    handle: BinaryIO | None = None
    try:
        for failure in failures:
            if handle is None:
                path.parent.mkdir(parents=True, exist_ok=True)
                handle = path.open("ab")
            entry = {
                "entity": entity,
                "action": action,
                "company": company,
                "key": key,
                "key_field": key_field,
                "flow": flow,
                "task": failure.task,
                "record_key": failure.record_key,
                "status": failure.status,
                "code": failure.code,
                "message": failure.message,
                "payload": failure.payload,
                "record": failure.record,
                **({} if failure.transform is None else {"transform": failure.transform}),
                "failed_at": datetime.now(UTC).isoformat(),
            }
            handle.write(_json.dumps(entry, option=_json.OPT_APPEND_NEWLINE))
            count += 1
    finally:
        if handle is not None:
            handle.close()
    return count


def read_failed(path: Path) -> Generator[dict[str, Any], None, None]:
    """The entries of a failed-records file, streamed; a bad line is named by file:line."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise ConfigError(f"cannot read failed records: {exc.strerror}", source=str(path)) from None
    with handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                entry = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise ConfigError(f"not JSON: {exc}", source=f"{path}:{number}") from None
            if not isinstance(entry, dict) or not entry.get("entity") or not entry.get("action"):
                raise ConfigError(
                    "not a failed-record entry (expected an object with entity and action)",
                    source=f"{path}:{number}",
                )
            yield entry
