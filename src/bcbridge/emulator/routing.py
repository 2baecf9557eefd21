"""From a method and a path below an API route to a `Target`: the operation and where it applies.

Routing reads only the URL and the served entity sets; it touches no data. It refuses what is
wrong in the URL itself (unknown segments, bad keys, verbs a segment does not take, options the
emulator does not support). Companies and parent records are looked up afterwards, by
`bcbridge.emulator.handlers.places`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from bcbridge.catalog import EntitySet, Scope
from bcbridge.emulator.errors import (
    action_not_supported,
    invalid_url,
    method_not_allowed,
    no_api,
    not_emulated,
    query_syntax,
    segment_not_found,
)
from bcbridge.emulator.query import UNSUPPORTED_OPTIONS, split_top_level
from bcbridge.odata import is_guid, parse_key

_SEGMENT = re.compile(r"^(?P<name>[A-Za-z_$][\w.$]*)(?:\((?P<key>.*)\))?$")
_ROUTE = re.compile(r"^(?P<route>v2\.0|[\w-]+/[\w-]+/v[\w.]+)(?:/(?P<path>.*))?$")
_ACTION_PREFIX = "Microsoft.NAV."


class Kind(StrEnum):
    SERVICE_DOCUMENT = "service document"
    METADATA = "metadata"
    COMPANIES = "companies"
    LIST = "list"
    CREATE = "create"
    READ = "read"
    UPDATE = "update"
    DELETE = "delete"
    RELATED = "related"  # a single-valued navigation, e.g. salesOrders({id})/customer
    ACTION = "action"


@dataclass(frozen=True)
class Parent:
    """The record a navigation starts from: its entity set and its key as written in the URL."""

    entity_set: EntitySet
    key: str


@dataclass(frozen=True)
class Target:
    kind: Kind
    entity_set: EntitySet | None = None
    key: str | None = None  # the record's (or, for COMPANIES, the company's) key
    company_key: str | None = None  # from companies({key})/...; None: ?company= or the header
    parent: Parent | None = None
    via: str | None = None  # RELATED: the parent's field that holds the record's id
    action: str | None = None


def split_route(api_path: str, served: Mapping[str, object]) -> tuple[str, str]:
    """``v2.0/companies(..)/customers`` -> (``v2.0``, ``companies(..)/customers``)."""
    match = _ROUTE.match(api_path)
    if not match or match["route"] not in served:
        raise no_api(api_path)
    return match["route"], match["path"] or ""


def resolve(
    method: str, path: str, options: Mapping[str, str], sets: Mapping[str, EntitySet]
) -> Target:
    """The operation a request asks for and where, or BC's error for a URL that is wrong."""
    for option in UNSUPPORTED_OPTIONS:
        if option in options:
            raise not_emulated(f"{option} is not supported.")
    path = path.strip("/")
    if path == "":
        return Target(Kind.SERVICE_DOCUMENT)
    if path == "$metadata":
        return Target(Kind.METADATA)
    segments = [_segment(part) for part in split_top_level(path, "/")]
    name, key = segments[0]
    if name == "subscriptions":
        raise not_emulated(
            "Webhook subscriptions are not emulated (they need a reachable notificationUrl)."
        )
    company_key = None
    if name == "companies":
        if key is None and len(segments) > 1:
            raise invalid_url("A company key is required here.")
        if len(segments) == 1:
            return _companies(method, key)
        company_key, segments = key, segments[1:]
    return _below_company(method, segments, sets, company_key)


def _below_company(
    method: str,
    segments: list[tuple[str, str | None]],
    sets: Mapping[str, EntitySet],
    company_key: str | None,
) -> Target:
    set_name, set_key = segments[0]
    entity_set = sets.get(set_name)
    if entity_set is None or entity_set.scope is Scope.ROOT:
        raise segment_not_found(set_name)
    if len(segments) == 1:
        if set_key is None:
            return _on_set(method, entity_set, company_key)
        return _on_record(method, entity_set, company_key, set_key)
    next_name, next_key = segments[1]
    if set_key is None:
        raise invalid_url(f"'{set_name}' needs a key before '{next_name}'.")
    if next_name.startswith(_ACTION_PREFIX):
        if len(segments) > 2 or next_key is not None:
            raise invalid_url("Nothing can follow a bound action.")
        return _action(method, entity_set, company_key, set_key, next_name)
    return _navigation(method, Parent(entity_set, set_key), segments[1:], sets, company_key)


def _navigation(
    method: str,
    parent: Parent,
    segments: list[tuple[str, str | None]],
    sets: Mapping[str, EntitySet],
    company_key: str | None,
) -> Target:
    """``{set}({key})/{navigation}[({key})]``: a document's lines, or the record it links to."""
    next_name, next_key = segments[0]
    navigation = parent.entity_set.navigation(next_name)
    if navigation is None:
        raise segment_not_found(next_name)
    target = sets.get(navigation.target)
    if target is None or len(segments) > 1:  # e.g. salesOrders(..)/salesOrderLines(..)/item
        raise not_emulated("This navigation path is not emulated.")
    if navigation.many:
        if next_key is None:
            return _on_set(method, target, company_key, parent)
        return _on_record(method, target, company_key, next_key, parent)
    if method != "GET":
        raise method_not_allowed(f"'{method}' is not allowed on '{next_name}'.")
    return Target(Kind.RELATED, target, company_key=company_key, parent=parent, via=navigation.via)


def _companies(method: str, key: str | None) -> Target:
    if method != "GET":
        raise method_not_allowed("'companies' is read-only.")
    return Target(Kind.COMPANIES, key=key)


def _on_set(
    method: str, entity_set: EntitySet, company_key: str | None, parent: Parent | None = None
) -> Target:
    kinds = {"GET": Kind.LIST, "POST": Kind.CREATE}
    if method not in kinds:
        raise method_not_allowed(
            f"'{method}' requests for '{entity_set.name}' collections are not allowed."
        )
    return Target(kinds[method], entity_set, company_key=company_key, parent=parent)


def _on_record(
    method: str,
    entity_set: EntitySet,
    company_key: str | None,
    key: str,
    parent: Parent | None = None,
) -> Target:
    record_id = record_key(entity_set, key)
    kinds = {"GET": Kind.READ, "PATCH": Kind.UPDATE, "DELETE": Kind.DELETE}
    if method not in kinds:
        raise method_not_allowed(f"'{method}' requests for '{entity_set.name}' are not allowed.")
    return Target(kinds[method], entity_set, record_id, company_key, parent)


def _action(
    method: str, entity_set: EntitySet, company_key: str | None, key: str, segment: str
) -> Target:
    if method != "POST":
        raise method_not_allowed("Bound actions are called with POST.")
    action = segment.removeprefix(_ACTION_PREFIX)
    if action not in entity_set.actions:
        raise action_not_supported(action, entity_set.name)
    return Target(Kind.ACTION, entity_set, key, company_key, action=action)


def record_key(entity_set: EntitySet, key: str) -> str:
    """A record's key as stored: unquoted, and a GUID unless the set is keyed by text."""
    record_id = parse_key(key)
    if not entity_set.key_is_string and not is_guid(record_id):
        raise query_syntax(
            f"Bad Request - Error in query syntax: '{record_id}' is not a valid key."
        )
    return record_id


def _segment(text: str) -> tuple[str, str | None]:
    match = _SEGMENT.match(text)
    if not match:
        raise query_syntax(f"Bad Request - Error in query syntax: '{text}'.")
    key = match["key"]
    if key is not None and ("," in key and not key.startswith("'")):
        raise query_syntax(f"'|' or ',' expected at position 3 in '({key})'.")
    return match["name"], key
