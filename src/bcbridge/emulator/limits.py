"""BC's per-user limits (bc-api.md §8), applied per principal and environment.

- a sliding window of `rate` requests per `per` seconds; over it: 429;
- at most `max_concurrent` requests processed at once, `max_queue` more waiting; beyond: 429;
- a request that waits longer than `queue_timeout` gets 503, as BC's 8-minute queue timeout does.
Whether BC's 429 carries Retry-After is UNCONFIRMED (§8); the emulator always sends it, so that
clients which honour it can be tested, and clients must still cope without it.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from bcbridge.emulator.errors import BCError, queue_timeout, too_many_requests


@dataclass
class _Lane:
    window: deque[float] = field(default_factory=deque)
    in_flight: int = 0
    waiting: int = 0
    freed: asyncio.Condition = field(default_factory=asyncio.Condition)


@dataclass
class Stats:
    requests: int = 0
    throttled: int = 0
    max_in_flight: int = 0
    by_status: Counter[str] = field(default_factory=Counter)

    def as_json(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "throttled": self.throttled,
            "max_in_flight": self.max_in_flight,
            "by_status": dict(self.by_status),
        }


class Limits:
    def __init__(
        self, rate: int, per: float, max_concurrent: int, max_queue: int, queue_timeout: float
    ):
        self.configure(rate, per, max_concurrent, max_queue, queue_timeout)
        self.lanes: dict[str, _Lane] = {}
        self.stats = Stats()

    def configure(
        self, rate: int, per: float, max_concurrent: int, max_queue: int, queue_timeout: float
    ) -> None:
        self.rate, self.per = rate, per
        self.max_concurrent, self.max_queue = max_concurrent, max_queue
        self.queue_timeout = queue_timeout

    def reset(self) -> None:
        self.lanes.clear()
        self.stats = Stats()

    def _throttle(self, message: str, retry_after: float) -> BCError:
        self.stats.throttled += 1
        return too_many_requests(message, retry_after)

    @asynccontextmanager
    async def slot(self, principal: str) -> AsyncIterator[None]:
        lane = self.lanes.setdefault(principal, _Lane())
        now = time.monotonic()
        while lane.window and lane.window[0] <= now - self.per:
            lane.window.popleft()
        if len(lane.window) >= self.rate:
            raise self._throttle(
                f"Too many requests reached. Actual ({len(lane.window) + 1}). "
                f"Maximum ({self.rate}).",
                lane.window[0] + self.per - now,
            )
        if lane.in_flight >= self.max_concurrent and lane.waiting >= self.max_queue:
            raise self._throttle(
                f"Too many requests reached. Actual ({lane.in_flight + lane.waiting + 1}). "
                f"Maximum ({self.max_concurrent + self.max_queue}).",
                1,
            )
        lane.window.append(now)
        await self._enter(lane)
        self.stats.max_in_flight = max(self.stats.max_in_flight, lane.in_flight)
        try:
            yield
        finally:
            async with lane.freed:
                lane.in_flight -= 1
                lane.freed.notify()

    async def _enter(self, lane: _Lane) -> None:
        # Counted before the first await, so that the check in `slot` of a request arriving
        # right after this one sees it (a burst must not slip past the queue limit).
        if lane.in_flight < self.max_concurrent:
            lane.in_flight += 1
            return
        lane.waiting += 1
        try:
            async with lane.freed:
                await asyncio.wait_for(
                    lane.freed.wait_for(lambda: lane.in_flight < self.max_concurrent),
                    self.queue_timeout,
                )
                lane.in_flight += 1
        except TimeoutError:
            raise queue_timeout() from None
        finally:
            lane.waiting -= 1
