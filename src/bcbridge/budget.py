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

Per request: one statement takes a slot and a token, one frees the slot (two round trips on one
async connection per process and event loop; bench/bench_budget.py measures the overhead).
With a SQLite store (one machine, one process) the in-process limiter (`bcbridge._limits`)
stays in use: `shared_budget` returns None for it.
"""

from __future__ import annotations

import asyncio
import random
import threading
import weakref
import zlib
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
import psycopg
import sqlalchemy as sa

from bcbridge.config import ClientSettings
from bcbridge.store import _explain, migrate

__all__ = ["Budget", "SharedBudget", "budget_name", "shared_budget"]

# BC counts a request when it arrives, we when we take the token: sends may bunch up by the
# spread of network delays, so the bucket refills as if the window were this much longer.
RATE_SLACK = 0.1
POLL_FIRST, POLL_MAX = 0.002, 0.025  # waiting for a free slot: first poll, longest poll

_TAKE = """
    WITH slot AS (
        SELECT s FROM generate_series(0, %(slots)s - 1) AS s
        -- CASE fixes the order: never re-take (stack) a lock this session already holds
        WHERE CASE WHEN s = ANY(CAST(%(held)s AS int[])) THEN false
                   ELSE pg_try_advisory_lock(%(lock)s, s) END
        LIMIT 1
    ), now AS (SELECT clock_timestamp() AS t), taken AS (
        UPDATE bc_budget SET
            tokens = LEAST(%(capacity)s,
                           tokens + EXTRACT(EPOCH FROM (now.t - updated_at)) * %(rate)s) - 1,
            updated_at = now.t
        FROM now
        WHERE budget = %(budget)s AND EXISTS (SELECT 1 FROM slot)
        RETURNING tokens
    )
    SELECT (SELECT s FROM slot), (SELECT tokens FROM taken)
"""
_RELEASE = "SELECT pg_advisory_unlock(%(lock)s, %(slot)s)"
_CREATE = (
    "INSERT INTO bc_budget (budget, tokens, updated_at) VALUES (%(budget)s, %(capacity)s, now()) "
    "ON CONFLICT (budget) DO NOTHING"
)
_THROTTLED = (
    "UPDATE bc_budget SET tokens = LEAST(tokens, %(debt)s), updated_at = clock_timestamp() "
    "WHERE budget = %(budget)s"
)


class Budget(Protocol):
    """What `BusinessCentralClient(budget=...)` takes: a slot around each request, and word
    of a 429 BC still sent (with its Retry-After, or a backoff, in seconds)."""

    def slot(self) -> AbstractAsyncContextManager[None]: ...

    async def throttled(self, seconds: float) -> None: ...


def budget_name(settings: ClientSettings) -> str:
    """What BC counts its limits per: the app (tenant + client id) and the environment."""
    return f"{settings.principal}@{settings.base_url.rstrip('/')}/{settings.environment}"


@dataclass
class _Session:
    """This event loop's connection to the store: the advisory locks (slots) it holds belong
    to it, and so does the gate that lets at most `slots` of the loop's tasks ask at once."""

    gate: anyio.Semaphore
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    conn: psycopg.AsyncConnection[Any] | None = None
    held: set[int] = field(default_factory=set)


class SharedBudget:
    """BC's limits for one app and environment, kept in the PostgreSQL database at `url`
    (whose schema is migrated: `bcbridge.store.migrate`). The statements run on one
    connection per event loop, on the loop itself (psycopg's async connection): no thread."""

    def __init__(self, url: str, name: str, in_flight: int, requests: int, per_seconds: float):
        self.name = name
        self.slots = in_flight
        self.capacity = float(max(1, min(in_flight, requests // 2)))
        self.rate = (requests - self.capacity) / (per_seconds + RATE_SLACK)
        # a signed 32-bit key; the (int, int) advisory locks never meet the store's bigint one
        self.lock = zlib.crc32(name.encode()) - 2**31
        self._url = url
        self._conninfo = (
            sa.engine.make_url(url)
            .set(drivername="postgresql")
            .render_as_string(hide_password=False)
        )
        # by loop, weakly: a loop that is gone takes its session (and connection) with it
        self._sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Session] = (
            weakref.WeakKeyDictionary()
        )
        try:
            with psycopg.connect(self._conninfo, autocommit=True) as conn:
                conn.execute(_CREATE, {"budget": name, "capacity": self.capacity})
        except psycopg.Error as exc:
            raise _explain(url, exc) from None

    def close(self) -> None:
        """Free every slot: close the connections that hold them (from any thread or loop)."""
        for session in list(self._sessions.values()):
            if session.conn is not None:
                session.conn.pgconn.finish()
                session.conn = None
            session.held.clear()
        self._sessions.clear()

    def _session(self) -> _Session:
        loop = asyncio.get_running_loop()
        if loop not in self._sessions:
            self._sessions[loop] = _Session(anyio.Semaphore(self.slots))
        return self._sessions[loop]

    async def _execute(self, session: _Session, statement: str, params: dict[str, Any]) -> Any:
        """One statement on the session's connection, shielded from cancellation (a statement
        cut in half would leave the connection unusable). A lost connection (PostgreSQL
        restarted) is opened again once; the slots it held were freed with it."""
        with anyio.CancelScope(shield=True):
            async with session.lock:
                for attempt in (1, 2):
                    try:
                        if session.conn is None or session.conn.closed:
                            session.held.clear()
                            session.conn = await psycopg.AsyncConnection.connect(
                                self._conninfo, autocommit=True
                            )
                        if "held" in params:  # what this session holds when the statement runs
                            params = {**params, "held": sorted(session.held)}
                        cursor = await session.conn.execute(statement, params)
                        return await cursor.fetchone() if cursor.description else None
                    except psycopg.OperationalError as exc:
                        if attempt == 2:
                            raise _explain(self._url, exc) from None
                        session.conn = None
                    except psycopg.Error as exc:
                        raise _explain(self._url, exc) from None
        return None  # not reached

    async def _take(self, session: _Session) -> tuple[int | None, float]:
        """A free slot and the wait for its token; (None, 0) when every slot is busy."""
        params = {
            "slots": self.slots,
            "held": [],
            "lock": self.lock,
            "capacity": self.capacity,
            "rate": self.rate,
            "budget": self.name,
        }
        row = await self._execute(session, _TAKE, params)
        if row is None or row[0] is None:
            return None, 0.0
        session.held.add(int(row[0]))
        wait = -float(row[1]) / self.rate if self.rate > 0 else 0.0
        return int(row[0]), max(0.0, wait)

    async def _release(self, session: _Session, slot: int) -> None:
        if slot in session.held:
            session.held.discard(slot)
            await self._execute(session, _RELEASE, {"lock": self.lock, "slot": slot})

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of BC's in-flight slots and one request of its rate for one request."""
        session = self._session()
        async with session.gate:
            poll = POLL_FIRST
            while True:
                slot, wait = await self._take(session)
                if slot is not None:
                    break
                await anyio.sleep(random.uniform(poll / 2, poll))
                poll = min(POLL_MAX, poll * 2)
            try:
                if wait:
                    await anyio.sleep(wait)
                yield
            finally:
                await self._release(session, slot)

    async def throttled(self, seconds: float) -> None:
        """BC answered 429 anyway: no process of this budget sends for `seconds`."""
        debt = -seconds * self.rate
        await self._execute(self._session(), _THROTTLED, {"debt": debt, "budget": self.name})


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
