"""BC's errors, one function per error: each fixes its HTTP status and code (bc-api.md §7).

Every error body has BC's shape, ``{"error": {"code": "...", "message": "...  CorrelationId:
<guid>."}}``, with a ``request-id`` header carrying the same GUID. Emulator code raises what these
functions return; the app turns a `BCError` into a response with `from_exception`. Nothing else in
the emulator chooses a status or a code, or builds error JSON by hand.

Where bc-api.md §7 gives a code two possible statuses, one is chosen here and the reason is
written beside it. Anything the emulator does not support answers `not_emulated` (501), whatever
BC would do, so that a gap never passes for a BC behaviour.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping

import orjson
from starlette.responses import Response

from bcbridge.catalog import Refusal

__all__ = [
    "BCError",
    "action_not_supported",
    "bad_request",
    "batch_too_large",
    "company_not_found",
    "control_error",
    "dialog",
    "duplicate_key",
    "duplicate_subscription",
    "entity_changed",
    "environment_not_found",
    "error_body",
    "error_response",
    "from_exception",
    "handshake_failed",
    "injected_fault",
    "invalid_credentials",
    "invalid_url",
    "method_not_allowed",
    "missing_if_match",
    "new_correlation_id",
    "no_api",
    "not_emulated",
    "query_syntax",
    "queue_timeout",
    "record_not_found",
    "refused",
    "required_field",
    "segment_not_found",
    "server_failed",
    "subscription_not_supported",
    "too_many_requests",
    "too_many_subscriptions",
]


class BCError(Exception):
    """Raised by emulator code to answer with BC's error JSON; made by the functions below."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
    ):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


# --- BadRequest_* (the request itself is wrong) -------------------------------------------------


def bad_request(message: str) -> BCError:
    """400 ``BadRequest``: "Invalid Request Body", a value of the wrong type, a bad query option."""
    return BCError(400, "BadRequest", message)


def query_syntax(message: str) -> BCError:
    """400 ``BadRequest_NotFound``: "Bad Request - Error in query syntax", a bad key.

    bc-api.md §7 gives 400 or 404 (a live batch fixture shows 404); we keep 400, what the
    emulator always answered, as BC documents this code as a malformed request.
    """
    return BCError(400, "BadRequest_NotFound", message)


def invalid_url(message: str) -> BCError:
    """400 ``BadRequest_InvalidRequestUrl`` (bc-api.md §7: bad URL construction, 400).

    A URL that is not an API URL at all used to answer 404 with this code; 400 is §7's status.
    """
    return BCError(400, "BadRequest_InvalidRequestUrl", message)


def segment_not_found(segment: str) -> BCError:
    """404 ``BadRequest_ResourceNotFound`` for an unknown entity set or navigation (§7)."""
    return BCError(
        404, "BadRequest_ResourceNotFound", f"Resource not found for the segment '{segment}'."
    )


def no_api(api_path: str) -> BCError:
    """404 ``BadRequest_ResourceNotFound``: no API route is served at this path."""
    return BCError(404, "BadRequest_ResourceNotFound", f"No API is served at 'api/{api_path}'.")


def environment_not_found(environment: str) -> BCError:
    """404 ``BadRequest_ResourceNotFound``: the URL names an environment this BC does not have."""
    return BCError(
        404, "BadRequest_ResourceNotFound", f"The environment '{environment}' does not exist."
    )


def method_not_allowed(message: str) -> BCError:
    """405 ``BadRequest_MethodNotAllowed``: a verb the entity set or segment refuses (§7)."""
    return BCError(405, "BadRequest_MethodNotAllowed", message)


def required_field(name: str) -> BCError:
    """400 ``BadRequest_RequiredParamNotProvided`` (bc-api.md §7)."""
    return BCError(
        400, "BadRequest_RequiredParamNotProvided", f"Field '{name}' must not be blank or empty."
    )


def missing_if_match() -> BCError:
    """400 ``BadRequest_InvalidToken``: a PATCH without If-Match (bc-api.md §5.2, §7)."""
    return BCError(
        400,
        "BadRequest_InvalidToken",
        "Could not validate the client concurrency token required by the service. "
        "Please provide a valid token in the client request.",
    )


def action_not_supported(action: str, set_name: str) -> BCError:
    """501 ``BadRequest_MethodNotImplemented``: a bound action the entity set does not have.

    bc-api.md §7 lists this code for "unsupported bound action" with status 501 (UNCONFIRMED);
    the emulator used to answer 400 here and 501 everywhere else, now 501 throughout.
    """
    return BCError(
        501,
        "BadRequest_MethodNotImplemented",
        f"The action '{action}' is not supported by '{set_name}'.",
    )


def not_emulated(what: str) -> BCError:
    """501 ``BadRequest_MethodNotImplemented`` for whatever the emulator does not support.

    `what` says what is missing (and, where it helps, why). The status is bc-api.md §7's
    "501?" for this code (UNCONFIRMED); a client sees one distinct answer for every gap.
    """
    return BCError(501, "BadRequest_MethodNotImplemented", what)


# --- Request_* / Internal_* (the data) ----------------------------------------------------------


def entity_changed() -> BCError:
    """409 ``Request_EntityChanged``: the If-Match ETag is stale (bc-api.md §4.4, §7)."""
    return BCError(409, "Request_EntityChanged", "Another user has already changed the record.")


def record_not_found(entity: str, what: str) -> BCError:
    """404 ``Internal_RecordNotFound``; `what` is ``field='value'``.

    bc-api.md §7: 404 (UNCONFIRMED), "also used when a referenced record is missing", so a
    missing customer or item named in a write is 404 too (it used to be 400 there).
    """
    return BCError(
        404,
        "Internal_RecordNotFound",
        f"The {entity} does not exist. Identification fields and values: {what}",
    )


def duplicate_key(entity: str, field: str, value: object) -> BCError:
    """409 ``Internal_EntityWithSameKeyExists`` (bc-api.md §7, from a third-party source)."""
    return BCError(
        409,
        "Internal_EntityWithSameKeyExists",
        f"The record in table {entity} already exists. Identification "
        f"fields and values: {field}='{value}'",
    )


def company_not_found(message: str) -> BCError:
    """400 ``Internal_CompanyNotFound``: no company given, or none by that id or name.

    bc-api.md §7 says 400 or 404 (UNCONFIRMED) and names the cause "default company cannot be
    found", i.e. a request that names no usable company: a request error, so 400. It also keeps
    a wrong company from reading as "record not there" to a client (a 404 on DELETE is taken as
    already deleted). The emulator used to answer 404 when a named company did not exist.
    """
    return BCError(400, "Internal_CompanyNotFound", message)


def server_failed() -> BCError:
    """500 ``Internal_ServerError``: the emulator itself failed (a bug; it is logged)."""
    return BCError(500, "Internal_ServerError", "The emulator failed unexpectedly.")


# --- Application_* (AL business logic) ----------------------------------------------------------


def refused(refusal: Refusal) -> BCError:
    """BC's answer to a property it will not take in a write (`bcbridge.catalog.refusal`:
    unknown or read-only property, wrong type, not a GUID, too long, not an enum option)."""
    return BCError(refusal.status, refusal.code, refusal.message)


def dialog(message: str) -> BCError:
    """400 ``Application_DialogException``: an AL ``Error()`` or validation dialog (§7)."""
    return BCError(400, "Application_DialogException", message)


# --- webhook subscriptions (bc-api.md §9.1) -----------------------------------------------------
# BC documents that these requests fail, not how: the statuses, codes and texts are UNCONFIRMED.
# All are 400 ``BadRequest``, the answer to a request BC will not carry out as asked.


def subscription_not_supported(resource: str, why: str) -> BCError:
    """400: `resource` is not something BC sends notifications for (not a supported entity
    set of this API route, a single record, another route, an unknown company)."""
    return BCError(400, "BadRequest", f"The resource '{resource}' cannot be subscribed to: {why}.")


def handshake_failed(url: str, why: str) -> BCError:
    """400: the notification URL did not answer the validation request with 200 and the token."""
    return BCError(
        400,
        "BadRequest",
        f"The subscription could not be validated: the notification URL '{url}' {why}. It must "
        "answer 200 with the validationToken query parameter as its plain-text body.",
    )


def duplicate_subscription() -> BCError:
    """400: a subscription for the same notification URL and resource exists (bc-api.md §9.1)."""
    return BCError(
        400,
        "BadRequest",
        "A subscription for this notificationUrl and resource already exists.",
    )


def too_many_subscriptions(limit: int) -> BCError:
    """400: the environment has `limit` subscriptions already (bc-api.md §8: 200)."""
    return BCError(
        400, "BadRequest", f"The maximum number of subscriptions ({limit}) has been reached."
    )


# --- limits, identity, faults -------------------------------------------------------------------


def too_many_requests(message: str, retry_after: float) -> BCError:
    """429 ``Application_TooManyRequests`` with Retry-After in whole seconds, at least 1 (§8)."""
    return BCError(
        429,
        "Application_TooManyRequests",
        message,
        headers={"Retry-After": str(max(1, math.ceil(retry_after)))},
    )


def queue_timeout() -> BCError:
    """503: a request queued longer than the queue timeout (bc-api.md §8: "times out with 503").

    The code is the one an injected 503 carries (UNCONFIRMED for BC); it used to be
    ``Internal_ServerError``, which is the 500 of an emulator failure.
    """
    return BCError(503, _FAULT_CODES[503], "The request waited too long in the queue.")


def invalid_credentials() -> BCError:
    """401 ``Authentication_InvalidCredentials`` (bc-api.md §2.4, §7)."""
    return BCError(
        401,
        "Authentication_InvalidCredentials",
        "The server has rejected the client credentials.",
        headers={"WWW-Authenticate": 'Bearer realm="bcbridge-emulator"'},
    )


def batch_too_large(limit: int) -> BCError:
    """BC's answer to a `$batch` of more than `limit` operations (bc-api.md §6).

    The status is UNCONFIRMED; the code is BC's documented example code ``Unknown``."""
    return BCError(
        400,
        "Unknown",
        f"The current batch message contains too many parts. A maximum number of '{limit}' "
        "query operations and change sets are allowed in a batch message.",
    )


# Codes for faults a test injects by status; 502/503/504/408 are the gateway's, not BC's.
_FAULT_CODES = {
    500: "Internal_ServerError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
    408: "RequestTimeout",
    429: "Application_TooManyRequests",
}


def injected_fault(status: int, retry_after: float | None) -> BCError:
    """The error a test asked for with ``POST /_emulator/faults``: its status, BC's body."""
    headers = {} if retry_after is None else {"Retry-After": str(max(0, round(retry_after)))}
    return BCError(
        status,
        _FAULT_CODES.get(status, "Internal_ServerError"),
        f"Injected fault: HTTP {status}.",
        headers=headers,
    )


# --- responses ----------------------------------------------------------------------------------


def new_correlation_id() -> str:
    return str(uuid.uuid4())


def error_body(code: str, message: str, correlation_id: str) -> dict[str, object]:
    """BC appends the correlation id to the message text, two spaces on each side of the label."""
    text = message.rstrip()
    return {"error": {"code": code, "message": f"{text}  CorrelationId:  {correlation_id}."}}


def error_response(error: BCError, correlation_id: str | None = None) -> Response:
    correlation_id = correlation_id or new_correlation_id()
    return Response(
        orjson.dumps(error_body(error.code, error.message, correlation_id)),
        status_code=error.status,
        media_type="application/json; odata.metadata=minimal",
        headers={"request-id": correlation_id, **error.headers},
    )


def from_exception(exc: BCError, correlation_id: str | None = None) -> Response:
    return error_response(exc, correlation_id)


def control_error(message: str, status: int = 400) -> Response:
    """The control endpoints' error (not BC's: no correlation id): ``<field>: <expected>``."""
    return Response(
        orjson.dumps({"error": {"code": "BadRequest", "message": message}}),
        status_code=status,
        media_type="application/json",
    )
