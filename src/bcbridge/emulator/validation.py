"""Validation and defaults for writes, as BC does them (bc-api.md §5, §7).

Error codes are BC's; message wordings marked UNCONFIRMED are our best reading of BC's behaviour.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date
from typing import Any

from bcbridge.catalog import EntitySet, Field, FieldType
from bcbridge.emulator.errors import (
    bad_request,
    evaluate_failed,
    invalid_guid,
    read_only_field,
    string_too_long,
)
from bcbridge.emulator.store import blank, fields_of
from bcbridge.odata import format_datetime, is_guid, parse_datetime

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$")
_EDM = {
    FieldType.GUID: "Edm.Guid",
    FieldType.STRING: "Edm.String",
    FieldType.INT: "Edm.Int32",
    FieldType.DECIMAL: "Edm.Decimal",
    FieldType.BOOL: "Edm.Boolean",
    FieldType.DATE: "Edm.Date",
    FieldType.DATETIME: "Edm.DateTimeOffset",
    FieldType.ENUM: "Edm.String",
}


def edm_type(field: Field) -> str:
    return _EDM[field.type]


def _convert(entity_set: EntitySet, field: Field, value: Any) -> Any:
    kind = field.type
    wrong = bad_request(
        f"Cannot convert the literal '{value}' to the expected type '{edm_type(field)}' "
        f"of property '{field.name}'.",  # wording UNCONFIRMED (bc-api.md §7 "Unable to convert")
    )
    if value is None:
        return blank(field)
    if kind is FieldType.BOOL:
        if not isinstance(value, bool):
            raise wrong
        return value
    if kind is FieldType.INT:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong
        return value
    if kind is FieldType.DECIMAL:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise wrong
        return float(value)
    if not isinstance(value, str):
        raise wrong
    if kind is FieldType.GUID:
        if not is_guid(value):
            raise invalid_guid(value)
        return value.lower()
    if kind is FieldType.DATE:
        if not _DATE.match(value):
            raise wrong
        try:
            date.fromisoformat(value)
        except ValueError:
            raise wrong from None
        return value
    if kind is FieldType.DATETIME:
        if not _DATETIME.match(value):
            raise wrong
        return format_datetime(parse_datetime(value))
    if field.max_length is not None and len(value) > field.max_length:
        raise string_too_long(field, value)
    if kind is FieldType.ENUM and value not in field.options:
        raise evaluate_failed(value, field)
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
    known = {f.name: f for f in fields_of(entity_set)}
    values: dict[str, Any] = {}
    for name, value in body.items():
        if name.startswith("@odata."):
            continue
        if entity_set.lines and name == entity_set.lines:
            continue  # deep insert: handled by the caller
        field = known.get(name)
        if field is None:
            raise bad_request(
                f"The property '{name}' does not exist on type "
                f"'Microsoft.NAV.{entity_set.entity}'. Make sure to only use property names "
                "that are defined by the type.",  # wording UNCONFIRMED
            )
        if field.read_only and name not in allow_read_only:
            raise read_only_field(name)
        values[name] = _convert(entity_set, field, value)
    return values


def blank_record(entity_set: EntitySet) -> dict[str, Any]:
    return {f.name: blank(f) for f in fields_of(entity_set)}
