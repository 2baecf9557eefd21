"""Per-principal limits and injected faults (bc-api.md §8).

In-process; the faults that act on the connection (drop, stall) also run against the emulator
process, where a real socket is closed or a real timeout fires.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import anyio
import httpx
import pytest

from bcbridge.testing import EmulatorControl, InProcessEmulator
from tests.emulator.conftest import api_client, assert_bc_error

pytestmark = pytest.mark.slow  # subprocesses/emulator-heavy: left out of `make test-fast`

both_kinds = pytest.mark.parametrize("kind", ["in-process", "process"])


@pytest.fixture
def any_emulator(kind: str, request: pytest.FixtureRequest) -> EmulatorControl:
    fixture = "emulator" if kind == "in-process" else "bc_emulator"
    emulator: EmulatorControl = request.getfixturevalue(fixture)
    return emulator


def test_rate_window_gives_429_with_retry_after_and_recovers(inprocess_emulator_factory) -> None:  # type: ignore[no-untyped-def]
    emulator = inprocess_emulator_factory(rate_limit="5/2")
    with api_client(emulator) as api:
        statuses = [api.get("companies").status_code for _ in range(6)]
        assert statuses == [200] * 5 + [429]
        throttled = api.get("companies")
        assert_bc_error(throttled, 429, "Application_TooManyRequests")
        assert 1 <= int(throttled.headers["Retry-After"]) <= 2
        time.sleep(2.1)
        assert api.get("companies").status_code == 200
    assert emulator.stats()["throttled"] >= 2


def test_concurrency_and_queue_limits(inprocess_emulator_factory) -> None:  # type: ignore[no-untyped-def]
    emulator = inprocess_emulator_factory(max_concurrent=2, max_queue=3, latency_ms=1500)
    with api_client(emulator) as api, ThreadPoolExecutor(10) as pool:
        statuses = list(pool.map(lambda _: api.get("companies").status_code, range(10)))
    assert statuses.count(429) >= 3 and statuses.count(200) >= 5, statuses
    assert emulator.stats()["max_in_flight"] == 2, emulator.stats()


def test_status_fault_with_retry_after(emulator: InProcessEmulator) -> None:
    with api_client(emulator) as api:
        emulator.fault("status", count=2, status=503, retry_after=3, path_contains="/companies")
        first, second, third = (api.get("companies") for _ in range(3))
    assert first.status_code == second.status_code == 503
    assert first.headers["Retry-After"] == "3" and third.status_code == 200


@both_kinds
def test_drop_fault_closes_the_connection(any_emulator: EmulatorControl) -> None:
    with api_client(any_emulator) as api:
        any_emulator.fault("drop")
        with pytest.raises(httpx.TransportError):
            api.get("companies")
        assert api.get("companies").status_code == 200


@both_kinds
def test_stall_fault_trips_client_timeouts(any_emulator: EmulatorControl) -> None:
    with api_client(any_emulator) as api:
        any_emulator.fault("stall", seconds=2)
        with pytest.raises(httpx.ReadTimeout):
            api.get("companies", timeout=0.5)
        any_emulator.clear_faults()
        assert api.get("companies").status_code == 200


def test_reset_restores_the_seeded_data(inprocess_emulator_factory) -> None:  # type: ignore[no-untyped-def]
    emulator = inprocess_emulator_factory(seed=7, scale="customers=5")
    with api_client(emulator) as api:
        company = f"companies({emulator.info.company_id()})"
        before = api.get(f"{company}/customers").json()["value"]
        assert len(before) == 5
        api.post(f"{company}/customers", json={"displayName": "temp"})
        emulator.reset()
        assert api.get(f"{company}/customers").json()["value"] == before


def test_a_burst_beyond_concurrency_and_queue_is_refused_at_once() -> None:
    """Ten requests arriving together (no await between them, as in-process they can): two run,
    three queue, five get 429 straight away. Requests used to be counted as queued only once
    they held the lane's lock, so a burst passed the queue check and all of it queued."""
    from bcbridge.emulator.errors import BCError
    from bcbridge.emulator.limits import Limits

    limits = Limits(6000, 300, max_concurrent=2, max_queue=3, queue_timeout=5)
    outcomes: list[int] = []

    async def request() -> None:
        try:
            async with limits.slot("tenant/app/production"):
                await anyio.sleep(0.05)
            outcomes.append(200)
        except BCError as error:
            outcomes.append(error.status)

    async def burst() -> None:
        async with anyio.create_task_group() as group:
            for _ in range(10):
                group.start_soon(request)

    anyio.run(burst)
    assert sorted(outcomes) == [200] * 5 + [429] * 5
    assert limits.stats.max_in_flight == 2
