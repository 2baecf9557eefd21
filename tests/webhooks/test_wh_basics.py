"""One change, a wrong clientState, the handshake: bcbridge serve's receiver over real HTTP."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from bcbridge.testing import InProcessEmulator
from tests.webhooks.conftest import Serving, company_path, subscribed, wait_for


def test_a_changed_customer_reaches_the_target_once(
    serving: Callable[..., Serving], emulator: InProcessEmulator, api: httpx.Client
) -> None:
    running = serving()
    subscribed(running)
    created = api.post(f"{company_path(emulator)}/customers", json={"displayName": "Hook One"})
    assert created.status_code == 201, created.text
    record_id = created.json()["id"]
    wait_for(lambda: running.versions()[(record_id, "Hook One")], what="the new customer")
    assert running.versions()[(record_id, "Hook One")] == 1
