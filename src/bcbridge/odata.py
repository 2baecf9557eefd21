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
from typing import Any

from bcbridge.catalog import CATALOG, EntitySet, Scope, is_guid
from bcbridge.errors import ConfigError

__all__ = [
    "entity_path",
    "format_datetime",
    "is_guid",
    "key_segment",
    "literal",
    "parse_datetime",
    "parse_key",
]


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


def entity_path(
    entity_set: EntitySet,
    *,
    company_id: str | None = None,
    key: object | None = None,
    parent_key: object | None = None,
    action: str | None = None,
) -> str:
    """The path below the API root for a set, one record, a nested line set, or a bound action.

    ``companies(c)/customers``, ``companies(c)/customers(k)``,
    ``companies(c)/salesOrders(p)/salesOrderLines``, ``.../salesInvoices(k)/Microsoft.NAV.post``.
    Root-scoped sets (``companies``, ``subscriptions``) take no company.
    """
    parts: list[str] = []
    if entity_set.scope is Scope.COMPANY:
        if company_id is None:
            raise ConfigError(
                f"{entity_set.name} lives under a company; none given", field="company"
            )
        parts.append(key_segment(CATALOG["companies"], company_id))
    if parent_key is not None:
        if entity_set.parent is None:
            raise ConfigError(f"{entity_set.name} is not nested under another set", field="key")
        parts.append(key_segment(CATALOG[entity_set.parent], parent_key))
    parts.append(entity_set.name if key is None else key_segment(entity_set, key))
    if action is not None:
        if action not in entity_set.actions:
            valid = ", ".join(entity_set.actions) or "none"
            raise ConfigError(
                f"{entity_set.name} has no bound action {action!r}; valid: {valid}",
                field="action",
            )
        if key is None:
            raise ConfigError("a bound action needs the record's key", field="key")
        parts.append(f"Microsoft.NAV.{action}")
    return "/".join(parts)


SCHEMA_21 = "2.1"
_STRING_LITERAL = re.compile(r"'(?:[^']|'')*'")
_IN_LIST = re.compile(r"\sin\s*\(")


def needs_schema_21(filter_text: str | None) -> bool:
    """Whether a $filter uses what BC serves only with ``$schemaversion=2.1`` (bc-api.md §4.1):
    the ``in`` operator or a nested function call such as ``contains(tolower(x),'a')``.
    A filter the parser cannot read (odata-query reads ``x in ('a')``, a one-value list, as a
    syntax error) is checked for an ``in (`` outside its string literals."""
    if not filter_text:
        return False
    from odata_query import ast, exceptions
    from odata_query.grammar import ODataLexer, ODataParser

    try:
        tree = ODataParser().parse(ODataLexer().tokenize(filter_text))
    except exceptions.ODataException:
        return bool(_IN_LIST.search(_STRING_LITERAL.sub("''", filter_text)))

    def gated(node: object) -> bool:
        if isinstance(node, ast.Compare) and isinstance(node.comparator, ast.In):
            return True
        if isinstance(node, ast.Call) and any(isinstance(a, ast.Call) for a in node.args):
            return True
        children = vars(node).values() if isinstance(node, ast._Node) else ()
        return any(
            gated(item)
            for child in children
            for item in (child if isinstance(child, list | tuple) else [child])
        )

    return gated(tree)


def with_schema_version(params: dict[str, Any], configured: str | None) -> dict[str, Any]:
    """`params` with ``$schemaversion``: the one given there, else the `configured` one, else
    ``2.1`` when the $filter needs it (`needs_schema_21`), else none."""
    if "$schemaversion" in params:
        return params
    if configured:
        return {**params, "$schemaversion": configured}
    if needs_schema_21(params.get("$filter")):
        return {**params, "$schemaversion": SCHEMA_21}
    return params
