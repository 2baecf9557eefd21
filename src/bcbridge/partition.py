"""Partitioned reads: one large collection read as several concurrent nextLink streams.

A first probe asks how many records the read covers (``$count=true`` with ``$top=0``), then the
key values found at evenly spaced positions (``$orderby=<key> asc``, ``$skip=<position>``,
``$top=1``, ``$select=<key>``). Those values cut the key into ranges ``[low, high)``, each read as
its own nextLink stream with ``<key> ge low and <key> lt high`` added to the filter. Ranges are
made of key VALUES, so records that share a key value (ties) all fall into the same range and are
read once; a boundary value found twice just makes one range fewer.

The result equals a sequential read (same records, once each) as long as a record's key does not
change during the read: the key is chosen among fields BC never changes after insert
(``entryNumber``, ``systemCreatedAt``) before ``number`` (which a user can rename, rare during a
read). Records added during the read land in exactly one range, or in none if their range was
already read past, which a sequential read does too. An incremental read is partitioned on its
cursor field and its ranges are delivered in key order (`ordered`), so the records come in the
same order as a sequential read and the cursor moves exactly as it would there.

BC facts (bc-api.md §4.2): ``$skip``/``$top``/``$orderby`` are documented; ``$count`` is
UNCONFIRMED on API v2.0, so when the probe gets no count (or a 400) the read stays sequential.
``$skip`` on a large set costs BC a scan up to the position: the probes are N-1 one-row reads.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Literal

import anyio
import anyio.abc

from bcbridge.catalog import EntitySet, FieldType
from bcbridge.client import BusinessCentralClient, Page, task_group
from bcbridge.errors import BCAPIError
from bcbridge.odata import literal

__all__ = ["AUTO", "Partitions", "Range", "choose_key", "parse_partitions", "plan", "read_ranges"]

AUTO: Literal["auto"] = "auto"
Partitions = int | Literal["auto"]
# Keys BC does not change after insert come first: a key that moves during the read could move
# a record from an unread range into a read one.
KEY_CANDIDATES = ("entryNumber", "systemCreatedAt", "number")
# A partition worth its probe reads at least this many pages.
MIN_PAGES_PER_PARTITION = 2
# Ordered reads (incremental) hold later ranges in memory until the earlier ones are delivered.
MAX_BUFFERED_ROWS = 100_000
_BARE = {FieldType.INT, FieldType.DECIMAL, FieldType.DATE, FieldType.DATETIME, FieldType.GUID}


def parse_partitions(value: str | int | None, where: str) -> Partitions | None:
    """``auto``, a whole number >= 1, or None; ValueError naming `where` otherwise."""
    if value is None or value == AUTO:
        return value
    text = str(value).strip()
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise ValueError(f"{where}: expected 'auto' or a whole number >= 1, got {value!r}")


@dataclass(frozen=True)
class Range:
    """Key values ``low <= key < high``; None: unbounded on that side."""

    low: Any = None
    high: Any = None

    def clause(self, key: str, kind: FieldType | None) -> str | None:
        bounds = []
        if self.low is not None:
            bounds.append(f"{key} ge {_literal(self.low, kind)}")
        if self.high is not None:
            bounds.append(f"{key} lt {_literal(self.high, kind)}")
        return " and ".join(bounds) or None


def _literal(value: Any, kind: FieldType | None) -> str:
    """Numbers, dates, datetimes and GUIDs go bare into BC filters, text quoted."""
    if kind in _BARE and isinstance(value, str):
        return value
    return literal(value)


def choose_key(entity_set: EntitySet, cursor_field: str | None = None) -> str | None:
    """The field to cut ranges on: the cursor's for an incremental read, else an insert-stable
    key the set has; None when it has none (the read stays sequential)."""
    if cursor_field is not None:
        return cursor_field
    names = {f.name for f in entity_set.fields}
    return next((name for name in KEY_CANDIDATES if name in names), None)


def field_type(entity_set: EntitySet, name: str) -> FieldType | None:
    return next((f.type for f in entity_set.fields if f.name == name), None)


def with_clause(params: Mapping[str, Any], clause: str | None) -> dict[str, Any]:
    """`params` with `clause` and-ed to its ``$filter``."""
    query = dict(params)
    if clause:
        query["$filter"] = f"({query['$filter']}) and {clause}" if query.get("$filter") else clause
    return query


@dataclass
class Plan:
    """The ranges to read, and the count the probe found (None: BC did not count)."""

    ranges: list[Range]
    total: int | None


async def plan(
    client: BusinessCentralClient,
    path: str,
    params: Mapping[str, Any],
    key: str,
    partitions: Partitions,
    page_size: int,
) -> Plan:
    """Probe the count and the boundary keys; one unbounded range when splitting is not worth
    it (few records, no count) or not possible."""
    total = await _count(client, path, params)
    if total is None:
        return Plan([Range()], None)
    wanted = _how_many(total, partitions, page_size, client.settings.max_concurrency)
    if wanted < 2:
        return Plan([Range()], total)
    positions = [total * i // wanted for i in range(1, wanted)]
    found: dict[int, Any] = {}

    async def probe(position: int) -> None:
        found[position] = await _key_at(client, path, params, key, position)

    async with task_group() as group:
        for position in positions:
            group.start_soon(probe, position)
    boundaries: list[Any] = []
    for position in positions:  # in key order already; a tie or a vanished row gives no cut
        value = found[position]
        if value is not None and (not boundaries or value > boundaries[-1]):
            boundaries.append(value)
    edges = [None, *boundaries, None]
    return Plan([Range(edges[i], edges[i + 1]) for i in range(len(edges) - 1)], total)


def _how_many(total: int, partitions: Partitions, page_size: int, ceiling: int) -> int:
    """Never more streams than requests BC lets run at once (bc-api.md §8), nor than records."""
    if partitions == AUTO:
        return min(ceiling, total // (page_size * MIN_PAGES_PER_PARTITION))
    return min(partitions, ceiling, total)


async def _count(client: BusinessCentralClient, path: str, params: Mapping[str, Any]) -> int | None:
    try:
        query = {k: v for k, v in params.items() if k not in ("$expand", "$select")}
        body = await client.get_json(path, {**query, "$count": "true", "$top": "0"})
    except BCAPIError as exc:
        if exc.status != 400:
            raise
        return None  # $count is UNCONFIRMED on BC: read sequentially
    count = body.get("@odata.count")
    return count if isinstance(count, int) and not isinstance(count, bool) else None


async def _key_at(
    client: BusinessCentralClient, path: str, params: Mapping[str, Any], key: str, position: int
) -> Any:
    query = {k: v for k, v in params.items() if k != "$expand"}
    query.update({"$orderby": f"{key} asc", "$skip": str(position), "$top": "1", "$select": key})
    body = await client.get_json(path, query)
    rows = body.get("value") or []
    return rows[0].get(key) if rows else None


async def read_ranges(
    client: BusinessCentralClient,
    path: str,
    params: Mapping[str, Any],
    ranges: list[Range],
    clause_of: Callable[[Range], str | None],
    *,
    page_size: int | None,
    ordered: bool,
) -> AsyncIterator[Page]:
    """The pages of every range, read concurrently. `ordered`: range by range in key order
    (later ranges read ahead into a bounded buffer); otherwise as they arrive. Pages are
    numbered from 1 in the order they are given out.

    The streams are tasks of their own, cancelled when this generator ends: no task group may
    span a ``yield``, since a caller that stops reading early leaves the generator to be closed
    later from another task. A stream's error is raised here, where its pages would have come.
    """
    if ordered:
        per_range = max(2, MAX_BUFFERED_ROWS // max(1, page_size or 1000) // len(ranges))
        channels = [anyio.create_memory_object_stream[Page | Exception](per_range) for _ in ranges]
        sends = [send for send, _ in channels]
        receives = [receive for _, receive in channels]
    else:
        send, receive = anyio.create_memory_object_stream[Page | Exception](len(ranges))
        sends, receives = [send.clone() for _ in ranges], [receive]
        send.close()  # the clones keep it open until every range is read
    streams = [
        asyncio.create_task(
            _stream(client, path, with_clause(params, clause_of(part)), page_size, out)
        )
        for part, out in zip(ranges, sends, strict=True)
    ]
    number = 0
    try:
        for receive in receives:
            async for item in receive:
                if isinstance(item, Exception):
                    raise item
                number += 1
                yield Page(item.records, item.next_link, item.url, number)
    finally:
        for receive in receives:
            receive.close()
        for stream in streams:
            stream.cancel()


async def _stream(
    client: BusinessCentralClient,
    path: str,
    params: dict[str, Any],
    page_size: int | None,
    send: anyio.abc.ObjectSendStream[Page | Exception],
) -> None:
    async with send:
        try:
            async for page in client.iter_pages(path, params=params, page_size=page_size):
                await send.send(page)
        except Exception as exc:  # handed to the reader, which raises it
            with suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await send.send(exc)
