"""A pytest plugin: a real Business Central emulator for your tests.

Fixtures:
- ``bc_emulator``: one emulator for the test session (default settings, seed 1);
- ``bc_emulator_factory``: start emulators with other settings; stopped at teardown.

Each emulator is a separate process on a free port of 127.0.0.1, speaking HTTPS with its own CA
(`info.ca_bundle`); see `bcbridge.emulator.process` for the API these fixtures return.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bcbridge.emulator.process import (
    EmulatorInfo,
    RunningEmulator,
    bc_token,
    msal_http_client,
    start_emulator,
)

__all__ = [
    "EmulatorInfo",
    "RunningEmulator",
    "bc_token",
    "msal_http_client",
    "start_emulator",
]


@pytest.fixture(scope="session")
def bc_emulator() -> Iterator[RunningEmulator]:
    """One emulator (seed 1, default limits) shared by the whole test session."""
    with start_emulator() as emulator:
        yield emulator


@pytest.fixture
def bc_emulator_factory() -> Iterator[Callable[..., RunningEmulator]]:
    """Start emulators with custom settings: ``bc_emulator_factory(token_lifetime=3)``."""
    started: list[RunningEmulator] = []

    def factory(**options: Any) -> RunningEmulator:
        emulator = start_emulator(**options)
        started.append(emulator)
        return emulator

    yield factory
    for emulator in started:
        emulator.stop()
