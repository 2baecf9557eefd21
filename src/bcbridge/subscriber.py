"""Subscriber: read an entity from BC as a stream, optionally incremental on a cursor field.

Incremental reads follow BC's advice (bc-api.md §9.3): ``$filter=<field> ge <cursor>`` with
``$orderby=<field> asc``. The lower bound overlaps (``ge``), so records that share the cursor's
exact value are never missed; those already delivered at that value are recognised by id and
ETag and skipped. The upper bound is fixed when the run starts (``le <start>``), so a record
changed during the run is read by the next run instead of moving under our feet. The cursor
(`CursorState`) only moves when the caller says a record was written downstream (`advance`).

With `count_total`, the first page asks for ``$count=true`` so that a progress bar can know how
many records are coming (`total`). Whether BC's API v2.0 honours ``$count`` is not documented
(bc-api.md §4.2: UNCONFIRMED); the emulator answers ``@odata.count`` with the number of records
the filter matches. If BC answers the counted first page with a 400, it is read again without
``$count``; if the answer has no ``@odata.count``, `total` stays None (an indeterminate bar).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from dataclasses import field as default
from datetime import UTC, datetime
from typing import Any

import orjson

from bcbridge import catalog
from bcbridge.catalog import EntitySet, Scope
from bcbridge.client import BusinessCentralClient, Page
from bcbridge.errors import BCAPIError, ConfigError
from bcbridge.odata import (
    entity_path,
    format_datetime,
    is_guid,
    key_segment,
    literal,
    with_schema_version,
)
from bcbridge.partition import Partitions, choose_key, field_type, plan, read_ranges
from bcbridge.transform import Chain

__all__ = ["CursorState", "Subscriber"]

MAX_PAGE_SIZE = 20_000  # BC's page size when none is asked for (bc-api.md §4.3)


@dataclass
class CursorState:
    """Where an incremental read stands: the highest cursor value written downstream, and the
    records (id -> ETag) written at exactly that value."""

    field: str = "lastModifiedDateTime"
    value: str | None = None
    boundary: dict[str, str] = default(default_factory=dict)

    def seen(self, record: Mapping[str, Any]) -> bool:
        """Already written: at the cursor value, with the same ETag as when it was written."""
        value = record.get(self.field)
        return (
            value is not None
            and value == self.value
            and self.boundary.get(str(record.get("id"))) == record.get("@odata.etag")
        )

    def advance(self, record: Mapping[str, Any]) -> None:
        """Call after `record` is safely written downstream."""
        value = record.get(self.field)
        if value is None:
            return
        value = str(value)
        if self.value is None or value > self.value:
            self.value, self.boundary = value, {}
        if value == self.value:
            self.boundary[str(record.get("id"))] = str(record.get("@odata.etag"))

    def to_json(self) -> dict[str, Any]:
        """The state as JSON, for a cursor file or the store."""
        return {"field": self.field, "value": self.value, "boundary": self.boundary}

    @classmethod
    def from_json(cls, data: Any) -> CursorState:
        """A saved cursor; anything else (a state file edited or damaged) is a ConfigError."""
        if (
            not isinstance(data, Mapping)
            or not isinstance(data.get("field", ""), str)
            or not isinstance(data.get("value"), str | int | float | None)
            or not isinstance(data.get("boundary") or {}, Mapping)
        ):
            raise ConfigError(
                "not a saved cursor (expected an object with field, value and boundary); "
                "delete it to read everything again",
                field="state",
            )
        return cls(
            data.get("field", "lastModifiedDateTime"),
            data.get("value"),
            dict(data.get("boundary") or {}),
        )


@dataclass
class Subscriber:
    """Reads one entity set (or a record, or a navigation path by `key`) from BC.

    ``async for record in subscriber.records()`` follows the pages one at a time. `params` are
    OData query options (``$filter``, ``$select``, ``$expand``, ...). With a `cursor`, the read
    is incremental: records changed since the cursor's value up to `until` (default: the start
    of the read), oldest first; call ``cursor.advance(record)`` after each record is safely
    written, and save ``cursor.to_json()``. With `count_total`, `total` holds how many records
    BC said the read covers once the first page is in (None if BC did not say), and `skipped`
    how many of them were left out as already delivered at the cursor.
    """

    client: BusinessCentralClient
    entity: str | EntitySet
    company: str | None = None
    key: str | None = (
        None  # a record key, or a navigation such as "salesOrders(<id>)/salesOrderLines"
    )
    params: dict[str, Any] = default(default_factory=dict)
    transform: Chain | None = None  # applied to the request parameters
    paging: bool = True
    page_size: int | None = None
    cursor: CursorState | None = None
    until: datetime | None = None  # upper bound of an incremental read; default: now, at start
    count_total: bool = False  # ask for $count=true on the first page of a collection
    # several concurrent streams over key ranges (bcbridge.partition): N, "auto", None: one
    partitions: Partitions | None = None
    partition_key: str | None = None  # default: the cursor field, else entryNumber, ...
    ranges: int = 1  # how many ranges the read was cut into
    pages: int = 0
    total: int | None = None
    skipped: int = 0

    @property
    def entity_set(self) -> EntitySet:
        """The catalog's entity set this subscriber reads."""
        return self.entity if isinstance(self.entity, EntitySet) else catalog.get(self.entity)

    async def path(self) -> str:
        """The API path read (the company resolved to its id)."""
        entity_set = self.entity_set
        company_id = None
        if entity_set.scope is Scope.COMPANY:
            name = self.company or self.client.settings.company
            if not name:
                raise ConfigError(
                    "no company given (set company, --company or BC_COMPANY)", field="company"
                )
            company_id = (await self.client.resolve_company(name)).id
        if self.key is None:
            return entity_path(entity_set, company_id=company_id)
        if is_guid(self.key) or (entity_set.key_is_string and "/" not in self.key):
            return entity_path(entity_set, company_id=company_id, key=self.key)
        # a navigation path below the company, e.g. salesOrders(<id>)/salesOrderLines
        prefix = key_segment(catalog.get("companies"), company_id) + "/" if company_id else ""
        return prefix + self.key.strip("/")

    def query(self, started: datetime) -> dict[str, Any]:
        """The query options sent: `params`, bounded by the cursor when there is one."""
        params = dict(self.params)
        if self.cursor is not None:
            cursor_field = self.cursor.field
            bounds = [f"{cursor_field} le {format_datetime(self.until or started)}"]
            if self.cursor.value is not None:
                bounds.insert(0, f"{cursor_field} ge {_cursor_literal(self.cursor.value)}")
            if params.get("$filter"):
                bounds.insert(0, f"({params['$filter']})")
            params["$filter"] = " and ".join(bounds)
            params["$orderby"] = f"{cursor_field} asc"
        if self.transform is not None:
            context = {
                "cursor": self.cursor.value if self.cursor else None,
                "company": self.company,
            }
            params = self.transform.apply(params, context) or {}
        return with_schema_version(params, self.client.settings.schema_version)

    async def records(self) -> AsyncIterator[dict[str, Any]]:
        """The records, page by page: only one page is held in memory at a time."""
        started = datetime.now(UTC)
        path, params = await self.path(), self.query(started)
        if not self.paging:
            body = await self.client.get_json(path, params)
            self.pages = 1
            for record in body.get("value", [body]):
                yield record
            return
        async for page in self._pages(path, params):
            self.pages = page.number
            for record in page.records:
                if self.cursor is not None and self.cursor.seen(record):
                    self.skipped += 1
                    continue
                yield record

    async def _pages(self, path: str, params: dict[str, Any]) -> AsyncIterator[Page]:
        if self._partitionable:
            async for page in self._partitioned_pages(path, params):
                yield page
            return
        first = await self._counted_first_page(path, params) if self._countable else None
        if first is None:
            async for page in self.client.iter_pages(path, params=params, page_size=self.page_size):
                yield page
            return
        yield first
        if first.next_link:
            async for page in self.client.iter_pages(first.next_link, page_size=self.page_size):
                yield Page(page.records, page.next_link, page.url, page.number + 1)

    @property
    def _partitionable(self) -> bool:
        """Partitions asked for on a whole collection whose order and size the caller did not
        fix ($orderby of an incremental read is the cursor's, which the ranges keep)."""
        fixed = ("$top", "$skip") if self.cursor is not None else ("$top", "$skip", "$orderby")
        return (
            self.partitions not in (None, 1)
            and self.key is None
            and not any(name in self.params for name in fixed)
        )

    async def _partitioned_pages(self, path: str, params: dict[str, Any]) -> AsyncIterator[Page]:
        entity_set = self.entity_set
        key = self.partition_key or choose_key(
            entity_set, self.cursor.field if self.cursor else None
        )
        if key is None or self.partitions is None:
            async for page in self.client.iter_pages(path, params=params, page_size=self.page_size):
                yield page
            return
        found = await plan(
            self.client, path, params, key, self.partitions, self.page_size or MAX_PAGE_SIZE
        )
        self.total = found.total if self.count_total else None
        self.ranges = len(found.ranges)
        kind = field_type(entity_set, key)
        async for page in read_ranges(
            self.client,
            path,
            params,
            found.ranges,
            lambda part: part.clause(key, kind),
            page_size=self.page_size,
            ordered=self.cursor is not None,
        ):
            yield page

    @property
    def _countable(self) -> bool:
        """A collection (not one record by key) whose size was asked for."""
        return self.count_total and self.key is None

    async def _counted_first_page(self, path: str, params: dict[str, Any]) -> Page | None:
        """The first page, asked with ``$count=true``; None when BC refused that request."""
        headers = {"Prefer": f"odata.maxpagesize={self.page_size}"} if self.page_size else {}
        try:
            response = await self.client.request(
                "GET", path, params={**params, "$count": "true"}, headers=headers
            )
        except BCAPIError as exc:
            if exc.status != 400:
                raise
            return None  # perhaps $count itself (UNCONFIRMED on BC): read without it
        body = orjson.loads(response.content)
        self.total = _expected_total(body.get("@odata.count"), params)
        return Page(
            body.get("value", [body]), body.get("@odata.nextLink"), self.client.url(path), 1
        )


def _expected_total(count: Any, params: Mapping[str, Any]) -> int | None:
    """How many records the read gives: `@odata.count` counts all that match the filter,
    before ``$skip`` and ``$top``."""
    if isinstance(count, bool) or not isinstance(count, int):
        return None
    total = count
    try:
        if params.get("$skip") is not None:
            total = max(0, total - int(params["$skip"]))
        if params.get("$top") is not None:
            total = min(total, int(params["$top"]))
    except ValueError:
        return None  # BC refuses such a query anyway
    return total


def _cursor_literal(value: str) -> str:
    """Datetimes and dates go bare into BC filters; anything else is quoted as a string."""
    try:
        return format_datetime(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        return value if value.replace(".", "", 1).lstrip("-").isdigit() else literal(value)
