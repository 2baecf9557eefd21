"""Emulator options, shared by the CLI, the server, the control endpoint and the pytest plugin.

Every option has bounds, so no setting can hang the emulator: a zero-size worker pool, a
negative queue, a rate of zero requests, a token that expires on issue, or a latency of hours
are refused where they are given (CLI flag, ``start_emulator`` option, ``/_emulator/config``).
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator

BC_SCOPE = "https://api.businesscentral.dynamics.com/.default"
BC_AUDIENCE = "https://api.businesscentral.dynamics.com"

# BC issues tokens for about an hour by default and at most one day (bc-api.md §2.1).
TokenLifetime = Annotated[int, Field(ge=1, le=86_400)]
# A minute per request is already far beyond any client timeout worth testing.
LatencyMs = Annotated[int, Field(ge=0, le=60_000)]
# BC's server time per row read (microseconds); 100 ms a row is far slower than any real server.
RowTimeUs = Annotated[int, Field(ge=0, le=100_000)]
MaxConcurrent = Annotated[int, Field(ge=1, le=10_000)]
MaxQueue = Annotated[int, Field(ge=0, le=1_000_000)]
# BC gives up on a queued request after 8 minutes (bc-api.md §8); an hour is the ceiling here.
QueueTimeout = Annotated[float, Field(gt=0, le=3_600)]
# Seeding a million rows of one set takes minutes; more would look like a hang.
ScaleCount = Annotated[int, Field(ge=0, le=1_000_000)]
MAX_RATE_WINDOW_S = 86_400.0
# Webhooks (bc-api.md §9): BC waits 30 s, sends a collection above 1,000 changes, and lets a
# subscription live 3 days; tests shrink these. An hour's delay or a 30-day lifetime is the
# ceiling; the time scale compresses the 36-hour retry schedule (1e6: about 0.13 s).
WebhookDelay = Annotated[float, Field(ge=0, le=3_600)]
CollectionThreshold = Annotated[int, Field(ge=1, le=1_000_000)]
WebhookTimeScale = Annotated[float, Field(ge=1, le=1e9)]
SubscriptionLifetime = Annotated[float, Field(gt=0, le=30 * 86_400)]
HandshakeMethod = Literal["POST", "GET"]
# $filter features BC serves only with $schemaversion=2.1 (bc-api.md §4.1); whether BC refuses
# nested calls without it or gives "undefined results" is UNCONFIRMED, so either gate can be
# lifted (see bcbridge.emulator.query.SCHEMA_GATES)
SchemaGate = Literal["in", "nested"]


def default_state_dir() -> Path:
    return Path(os.environ.get("BCBRIDGE_EMULATOR_HOME", Path.home() / ".bcbridge" / "emulator"))


def scalable_sets() -> tuple[str, ...]:
    """The entity sets whose row counts `scale` can set (the ones the seeder generates)."""
    from bcbridge.emulator.seed import DEFAULT_COUNTS
    from bcbridge.emulator.seed_sets import scalable_sets as generic_sets

    return tuple(dict.fromkeys([*DEFAULT_COUNTS, *generic_sets()]))


def parse_scale(text: str | None) -> dict[str, int]:
    """``customers=1000,items=50`` -> {"customers": 1000, "items": 50}; ValueError if malformed."""
    scale: dict[str, int] = {}
    for part in filter(None, (text or "").split(",")):
        name, _, count = part.partition("=")
        if not re.fullmatch(r"[0-9]+", count.strip()):
            raise ValueError(f"expected NAME=COUNT with COUNT a whole number, in {part!r}")
        scale[name.strip()] = int(count)
    return check_scale(scale)


def check_scale(scale: Mapping[str, int]) -> dict[str, int]:
    known = scalable_sets()
    for name in scale:
        if name not in known:
            raise ValueError(
                f"unknown entity set {name!r}; the sets that can be scaled are {', '.join(known)}"
            )
    return dict(scale)


def check_rate(text: str) -> tuple[int, float]:
    """``6000/300`` -> (6000 requests, 300 seconds); ValueError unless both are usable."""
    requests, _, seconds = text.partition("/")
    try:
        count, window = int(requests), float(seconds)
    except ValueError:
        raise ValueError("expected REQUESTS/SECONDS such as 6000/300") from None
    if count < 1 or not 0 < window <= MAX_RATE_WINDOW_S:  # also refuses nan and inf
        raise ValueError(f"expected at least 1 request per 0 < SECONDS <= {MAX_RATE_WINDOW_S:.0f}")
    return count, window


def describe(
    error: ValidationError,
    known: Mapping[str, object] | None = None,
    label: Callable[[str], str] = str,
) -> str:
    """One line for a pydantic error: ``<field>: <what was expected>`` per problem.

    `known` (a model's fields) is listed for an unknown field; `label` renders a field name
    (the CLI shows ``--latency-ms`` where the control endpoint shows ``latency_ms``).
    """
    problems = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "body"
        problems.append(f"{label(where)}: {_expected(item, known)}")
    return "; ".join(problems)


def flag_name(where: str) -> str:
    """``latency_ms`` -> ``--latency-ms``; ``scale.customers`` -> ``--scale (customers)``."""
    option, _, inner = where.partition(".")
    flag = "--" + option.replace("_", "-")
    return f"{flag} ({inner})" if inner else flag


def _expected(item: Any, known: Mapping[str, object] | None) -> str:
    kind = item["type"]
    if kind == "extra_forbidden":
        names = ", ".join(known or ())
        return f"unknown field; expected one of: {names}" if names else "unknown field"
    if kind == "missing":
        return "required"
    message = str(item["msg"]).removeprefix("Value error, ")
    shown = repr(item.get("input"))
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return f"{message[:1].lower()}{message[1:]} (got {shown})"


def _all_schema_gates() -> list[SchemaGate]:
    return ["in", "nested"]


class EmulatorConfig(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    seed: int = 1
    scale: dict[str, ScaleCount] = Field(default_factory=dict)
    token_lifetime: TokenLifetime = 3599
    latency_ms: LatencyMs = 0
    row_time_us: RowTimeUs = 0  # added server time per row a GET answers (with latency_ms as base)
    rate_limit: str = "6000/300"
    max_concurrent: MaxConcurrent = 5
    max_queue: MaxQueue = 95
    queue_timeout_s: QueueTimeout = 480.0  # BC: a queued request gives up after 8 minutes (503)
    data: Path | None = None
    state_dir: Path = Field(default_factory=default_state_dir)
    environment: str = "production"
    webhook_delay_s: WebhookDelay = 30.0
    webhook_collection_threshold: CollectionThreshold = 1000
    webhook_time_scale: WebhookTimeScale = 1.0
    subscription_lifetime_s: SubscriptionLifetime = 3 * 86_400.0
    webhook_handshake_method: HandshakeMethod = "POST"
    schemaversion_gates: list[SchemaGate] = Field(default_factory=_all_schema_gates)

    @field_validator("scale", mode="before")
    @classmethod
    def _parse_scale(cls, value: object) -> object:
        """The CLI's ``customers=100,items=5`` text, or a mapping."""
        return parse_scale(value) if isinstance(value, str) else value

    @field_validator("scale")
    @classmethod
    def _check_scale(cls, value: dict[str, int]) -> dict[str, int]:
        return check_scale(value)

    @field_validator("rate_limit")
    @classmethod
    def _check_rate(cls, value: str) -> str:
        check_rate(value)
        return value

    @property
    def rate(self) -> tuple[int, float]:
        return check_rate(self.rate_limit)

    def derived_id(self, label: str) -> str:
        """A GUID that depends only on the seed, so a restart accepts the same credentials."""
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"bcbridge-emulator/{self.seed}/{label}"))

    def derived_secret(self, label: str) -> str:
        digest = hashlib.sha256(f"bcbridge-emulator/{self.seed}/{label}/secret".encode())
        return "emu~" + digest.hexdigest()[:36]

    @property
    def tenant_id(self) -> str:
        return self.derived_id("tenant")
