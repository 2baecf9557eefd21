"""JSON `$batch` (bc-api.md §6): up to 100 operations, run in order through the service's dispatch.

By default each operation commits on its own and the batch stops at the first failure;
``Prefer: odata.continue-on-error`` runs them all. ``Isolation: snapshot`` runs them in one
transaction that is rolled back if any fails; the response then lists the results up to the
failure, as in the default mode (what BC reports for the rolled-back ones is UNCONFIRMED).

The dispatch is handed in, so that this module does not import the service that imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import sqlalchemy as sa

from bcbridge.emulator.calls import Call, Result, error_result
from bcbridge.emulator.errors import (
    BCError,
    bad_request,
    batch_too_large,
    invalid_url,
    new_correlation_id,
)

MAX_OPERATIONS = 100

Dispatch = Callable[[sa.Connection, Call], Result]


class _RollBack(Exception):
    pass


def run_batch(engine: sa.Engine, dispatch: Dispatch, call: Call) -> Result:
    requests = (call.body or {}).get("requests") if isinstance(call.body, dict) else None
    if not isinstance(requests, list):
        raise bad_request("Invalid Request Body: a JSON batch needs a 'requests' array.")
    if len(requests) > MAX_OPERATIONS:
        raise batch_too_large(MAX_OPERATIONS)
    prefer = call.headers.get("prefer", "").lower()
    snapshot = call.headers.get("isolation", "").lower() == "snapshot"
    if snapshot:
        responses = _in_one_transaction(engine, dispatch, call, requests)
    else:
        continue_on_error = "odata.continue-on-error" in prefer
        responses = _one_by_one(engine, dispatch, call, requests, continue_on_error)
    return Result(200, {"responses": responses})


def _in_one_transaction(
    engine: sa.Engine, dispatch: Dispatch, call: Call, requests: list[Any]
) -> list[dict[str, Any]]:
    responses: list[dict[str, Any]] = []
    try:
        with engine.begin() as conn:
            for request in requests:
                response = _one(dispatch, conn, call, request)
                responses.append(response)
                if response["status"] >= 400:
                    raise _RollBack
    except _RollBack:
        pass
    return responses


def _one_by_one(
    engine: sa.Engine,
    dispatch: Dispatch,
    call: Call,
    requests: list[Any],
    continue_on_error: bool,
) -> list[dict[str, Any]]:
    responses: list[dict[str, Any]] = []
    # one connection for the batch, one transaction per operation (checking a connection out
    # of the pool for each operation cost as much as a lookup)
    with engine.connect() as conn:
        for request in requests:
            with conn.begin() as transaction:
                response = _one(dispatch, conn, call, request)
                if response["status"] >= 400:
                    transaction.rollback()
            responses.append(response)
            if response["status"] >= 400 and not continue_on_error:
                break
    return responses


def _shape(request: Any) -> tuple[str, str, dict[str, str]]:
    """An operation's method, URL and lower-cased headers, or BC's 400 when one is malformed."""
    if not isinstance(request, dict) or "method" not in request or "url" not in request:
        raise bad_request("Each batch request needs 'method' and 'url'.")
    method, url, headers = request["method"], request["url"], request.get("headers") or {}
    if not isinstance(method, str) or not isinstance(url, str):
        raise bad_request("A batch request's 'method' and 'url' must be strings.")
    if not isinstance(headers, dict) or not all(
        isinstance(value, str | int | float) for value in headers.values()
    ):
        raise bad_request("A batch request's 'headers' must map names to string values.")
    return method.upper(), url, {str(k).lower(): str(v) for k, v in headers.items()}


def _inner_call(outer: Call, request: Any) -> Call:
    method, url, headers = _shape(request)
    try:
        parts = urlsplit(url)
    except ValueError:
        raise invalid_url(f"'{url}' is not a URL.") from None
    path = parts.path
    if "/api/" in path and outer.route == "v2.0":  # absolute URL: keep what follows the route
        path = path.split("/api/", 1)[1].partition("/")[2]
    return Call(
        method=method,
        route=outer.route,
        path=path.lstrip("/"),
        query=dict(parse_qsl(parts.query)),
        headers=headers,
        body=request.get("body"),
        root_url=outer.root_url,
        gated=outer.gated,
    )


def _one(dispatch: Dispatch, conn: sa.Connection, outer: Call, request: Any) -> dict[str, Any]:
    op_id = request.get("id") if isinstance(request, dict) else None
    correlation_id = new_correlation_id()
    try:
        result = dispatch(conn, _inner_call(outer, request))
    except BCError as error:
        result = error_result(error, correlation_id)
    headers = {"content-type": result.media_type, "odata-version": "4.0", **result.headers}
    return {"id": op_id, "status": result.status, "headers": headers, "body": result.body}
