"""From a method and a path below an API route to a `Target`: the operation and where it applies.

Routing reads only the URL and the served entity sets; it touches no data. It refuses what is
wrong in the URL itself (unknown segments, bad keys, verbs a segment does not take, options the
emulator does not support). Companies and parent records are looked up afterwards, by
`bcbridge.emulator.handlers.places`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from bcbridge import catalog
from bcbridge.catalog import EntitySet, Scope
from bcbridge.emulator.errors import (
    BCError,
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
# A custom API's version is v<something> or "beta" (Microsoft's runtime API is .../beta).
_ROUTE = re.compile(r"^(?P<route>v2\.0|[\w-]+/[\w-]+/(?:v[\w.]+|beta))(?:/(?P<path>.*))?$")
_ACTION_PREFIX = "Microsoft.NAV."
# Microsoft's runtime API, which serves companies({id})/webhookSupportedResources (§9.2).
RUNTIME_ROUTE = "microsoft/runtime/beta"
# The `_company` of records BC serves at the API root, outside every company
# (entityDefinitions, apicategoryroutes, externaleventsubscriptions, ...).
ROOT_COMPANY = ""


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
    STREAM = "stream"  # a record's Edm.Stream property: GET, PATCH or DELETE its bytes
    WEBHOOK_RESOURCES = "webhook supported resources"


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
    # the field on the "one" side a navigation matches (catalog.Navigation.key): RELATED, the
    # record's field `via` names; a collection, the parent's field its records hold
    match: str = "id"
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
    stream = _stream(method, path, options, sets)
    if stream is not None:
        return stream
    segments = [_segment(part) for part in split_top_level(path, "/")]
    name, key = segments[0]
    if name == "subscriptions":  # outside a $batch, `webhook_target` routes them first
        raise not_emulated("Webhook subscriptions are not emulated inside a $batch.")
    root_set = sets.get(name)
    if root_set is not None and root_set.scope is Scope.ROOT and name != "companies":
        return _at_root(method, root_set, segments)
    company_key = None
    if name == "companies":
        if key is None and len(segments) > 1:
            raise invalid_url("A company key is required here.")
        if len(segments) == 1:
            return _companies(method, key)
        company_key, segments = key, segments[1:]
    return _below_company(method, segments, sets, company_key)


def _stream(
    method: str, path: str, options: Mapping[str, str], sets: Mapping[str, EntitySet]
) -> Target | None:
    """``<record>/<stream property>[/$value]``: the record's bytes; None for any other path."""
    head, _, last = path.rpartition("/")
    if last == "$value":
        head, _, last = head.rpartition("/")
    try:
        record = resolve("GET", head, options, sets) if head else None
    except BCError:
        return None  # not a record: the path answers its own error
    if record is None or record.kind not in (Kind.READ, Kind.RELATED):
        return None
    if record.entity_set is None or last not in record.entity_set.streams:
        return None
    if method not in ("GET", "PATCH", "DELETE"):
        raise method_not_allowed(f"'{method}' is not allowed on '{last}'.")
    return Target(
        Kind.STREAM, record.entity_set, record.key, record.company_key, record.parent, record.via
    )


def webhook_target(route: str, method: str, path: str) -> Target | None:
    """``subscriptions[('<id>')]`` at a route's root, or the runtime API's
    ``companies({id})/webhookSupportedResources``: served by `bcbridge.emulator.webhooks`, not by
    the record handlers. None for any other path."""
    path = path.strip("/")
    if not path:
        return None
    segments = [_segment(part) for part in split_top_level(path, "/")]
    name, key = segments[0]
    if route == RUNTIME_ROUTE:
        supported = segments[1:] == [("webhookSupportedResources", None)]
        if not (supported and name == "companies" and key is not None):
            return None
        if method != "GET":
            raise method_not_allowed("'webhookSupportedResources' is read-only.")
        return Target(Kind.WEBHOOK_RESOURCES, company_key=key)
    if name != "subscriptions":
        return None
    if len(segments) > 1:
        raise invalid_url("Nothing can follow a subscription.")
    subscriptions = catalog.get("subscriptions")
    if key is None:
        return _on_set(method, subscriptions, None)
    if not key.startswith("'"):  # bc-api.md §1.4: the subscription key must be quoted
        raise query_syntax(f"Bad Request - Error in query syntax: '{key}' must be quoted.")
    return _on_record(method, subscriptions, None, key)


def resource_parts(resource: str) -> tuple[str, str, str]:
    """A subscription's resource, relative (``/api/v2.0/companies(<id>)/customers``) or
    absolute (``https://.../api/v2.0/...``), as (route, company key, entity set); ValueError
    with the reason when it does not name a company's entity set."""
    text = resource.strip()
    if "://" in text:
        text = text.split("/api/", 1)[1] if "/api/" in text else ""
    else:
        text = text.lstrip("/").removeprefix("api/")
    if "?" in text:
        raise ValueError("a resource takes no query options")
    match = _ROUTE.match(text)
    if not match or not match["path"]:
        raise ValueError("expected api/<route>/companies(<id>)/<entity set>")
    try:
        segments = [_segment(part) for part in split_top_level(match["path"].strip("/"), "/")]
    except BCError:
        raise ValueError("expected api/<route>/companies(<id>)/<entity set>") from None
    if len(segments) != 2 or segments[0][0] != "companies" or segments[0][1] is None:
        raise ValueError("expected api/<route>/companies(<id>)/<entity set>")
    if segments[1][1] is not None:
        raise ValueError("subscriptions are for a whole entity set, not one record")
    return match["route"], segments[0][1], segments[1][0]


def _at_root(method: str, entity_set: EntitySet, segments: list[tuple[str, str | None]]) -> Target:
    """``entityDefinitions``, ``externaleventsubscriptions({id})``: a set BC serves outside
    companies. BC's $metadata gives these sets no navigation properties."""
    if len(segments) > 1:
        raise segment_not_found(segments[1][0])
    key = segments[0][1]
    if key is None:
        return _on_set(method, entity_set, None)
    return _on_record(method, entity_set, None, key)


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
            found = _on_set(method, target, company_key, parent)
        else:
            found = _on_record(method, target, company_key, next_key, parent)
        return dataclasses.replace(found, match=navigation.key)
    if method == "DELETE" and target.allows("DELETE"):  # items({id})/picture
        return Target(
            Kind.DELETE,
            target,
            company_key=company_key,
            parent=parent,
            via=navigation.via,
            match=navigation.key,
        )
    if method != "GET":
        raise method_not_allowed(f"'{method}' is not allowed on '{next_name}'.")
    return Target(
        Kind.RELATED,
        target,
        company_key=company_key,
        parent=parent,
        via=navigation.via,
        match=navigation.key,
    )


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
