"""More changes in one window than BC's threshold: one `collection` notification, read as a
pull with BC's filter, every record at the target exactly once."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest

from bcbridge.testing import InProcessEmulator
from tests.webhooks.conftest import Serving, company_path, subscribed, wait_for

WINDOW_S = 20.0  # wide enough for 1,500 creations on a busy machine (the test waits it out)


@pytest.mark.slow
def test_1500_changes_in_one_window_are_one_collection_and_reach_the_target_exactly_once(
    serving: Callable[..., Serving], emulator: InProcessEmulator, api: httpx.Client
) -> None:
    running = serving()
    subscribed(running)
    emulator.configure(webhook_delay_s=WINDOW_S)
    started = time.monotonic()
    made: dict[str, str] = {}
    for batch in range(15):
        requests = [
            {
                "id": str(n),
                "method": "POST",
                "url": f"{company_path(emulator)}/customers",
                "body": {"displayName": f"Bulk {batch * 100 + n}"},
            }
            for n in range(100)
        ]
        answer = api.post("$batch", json={"requests": requests}, headers={"Isolation": "snapshot"})
        assert answer.status_code == 200, answer.text
        for response in answer.json()["responses"]:
            assert response["status"] == 201, response
            made[response["body"]["id"]] = response["body"]["displayName"]
    assert time.monotonic() - started < WINDOW_S, "the window closed before all changes"
    assert len(made) == 1500

    def arrived() -> bool:
        versions = running.versions()
        return all(versions[pair] for pair in made.items())

    wait_for(arrived, timeout=90, what="the 1,500 customers")
    delivered = [e for e in emulator.webhooks()["log"] if e["outcome"] == "delivered"]
    items = [item for entry in delivered for item in entry["value"]]
    assert [item["changeType"] for item in items] == ["collection"]
    wait_for(lambda: not running.service.busy())
    assert running.service.start("customers_out")  # the reconciliation pull adds nothing
    wait_for(lambda: not running.service.busy())
    versions = running.versions()
    assert {versions[pair] for pair in made.items()} == {1}
