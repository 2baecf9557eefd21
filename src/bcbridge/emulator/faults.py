"""Injected faults: the next N matching API requests fail in a chosen way.

- ``status``: answer that HTTP status with BC's error JSON (and Retry-After when given);
- ``drop``: start the answer, then close the connection mid-body, as a broken proxy does; with
  ``after`` the request is carried out first, so its answer is lost but its writes landed;
- ``stall``: wait `seconds` before handling, so that client timeouts fire.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from bcbridge.emulator.errors import BCError, injected_fault


class FaultSpec(BaseModel):
    """The body of ``POST /_emulator/faults``; unknown keys and wrong types are refused."""

    model_config = ConfigDict(extra="forbid", strict=True)

    kind: Literal["status", "drop", "stall"] = "status"
    count: int = Field(1, ge=1, le=1_000_000)
    status: int = Field(503, ge=400, le=599)
    retry_after: float | None = Field(None, ge=0, le=86_400)
    seconds: float = Field(5.0, ge=0, le=600)  # a stall beyond 10 minutes would look like a hang
    after: bool = False  # drop: carry the request out, then drop the answer
    path_contains: str | None = None
    method: str | None = Field(None, pattern=r"^[A-Za-z]{1,16}$")


@dataclass
class _Pending:
    spec: FaultSpec
    left: int


class Faults:
    def __init__(self) -> None:
        self.pending: list[_Pending] = []

    def add(self, spec: FaultSpec) -> None:
        self.pending.append(_Pending(spec, spec.count))

    def clear(self) -> None:
        self.pending.clear()

    def take(self, method: str, path: str) -> FaultSpec | None:
        for pending in self.pending:
            spec = pending.spec
            if spec.path_contains and spec.path_contains not in path:
                continue
            if spec.method and spec.method.upper() != method:
                continue
            pending.left -= 1
            if pending.left <= 0:
                self.pending.remove(pending)
            return spec
        return None


def status_error(spec: FaultSpec) -> BCError:
    return injected_fault(spec.status, spec.retry_after)
