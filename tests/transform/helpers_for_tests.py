"""A callable for the `python` step's tests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def shout(record: dict[str, Any], context: Mapping[str, Any]) -> dict[str, Any] | None:
    if record.get("skip"):
        return None
    return {**record, "name": str(record["name"]).upper(), "run": context.get("run")}


def explode(record: dict[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    raise RuntimeError("boom")
