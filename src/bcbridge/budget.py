"""One BC request budget per app registration and environment, shared by processes through
PostgreSQL, so that N workers together stay inside BC's limits (bc-api.md §8: 5 requests in
flight and 6,000 per 5-minute sliding window, per user/app and environment).

- In flight: slot k of a budget is the PostgreSQL advisory lock (budget hash, k), k < limit. A
  session-level advisory lock belongs to the connection that took it, so a process that dies
  (SIGKILL included) frees its slots the moment its connection closes: no lease to expire.
- Rate: a token bucket row (`bc_budget`, migration 0007), updated by one atomic UPDATE on the
  database's clock (no skew between machines). It starts with `capacity` tokens (the in-flight
  limit) and refills at ``(requests - capacity) / (per_seconds + RATE_SLACK)`` a second, so no
  window of `per_seconds` ever holds more than `requests` sends. A taker that finds the bucket
  empty reserves the next token (the count goes below zero) and waits for it: one round trip,
  no retry loop.
- A 429 that still comes (another tool on the same app, a BC-side change of the limits) empties
  the bucket for its Retry-After, so every process waits, not only the one that was told.

Per request: one statement takes a slot and a token, one frees the slot (two round trips, run in
a worker thread on one connection per process; bench/bench_budget.py measures the overhead).
With a SQLite store (one machine, one process) the in-process limiter (`bcbridge._limits`)
stays in use: `shared_budget` returns None for it.
"""

from __future__ import annotations

import asyncio
import random
import threading
import zlib
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

import anyio
import sqlalchemy as sa

from bcbridge.config import ClientSettings
from bcbridge.store import _explain, migrate

__all__ = ["Budget", "SharedBudget", "budget_name", "shared_budget"]

# BC counts a request when it arrives, we when we take the token: sends may bunch up by the
# spread of network delays, so the bucket refills as if the window were this much longer.
RATE_SLACK = 0.1
POLL_FIRST, POLL_MAX = 0.002, 0.025  # waiting for a free slot: first poll, longest poll

_TAKE = sa.text(
    """
    WITH slot AS (
        SELECT s FROM generate_series(0, :slots - 1) AS s
        -- CASE fixes the order: never re-take (stack) a lock this session already holds
        WHERE CASE WHEN s = ANY(CAST(:held AS int[])) THEN false
                   ELSE pg_try_advisory_lock(:lock, s) END
        LIMIT 1
    ), now AS (SELECT clock_timestamp() AS t), taken AS (
        UPDATE bc_budget SET
            tokens = LEAST(:capacity,
                           tokens + EXTRACT(EPOCH FROM (now.t - updated_at)) * :rate) - 1,
            updated_at = now.t
        FROM now
        WHERE budget = :budget AND EXISTS (SELECT 1 FROM slot)
        RETURNING tokens
    )
    SELECT (SELECT s FROM slot), (SELECT tokens FROM taken)
    """
)
_RELEASE = sa.text("SELECT pg_advisory_unlock(:lock, :slot)")
_CREATE = sa.text(
    "INSERT INTO bc_budget (budget, tokens, updated_at) VALUES (:budget, :capacity, now()) "
    "ON CONFLICT (budget) DO NOTHING"
)
_THROTTLED = sa.text(
    "UPDATE bc_budget SET tokens = LEAST(tokens, :debt), updated_at = clock_timestamp() "
    "WHERE budget = :budget"
)


class Budget(Protocol):
    """What `BusinessCentralClient(budget=...)` takes: a slot around each request, and word
    of a 429 BC still sent (with its Retry-After, or a backoff, in seconds)."""

    def slot(self) -> AbstractAsyncContextManager[None]: ...

    async def throttled(self, seconds: float) -> None: ...


def budget_name(settings: ClientSettings) -> str:
    """What BC counts its limits per: the app (tenant + client id) and the environment."""
    return f"{settings.principal}@{settings.base_url.rstrip('/')}/{settings.environment}"


class SharedBudget:
    """BC's limits for one app and environment, kept in the PostgreSQL database at `url`
    (whose schema is migrated: `bcbridge.store.migrate`)."""

    def __init__(self, url: str, name: str, in_flight: int, requests: int, per_seconds: float):
        self.name = name
        self.slots = in_flight
        self.capacity = float(max(1, min(in_flight, requests // 2)))
        self.rate = (requests - self.capacity) / (per_seconds + RATE_SLACK)
        # a signed 32-bit key; the (int, int) advisory locks never meet the store's bigint one
        self.lock = zlib.crc32(name.encode()) - 2**31
        self._url = url
        self._engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        self._conn: sa.Connection | None = None
        self._mutex = threading.Lock()
        self._held: set[int] = set()
        self._local: dict[int, anyio.Semaphore] = {}
        self._run(_CREATE, {"budget": name, "capacity": self.capacity})

    def close(self) -> None:
        """Free every slot (by closing the connection that holds them)."""
        with self._mutex:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self._held.clear()
        self._engine.dispose()

    def _run(self, statement: sa.TextClause, params: dict[str, Any]) -> Any:
        with self._mutex:
            return self._execute(statement, params)

    def _execute(self, statement: sa.TextClause, params: dict[str, Any]) -> Any:
        """One statement on this process's connection (call with the mutex held); a lost
        connection (PostgreSQL restarted) is opened again once, and its slots are gone."""
        for attempt in (1, 2):
            try:
                if self._conn is None:
                    self._conn = self._engine.connect().execution_options(
                        isolation_level="AUTOCOMMIT"
                    )
                    self._held.clear()
                result = self._conn.execute(statement, params)
                return result.first() if result.returns_rows else None
            except sa.exc.DBAPIError as exc:
                if not exc.connection_invalidated or attempt == 2:
                    raise _explain(self._url, exc) from None
                self._conn = None
        return None  # not reached

    def _take(self) -> tuple[int | None, float]:
        """A free slot and the wait for its token; (None, 0) when every slot is busy."""
        with self._mutex:  # `held` must be what this session holds when the statement runs
            params = {
                "slots": self.slots,
                "held": sorted(self._held),
                "lock": self.lock,
                "capacity": self.capacity,
                "rate": self.rate,
                "budget": self.name,
            }
            row = self._execute(_TAKE, params)
            if row is None or row[0] is None:
                return None, 0.0
            self._held.add(int(row[0]))
        wait = -float(row[1]) / self.rate if self.rate > 0 else 0.0
        return int(row[0]), max(0.0, wait)

    def _release(self, slot: int) -> None:
        with self._mutex:
            if slot in self._held:
                self._held.discard(slot)
                self._execute(_RELEASE, {"lock": self.lock, "slot": slot})

    def _local_gate(self) -> anyio.Semaphore:
        """At most `slots` tasks of this process (and event loop) poll for a slot at once."""
        key = id(asyncio.get_running_loop())
        if key not in self._local:
            self._local[key] = anyio.Semaphore(self.slots)
        return self._local[key]

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of BC's in-flight slots and one request of its rate for one request."""
        async with self._local_gate():
            poll = POLL_FIRST
            while True:
                slot, wait = await anyio.to_thread.run_sync(self._take)
                if slot is not None:
                    break
                await anyio.sleep(random.uniform(poll / 2, poll))
                poll = min(POLL_MAX, poll * 2)
            try:
                if wait:
                    await anyio.sleep(wait)
                yield
            finally:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(self._release, slot)

    async def throttled(self, seconds: float) -> None:
        """BC answered 429 anyway: no process of this budget sends for `seconds`."""
        debt = -seconds * self.rate
        await anyio.to_thread.run_sync(self._run, _THROTTLED, {"debt": debt, "budget": self.name})


_budgets: dict[tuple[str, str], SharedBudget] = {}
_budgets_lock = threading.Lock()


def shared_budget(store_url: str, settings: ClientSettings) -> SharedBudget | None:
    """The budget of `settings`' app and environment in the store at `store_url`, one per
    process; None for a store that is not PostgreSQL (the in-process limiter applies). The
    store's schema is brought up to date first (as opening a `Store` does)."""
    if sa.engine.make_url(store_url).get_backend_name() != "postgresql":
        return None
    key = (store_url, budget_name(settings))
    with _budgets_lock:
        if key not in _budgets:
            try:
                migrate(store_url)
            except sa.exc.DBAPIError as exc:
                raise _explain(store_url, exc) from None
            _budgets[key] = SharedBudget(
                store_url,
                key[1],
                settings.max_concurrency,
                settings.rate_limit.requests,
                settings.rate_limit.per_seconds,
            )
        return _budgets[key]
