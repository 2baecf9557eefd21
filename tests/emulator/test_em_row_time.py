"""The emulator's per-row server time (issue 16): a GET page costs latency + rows x row time,
spent inside BC's in-flight slot, so that reading concurrently pays off as it does on BC."""

from __future__ import annotations

import time
from typing import Any

import pytest

from bcbridge.emulator.config import EmulatorConfig


def _timed_page(emulator: Any, size: int) -> float:
    with emulator.http_client() as http:
        started = time.perf_counter()
        answer = http.get(
            f"{emulator.info.api_root}/companies({emulator.info.company_id()})/customers",
            params={"$top": str(size)},
        )
        assert answer.status_code == 200 and len(answer.json()["value"]) == size
        return time.perf_counter() - started


def test_a_page_costs_its_rows(inprocess_emulator_factory: Any) -> None:
    emulator = inprocess_emulator_factory(scale="customers=400")
    fast = _timed_page(emulator, 200)
    emulator.configure(row_time_us=2000)  # 2 ms a row: 200 rows, 0.4 s; 10 rows, 0.02 s
    slow = _timed_page(emulator, 200)
    few = _timed_page(emulator, 10)
    assert slow >= 0.4 and slow - fast >= 0.35
    assert few < 0.3


def test_the_row_time_has_bounds() -> None:
    with pytest.raises(ValueError, match="row_time_us"):
        EmulatorConfig(row_time_us=-1)
    with pytest.raises(ValueError, match="row_time_us"):
        EmulatorConfig(row_time_us=100_001)
