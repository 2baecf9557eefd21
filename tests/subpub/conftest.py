from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import anyio
import pytest

from bcbridge.client import BusinessCentralClient
from bcbridge.config import ClientSettings
from bcbridge.testing import EmulatorControl, RunningEmulator, start_emulator


@pytest.fixture(scope="module")
def emulator() -> Iterator[RunningEmulator]:
    with start_emulator() as running:
        yield running


def settings(emulator: RunningEmulator, **overrides: Any) -> ClientSettings:
    return ClientSettings.from_env(
        {**emulator.info.env(), "BC_COMPANY": "CRONUS USA, Inc."}, **overrides
    )


T = TypeVar("T")


def with_client(
    emulator: EmulatorControl, work: Callable[[BusinessCentralClient], Awaitable[T]]
) -> T:
    """Run `work(client)` on a fresh client and event loop; any kind of emulator."""

    async def main() -> T:
        async with emulator.client(company="CRONUS USA, Inc.") as bc:
            return await work(bc)

    return anyio.run(main)
