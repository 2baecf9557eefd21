"""bcbridge serve's receiver over real HTTP: one change end to end, the handshake, a wrong
clientState, de-duplication, a store that cannot be written (503, then BC's retries)."""

from __future__ import annotations

import socket
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import pytest

from bcbridge._logging import log_every_request
from bcbridge.testing import InProcessEmulator
from tests.webhooks.conftest import Serving, company_path, subscribed, wait_for


def new_customers(api: httpx.Client, emulator: InProcessEmulator, *names: str) -> list[str]:
    ids = []
    for name in names:
        created = api.post(f"{company_path(emulator)}/customers", json={"displayName": name})
        assert created.status_code == 201, created.text
        ids.append(created.json()["id"])
    return ids


def test_a_changed_customer_reaches_the_target_once_and_reconciliation_adds_nothing(
    serving: Callable[..., Serving], emulator: InProcessEmulator, api: httpx.Client
) -> None:
    running = serving()
    subscribed(running)
    (record_id,) = new_customers(api, emulator, "Hook One")
    wait_for(lambda: running.versions()[(record_id, "Hook One")], what="the new customer")
    renamed = api.patch(
        f"{company_path(emulator)}/customers({record_id})",
        json={"displayName": "Hook One, renamed"},
        headers={"If-Match": "*"},
    )
    assert renamed.status_code == 200, renamed.text
    wait_for(lambda: running.versions()[(record_id, "Hook One, renamed")], what="the change")
    wait_for(lambda: not running.service.busy())
    before = running.lines()
    assert running.service.start("customers_out")  # the reconciliation pull, by cursor
    wait_for(lambda: not running.service.busy(), what="the reconciliation's end")
    assert running.service.finished["customers_out"].status == "ok"
    assert running.lines() == before  # what the webhooks delivered is not delivered again
    assert running.versions()[(record_id, "Hook One")] == 1
    assert running.store.counts()["received"] == running.store.counts()["processed"] >= 2


def test_deleted_becomes_a_tombstone(
    serving: Callable[..., Serving], emulator: InProcessEmulator, api: httpx.Client
) -> None:
    running = serving()
    subscribed(running)
    (record_id,) = new_customers(api, emulator, "Short Lived")
    wait_for(lambda: running.versions()[(record_id, "Short Lived")], what="the new customer")
    gone = api.delete(f"{company_path(emulator)}/customers({record_id})", headers={"If-Match": "*"})
    assert gone.status_code == 204, gone.text
    tombstones = wait_for(
        lambda: [r for r in running.lines() if r.get("deleted") and r["id"] == record_id],
        what="the tombstone",
    )
    assert len(tombstones) == 1 and tombstones[0]["lastModifiedDateTime"]


def test_on_delete_ignore_sends_nothing_for_a_deletion(
    serving: Callable[..., Serving], emulator: InProcessEmulator, api: httpx.Client
) -> None:
    running = serving(on_delete="ignore")
    subscribed(running)
    first, second = new_customers(api, emulator, "Ignored A", "Ignored B")
    wait_for(lambda: running.versions()[(second, "Ignored B")], what="the new customers")
    api.delete(f"{company_path(emulator)}/customers({first})", headers={"If-Match": "*"})
    (third,) = new_customers(api, emulator, "After the deletion")
    wait_for(lambda: running.versions()[(third, "After the deletion")], what="the next one")
    assert not [r for r in running.lines() if r.get("deleted")]


def test_on_delete_delete_removes_the_row_of_a_sql_table(
    serving: Callable[..., Serving], emulator: InProcessEmulator, api: httpx.Client
) -> None:
    running = serving({"writer": "sqlite:///mirror.db#customers", "key": "id"}, on_delete="delete")
    subscribed(running)
    mirror = sqlite3.connect(running.folder / "mirror.db")

    def names() -> set[str]:
        return {row[0] for row in mirror.execute("SELECT displayName FROM customers")}

    first, _ = new_customers(api, emulator, "Mirror A", "Mirror B")
    wait_for(lambda: {"Mirror A", "Mirror B"} <= names(), what="the rows")
    gone = api.delete(f"{company_path(emulator)}/customers({first})", headers={"If-Match": "*"})
    assert gone.status_code == 204, gone.text
    wait_for(lambda: "Mirror A" not in names(), what="the deletion")
    assert "Mirror B" in names()
    assert not mirror.execute("SELECT 1 FROM customers WHERE id = ?", (first,)).fetchall()
    mirror.close()


def test_the_handshake_is_answered_with_the_token_as_plain_text(
    serving: Callable[..., Serving],
) -> None:
    running = serving()
    url = subscribed_url(running)
    for method in ("GET", "POST"):
        answer = httpx.request(method, url, params={"validationToken": "tok-123"})
        assert answer.status_code == 200
        assert answer.text == "tok-123"
        assert answer.headers["content-type"].startswith("text/plain")
        assert answer.headers["x-content-type-options"] == "nosniff"
    assert httpx.post(url.replace("/customers", "/nobody"), json={"value": []}).status_code == 404


def subscribed_url(running: Serving) -> str:
    subscribed(running)
    row = running.store.subscription("customers")
    assert row is not None
    return row.notification_url


def test_a_wrong_client_state_is_refused_counted_and_nothing_is_processed(
    serving: Callable[..., Serving], emulator: InProcessEmulator, api: httpx.Client
) -> None:
    running = serving()
    url = subscribed_url(running)
    row = running.store.subscription("customers")
    assert row is not None
    (record_id,) = new_customers(api, emulator, "Forged")
    wait_for(lambda: running.versions()[(record_id, "Forged")], what="the real notification")
    lines = len(running.lines())
    received = running.store.counts()["received"]
    forged = {
        "subscriptionId": row.subscription_id,
        "clientState": "guessed",
        "expirationDateTime": "2030-01-01T00:00:00Z",
        "resource": f"api/v2.0/{company_path(emulator)}/customers({record_id})",
        "changeType": "collection",
        "lastModifiedDateTime": "2030-01-01T00:00:00Z",
    }
    for body in ({"value": [forged]}, {"value": [{**forged, "clientState": None}]}):
        assert httpx.post(url, json=body).status_code == 401
    time.sleep(0.5)
    assert running.store.counts()["received"] == received
    after = running.store.subscription("customers")
    assert after is not None and after.refused == 2
    assert running.hooks.receiver.stats.refused == 2
    assert len(running.lines()) == lines


def test_a_notification_delivered_twice_is_kept_once(
    serving: Callable[..., Serving], emulator: InProcessEmulator, api: httpx.Client
) -> None:
    running = serving()
    subscribed(running)
    (record_id,) = new_customers(api, emulator, "Twice")
    wait_for(lambda: running.versions()[(record_id, "Twice")], what="the notification")
    delivered = [e for e in emulator.webhooks()["log"] if e["outcome"] == "delivered"]
    item = next(i for e in delivered for i in e["value"] if record_id in i["resource"])
    received = running.store.counts()["received"]
    row = running.store.subscription("customers")
    assert row is not None
    assert httpx.post(row.notification_url, json={"value": [item]}).status_code == 202
    assert running.store.counts()["received"] == received
    assert running.hooks.receiver.stats.duplicates == 1


def test_a_store_that_cannot_be_written_answers_503_and_bc_retries_deliver_everything(
    serving: Callable[..., Serving], emulator: InProcessEmulator, api: httpx.Client
) -> None:
    running = serving()
    subscribed(running)
    database = sqlite3.connect(running.folder / "state.db", timeout=30)
    database.execute("ALTER TABLE webhook_notifications RENAME TO webhook_notifications_away")
    database.commit()
    names = [f"While Down {n}" for n in range(5)]
    ids = new_customers(api, emulator, *names)
    wait_for(lambda: emulator.webhooks()["retried"] >= 2, what="BC retrying")
    assert running.hooks.receiver.stats.unavailable >= 2
    database.execute("ALTER TABLE webhook_notifications_away RENAME TO webhook_notifications")
    database.commit()
    database.close()
    for record_id, name in zip(ids, names, strict=True):
        wait_for(lambda: running.versions()[(record_id, name)], what=name)  # noqa: B023
    wait_for(lambda: not running.service.busy())
    assert running.service.start("customers_out")  # reconciliation
    wait_for(lambda: not running.service.busy())
    versions = running.versions()
    assert [versions[pair] for pair in zip(ids, names, strict=True)] == [1] * 5
    assert emulator.webhooks()["dropped"] == 0


@pytest.mark.parametrize("wrong", ["not json", '{"value": 3}'])
def test_a_body_that_is_not_a_notification_is_refused(
    serving: Callable[..., Serving], wrong: str
) -> None:
    running = serving()
    url = subscribed_url(running)
    assert httpx.post(url, content=wrong).status_code == 400


def test_a_body_far_larger_than_bc_sends_is_refused_unread(
    serving: Callable[..., Serving],
) -> None:
    running = serving()
    url = httpx.URL(subscribed_url(running))
    head = (
        f"POST {url.raw_path.decode()} HTTP/1.1\r\nHost: {url.host}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {64 * 2**20}\r\n\r\n"
    )
    with socket.create_connection((url.host, url.port or 80), timeout=10) as sock:
        sock.sendall(head.encode() + b'{"value": [')  # the rest never comes
        answer = sock.recv(200).decode()
    assert answer.startswith("HTTP/1.1 413 ")


def test_notifications_wait_while_bc_cannot_be_read_and_are_processed_after(
    serving: Callable[..., Serving], emulator: InProcessEmulator, api: httpx.Client
) -> None:
    running = serving()
    subscribed(running)
    # the next reads of customers fail, beyond the client's retries: the processing runs end
    # on an error, the notifications stay in the store, and are tried again (after 1 s)
    emulator.fault(kind="status", status=503, count=6, method="GET", path_contains="customers")
    (record_id,) = new_customers(api, emulator, "Read Later")
    wait_for(lambda: running.versions()[(record_id, "Read Later")], what="the customer")
    statuses = [run["status"] for run in running.service.store.runs("customers_out")]
    assert "error" in statuses
    assert running.versions()[(record_id, "Read Later")] == 1
    emulator.clear_faults()


def test_changed_records_are_read_in_groups_not_one_get_each(
    serving: Callable[..., Serving], emulator: InProcessEmulator, api: httpx.Client, tmp_path: Path
) -> None:
    running = serving()
    subscribed(running)
    log = tmp_path / "requests.log"
    stop_logging = log_every_request(log)
    try:
        requests = [
            {
                "id": str(n),
                "method": "POST",
                "url": f"{company_path(emulator)}/customers",
                "body": {"displayName": f"Grouped {n}"},
            }
            for n in range(100)
        ]
        answer = api.post("$batch", json={"requests": requests}, headers={"Isolation": "snapshot"})
        assert answer.status_code == 200, answer.text
        made = {r["body"]["id"]: r["body"]["displayName"] for r in answer.json()["responses"]}
        wait_for(lambda: all(running.versions()[pair] for pair in made.items()), what="the records")
    finally:
        stop_logging()
    calls = [orjson.loads(line) for line in log.read_text().splitlines()]
    reads = [c for c in calls if c["method"] == "GET" and c["url"].endswith("/customers")]
    assert 3 <= len(reads) <= 4  # 100 records, 40 ids per read; not 100 GETs


def test_the_scheduled_reconciliation_catches_a_change_bc_gave_up_on(
    serving: Callable[..., Serving], emulator: InProcessEmulator, api: httpx.Client
) -> None:
    running = serving(reconcile="2s")
    subscribed(running)
    emulator.configure(webhook_time_scale=1e6)  # BC's 36 hours of retries pass in 0.2 s
    database = sqlite3.connect(running.folder / "state.db", timeout=30)
    database.execute("ALTER TABLE webhook_notifications RENAME TO webhook_notifications_away")
    database.commit()
    (record_id,) = new_customers(api, emulator, "Given Up")
    wait_for(lambda: emulator.webhooks()["dropped"] >= 1, what="BC giving up")
    assert emulator.webhooks()["subscriptions"]  # still there: nothing tells serve of a gap
    database.execute("ALTER TABLE webhook_notifications_away RENAME TO webhook_notifications")
    database.commit()
    database.close()
    wait_for(lambda: running.versions()[(record_id, "Given Up")], what="the scheduled pull")
    assert running.store.counts()["received"] == running.store.counts()["processed"]
    assert running.versions()[(record_id, "Given Up")] == 1
