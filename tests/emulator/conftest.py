from __future__ import annotations

import re
import ssl
from collections.abc import Iterator

import httpx
import pytest

from bcbridge.testing import RunningEmulator, bc_token

CORRELATION = re.compile(r"  CorrelationId:  ([0-9a-f-]{36})\.$")


def api_client(emulator: RunningEmulator, token: str | None = None) -> httpx.Client:
    info = emulator.info
    token = token or bc_token(info)["access_token"]
    return httpx.Client(
        base_url=info.api_root + "/",
        verify=ssl.create_default_context(cafile=info.ca_bundle),
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


@pytest.fixture(scope="module")
def emulator() -> Iterator[RunningEmulator]:
    """A private emulator per test module, so data written by one module never meets another."""
    from bcbridge.testing import start_emulator

    with start_emulator() as running:
        yield running


@pytest.fixture(scope="module")
def api(emulator: RunningEmulator) -> Iterator[httpx.Client]:
    with api_client(emulator) as client:
        yield client


@pytest.fixture(scope="module")
def company(emulator: RunningEmulator) -> str:
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


def control_client(emulator: RunningEmulator) -> httpx.Client:
    """A client for the control endpoints (``/_emulator/*``), which need no token."""
    return httpx.Client(
        base_url=emulator.info.base_url,
        verify=ssl.create_default_context(cafile=emulator.info.ca_bundle),
        timeout=60,
    )
