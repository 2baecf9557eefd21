"""JSON `$batch` (bc-api.md §6): up to 100 operations, run in order through `dispatch`.

By default each operation commits on its own and the batch stops at the first failure;
``Prefer: odata.continue-on-error`` runs them all. ``Isolation: snapshot`` runs them in one
transaction that is rolled back if any fails; the response then lists the results up to the
failure, as in the default mode (what BC reports for the rolled-back ones is UNCONFIRMED).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from bcbridge.emulator.errors import BCError, new_correlation_id

if TYPE_CHECKING:
    from bcbridge.emulator.service import Call, DataService, Result

MAX_OPERATIONS = 100


class _RollBack(Exception):
    pass


def run_batch(service: DataService, call: Call) -> Result:
    from bcbridge.emulator.service import Result

    requests = (call.body or {}).get("requests") if isinstance(call.body, dict) else None
    if not isinstance(requests, list):
        raise BCError(
            400, "BadRequest", "Invalid Request Body: a JSON batch needs a 'requests' array."
        )
    if len(requests) > MAX_OPERATIONS:
        raise BCError(
            400,  # status UNCONFIRMED (bc-api.md §6)
            "Unknown",
            "The current batch message contains too many parts. A maximum number of '100' query "
            "operations and change sets are allowed in a batch message.",
        )
    prefer = call.headers.get("prefer", "").lower()
    continue_on_error = "odata.continue-on-error" in prefer
    snapshot = call.headers.get("isolation", "").lower() == "snapshot"
    responses: list[dict[str, Any]] = []
    if snapshot:
        try:
            with service.engine.begin() as conn:
                for request in requests:
                    response = _one(service, conn, call, request)
                    responses.append(response)
                    if response["status"] >= 400:
                        raise _RollBack
        except _RollBack:
            pass
    else:
        for request in requests:
            with service.engine.begin() as conn:
                response = _one(service, conn, call, request)
                if response["status"] >= 400:
                    conn.rollback()
            responses.append(response)
            if response["status"] >= 400 and not continue_on_error:
                break
    return Result(200, {"responses": responses})


def _shape(request: Any) -> tuple[str, str, dict[str, str]]:
    """An operation's method, URL and lower-cased headers, or BC's 400 when one is malformed."""
    if not isinstance(request, dict) or "method" not in request or "url" not in request:
        raise BCError(400, "BadRequest", "Each batch request needs 'method' and 'url'.")
    method, url, headers = request["method"], request["url"], request.get("headers") or {}
    if not isinstance(method, str) or not isinstance(url, str):
        raise BCError(400, "BadRequest", "A batch request's 'method' and 'url' must be strings.")
    if not isinstance(headers, dict) or not all(
        isinstance(value, str | int | float) for value in headers.values()
    ):
        raise BCError(
            400, "BadRequest", "A batch request's 'headers' must map names to string values."
        )
    return method.upper(), url, {str(k).lower(): str(v) for k, v in headers.items()}


def _one(service: DataService, conn: Any, outer: Call, request: Any) -> dict[str, Any]:
    from bcbridge.emulator.service import Call, error_result

    op_id = request.get("id") if isinstance(request, dict) else None
    correlation_id = new_correlation_id()
    try:
        method, url, headers = _shape(request)
        try:
            parts = urlsplit(url)
        except ValueError:
            raise BCError(400, "BadRequest_InvalidRequestUrl", f"'{url}' is not a URL.") from None
        path = parts.path
        if "/api/" in path and outer.route == "v2.0":  # absolute URL: keep what follows the route
            path = path.split("/api/", 1)[1].partition("/")[2]
        inner = Call(
            method=method,
            route=outer.route,
            path=path.lstrip("/"),
            query=dict(parse_qsl(parts.query)),
            headers=headers,
            body=request.get("body"),
            root_url=outer.root_url,
        )
        result = service.dispatch(conn, inner)
    except BCError as error:
        result = error_result(error, correlation_id)
    headers = {"content-type": result.media_type, "odata-version": "4.0", **result.headers}
    return {"id": op_id, "status": result.status, "headers": headers, "body": result.body}
