"""The bodies of the control endpoints (``/_emulator/*``), checked before anything changes.

Each body is a pydantic model that refuses unknown keys and wrong types (strict: ``"5"`` is not
a count). A body that fails answers 400 with
``{"error": {"code": "BadRequest", "message": "<field>: <what was expected>"}}``, and leaves the
emulator as it was. The bounds are the ones `EmulatorConfig` uses, so the CLI flags, the
``start_emulator`` options and the control endpoint refuse the same values.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.requests import Request

from bcbridge.catalog import _fields
from bcbridge.emulator.config import (
    CollectionThreshold,
    HandshakeMethod,
    LatencyMs,
    MaxConcurrent,
    MaxQueue,
    QueueTimeout,
    RowTimeUs,
    ScaleCount,
    SchemaGate,
    SubscriptionLifetime,
    TokenLifetime,
    WebhookDelay,
    WebhookTimeScale,
    check_rate,
    check_scale,
    describe,
)

__all__ = [
    "ConfigUpdate",
    "ControlBody",
    "ControlError",
    "EntitySpec",
    "PostPaymentsRequest",
    "ResetRequest",
    "SeedRequest",
    "read_body",
]

Body = TypeVar("Body", bound=BaseModel)
_SEGMENT = r"^[A-Za-z0-9_-]{1,64}$"
_IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]{0,99}$"


class ControlError(Exception):
    """A control body that cannot be used; the message is ``<field>: <what was expected>``."""


class ControlBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ResetRequest(ControlBody):
    """``POST /_emulator/reset``: no options (an empty body or ``{}``)."""


class SeedRequest(ControlBody):
    """``POST /_emulator/seed``: a new seed and/or row counts, then data from scratch."""

    seed: int | None = None
    scale: dict[str, ScaleCount] | None = None

    @field_validator("scale")
    @classmethod
    def _known_sets(cls, value: dict[str, int] | None) -> dict[str, int] | None:
        return None if value is None else check_scale(value)


class ConfigUpdate(ControlBody):
    """``POST /_emulator/config``: the limits to change; omitted ones stay as they are."""

    token_lifetime: TokenLifetime | None = None
    latency_ms: LatencyMs | None = None
    row_time_us: RowTimeUs | None = None
    rate_limit: str | None = None
    max_concurrent: MaxConcurrent | None = None
    max_queue: MaxQueue | None = None
    queue_timeout_s: QueueTimeout | None = None
    webhook_delay_s: WebhookDelay | None = None
    webhook_collection_threshold: CollectionThreshold | None = None
    webhook_time_scale: WebhookTimeScale | None = None
    subscription_lifetime_s: SubscriptionLifetime | None = None
    webhook_handshake_method: HandshakeMethod | None = None
    schemaversion_gates: list[SchemaGate] | None = None

    @field_validator("rate_limit")
    @classmethod
    def _usable_rate(cls, value: str | None) -> str | None:
        if value is not None:
            check_rate(value)
        return value


class EntitySpec(ControlBody):
    """``POST /_emulator/entities``: a custom API entity set (served under its own route)."""

    publisher: str = Field(pattern=_SEGMENT)
    group: str = Field(pattern=_SEGMENT)
    version: str = Field(pattern=r"^v[A-Za-z0-9_.]{1,32}$")
    name: str = Field(pattern=_IDENTIFIER)
    entity: str = Field(pattern=_IDENTIFIER)
    fields: str = Field(min_length=1, max_length=10_000)

    @field_validator("fields")
    @classmethod
    def _property_list(cls, value: str) -> str:
        try:
            names = [field.name for field in _fields(value)]
        except (ValueError, AssertionError) as exc:
            raise ValueError(f"expected the catalog's 'name[:type][:ro]' notation: {exc}") from None
        odd = [name for name in names if not re.match(_IDENTIFIER, name) or name[0] == "_"]
        if odd:  # a leading '_' would clash with the emulator's own columns (_seq, _company)
            raise ValueError(f"property names must be identifiers not starting with '_': {odd}")
        if "id" not in names:
            raise ValueError("a custom entity needs an 'id' property (id:guid:ro)")
        return value


class PostPaymentsRequest(ControlBody):
    """``POST /_emulator/payments/post``: the customer or vendor payment journal to post."""

    journalId: str = Field(pattern=r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")


async def read_body(request: Request, model: type[Body]) -> Body:
    """The request's JSON object as `model`; an empty body counts as ``{}``."""
    raw = await request.body()
    try:
        data: Any = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError:
        raise ControlError("body: expected a JSON object, got text that is not JSON") from None
    if not isinstance(data, dict):
        raise ControlError(f"body: expected a JSON object, got a JSON {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ControlError(describe(exc, model.model_fields)) from None
