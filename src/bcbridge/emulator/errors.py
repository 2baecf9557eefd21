"""The emulator's one error factory: every error body has BC's shape.

``{"error": {"code": "...", "message": "...  CorrelationId:  <guid>."}}`` with a ``request-id``
header carrying the same GUID (bc-api.md §7). Handlers raise `BCError`; the app turns it into a
response with `error_response`. Nothing else in the emulator builds error JSON by hand.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping

import orjson
from starlette.responses import Response

__all__ = [
    "BCError",
    "control_error",
    "error_body",
    "error_response",
    "from_exception",
    "new_correlation_id",
]


class BCError(Exception):
    """Raised by emulator code to answer with BC's error JSON."""

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


def new_correlation_id() -> str:
    return str(uuid.uuid4())


def error_body(code: str, message: str, correlation_id: str) -> dict[str, object]:
    """BC appends the correlation id to the message text, two spaces on each side of the label."""
    text = message.rstrip()
    return {"error": {"code": code, "message": f"{text}  CorrelationId:  {correlation_id}."}}


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    headers: Mapping[str, str] | None = None,
    correlation_id: str | None = None,
) -> Response:
    correlation_id = correlation_id or new_correlation_id()
    all_headers = {"request-id": correlation_id, **(headers or {})}
    return Response(
        orjson.dumps(error_body(code, message, correlation_id)),
        status_code=status,
        media_type="application/json; odata.metadata=minimal",
        headers=all_headers,
    )


def from_exception(exc: BCError, correlation_id: str | None = None) -> Response:
    return error_response(
        exc.status, exc.code, exc.message, headers=exc.headers, correlation_id=correlation_id
    )


def control_error(message: str, status: int = 400) -> Response:
    """The control endpoints' error (not BC's: no correlation id): ``<field>: <expected>``."""
    return Response(
        orjson.dumps({"error": {"code": "BadRequest", "message": message}}),
        status_code=status,
        media_type="application/json",
    )
