"""Staying inside BC's per-user limits: concurrency and a sliding-window rate (bc-api.md §8).

One limiter per principal (tenant + client id) and event loop, shared by every client of the
process, so that several subscribers and publishers together still stay inside the limits.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from bcbridge.config import ClientSettings

# BC stamps a request when it arrives, we when we send: keep a little slack so that the two
# windows never disagree about the oldest request.
WINDOW_SLACK = 0.05


class Limiter:
    def __init__(self, max_concurrency: int, rate: int, per_seconds: float):
        self.semaphore = anyio.Semaphore(max_concurrency)
        self.rate = rate
        self.per = per_seconds
        self.sent: deque[float] = deque()
        self.lock = anyio.Lock()

    async def _wait_for_window(self) -> None:
        async with self.lock:
            while True:
                now = time.monotonic()
                while self.sent and self.sent[0] <= now - self.per - WINDOW_SLACK:
                    self.sent.popleft()
                if len(self.sent) < self.rate:
                    self.sent.append(now)
                    return
                await anyio.sleep(self.sent[0] + self.per + WINDOW_SLACK - now)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        async with self.semaphore:
            await self._wait_for_window()
            yield


_limiters: dict[tuple[str, int], Limiter] = {}


def limiter_for(settings: ClientSettings) -> Limiter:
    import asyncio

    key = (settings.principal, id(asyncio.get_running_loop()))
    if key not in _limiters:
        _limiters[key] = Limiter(
            settings.max_concurrency, settings.rate_limit.requests, settings.rate_limit.per_seconds
        )
    return _limiters[key]
