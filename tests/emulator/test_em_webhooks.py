"""Webhook subscriptions in the emulator (bc-api.md §9), against a real HTTP receiver.

The receiver is a `ThreadingHTTPServer` on a free local port: the emulator shakes hands with it
and POSTs notifications to it over real HTTP, from the emulator's own event loop. The module's
emulator waits 0.2 s instead of BC's 30 s and runs the 36-hour retry schedule a million times
faster (about 0.13 s).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
import pytest

from bcbridge.errors import ConfigError
from bcbridge.testing import EmulatorControl, InProcessEmulator
from tests.emulator.conftest import api_client, assert_bc_error

DELAY_S = 0.2
FAST = {"webhook_delay_s": DELAY_S, "webhook_time_scale": 1e6}


class Receiver:
    """A subscriber's endpoint: answers handshakes, records notifications, answers as told."""

    def __init__(self) -> None:
        self.handshakes: list[tuple[str, str]] = []  # (method, token)
        self.posts: list[dict[str, Any]] = []  # {"status": answered, "value": [...]}
        self.statuses: deque[int] = deque()  # answers for the next notifications (then 200)
        self.token_answer: Callable[[str], str] = lambda token: token
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._answer()

            def do_POST(self) -> None:
                self._answer()

            def _answer(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if "validationToken" in query:
                    token = query["validationToken"][0]
                    with receiver.lock:
                        receiver.handshakes.append((self.command, token))
                    self._send(200, receiver.token_answer(token).encode(), "text/plain")
                    return
                with receiver.lock:
                    status = receiver.statuses.popleft() if receiver.statuses else 200
                    receiver.posts.append({"status": status, **orjson.loads(body)})
                self._send(status, b"", "text/plain")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks?tenant=t1"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def delivered(self) -> list[dict[str, Any]]:
        """The items of every notification the receiver answered with 2xx."""
        with self.lock:
            return [item for post in self.posts if post["status"] < 300 for item in post["value"]]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait_for(condition: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.02)
    raise AssertionError("the condition did not come true in time")


def delivered_status(emulator: EmulatorControl, count: int = 1) -> dict[str, Any]:
    """The emulator's webhook status once it has counted `count` deliveries: the receiver sees a
    POST before the emulator has read the answer and counted it."""
    status: dict[str, Any] = wait_for(
        lambda: (found := emulator.webhooks())["delivered"] >= count and found
    )
    return status


@pytest.fixture(scope="module")
def emulator() -> Iterator[InProcessEmulator]:
    from bcbridge.testing import start_inprocess_emulator

    with start_inprocess_emulator(**FAST) as running:
        yield running


@pytest.fixture
def receiver(emulator: EmulatorControl, api: httpx.Client) -> Iterator[Receiver]:
    """A fresh receiver; at teardown no subscription, setting or log is left for the next test."""
    running = Receiver()
    yield running
    for subscription in api.get("subscriptions").json()["value"]:
        api.delete(f"subscriptions('{subscription['subscriptionId']}')")
    emulator.configure(
        webhook_collection_threshold=1000, subscription_lifetime_s=3 * 86_400.0, **FAST
    )
    emulator.clear_webhook_log()
    running.stop()


def subscribe(
    api: httpx.Client, receiver: Receiver, resource: str, client_state: str = "s3cret"
) -> dict[str, Any]:
    body = {"notificationUrl": receiver.url, "resource": resource, "clientState": client_state}
    response = api.post("subscriptions", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def resource_of(company: str, set_name: str) -> str:
    return f"/api/v2.0/{company}/{set_name}"


def new_customer(api: httpx.Client, company: str, name: str) -> dict[str, Any]:
    response = api.post(f"{company}/customers", json={"displayName": name})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def record_url(company: str, set_name: str, record_id: str) -> str:
    return f"api/v2.0/{company}/{set_name}({record_id})"


# --- subscriptions ------------------------------------------------------------------------------


def test_a_subscription_is_created_after_the_handshake(
    api: httpx.Client, receiver: Receiver, company: str
) -> None:
    before = datetime.now(UTC)
    created = subscribe(api, receiver, resource_of(company, "customers"))
    assert [method for method, _ in receiver.handshakes] == ["POST"]
    assert len(created["subscriptionId"]) == 32
    assert created["notificationUrl"] == receiver.url
    assert created["resource"] == resource_of(company, "customers")
    assert created["clientState"] == "s3cret"
    assert created["@odata.etag"].startswith('W/"')
    for name in ("timestamp", "userId", "lastModifiedDateTime"):
        assert created[name], name
    expires = datetime.fromisoformat(created["expirationDateTime"].replace("Z", "+00:00"))
    assert before + timedelta(days=3) <= expires <= datetime.now(UTC) + timedelta(days=3)
    key = f"subscriptions('{created['subscriptionId']}')"
    assert api.get(key).json()["subscriptionId"] == created["subscriptionId"]
    listed = api.get("subscriptions").json()["value"]
    assert [s["subscriptionId"] for s in listed] == [created["subscriptionId"]]
    unquoted = api.get(f"subscriptions({created['subscriptionId']})")
    assert_bc_error(unquoted, 400, "BadRequest_NotFound")


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (lambda token: token[::-1], "without the validationToken"),
        (lambda token: f'"{token}"', "without the validationToken"),
    ],
)
def test_a_wrong_handshake_creates_nothing(
    api: httpx.Client, receiver: Receiver, company: str, answer: Callable[[str], str], why: str
) -> None:
    receiver.token_answer = answer
    body = {"notificationUrl": receiver.url, "resource": resource_of(company, "customers")}
    message = assert_bc_error(api.post("subscriptions", json=body), 400, "BadRequest")
    assert why in message
    assert api.get("subscriptions").json()["value"] == []


def test_an_unreachable_or_failing_url_creates_nothing(
    api: httpx.Client, receiver: Receiver, company: str
) -> None:
    resource = resource_of(company, "customers")
    receiver.stop()  # nothing listens on its port any more
    body = {"notificationUrl": receiver.url, "resource": resource}
    assert "could not be reached" in assert_bc_error(
        api.post("subscriptions", json=body), 400, "BadRequest"
    )
    body["notificationUrl"] = "not a url"
    assert_bc_error(api.post("subscriptions", json=body), 400, "BadRequest")
    assert_bc_error(
        api.post("subscriptions", json={"resource": resource}),
        400,
        "BadRequest_RequiredParamNotProvided",
    )
    assert api.get("subscriptions").json()["value"] == []


@pytest.mark.parametrize(
    "resource",
    [
        "/api/v2.0/{company}/salesOrderLines",  # not in BC's supported list
        "/api/v2.0/{company}/customers(5c0dbe33-44e3-ea11-bb43-000d3a2feca1)",  # one record
        "/api/contoso/app/v1.0/{company}/customers",  # another route
        "/api/v2.0/customers",  # no company
        "/api/v2.0/{company}/customers?$filter=number eq '1'",
        "/api/v2.0/{company}/noSuchSet",
    ],
)
def test_unsupported_resources_are_refused(
    api: httpx.Client, receiver: Receiver, company: str, resource: str
) -> None:
    body = {"notificationUrl": receiver.url, "resource": resource.format(company=company)}
    assert "cannot be subscribed to" in assert_bc_error(
        api.post("subscriptions", json=body), 400, "BadRequest"
    )
    assert receiver.handshakes == []


def test_unknown_company_and_duplicates_are_refused(
    api: httpx.Client, emulator: EmulatorControl, receiver: Receiver, company: str
) -> None:
    missing = "companies(00000000-0000-0000-0000-00000000abcd)"
    body = {"notificationUrl": receiver.url, "resource": resource_of(missing, "customers")}
    assert_bc_error(api.post("subscriptions", json=body), 400, "Internal_CompanyNotFound")
    absolute = f"{emulator.info.api_root}/{company}/customers"
    subscribe(api, receiver, absolute)
    body = {"notificationUrl": receiver.url, "resource": absolute}
    assert "already exists" in assert_bc_error(
        api.post("subscriptions", json=body), 400, "BadRequest"
    )


def test_an_environment_holds_at_most_200_subscriptions(
    api: httpx.Client, receiver: Receiver, company: str
) -> None:
    resource = resource_of(company, "customers")
    for n in range(200):
        body = {"notificationUrl": f"{receiver.url}&n={n}", "resource": resource}
        assert api.post("subscriptions", json=body).status_code == 201
    body = {"notificationUrl": f"{receiver.url}&n=200", "resource": resource}
    assert "(200)" in assert_bc_error(api.post("subscriptions", json=body), 400, "BadRequest")
    assert len(receiver.handshakes) == 200


def test_renewal_repeats_the_handshake_and_needs_if_match(
    api: httpx.Client, emulator: EmulatorControl, receiver: Receiver, company: str
) -> None:
    emulator.configure(subscription_lifetime_s=0.5)
    created = subscribe(api, receiver, resource_of(company, "customers"))
    key = f"subscriptions('{created['subscriptionId']}')"
    assert_bc_error(api.patch(key, json={}), 400, "BadRequest_InvalidToken")
    stale = api.patch(key, json={}, headers={"If-Match": 'W/"JzE7OTk7Jw=="'})
    assert_bc_error(stale, 409, "Request_EntityChanged")
    receiver.token_answer = lambda token: "no"
    refused = api.patch(key, json={}, headers={"If-Match": created["@odata.etag"]})
    assert_bc_error(refused, 400, "BadRequest")
    assert api.get(key).json()["@odata.etag"] == created["@odata.etag"]  # not renewed
    receiver.token_answer = lambda token: token
    emulator.configure(subscription_lifetime_s=30.0)  # a renewal lasts one (new) lifetime
    renewed = api.patch(
        key, json={"clientState": "new"}, headers={"If-Match": created["@odata.etag"]}
    )
    assert renewed.status_code == 200, renewed.text
    assert len(receiver.handshakes) == 3
    assert renewed.json()["expirationDateTime"] > created["expirationDateTime"]
    assert renewed.json()["clientState"] == "new"
    assert renewed.json()["@odata.etag"] != created["@odata.etag"]
    time.sleep(0.6)  # past the first expiry, not the renewed one
    new_customer(api, company, "Renewed Ltd")
    assert wait_for(receiver.delivered)[0]["clientState"] == "new"


def test_an_expired_subscription_is_gone_and_notifies_nothing(
    api: httpx.Client, emulator: EmulatorControl, receiver: Receiver, company: str
) -> None:
    emulator.configure(subscription_lifetime_s=0.3)
    created = subscribe(api, receiver, resource_of(company, "customers"))
    time.sleep(0.4)
    key = f"subscriptions('{created['subscriptionId']}')"
    assert_bc_error(api.get(key), 404, "Internal_RecordNotFound")
    new_customer(api, company, "Too Late Ltd")
    time.sleep(DELAY_S * 2)
    assert receiver.posts == []


def test_delete_removes_a_subscription(api: httpx.Client, receiver: Receiver, company: str) -> None:
    created = subscribe(api, receiver, resource_of(company, "customers"))
    key = f"subscriptions('{created['subscriptionId']}')"
    assert api.delete(key, headers={"If-Match": created["@odata.etag"]}).status_code == 204
    assert_bc_error(api.get(key), 404, "Internal_RecordNotFound")
    new_customer(api, company, "Unwatched Ltd")
    time.sleep(DELAY_S * 2)
    assert receiver.posts == []


# --- notifications ------------------------------------------------------------------------------


@pytest.mark.slow  # real processes or a wide notification window
def test_changes_are_notified_once_per_record_after_the_delay(
    api: httpx.Client, emulator: EmulatorControl, receiver: Receiver, company: str
) -> None:
    window = 2.0  # all the writes below in one window, even on a busy machine
    emulator.configure(webhook_delay_s=window)
    created = subscribe(api, receiver, resource_of(company, "customers"))
    existing = api.get(f"{company}/customers", params={"$top": 1}).json()["value"][0]
    started = time.monotonic()
    fresh = new_customer(api, company, "Coalesce Ltd")
    etag = fresh["@odata.etag"]
    for name in ("Coalesce Ltd 2", "Coalesce Ltd 3"):
        etag = api.patch(
            f"{company}/customers({fresh['id']})",
            json={"displayName": name},
            headers={"If-Match": etag},
        ).json()["@odata.etag"]
    gone = new_customer(api, company, "Short-lived Ltd")
    api.delete(f"{company}/customers({gone['id']})")
    touched = api.patch(
        f"{company}/customers({existing['id']})",
        json={"phoneNumber": "555-0100"},
        headers={"If-Match": existing["@odata.etag"]},
    ).json()
    items = wait_for(receiver.delivered, timeout=10)
    assert time.monotonic() - started >= window
    assert len(receiver.posts) == 1
    kinds = {item["resource"]: item["changeType"] for item in items}
    assert kinds == {
        record_url(company, "customers", fresh["id"]): "created",
        record_url(company, "customers", gone["id"]): "deleted",
        record_url(company, "customers", existing["id"]): "updated",
    }
    item = next(i for i in items if i["changeType"] == "updated")
    assert item["subscriptionId"] == created["subscriptionId"]
    assert item["clientState"] == "s3cret"
    assert item["expirationDateTime"] == created["expirationDateTime"]
    assert item["lastModifiedDateTime"] == touched["lastModifiedDateTime"]
    status = delivered_status(emulator)
    assert (status["delivered"], status["notifications"], status["retried"]) == (1, 3, 0)
    assert status["log"][-1]["outcome"] == "delivered"


def test_only_committed_changes_are_notified(
    api: httpx.Client, receiver: Receiver, company: str
) -> None:
    subscribe(api, receiver, resource_of(company, "customers"))
    ok = {"id": "1", "method": "POST", "url": f"{company}/customers", "body": {"displayName": "B1"}}
    broken = {"id": "2", "method": "POST", "url": f"{company}/customers", "body": {"nope": 1}}
    rolled_back = api.post(
        "$batch", json={"requests": [ok, broken]}, headers={"Isolation": "snapshot"}
    )
    assert rolled_back.status_code == 200
    assert_bc_error(api.post(f"{company}/customers", json={"nope": 1}), 400, "BadRequest")
    kept = api.post("$batch", json={"requests": [ok]})
    new_id = kept.json()["responses"][0]["body"]["id"]
    items = wait_for(receiver.delivered)
    time.sleep(DELAY_S)
    assert [(i["resource"], i["changeType"]) for i in receiver.delivered()] == [
        (record_url(company, "customers", new_id), "created")
    ]
    assert len(items) == 1


@pytest.mark.slow  # real processes or a wide notification window
def test_more_changes_than_the_threshold_become_one_collection(
    api: httpx.Client, emulator: EmulatorControl, receiver: Receiver, company: str
) -> None:
    emulator.configure(webhook_collection_threshold=5, webhook_delay_s=2.0)  # 6 in one window
    subscribe(api, receiver, resource_of(company, "customers"))
    ids = [new_customer(api, company, f"Bulk {n}")["id"] for n in range(6)]
    items = wait_for(receiver.delivered, timeout=10)
    assert len(items) == 1
    assert items[0]["changeType"] == "collection"
    path, _, query = items[0]["resource"].partition("?")
    assert path == f"api/v2.0/{company}/customers"
    assert query.startswith("$filter=lastModifiedDateTime ")
    found = api.get(f"{company}/customers", params={"$filter": query.removeprefix("$filter=")})
    assert set(ids) <= {c["id"] for c in found.json()["value"]}


@pytest.mark.slow
def test_1500_changes_in_one_window_are_one_collection_at_bc_s_threshold(
    api: httpx.Client, emulator: EmulatorControl, receiver: Receiver, company: str
) -> None:
    # 15 batches of 100 take ~3 s on a quiet machine, 8+ s on a busy CI one: a window wide
    # enough for both (the test waits for it to close)
    emulator.configure(webhook_delay_s=20.0)
    subscribe(api, receiver, resource_of(company, "customers"))
    started = time.monotonic()
    for _ in range(15):
        requests = [
            {"id": str(n), "method": "POST", "url": f"{company}/customers", "body": {}}
            for n in range(100)
        ]
        answer = api.post("$batch", json={"requests": requests}, headers={"Isolation": "snapshot"})
        assert answer.status_code == 200, answer.text
    assert time.monotonic() - started < 20.0, "the window closed before all changes were made"
    items = wait_for(receiver.delivered, timeout=40)
    assert [i["changeType"] for i in items] == ["collection"]
    query = items[0]["resource"].partition("?")[2].removeprefix("$filter=")
    found = api.get(f"{company}/customers", params={"$filter": query, "$count": "true", "$top": 0})
    assert found.json()["@odata.count"] >= 1500


def test_a_line_change_notifies_the_document_header(
    api: httpx.Client, receiver: Receiver, company: str
) -> None:
    customer = new_customer(api, company, "Orders Ltd")
    order = api.post(f"{company}/salesOrders", json={"customerId": customer["id"]}).json()
    subscribe(api, receiver, resource_of(company, "salesOrders"))
    line = api.post(
        f"{company}/salesOrders({order['id']})/salesOrderLines",
        json={"lineType": "Comment", "description": "a note"},
    )
    assert line.status_code == 201, line.text
    items = wait_for(receiver.delivered)
    assert [(i["resource"], i["changeType"]) for i in items] == [
        (record_url(company, "salesOrders", order["id"]), "updated")
    ]


def test_bound_actions_notify_what_they_change(
    api: httpx.Client, receiver: Receiver, company: str
) -> None:
    quote = api.post(
        f"{company}/salesQuotes",
        json={
            "customerNumber": "C00011",
            "salesQuoteLines": [{"lineObjectNumber": "I00010", "quantity": 2}],
        },
    ).json()
    subscribe(api, receiver, resource_of(company, "salesQuotes"))
    subscribe(api, receiver, resource_of(company, "salesInvoices"))
    made = api.post(f"{company}/salesQuotes({quote['id']})/Microsoft.NAV.makeInvoice")
    assert made.status_code == 204, made.text
    wait_for(lambda: len(receiver.delivered()) == 2)
    kinds = {i["resource"].split("(")[-2].rsplit("/", 1)[-1]: i for i in receiver.delivered()}
    assert kinds["salesQuotes"]["changeType"] == "deleted"
    assert kinds["salesQuotes"]["resource"] == record_url(company, "salesQuotes", quote["id"])
    assert kinds["salesInvoices"]["changeType"] == "created"


@pytest.mark.slow  # real processes or a wide notification window
def test_subscriptions_on_one_url_share_a_post(
    api: httpx.Client, emulator: EmulatorControl, receiver: Receiver, company: str
) -> None:
    emulator.configure(webhook_delay_s=2.0)  # both writes in one window, even on a busy machine
    customers = subscribe(api, receiver, resource_of(company, "customers"), "c")
    vendors = subscribe(api, receiver, resource_of(company, "vendors"), "v")
    new_customer(api, company, "Shared Ltd")
    assert api.post(f"{company}/vendors", json={"displayName": "Shared Supplies"}).is_success
    wait_for(lambda: len(receiver.delivered()) == 2, timeout=10)
    assert len(receiver.posts) == 1
    by_subscription = {i["subscriptionId"]: i["clientState"] for i in receiver.delivered()}
    assert by_subscription == {customers["subscriptionId"]: "c", vendors["subscriptionId"]: "v"}


# --- delivery failures --------------------------------------------------------------------------


def test_408_429_and_5xx_are_retried_until_delivered(
    api: httpx.Client, emulator: EmulatorControl, receiver: Receiver, company: str
) -> None:
    created = subscribe(api, receiver, resource_of(company, "customers"))
    receiver.statuses.extend([503, 429, 408])
    fresh = new_customer(api, company, "Patient Ltd")
    items = wait_for(receiver.delivered)
    assert [p["status"] for p in receiver.posts] == [503, 429, 408, 200]
    assert all(p["value"] == receiver.posts[0]["value"] for p in receiver.posts)
    assert items[0]["resource"] == record_url(company, "customers", fresh["id"])
    status = delivered_status(emulator)
    assert (status["retried"], status["delivered"], status["dropped"]) == (3, 1, 0)
    waits = [e["wait_s"] for e in status["log"] if e["outcome"] == "retrying"]
    assert waits == [60.0, 120.0, 240.0]
    assert api.get(f"subscriptions('{created['subscriptionId']}')").status_code == 200


@pytest.mark.parametrize("failure", ["answers 500", "cannot be reached"])
def test_retries_stop_after_36_hours_and_keep_the_subscription(
    api: httpx.Client, emulator: EmulatorControl, receiver: Receiver, company: str, failure: str
) -> None:
    created = subscribe(api, receiver, resource_of(company, "customers"))
    if failure == "answers 500":
        receiver.statuses.extend([500] * 100)
    else:
        receiver.stop()
    new_customer(api, company, "Unlucky Ltd")
    status = wait_for(lambda: (s := emulator.webhooks())["dropped"] and s)
    dropped = status["log"][-1]
    assert dropped["outcome"] == "dropped" and "36 hours" in dropped["reason"]
    emulated = sum(e["wait_s"] for e in status["log"] if e["outcome"] == "retrying")
    assert 30 * 3600 <= emulated <= 36 * 3600
    expected_posts = status["retried"] + 1 if failure == "answers 500" else 0
    assert len(receiver.posts) == expected_posts
    assert all(e["status"] is None for e in status["log"][1:]) == (failure != "answers 500")
    assert api.get(f"subscriptions('{created['subscriptionId']}')").status_code == 200


def test_any_other_error_status_deletes_the_subscription(
    api: httpx.Client, emulator: EmulatorControl, receiver: Receiver, company: str
) -> None:
    created = subscribe(api, receiver, resource_of(company, "customers"))
    receiver.statuses.append(400)
    new_customer(api, company, "Rejected Ltd")
    wait_for(lambda: emulator.webhooks()["dropped"])
    key = f"subscriptions('{created['subscriptionId']}')"
    assert_bc_error(api.get(key), 404, "Internal_RecordNotFound")
    assert emulator.webhooks()["log"][-1]["deleted"] == [created["subscriptionId"]]
    new_customer(api, company, "After Ltd")
    time.sleep(DELAY_S * 2)
    assert len(receiver.posts) == 1


# --- the runtime API and settings ---------------------------------------------------------------


def test_webhook_supported_resources(api: httpx.Client, emulator: EmulatorControl) -> None:
    runtime = emulator.info.api_root.replace("/api/v2.0", "/api/microsoft/runtime/beta")
    company_id = emulator.info.company_id()
    url = f"{runtime}/companies({company_id})/webhookSupportedResources"
    listed = api.get(url).json()["value"]
    assert {"resource": "v2.0/customers"} in listed
    assert {"resource": "v2.0/salesOrderLines"} not in listed
    standard = api.get(url, params={"$filter": "resource eq 'v2.0*'"}).json()["value"]
    assert len(standard) == 22  # bc-api.md §9.2
    filtered = api.get(url, params={"$filter": "resource eq 'v2.0/sales*'"}).json()["value"]
    assert [r["resource"] for r in filtered] == [
        "v2.0/salesCreditMemos",
        "v2.0/salesInvoices",
        "v2.0/salesOrders",
        "v2.0/salesQuotes",
    ]
    assert_bc_error(api.post(url, json={}), 405, "BadRequest_MethodNotAllowed")


def test_custom_api_subscriptions_use_their_own_route(
    api: httpx.Client, emulator: EmulatorControl, receiver: Receiver, company: str
) -> None:
    emulator.register_entity(
        publisher="contoso",
        group="hooks",
        version="v1.0",
        name="cars",
        entity="car",
        fields="id:guid:ro code displayName lastModifiedDateTime:datetime:ro",
    )
    custom = emulator.info.api_root.replace("/api/v2.0", "/api/contoso/hooks/v1.0")
    body = {"notificationUrl": receiver.url, "resource": f"/api/contoso/hooks/v1.0/{company}/cars"}
    created = api.post(f"{custom}/subscriptions", json=body)
    assert created.status_code == 201, created.text
    assert api.get("subscriptions").json()["value"] == []  # v2.0's list is its own
    car = api.post(f"{custom}/{company}/cars", json={"code": "C1"}).json()
    items = wait_for(receiver.delivered)
    assert items[0]["resource"] == f"api/contoso/hooks/v1.0/{company}/cars({car['id']})"
    api.delete(f"{custom}/subscriptions('{created.json()['subscriptionId']}')")


def test_webhook_settings_are_checked(emulator: EmulatorControl) -> None:
    for bad in (
        {"webhook_delay_s": -1},
        {"webhook_collection_threshold": 0},
        {"webhook_time_scale": 0.5},
        {"subscription_lifetime_s": 0},
        {"webhook_handshake_method": "PUT"},
    ):
        with pytest.raises(ConfigError):
            emulator.configure(**bad)
    assert emulator.configure(webhook_handshake_method="GET")["webhook_handshake_method"] == "GET"
    emulator.configure(webhook_handshake_method="POST")


def test_start_emulator_checks_webhook_settings_before_starting() -> None:
    from bcbridge.testing import start_emulator

    with pytest.raises(ConfigError, match=r"^webhook_delay_s: input should be greater"):
        start_emulator(webhook_delay_s=-1)


@pytest.mark.slow  # real processes or a wide notification window
def test_the_emulator_process_sends_notifications_too(
    bc_emulator_factory: Callable[..., EmulatorControl],
) -> None:
    running = bc_emulator_factory(**FAST)  # set through /_emulator/config once it runs
    receiver = Receiver()
    try:
        with api_client(running) as api:
            company = f"companies({running.info.company_id()})"
            subscribe(api, receiver, resource_of(company, "customers"))
            fresh = new_customer(api, company, "Process Ltd")
            items = wait_for(receiver.delivered)
        assert items[0]["resource"] == record_url(company, "customers", fresh["id"])
        assert delivered_status(running)["delivered"] == 1
        assert running.configure()["webhook_delay_s"] == DELAY_S
    finally:
        receiver.stop()
