"""A pytest plugin: a real Business Central emulator for your tests, in-process or as a process.

In-process (fast: no sockets, no TLS, ~0.5 s to start; see `bcbridge.emulator.inprocess`):
- ``inprocess_emulator``: one in-process emulator for the test session (default settings);
- ``inprocess_emulator_factory``: in-process emulators with other settings, stopped at teardown;
- ``bc_client``: a `BusinessCentralClient` for ``inprocess_emulator``, closed at teardown.

As a process (HTTPS with its own CA, tokens through real MSAL; for the identity contract, the
CLI, crashes, and anything that needs a real socket; see `bcbridge.emulator.process`):
- ``bc_emulator``: one emulator process for the test session (default settings, seed 1);
- ``bc_emulator_factory``: start emulator processes with other settings; stopped at teardown.

Both kinds have the same control API (`EmulatorControl`: ``fault``, ``reset``, ``seed``,
``configure``, ``stats``, ``register_entity``, ``settings``, ``client``, ``http_client``,
``request_token``, ``stop``). Tests that change data on a shared emulator create their own
records and never assume global counts; tests that need exact counts start their own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from bcbridge.emulator.process import (
    EmulatorControl,
    EmulatorInfo,
    RunningEmulator,
    bc_token,
    msal_http_client,
    start_emulator,
)

if TYPE_CHECKING:
    from bcbridge.client import BusinessCentralClient
    from bcbridge.emulator.inprocess import (
        EmulatorTokens,
        InProcessEmulator,
        emulator_app,
        start_inprocess_emulator,
    )

__all__ = [
    "EmulatorControl",
    "EmulatorInfo",
    "EmulatorTokens",
    "InProcessEmulator",
    "RunningEmulator",
    "bc_token",
    "emulator_app",
    "msal_http_client",
    "start_emulator",
    "start_inprocess_emulator",
]

# Imported on first use: loading this plugin must not load the whole emulator into every
# pytest run of every project that has bcbridge installed.
_INPROCESS = {"EmulatorTokens", "InProcessEmulator", "emulator_app", "start_inprocess_emulator"}


def __getattr__(name: str) -> Any:
    if name in _INPROCESS:
        from bcbridge.emulator import inprocess

        return getattr(inprocess, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@pytest.fixture(scope="session")
def bc_emulator() -> Iterator[RunningEmulator]:
    """One emulator process (seed 1, default limits) shared by the whole test session."""
    with start_emulator() as emulator:
        yield emulator


@pytest.fixture
def bc_emulator_factory() -> Iterator[Callable[..., RunningEmulator]]:
    """Start emulator processes with custom settings: ``bc_emulator_factory(token_lifetime=3)``."""
    started: list[RunningEmulator] = []

    def factory(**options: Any) -> RunningEmulator:
        emulator = start_emulator(**options)
        started.append(emulator)
        return emulator

    yield factory
    for emulator in started:
        emulator.stop()


@pytest.fixture(scope="session")
def inprocess_emulator() -> Iterator[InProcessEmulator]:
    """One in-process emulator (seed 1, default limits) shared by the whole test session."""
    from bcbridge.emulator.inprocess import start_inprocess_emulator

    with start_inprocess_emulator() as emulator:
        yield emulator


@pytest.fixture
def inprocess_emulator_factory() -> Iterator[Callable[..., InProcessEmulator]]:
    """In-process emulators with custom settings: ``inprocess_emulator_factory(latency_ms=5)``."""
    from bcbridge.emulator.inprocess import start_inprocess_emulator

    started: list[InProcessEmulator] = []

    def factory(**options: Any) -> InProcessEmulator:
        emulator = start_inprocess_emulator(**options)
        started.append(emulator)
        return emulator

    yield factory
    for emulator in started:
        emulator.stop()


@pytest.fixture
def bc_client(inprocess_emulator: InProcessEmulator) -> Iterator[BusinessCentralClient]:
    """A `BusinessCentralClient` for ``inprocess_emulator`` with a valid token; it can be used
    on any event loop (e.g. one ``anyio.run`` after another), and is closed at teardown."""
    client = inprocess_emulator.client()
    yield client
    anyio.run(client.aclose)
