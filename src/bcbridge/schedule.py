"""Schedules (`bcbridge run --every`, a flow's `schedule`): an interval or a cron expression."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

import anyio
from croniter import croniter

from bcbridge.errors import ConfigError

__all__ = ["parse_schedule", "sleep_until"]

_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_schedule(text: str) -> Callable[[datetime], datetime]:
    """`5m`, `1h30m`, `45s`, `1d` (an interval), or a five-field cron expression; returns a
    function from "now" to the next start."""
    match = _DURATION.match(text.strip())
    if match and any(match.groups()):
        days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
        step = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
        if step.total_seconds() <= 0:
            raise ConfigError("the interval must be longer than zero", field="schedule")
        return lambda now: now + step
    if not croniter.is_valid(text):
        raise ConfigError(
            f"{text!r} is neither an interval (30s, 5m, 1h30m, 1d) nor a cron expression "
            "('*/15 * * * *')",
            field="schedule",
        )
    return lambda now: croniter(text, now).get_next(datetime)


async def sleep_until(moment: datetime, stop: threading.Event) -> bool:
    """Sleep until `moment`; False when `stop` was set meanwhile."""
    while not stop.is_set():
        left = (moment - datetime.now(moment.tzinfo)).total_seconds()
        if left <= 0:
            return True
        await anyio.sleep(min(left, 0.5))
    return False
