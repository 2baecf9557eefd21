"""The emulator's tables: one SQLite table per entity set, one column per catalog property.

A column per property (rather than a JSON blob) lets `$filter` and `$orderby` run in SQL through
odata-query, and lets a 20,000-row page come straight out of one SELECT. Dates and datetimes are
kept as the exact text BC writes (``2024-01-31``, ``2024-01-31T10:00:00.123Z``): that text sorts
chronologically, so comparisons in SQL are right and the stored value is already the JSON value.

Every table also has ``_seq`` (insertion order; the keyset for paging), ``_company`` and
``_version`` (bumped on each write; the ETag is derived from it).
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from bcbridge import catalog
from bcbridge.catalog import EntitySet, Field, FieldType

BLANK_GUID = "00000000-0000-0000-0000-000000000000"
BLANK_DATE = "0001-01-01"
BLANK_DATETIME = "0001-01-01T00:00:00Z"
STANDARD_ROUTE = "v2.0"
Row = Mapping[Any, Any]  # a stored record as SQLAlchemy returns it (RowMapping) or a plain dict

_COLUMN_TYPES: Mapping[FieldType, type[sa.types.TypeEngine[Any]]] = {
    FieldType.INT: sa.Integer,
    # Not exact: BC keeps Edm.Decimal as .NET decimal (28-29 digits); a REAL holds ~15-17, so a
    # value such as 12345678901234567.12 reads back rounded here. Exact storage would take a text
    # column plus casts in $filter/$orderby/keyset paging, Decimal body parsing, and Decimal
    # arithmetic in documents.py: not done (see tests/subpub/test_sp_exact.py).
    FieldType.DECIMAL: sa.Float,
    FieldType.BOOL: sa.Boolean,
    FieldType.COLLECTION: sa.JSON,  # a JSON array, read back as a list
}

GENERIC_FIELDS = (
    Field("id", FieldType.GUID, True),
    Field("lastModifiedDateTime", FieldType.DATETIME, True),
)


def now_text() -> str:
    # isoformat, not strftime: the same text (``2024-01-31T10:00:00.123Z``) in a third the time
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_id() -> str:
    return str(uuid.uuid4())


def blank(field: Field) -> Any:
    """The value BC shows for an empty property (bc-api.md §1.6)."""
    return {
        FieldType.GUID: BLANK_GUID,
        FieldType.INT: 0,
        FieldType.DECIMAL: 0.0,
        FieldType.BOOL: False,
        FieldType.DATE: BLANK_DATE,
        FieldType.DATETIME: BLANK_DATETIME,
        FieldType.ENUM: field.options[0] if field.options else "",
        FieldType.COLLECTION: [],
    }.get(field.type, "")


def etag(seq: int, version: int) -> str:
    """A weak ETag shaped like BC's: W/"<base64 of a single-quoted string>"."""
    raw = f"'{seq};{version};{(seq * 2654435761 + version) % 10**10}1;00;'".encode()
    return 'W/"' + base64.b64encode(raw).decode() + '"'


def fields_of(entity_set: EntitySet) -> tuple[Field, ...]:
    return entity_set.fields or GENERIC_FIELDS


class Schema:
    """The SQLAlchemy tables for every served entity set, keyed by (route, set name)."""

    def __init__(self) -> None:
        self.metadata = sa.MetaData()
        self.sets: dict[tuple[str, str], EntitySet] = {}
        self.tables: dict[tuple[str, str], sa.Table] = {}
        # Statements built once and run with bound parameters (`bcbridge.emulator.records`):
        # building a statement and its cache key on each write cost more than running it.
        self.statements: dict[Any, Any] = {}
        # ids of companies found since the last seed (only a seed makes or drops a company;
        # every request under companies(...) checks its id)
        self.company_ids: set[str] = set()
        for entity_set in catalog.CATALOG.values():
            if entity_set.name != "subscriptions":
                self.add(STANDARD_ROUTE, entity_set)
        self.number_series = sa.Table(
            "_number_series",
            self.metadata,
            sa.Column("company", sa.String, primary_key=True),
            sa.Column("set_name", sa.String, primary_key=True),
            sa.Column("last", sa.Integer, nullable=False),
        )
        # Edm.Stream content (attachments, pictures), kept apart from the records
        self.streams = sa.Table(
            "_streams",
            self.metadata,
            sa.Column("route", sa.String, primary_key=True),
            sa.Column("set_name", sa.String, primary_key=True),
            sa.Column("company", sa.String(36), primary_key=True),
            sa.Column("record_id", sa.String(36), primary_key=True),
            sa.Column("property", sa.String, primary_key=True),
            sa.Column("content_type", sa.String, nullable=False),
            sa.Column("content", sa.LargeBinary, nullable=False),
        )
        # Customer and vendor ledger entries: BC's API v2.0 serves no set for them, but posting
        # keeps them (emulator/posting.py) so that balances, remaining amounts and aged
        # receivables/payables all come from the same open entries.
        self.ledger = sa.Table(
            "_ledger",
            self.metadata,
            sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("company", sa.String(36), nullable=False),
            sa.Column("party", sa.String(8), nullable=False),  # "customer" or "vendor"
            sa.Column("party_id", sa.String(36), nullable=False, index=True),
            sa.Column("document_type", sa.String(20), nullable=False),
            sa.Column("document_id", sa.String(36), nullable=False, index=True),
            sa.Column("document_number", sa.String(20), nullable=False),
            sa.Column("posting_date", sa.String(10), nullable=False),
            sa.Column("due_date", sa.String(10), nullable=False),
            # BC's signs: a customer invoice is positive, a vendor invoice negative
            sa.Column("amount", sa.Float, nullable=False),
            sa.Column("amount_excluding_tax", sa.Float, nullable=False),
            sa.Column("remaining", sa.Float, nullable=False),
        )
        # What `send`, `postAndSend`, `cancelAndSend` would have e-mailed (GET /_emulator/sent).
        self.sent = sa.Table(
            "_sent",
            self.metadata,
            sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("company", sa.String(36), nullable=False),
            sa.Column("set_name", sa.String(40), nullable=False),
            sa.Column("document_id", sa.String(36), nullable=False),
            sa.Column("document_number", sa.String(20), nullable=False),
            sa.Column("action", sa.String(40), nullable=False),
            sa.Column("recipient", sa.String(250), nullable=False),
            sa.Column("sent_at", sa.String(30), nullable=False),
        )

    def add(self, route: str, entity_set: EntitySet) -> sa.Table:
        table_name = entity_set.name if route == STANDARD_ROUTE else f"{route}/{entity_set.name}"
        columns = [
            sa.Column("_seq", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("_company", sa.String(36), nullable=False),
            sa.Column("_version", sa.Integer, nullable=False, default=1),
        ]
        columns += [
            sa.Column(f.name, _COLUMN_TYPES.get(f.type, sa.String)(), nullable=False)
            for f in fields_of(entity_set)
        ]
        if "id" not in {f.name for f in fields_of(entity_set)}:
            # BC keys the set by another GUID (agedAccountsReceivables by customerId): records
            # are still found by `id`, which holds the key's value and is never shown.
            columns.append(sa.Column("id", sa.String(), nullable=False))
        table: sa.Table = sa.Table(table_name, self.metadata, *columns)  # type: ignore[call-overload]
        sa.Index(f"ix_{table_name}_company_id", table.c._company, table.c.id, unique=True)
        if entity_set.parent_field:
            sa.Index(f"ix_{table_name}_parent", table.c[entity_set.parent_field])
        if "lastModifiedDateTime" in table.c:
            # incremental reads (filter, order and page by it, as the subscriber asks) walk this
            # index instead of sorting the company's whole set for every page
            sa.Index(
                f"ix_{table_name}_modified",
                table.c._company,
                table.c.lastModifiedDateTime,
                table.c._seq,
            )
        if entity_set.natural_key and entity_set.natural_key in table.c:
            # lookups and the duplicate check go by number/code: keep them off full scans
            sa.Index(f"ix_{table_name}_natural", table.c._company, table.c[entity_set.natural_key])
        self.sets[(route, entity_set.name)] = entity_set
        self.tables[(route, entity_set.name)] = table
        return table

    def table(self, route: str, name: str) -> sa.Table:
        return self.tables[(route, name)]


def row_to_json(row: Row, names: Iterable[str]) -> dict[str, Any]:
    """The JSON body of one record: the ETag first, then the properties in catalog order."""
    body: dict[str, Any] = {"@odata.etag": etag(row["_seq"], row["_version"])}
    for name in names:
        body[name] = row[name]
    return body


def make_engine(url: str | None) -> sa.Engine:
    if url is None:
        # One shared in-memory database; every call runs on one worker thread at a time.
        return sa.create_engine(
            "sqlite://",
            poolclass=sa.pool.StaticPool,
            connect_args={"check_same_thread": False},
        )
    engine = sa.create_engine(url, connect_args={"check_same_thread": False})

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine
