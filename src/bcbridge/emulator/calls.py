"""What every handler takes and gives: one OData `Call` in, one `Result` out.

A `Call` comes from HTTP (`DataService.handle`) or from inside a `$batch`; a `Result` becomes an
HTTP response (`to_response`) or one entry of a batch answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.responses import Response

from bcbridge.emulator.errors import BCError, error_body

JSON_TYPE = "application/json; odata.metadata=minimal"


@dataclass
class Call:
    """One OData operation, from HTTP or from inside a `$batch`."""

    method: str
    route: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]  # lower-case names
    body: Any
    root_url: str  # absolute URL of the route's root, no trailing slash
    raw: bytes = b""  # the body as sent: a stream's bytes (from HTTP only, not inside $batch)
    not_json: bool = False  # a body that is not JSON: only a stream upload may send one
    # $filter features refused without $schemaversion=2.1 (the emulator's schemaversion_gates)
    gated: frozenset[str] = frozenset({"in", "nested"})


@dataclass
class Result:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    media_type: str = JSON_TYPE


def to_response(result: Result) -> Response:
    if result.body is None:
        return Response(status_code=result.status, headers=result.headers)
    content = result.body if isinstance(result.body, bytes) else orjson.dumps(result.body)
    return Response(
        content, status_code=result.status, headers=result.headers, media_type=result.media_type
    )


def error_result(error: BCError, correlation_id: str) -> Result:
    return Result(
        error.status,
        error_body(error.code, error.message, correlation_id),
        {"request-id": correlation_id, **error.headers},
    )
