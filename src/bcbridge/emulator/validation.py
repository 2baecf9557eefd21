"""Validation and defaults for writes, as BC does them (bc-api.md §5, §7).

Which values BC refuses, and with which error, is `bcbridge.catalog.refusal` (shared with
`bcbridge push --dry-run`); this module turns a refusal into BC's error response and the values
it takes into the form the store keeps.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from bcbridge import catalog
from bcbridge.catalog import EntitySet, Field, FieldType
from bcbridge.emulator.errors import bad_request, refused
from bcbridge.emulator.store import blank, fields_of
from bcbridge.odata import format_datetime, parse_datetime


def _stored(field: Field, value: Any) -> Any:
    """A value BC took, as the store keeps it."""
    if value is None:
        return blank(field)
    if field.type is FieldType.DECIMAL:
        return float(value)
    if field.type is FieldType.GUID:
        return str(value).lower()
    if field.type is FieldType.DATETIME:
        return format_datetime(parse_datetime(value))
    return value


def validate(
    entity_set: EntitySet,
    body: Any,
    *,
    allow_read_only: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """The column values a POST/PATCH body asks for; BC's errors for anything wrong in it."""
    if not isinstance(body, Mapping):
        raise bad_request("Invalid Request Body: a JSON object was expected.")
    fields = fields_of(entity_set)
    known = {f.name: f for f in fields}
    values: dict[str, Any] = {}
    for name, value in body.items():
        if name.startswith("@odata."):
            continue
        if entity_set.lines and name == entity_set.lines:
            continue  # deep insert: handled by the caller
        problem = catalog.refusal(
            entity_set, name, value, fields=fields, allow_read_only=allow_read_only
        )
        if problem is not None:
            raise refused(problem)
        values[name] = _stored(known[name], value)
    return values


def blank_record(entity_set: EntitySet) -> dict[str, Any]:
    """A new record's values before its body is applied: a fresh dict (and fresh lists)."""
    return {
        name: list(value) if isinstance(value, list) else value
        for name, value in _blank_values(fields_of(entity_set)).items()
    }


# Worked out once per tuple of properties (`blank` builds a mapping of every type per call),
# keyed by the tuple's identity: hashing ~30 fields on each insert would cost what it saves.
# The tuple is kept with its values, so its id is never reused for another.
_BLANKS: dict[int, tuple[tuple[Field, ...], Mapping[str, Any]]] = {}


def _blank_values(fields: tuple[Field, ...]) -> Mapping[str, Any]:
    cached = _BLANKS.get(id(fields))
    if cached is None or cached[0] is not fields:
        cached = (fields, MappingProxyType({f.name: blank(f) for f in fields}))
        _BLANKS[id(fields)] = cached
    return cached[1]
