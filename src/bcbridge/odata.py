"""OData URL pieces for BC: literals, key segments, datetimes.

Shared by the client (to build URLs) and the emulator (to read them back), so that both agree on
one spelling. BC wants GUID keys bare (``customers(6f1e...)``), string keys single-quoted with
quotes doubled (``subscriptions('a''b')``), datetimes as UTC ISO 8601 with milliseconds and ``Z``.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal

from bcbridge.catalog import EntitySet
from bcbridge.errors import ConfigError

__all__ = [
    "format_datetime",
    "is_guid",
    "key_segment",
    "literal",
    "parse_datetime",
    "parse_key",
]

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def is_guid(text: str) -> bool:
    return bool(_GUID.match(text))


def format_datetime(value: datetime) -> str:
    """UTC, milliseconds, ``Z``: the form BC writes and accepts in filters."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def parse_datetime(text: str) -> datetime:
    """Read an ISO 8601 datetime (``Z`` or an offset); naive values are taken as UTC."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigError(
            f"expected an ISO 8601 datetime such as 2024-01-31T12:00:00Z, got {text!r}"
        ) from exc
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def literal(value: object) -> str:
    """The OData literal for a Python value, as BC expects it inside $filter."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal):
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return format_datetime(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise ConfigError(f"cannot write {type(value).__name__} as an OData literal")


def key_segment(entity_set: EntitySet, key: object) -> str:
    """``name(key)`` with the key spelled as BC wants it for this set."""
    text = str(key)
    if entity_set.key_is_string:
        return f"{entity_set.name}({literal(text)})"
    if not is_guid(text):
        raise ConfigError(
            f"{entity_set.name} is keyed by a GUID ({entity_set.key}); got {text!r}",
            field="key",
        )
    return f"{entity_set.name}({text})"


def parse_key(text: str) -> str:
    """The key inside ``(...)``: a bare GUID, or a quoted string with doubled quotes undone."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1].replace("''", "'")
    if text.lower().startswith("id="):
        return parse_key(text[3:])
    return text
