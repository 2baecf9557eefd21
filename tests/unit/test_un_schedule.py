"""Schedules: intervals and cron expressions, and the errors for neither."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bcbridge.errors import ConfigError
from bcbridge.schedule import parse_schedule

NOW = datetime(2026, 11, 25, 10, 7, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", datetime(2026, 11, 25, 10, 8, 0, tzinfo=UTC)),
        ("5m", datetime(2026, 11, 25, 10, 12, 30, tzinfo=UTC)),
        ("1h30m", datetime(2026, 11, 25, 11, 37, 30, tzinfo=UTC)),
        ("1d", datetime(2026, 11, 26, 10, 7, 30, tzinfo=UTC)),
        ("*/15 * * * *", datetime(2026, 11, 25, 10, 15, 0, tzinfo=UTC)),
        ("0 2 * * *", datetime(2026, 11, 26, 2, 0, 0, tzinfo=UTC)),
    ],
)
def test_next_start(text: str, expected: datetime) -> None:
    assert parse_schedule(text)(NOW) == expected


@pytest.mark.parametrize("text", ["0s", "every tuesday", "5 minutes", "61 * * *", ""])
def test_neither_an_interval_nor_cron_is_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="schedule"):
        parse_schedule(text)
