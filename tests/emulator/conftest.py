from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from bcbridge.testing import EmulatorControl, InProcessEmulator

CORRELATION = re.compile(r"  CorrelationId:  ([0-9a-f-]{36})\.$")


def api_client(emulator: EmulatorControl, token: str | None = None) -> httpx.Client:
    """Raw API calls; the token is a valid one for the test app unless given."""
    return emulator.http_client(token)


@pytest.fixture(scope="module")
def emulator() -> Iterator[InProcessEmulator]:
    """A private in-process emulator per test module, so data written by one module never meets
    another."""
    from bcbridge.testing import start_inprocess_emulator

    with start_inprocess_emulator() as running:
        yield running


@pytest.fixture(scope="module")
def api(emulator: InProcessEmulator) -> Iterator[httpx.Client]:
    with api_client(emulator) as client:
        yield client


@pytest.fixture(scope="module")
def company(emulator: InProcessEmulator) -> str:
    return f"companies({emulator.info.company_id()})"


def assert_bc_error(response: httpx.Response, status: int, code: str) -> str:
    """BC's error shape: code + message ending in the correlation id, echoed as request-id."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    match = CORRELATION.search(error["message"])
    assert match, error["message"]
    assert response.headers["request-id"] == match.group(1)
    return str(error["message"])


def control_client(emulator: EmulatorControl) -> httpx.Client:
    """A client for the control endpoints (``/_emulator/*``), which need no token; it reaches
    the emulator as its own clients do (TLS for a process, a transport in-process)."""
    return httpx.Client(base_url=emulator.info.base_url, timeout=60, **emulator._http_options())
