"""``subscriptions`` and ``webhookSupportedResources`` (bc-api.md §9.1, §9.2).

Unlike the record handlers these are async: creating or renewing a subscription calls the
subscriber (the validation handshake) before it answers, and that call must not hold the worker
thread that every other request needs. The state and the notifier are
`bcbridge.emulator.webhooks`.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from bcbridge import catalog
from bcbridge.catalog import WEBHOOK_ENTITIES
from bcbridge.emulator.calls import Call, Result
from bcbridge.emulator.errors import (
    bad_request,
    duplicate_subscription,
    not_emulated,
    record_not_found,
    required_field,
    subscription_not_supported,
    too_many_subscriptions,
)
from bcbridge.emulator.records import check_if_match
from bcbridge.emulator.routing import Kind, Target, resource_parts
from bcbridge.emulator.store import STANDARD_ROUTE
from bcbridge.emulator.validation import validate
from bcbridge.emulator.webhooks import (
    MAX_SUBSCRIPTIONS,
    Subscription,
    Webhooks,
    supported_resources,
)

# Looks up a company by the key written in a URL: its id, or BC's error.
CompanyLookup = Callable[[str], Awaitable[str]]
_RESOURCE_FILTER = re.compile(r"^\s*resource\s+eq\s+'(?P<pattern>[^']*)'\s*$")


async def handle(
    hooks: Webhooks,
    call: Call,
    target: Target,
    *,
    user_id: str,
    routes: Mapping[str, Mapping[str, Any]],
    company: CompanyLookup,
) -> Result:
    if target.kind is Kind.WEBHOOK_RESOURCES:
        assert target.company_key is not None, target
        return supported(call, await company(target.company_key), routes)
    if target.kind is Kind.LIST:
        mine = [s.as_json() for s in hooks.live() if s.route == call.route]
        return Result(200, {"@odata.context": _context(call), "value": mine})
    if target.kind is Kind.CREATE:
        return await create(hooks, call, user_id=user_id, routes=routes, company=company)
    assert target.key is not None, target
    subscription = hooks.find(target.key)
    if subscription is None or subscription.route != call.route:
        raise record_not_found("subscription", f"subscriptionId='{target.key}'")
    if target.kind is Kind.READ:
        return _one(call, subscription)
    if target.kind is Kind.UPDATE:
        return await renew(hooks, call, subscription, routes=routes, company=company)
    check_if_match(_etag_row(subscription), call.headers.get("if-match"), required=False)
    hooks.forget(subscription.subscription_id)
    return Result(204)


async def create(
    hooks: Webhooks,
    call: Call,
    *,
    user_id: str,
    routes: Mapping[str, Mapping[str, Any]],
    company: CompanyLookup,
) -> Result:
    """POST: check the body and the resource, shake hands with the URL, then create (201)."""
    values = validate(catalog.get("subscriptions"), call.body)
    for name in ("notificationUrl", "resource"):
        if not values.get(name):
            raise required_field(name)
    url = _notification_url(values["notificationUrl"])
    company_id, set_name = await _check_resource(call, values["resource"], routes, company)
    _check_room(hooks, url, values["resource"])
    await hooks.handshake(url)
    _check_room(hooks, url, values["resource"])  # another request may have won meanwhile
    subscription = hooks.add(
        route=call.route,
        notification_url=url,
        resource=values["resource"],
        company_id=company_id,
        set_name=set_name,
        client_state=values.get("clientState") or "",
        user_id=user_id,
    )
    location = f"{call.root_url}/subscriptions('{subscription.subscription_id}')"
    return Result(201, _one(call, subscription).body, {"Location": location})


async def renew(
    hooks: Webhooks,
    call: Call,
    subscription: Subscription,
    *,
    routes: Mapping[str, Mapping[str, Any]],
    company: CompanyLookup,
) -> Result:
    """PATCH with If-Match: the handshake again, then a new expiry (and any changed values)."""
    check_if_match(_etag_row(subscription), call.headers.get("if-match"), required=True)
    values = validate(catalog.get("subscriptions"), call.body)
    changes: dict[str, Any] = {}
    if values.get("notificationUrl"):
        changes["notification_url"] = _notification_url(values["notificationUrl"])
    if values.get("resource") and values["resource"] != subscription.resource:
        company_id, set_name = await _check_resource(call, values["resource"], routes, company)
        changes.update(resource=values["resource"], company_id=company_id, set_name=set_name)
    if "clientState" in values:
        changes["client_state"] = values["clientState"] or ""
    await hooks.handshake(changes.get("notification_url", subscription.notification_url))
    if hooks.find(subscription.subscription_id) is None:  # deleted during the handshake
        raise record_not_found("subscription", f"subscriptionId='{subscription.subscription_id}'")
    hooks.renew(subscription, changes)
    return _one(call, subscription)


def supported(call: Call, company_id: str, routes: Mapping[str, Mapping[str, Any]]) -> Result:
    """The runtime API's list, filtered as BC's docs do it: ``resource eq 'v2.0*'``."""
    names = supported_resources({route: list(sets) for route, sets in routes.items() if sets})
    wanted = call.query.get("$filter")
    if wanted is not None:
        match = _RESOURCE_FILTER.match(wanted)
        if match is None:
            raise not_emulated("Only $filter=resource eq '<text, * as a wildcard>' is emulated.")
        names = [n for n in names if fnmatch.fnmatchcase(n, match["pattern"])]
    context = f"{call.root_url}/$metadata#companies({company_id})/webhookSupportedResources"
    return Result(200, {"@odata.context": context, "value": [{"resource": n} for n in names]})


async def _check_resource(
    call: Call, resource: str, routes: Mapping[str, Mapping[str, Any]], company: CompanyLookup
) -> tuple[str, str]:
    """The company id and entity set a subscription's resource names, or BC's refusal."""
    try:
        route, company_key, set_name = resource_parts(resource)
    except ValueError as exc:
        raise subscription_not_supported(resource, str(exc)) from None
    if route != call.route:  # bc-api.md §9.1: the resource must use the endpoint's route
        raise subscription_not_supported(
            resource, f"subscriptions at api/{call.route} watch resources of api/{call.route}"
        )
    served = routes.get(route, {})
    if set_name not in served or (route == STANDARD_ROUTE and set_name not in WEBHOOK_ENTITIES):
        raise subscription_not_supported(
            resource, f"'{set_name}' does not support webhooks (see webhookSupportedResources)"
        )
    return await company(company_key), set_name


def _check_room(hooks: Webhooks, url: str, resource: str) -> None:
    """Refuse a second subscription for the same URL and resource, or a 201st."""
    live = hooks.live()
    if any(s.notification_url == url and s.resource == resource for s in live):
        raise duplicate_subscription()
    if len(live) >= MAX_SUBSCRIPTIONS:
        raise too_many_subscriptions(MAX_SUBSCRIPTIONS)


def _notification_url(text: str) -> str:
    # BC online presumably insists on https (UNCONFIRMED); the emulator takes http too, so
    # tests can run a plain local receiver.
    if not re.match(r"^https?://[^/\s]+", text):
        raise bad_request(f"The notificationUrl '{text}' is not an absolute http(s) URL.")
    return text


def _etag_row(subscription: Subscription) -> dict[str, int]:
    """What `check_if_match` compares: the same sequence/version pair the ETag is made of."""
    return {"_seq": subscription.seq, "_version": subscription.version}


def _context(call: Call) -> str:
    return f"{call.root_url}/$metadata#subscriptions"


def _one(call: Call, subscription: Subscription) -> Result:
    return Result(200, {"@odata.context": f"{_context(call)}/$entity", **subscription.as_json()})
