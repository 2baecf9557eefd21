"""Record-level operations on the emulator's tables: read, insert, update, delete, number series.

Everything here runs inside one SQLAlchemy connection (one transaction) handed in by the caller.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from bcbridge.catalog import EntitySet
from bcbridge.emulator.changes import Change, ChangeType, note
from bcbridge.emulator.errors import entity_changed, missing_if_match, record_not_found
from bcbridge.emulator.store import BLANK_GUID, Row, Schema, etag, new_id, now_text
from bcbridge.emulator.validation import blank_record

_SERIES = re.compile(r"^(?P<prefix>.*?)(?P<digits>\d+)$")


@dataclass(frozen=True)
class Place:
    """Where records live: an API route, an entity set, a company, and maybe a parent record."""

    route: str
    entity_set: EntitySet
    company_id: str
    parent_id: str | None = None

    @property
    def name(self) -> str:
        return self.entity_set.name


class Records:
    def __init__(
        self,
        schema: Schema,
        conn: sa.Connection,
        *,
        ids: Callable[[], str] = new_id,
        clock: Callable[[], str] = now_text,
    ):
        """`ids` and `clock` make new ids and lastModifiedDateTime values; the seed passes its
        own so that documents it posts come out the same for the same seed."""
        self.schema = schema
        self.conn = conn
        self.ids = ids
        self.clock = clock

    def table(self, place: Place) -> sa.Table:
        return self.schema.table(place.route, place.name)

    def scope(self, place: Place) -> list[Any]:
        table = self.table(place)
        clauses = [table.c._company == place.company_id]
        if place.parent_id is not None and place.entity_set.parent_field:
            clauses.append(table.c[place.entity_set.parent_field] == place.parent_id)
        return clauses

    def _scoped(self, place: Place, field: str, *, first_only: bool) -> Any:
        """SELECT of `place`'s records whose `field` is the parameter ``p_value`` (company
        ``p_company``, parent ``p_parent``): built once per table and shape, then reused."""
        parent_field = place.entity_set.parent_field if place.parent_id is not None else None
        key = ("scoped", place.route, place.name, field, parent_field, first_only)
        stmt = self.schema.statements.get(key)
        if stmt is None:
            table = self.table(place)
            clauses = [table.c._company == sa.bindparam("p_company")]
            if parent_field:
                clauses.append(table.c[parent_field] == sa.bindparam("p_parent"))
            clauses.append(table.c[field] == sa.bindparam("p_value"))
            stmt = sa.select(table).where(*clauses)
            if first_only:
                stmt = stmt.limit(1)
            self.schema.statements[key] = stmt
        return stmt

    def _scope_params(self, place: Place, value: Any) -> dict[str, Any]:
        return {"p_company": place.company_id, "p_parent": place.parent_id, "p_value": value}

    def find(self, place: Place, record_id: str) -> Row | None:
        stmt = self._scoped(place, "id", first_only=False)
        params = self._scope_params(place, record_id.lower())
        return self.conn.execute(stmt, params).mappings().first()

    def get(self, place: Place, record_id: str) -> Row:
        row = self.find(place, record_id)
        if row is None:
            raise record_not_found(place.entity_set.entity, f"Id='{record_id}'")
        return row

    def find_by(self, place: Place, field: str, value: Any) -> Row | None:
        if value is None:  # `== None` is SQL's IS NULL, which a bound parameter is not
            table = self.table(place)
            null_stmt = sa.select(table).where(*self.scope(place), table.c[field].is_(None))
            return self.conn.execute(null_stmt.limit(1)).mappings().first()
        stmt = self._scoped(place, field, first_only=True)
        return self.conn.execute(stmt, self._scope_params(place, value)).mappings().first()

    def children(self, place: Place, field: str, parent_id: str) -> list[Row]:
        table = self.table(place)
        stmt = (
            sa.select(table)
            .where(*self.scope(place), table.c[field] == parent_id)
            .order_by(table.c._seq)
        )
        return list(self.conn.execute(stmt).mappings())

    def next_number(self, place: Place) -> str:
        series = place.entity_set.number_series
        assert series, f"{place.name} has no number series"
        match = _SERIES.match(series)
        assert match, series
        prefix, digits = match["prefix"], match["digits"]
        ns = self.schema.number_series
        key = (ns.c.company == place.company_id) & (ns.c.set_name == place.name)
        last = self.conn.execute(sa.select(ns.c.last).where(key)).scalar()
        number = int(digits) if last is None else last + 1
        if last is None:
            self.conn.execute(
                ns.insert().values(company=place.company_id, set_name=place.name, last=number)
            )
        else:
            self.conn.execute(ns.update().where(key).values(last=number))
        return f"{prefix}{number:0{len(digits)}d}"

    def insert(self, place: Place, values: Row) -> Row:
        record = blank_record(place.entity_set)
        record.update(values)
        if record["id"] == BLANK_GUID:
            record["id"] = self.ids()
        if "lastModifiedDateTime" in record:
            record["lastModifiedDateTime"] = self.clock()
        if place.entity_set.parent_field and place.parent_id:
            record[place.entity_set.parent_field] = place.parent_id
        # the values as parameters of one statement, not baked into a new one per record; the
        # row as stored comes back from the same statement (RETURNING, SQLite >= 3.35)
        key = ("insert", place.route, place.name)
        stmt = self.schema.statements.get(key)
        if stmt is None:
            table = self.table(place)
            stmt = self.schema.statements[key] = table.insert().returning(*table.c)
        values = {**record, "_company": place.company_id, "_version": 1}
        row: Row = self.conn.execute(stmt, values).mappings().one()
        self._note(place, row, "created")
        return row

    def update(self, place: Place, row: Row, values: Row) -> Row:
        table = self.table(place)
        changes = dict(values)
        if "lastModifiedDateTime" in table.c:
            changes["lastModifiedDateTime"] = self.clock()
        key = ("update", place.route, place.name)
        stmt = self.schema.statements.get(key)
        if stmt is None:
            stmt = (
                table.update()
                .where(table.c._seq == sa.bindparam("p_seq"))
                .values(_version=table.c._version + 1)
            )
            self.schema.statements[key] = stmt
        # the changed columns are SET from the parameters (one compiled form per column set)
        self.conn.execute(stmt, {**changes, "p_seq": row["_seq"]})
        updated = self.get(place, row["id"])
        self._note(place, updated, "updated")
        return updated

    def touch(self, place: Place, row: Row) -> None:
        """A change to a line is a change to its document: new ETag, new lastModifiedDateTime."""
        self.update(place, row, {})

    def delete(self, place: Place, row: Row) -> None:
        table = self.table(place)
        self.conn.execute(table.delete().where(table.c._seq == row["_seq"]))
        self._note(place, row, "deleted")

    def _note(self, place: Place, row: Row, change_type: ChangeType) -> None:
        """Remember the write for webhook notifications (`bcbridge.emulator.changes`)."""
        entity_set = place.entity_set
        modified = row.get("lastModifiedDateTime")
        # Only document lines (documentId) notify their header (bc-api.md §9.2); whether BC
        # does the same for other children (dimension values, journal lines) is UNCONFIRMED.
        parent_id = row.get("documentId") if entity_set.parent_field == "documentId" else None
        note(
            self.conn,
            Change(
                place.route,
                entity_set.name,
                place.company_id,
                str(row["id"]),
                change_type,
                str(modified) if modified and change_type != "deleted" else now_text(),
                entity_set.parent if parent_id else None,
                str(parent_id) if parent_id else None,
            ),
        )


def check_if_match(row: Row, if_match: str | None, *, required: bool) -> None:
    """PATCH needs If-Match (bc-api.md §5.2); DELETE checks it only when sent (§5.3)."""
    if if_match is None:
        if required:
            raise missing_if_match()
        return
    if if_match.strip() == "*":
        return
    current = etag(row["_seq"], row["_version"])
    if current not in [tag.strip() for tag in if_match.split(",")]:
        raise entity_changed()
