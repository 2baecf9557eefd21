"""Emulator options, shared by the CLI, the server and the pytest plugin."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

from pydantic import BaseModel, Field, field_validator

from bcbridge import catalog
from bcbridge.errors import ConfigError

BC_SCOPE = "https://api.businesscentral.dynamics.com/.default"
BC_AUDIENCE = "https://api.businesscentral.dynamics.com"


def default_state_dir() -> Path:
    return Path(os.environ.get("BCBRIDGE_EMULATOR_HOME", Path.home() / ".bcbridge" / "emulator"))


def parse_scale(text: str | None) -> dict[str, int]:
    """``customers=1000,items=50`` -> {"customers": 1000, "items": 50}; names from the catalog."""
    scale: dict[str, int] = {}
    for part in filter(None, (text or "").split(",")):
        name, _, count = part.partition("=")
        name = name.strip()
        catalog.get(name)  # raises with the valid names
        if not count.strip().isdigit():
            raise ConfigError(f"expected NAME=COUNT, COUNT a whole number: {part!r}", field="scale")
        scale[name] = int(count)
    return scale


def parse_rate(text: str) -> tuple[int, float]:
    """``6000/300`` -> (6000 requests, 300 seconds)."""
    requests, _, seconds = text.partition("/")
    try:
        parsed = int(requests), float(seconds)
    except ValueError:
        raise ConfigError(
            f"expected REQUESTS/SECONDS such as 6000/300, got {text!r}", field="rate_limit"
        ) from None
    if parsed[0] < 1 or parsed[1] <= 0:
        raise ConfigError(f"rate limit must be positive, got {text!r}", field="rate_limit")
    return parsed


class EmulatorConfig(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    seed: int = 1
    scale: dict[str, int] = Field(default_factory=dict)
    token_lifetime: int = Field(3599, ge=1)
    latency_ms: int = Field(0, ge=0)
    rate_limit: str = "6000/300"
    max_concurrent: int = Field(5, ge=1)
    max_queue: int = Field(95, ge=0)
    queue_timeout_s: float = 480.0  # BC: a queued request gives up after 8 minutes with 503
    data: Path | None = None
    state_dir: Path = Field(default_factory=default_state_dir)
    environment: str = "production"

    @field_validator("rate_limit")
    @classmethod
    def _check_rate(cls, value: str) -> str:
        parse_rate(value)
        return value

    @property
    def rate(self) -> tuple[int, float]:
        return parse_rate(self.rate_limit)

    def derived_id(self, label: str) -> str:
        """A GUID that depends only on the seed, so a restart accepts the same credentials."""
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"bcbridge-emulator/{self.seed}/{label}"))

    def derived_secret(self, label: str) -> str:
        digest = hashlib.sha256(f"bcbridge-emulator/{self.seed}/{label}/secret".encode())
        return "emu~" + digest.hexdigest()[:36]

    @property
    def tenant_id(self) -> str:
        return self.derived_id("tenant")
