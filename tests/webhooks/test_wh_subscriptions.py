"""The subscriptions serve keeps in BC: renewed before they lapse, re-created when BC deleted
one (the gap closed by the reconciliation pull), removed when their incoming is gone."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import httpx

from bcbridge.testing import InProcessEmulator
from tests.webhooks.conftest import Serving, subscribed, wait_for
from tests.webhooks.test_wh_basics import new_customers


def test_a_5_s_subscription_is_renewed_with_a_handshake_and_nothing_is_missed(
    serving: Callable[..., Serving], emulator: InProcessEmulator, api: httpx.Client
) -> None:
    emulator.configure(subscription_lifetime_s=5.0)
    running = serving()
    subscription_id = subscribed(running)
    handshakes = emulator.webhooks()["handshakes"]
    names = [f"Lifetime {n}" for n in range(8)]
    ids = []
    for name in names:  # over 8 s: the subscription lives 5 s unless renewed
        ids += new_customers(api, emulator, name)
        time.sleep(1.0)
    for record_id, name in zip(ids, names, strict=True):
        wait_for(lambda: running.versions()[(record_id, name)], what=name)  # noqa: B023
    status = emulator.webhooks()
    assert [s["subscriptionId"] for s in status["subscriptions"]] == [subscription_id]
    assert status["handshakes"] >= handshakes + 2  # renewed, each time with a handshake
    assert status["dropped"] == 0
    versions = running.versions()
    assert [versions[pair] for pair in zip(ids, names, strict=True)] == [1] * len(names)


def test_a_subscription_bc_deleted_is_recreated_and_the_gap_closed_by_reconciliation(
    serving: Callable[..., Serving], emulator: InProcessEmulator, api: httpx.Client
) -> None:
    running = serving()
    first = subscribed(running)
    row = running.store.subscription("customers")
    assert row is not None
    # the store lost the clientState (restored from an older backup): the receiver refuses the
    # next notification with 401, and BC deletes the subscription (no retry on a 4xx)
    running.store.save_subscription(replace(row, client_state_hash="0" * 64))
    (lost,) = new_customers(api, emulator, "Lost Notification")
    wait_for(lambda: emulator.webhooks()["dropped"] >= 1, what="BC deleting the subscription")
    dropped = [e for e in emulator.webhooks()["log"] if e["outcome"] == "dropped"]
    assert dropped[-1]["status"] == 401 and dropped[-1]["deleted"] == [first]
    again = wait_for(
        lambda: (
            (found := running.store.subscription("customers"))
            and found.subscription_id not in ("", first)
            and found
        ),
        what="a new subscription",
    )
    assert [s["subscriptionId"] for s in emulator.webhooks()["subscriptions"]] == [
        again.subscription_id
    ]
    wait_for(lambda: running.versions()[(lost, "Lost Notification")], what="the reconciliation")
    (later,) = new_customers(api, emulator, "After the gap")
    wait_for(lambda: running.versions()[(later, "After the gap")], what="the new subscription")
    assert running.versions()[(lost, "Lost Notification")] == 1


def test_the_subscription_of_an_incoming_that_is_gone_is_deleted_in_bc(
    serving: Callable[..., Serving], emulator: InProcessEmulator, api: httpx.Client
) -> None:
    running = serving()
    subscribed(running)
    project = running.service.project
    incoming = project.incoming["customers"].model_copy(update={"trigger": "poll"})
    running.service.project = project.model_copy(
        update={"incoming": {**project.incoming, "customers": incoming}}
    )
    wait_for(lambda: running.store.subscription("customers") is None, what="the removal")
    assert api.get("subscriptions").json()["value"] == []


def test_a_subscription_the_store_lost_is_replaced_not_duplicated(
    serving: Callable[..., Serving], emulator: InProcessEmulator, api: httpx.Client
) -> None:
    running = serving()
    first = subscribed(running)
    running.store.forget_subscription("customers")  # a store replaced, an answer lost
    again = wait_for(
        lambda: (
            (found := running.store.subscription("customers"))
            and found.subscription_id not in ("", first)
            and found
        ),
        what="a new subscription",
    )
    listed = [s["subscriptionId"] for s in api.get("subscriptions").json()["value"]]
    assert listed == [again.subscription_id]  # BC refuses two for one URL: the orphan went
    (record_id,) = new_customers(api, emulator, "After the orphan")
    wait_for(lambda: running.versions()[(record_id, "After the orphan")], what="the customer")


def test_a_new_public_url_moves_the_subscription(
    serving: Callable[..., Serving], emulator: InProcessEmulator, api: httpx.Client
) -> None:
    before = serving()
    first = subscribed(before)
    before.stop()
    after = serving()  # the same project and store, served on another port
    again = wait_for(
        lambda: (
            (found := after.store.subscription("customers"))
            and found.subscription_id not in ("", first)
            and found
        ),
        what="the subscription on the new URL",
    )
    assert again.notification_url.startswith(after.hooks.public_url or "-")
    listed = api.get("subscriptions").json()["value"]
    assert [(s["subscriptionId"], s["notificationUrl"]) for s in listed] == [
        (again.subscription_id, again.notification_url)
    ]
    (record_id,) = new_customers(api, emulator, "At the new URL")
    wait_for(lambda: after.versions()[(record_id, "At the new URL")], what="the customer")
