"""One BC budget per app shared through PostgreSQL (issue 16): processes that each have their
own connection to the store together stay inside BC's limits (no 429 from the emulator, which
enforces them) while still using >= 90% of the rate BC allows; a killed process frees its
in-flight slots; a 429 makes every process wait."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import anyio
import pytest
import sqlalchemy as sa

from bcbridge.budget import SharedBudget, budget_name, shared_budget
from bcbridge.config import ClientSettings
from bcbridge.store import StoreError, migrate
from bcbridge.testing import InProcessEmulator
from tests.pg_server import PostgresServer, free_port

# BC's rate (6,000 per 300 s: 20 a second) over a 5-second window, and its 5 in flight. No
# queue: a sixth request in flight is answered 429 at once, so any overlap shows.
RATE, WINDOW = 100, 5.0
RUN_SECONDS = 8.0


def _budget(url: str, settings: ClientSettings) -> SharedBudget:
    """A budget with a connection of its own, as another process would have."""
    return SharedBudget(
        url,
        budget_name(settings),
        settings.max_concurrency,
        settings.rate_limit.requests,
        settings.rate_limit.per_seconds,
    )


def _hammer(emulator: InProcessEmulator, url: str, done: list[int]) -> None:
    """One "process": its own budget, client and event loop; 8 tasks sending GETs."""
    settings = emulator.settings(rate_limit={"requests": RATE, "per_seconds": WINDOW})
    budget = _budget(url, settings)

    async def main() -> None:
        bc = emulator.client_for(settings)
        bc.budget = budget
        deadline = time.monotonic() + RUN_SECONDS

        async def sender() -> None:
            while time.monotonic() < deadline:
                await bc.get_json("companies")
                done.append(1)

        async with bc, anyio.create_task_group() as group:
            for _ in range(8):
                group.start_soon(sender)

    try:
        anyio.run(main)
    finally:
        budget.close()


def test_three_processes_share_one_budget_without_429(
    postgres: PostgresServer, inprocess_emulator_factory: Any
) -> None:
    url = postgres.new_database()
    migrate(url)
    emulator = inprocess_emulator_factory(
        rate_limit=f"{RATE}/{WINDOW:g}", max_concurrent=5, max_queue=0
    )
    emulator.request_token()  # the token endpoint is not counted; warm it outside the clock
    done: list[int] = []
    started = time.monotonic()
    workers = [threading.Thread(target=_hammer, args=(emulator, url, done)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.monotonic() - started
    stats = emulator.stats()
    ceiling = RATE / WINDOW * elapsed
    print(f"{len(done)} requests in {elapsed:.2f} s: {len(done) / ceiling:.1%} of the ceiling")
    assert stats["throttled"] == 0 and stats["max_in_flight"] <= 5, stats
    assert len(done) >= 0.9 * ceiling, (len(done), ceiling, elapsed)


_HOLDER = """
import sys, time, anyio
from contextlib import AsyncExitStack
from bcbridge.budget import SharedBudget
budget = SharedBudget(sys.argv[1], "killed-holder", 5, 6000, 300)
async def main():
    async with AsyncExitStack() as stack:
        for _ in range(5):
            await stack.enter_async_context(budget.slot())
        print("held", flush=True)
        time.sleep(120)
anyio.run(main)
"""


def test_a_killed_process_frees_its_slots(postgres: PostgresServer) -> None:
    url = postgres.new_database()
    migrate(url)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, url], stdout=subprocess.PIPE, text=True, env=os.environ
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        here = SharedBudget(url, "killed-holder", 5, 6000, 300)
        assert anyio.run(_try_one, here) == (None, 0.0)  # all five are in flight elsewhere
        holder.send_signal(signal.SIGKILL)
        holder.wait()

        async def take_all() -> float:
            started = time.monotonic()
            async with anyio.create_task_group() as group:
                for _ in range(5):
                    group.start_soon(_hold_briefly, here)
            return time.monotonic() - started

        assert anyio.run(take_all) < 2.0
        here.close()
    finally:
        holder.kill()
        holder.wait()


async def _try_one(budget: SharedBudget) -> tuple[int | None, float]:
    return await budget._take(budget._session())


async def _hold_briefly(budget: SharedBudget) -> None:
    async with budget.slot():
        await anyio.sleep(0.05)


def test_a_429_makes_every_process_of_the_budget_wait(postgres: PostgresServer) -> None:
    url = postgres.new_database()
    migrate(url)
    told, other = (SharedBudget(url, "told-429", 5, 6000, 300) for _ in range(2))

    async def main() -> float:
        await told.throttled(1.0)
        started = time.monotonic()
        async with other.slot():
            return time.monotonic() - started

    try:
        assert 0.9 <= anyio.run(main) < 3.0
    finally:
        told.close()
        other.close()


def test_a_store_that_is_not_postgresql_keeps_the_process_limiter(tmp_path: Any) -> None:
    settings = ClientSettings.from_env(
        {"BC_TENANT_ID": "t", "BC_CLIENT_ID": "c", "BC_CLIENT_SECRET": "s"}
    )
    assert shared_budget(f"sqlite:///{tmp_path / 'state.db'}", settings) is None


def test_a_store_that_cannot_be_reached_is_one_line_naming_it() -> None:
    settings = ClientSettings.from_env(
        {"BC_TENANT_ID": "t", "BC_CLIENT_ID": "c", "BC_CLIENT_SECRET": "s"}
    )
    url = f"postgresql+psycopg://bcbridge:secret@127.0.0.1:{free_port()}/state"
    with pytest.raises(StoreError) as failed:
        shared_budget(url, settings)
    message = str(failed.value)
    assert "127.0.0.1" in message and "secret" not in message and "\n" not in message


def test_a_lost_connection_is_opened_again(postgres: PostgresServer) -> None:
    """PostgreSQL restarted, or the connection cut: the next slot reconnects (the slots the old
    connection held were freed with it)."""
    url = postgres.new_database()
    migrate(url)
    budget = SharedBudget(url, "reconnect", 5, 6000, 300)
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")

    async def main() -> None:
        async with budget.slot():
            pass
        with admin.connect() as conn:
            cut = conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE pid <> pg_backend_pid() AND datname = current_database()"
                )
            ).all()
        assert cut  # the budget's connection was there, and is gone
        async with budget.slot():
            pass

    try:
        anyio.run(main)
    finally:
        budget.close()
        admin.dispose()
