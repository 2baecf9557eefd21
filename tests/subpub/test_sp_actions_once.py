"""Bound actions happen once: BC (and the emulator) refuse a second post or conversion, a lost
answer comes back UNKNOWN instead of being sent again, `Publisher.verify` reads BC to tell
whether it happened, and a create without a key field is refused unless asked for."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from bcbridge.client import BusinessCentralClient
from bcbridge.config import RetryPolicy
from bcbridge.errors import BCAPIError, ConfigError
from bcbridge.publisher import Outcome, Publisher, RecordResult, Verdict, Verification
from bcbridge.sync import Client
from bcbridge.testing import RunningEmulator
from tests.subpub.conftest import settings, with_client

LOST_AFTER: dict[str, Any] = {"kind": "drop", "after": True, "path_contains": "$batch", "count": 1}
LOST_BEFORE: dict[str, Any] = {"kind": "drop", "path_contains": "$batch", "count": 1}


@pytest.fixture(autouse=True)
def no_faults_left(emulator: RunningEmulator) -> Iterator[None]:
    yield
    emulator.clear_faults()


@pytest.fixture
def bc(emulator: RunningEmulator) -> Iterator[Client]:
    client = Client(settings(emulator))
    yield client
    client.close()


def company(emulator: RunningEmulator) -> str:
    return f"companies({emulator.info.company_id()})"


def new_document(bc: Client, emulator: RunningEmulator, entity: str) -> dict[str, Any]:
    lines = {"salesInvoices": "salesInvoiceLines", "salesQuotes": "salesQuoteLines"}[entity]
    body = {"customerNumber": "C00010", lines: [{"lineObjectNumber": "I00010", "quantity": 2}]}
    created: dict[str, Any] = bc.request("POST", f"{company(emulator)}/{entity}", json=body).json()
    return created


def count(bc: Client, emulator: RunningEmulator, entity: str) -> int:
    return len(list(bc.iter_records(f"{company(emulator)}/{entity}")))


def act(
    emulator: RunningEmulator,
    entity: str,
    action: str,
    records: list[dict[str, Any]],
    **options: Any,
) -> tuple[list[RecordResult], list[Verification]]:
    """Run `action` on `records` with a Publisher, then ask it whether BC carried it out."""

    async def work(client: BusinessCentralClient) -> tuple[list[RecordResult], list[Verification]]:
        publisher = Publisher(client, entity, action, key="{id}", **options)
        results = [result async for result in publisher.publish(records)]
        return results, await publisher.verify(records)

    result: tuple[list[RecordResult], list[Verification]] = with_client(emulator, work)
    return result


def test_the_emulator_converts_a_quote_once_as_bc_does(
    bc: Client, emulator: RunningEmulator
) -> None:
    quote = new_document(bc, emulator, "salesQuotes")
    invoices = count(bc, emulator, "salesInvoices")
    url = f"{company(emulator)}/salesQuotes({quote['id']})"
    assert bc.request("POST", f"{url}/Microsoft.NAV.makeInvoice").status_code == 204
    assert count(bc, emulator, "salesInvoices") == invoices + 1
    with pytest.raises(BCAPIError) as gone:  # BC deletes the quote it converts
        bc.request("GET", url)
    assert gone.value.status == 404
    with pytest.raises(BCAPIError) as again:
        bc.request("POST", f"{url}/Microsoft.NAV.makeInvoice")
    assert (again.value.status, again.value.code) == (404, "Internal_RecordNotFound")
    assert count(bc, emulator, "salesInvoices") == invoices + 1


def test_the_emulator_posts_an_invoice_once_as_bc_does(
    bc: Client, emulator: RunningEmulator
) -> None:
    invoice = new_document(bc, emulator, "salesInvoices")
    url = f"{company(emulator)}/salesInvoices({invoice['id']})"
    assert bc.request("POST", f"{url}/Microsoft.NAV.post").status_code == 204
    with pytest.raises(BCAPIError) as again:
        bc.request("POST", f"{url}/Microsoft.NAV.post")
    assert (again.value.status, again.value.code) == (400, "Application_DialogException")
    assert again.value.message.startswith("The action can be applied to a draft invoice only.")


def test_a_lost_answer_is_unknown_not_resent_and_bc_tells_what_happened(
    bc: Client, emulator: RunningEmulator
) -> None:
    drafts = [{"id": new_document(bc, emulator, "salesInvoices")["id"]} for _ in range(3)]
    emulator.fault(**LOST_AFTER)  # posted, answer lost
    results, checks = act(emulator, "salesInvoices", "post", drafts)
    assert {r.outcome for r in results} == {Outcome.UNKNOWN}
    assert not any(r.ok for r in results)
    assert "the answer was lost" in str(results[0].message)
    assert [c.verdict for c in checks] == [Verdict.DONE] * 3
    assert "Open" in checks[0].reason and checks[0].id == drafts[0]["id"]
    assert emulator.stats()["by_status"]["dropped"] == 1

    quotes = [{"id": new_document(bc, emulator, "salesQuotes")["id"]} for _ in range(2)]
    emulator.fault(**LOST_BEFORE)  # the connection broke before BC acted
    results, checks = act(emulator, "salesQuotes", "makeInvoice", quotes)
    assert {r.outcome for r in results} == {Outcome.UNKNOWN}
    assert [c.verdict for c in checks] == [Verdict.NOT_DONE] * 2
    results, checks = act(emulator, "salesQuotes", "makeInvoice", quotes)
    assert {r.outcome for r in results} == {Outcome.DONE}
    assert [c.verdict for c in checks] == [Verdict.DONE] * 2


def test_an_action_bc_keeps_no_trace_of_is_unknown_to_verify(
    bc: Client, emulator: RunningEmulator
) -> None:
    quote = {"id": new_document(bc, emulator, "salesQuotes")["id"]}
    emulator.fault(**LOST_AFTER)
    results, checks = act(emulator, "salesQuotes", "send", [quote])
    assert results[0].outcome is Outcome.UNKNOWN
    assert checks[0].verdict is Verdict.UNKNOWN and "send" in checks[0].reason


def test_an_action_bc_refused_before_acting_fails_and_can_be_sent_again(
    bc: Client, emulator: RunningEmulator
) -> None:
    quote = {"id": new_document(bc, emulator, "salesQuotes")["id"]}
    emulator.fault(kind="status", status=503, path_contains="$batch", count=2)
    quick = RetryPolicy(max_attempts=2, backoff_base=0.01, retry_after_max=0)

    async def work(client: BusinessCentralClient) -> list[RecordResult]:
        client.settings.retry = quick
        publisher = Publisher(client, "salesQuotes", "makeInvoice", key="{id}")
        return [result async for result in publisher.publish([quote])]

    [result] = with_client(emulator, work)
    assert result.outcome is Outcome.FAILED and result.code == "NotSent"
    assert "503" in str(result.message)


def test_a_create_without_a_key_field_needs_allow_duplicates(emulator: RunningEmulator) -> None:
    async def work(client: BusinessCentralClient) -> list[RecordResult]:
        with pytest.raises(ConfigError, match="no idempotency keys") as refused:
            Publisher(client, "itemCategories", "create")
        assert refused.value.field == "key_field"
        assert "allow_duplicates=True" in str(refused.value)
        publisher = Publisher(client, "itemCategories", "create", allow_duplicates=True)
        return [result async for result in publisher.publish([{"code": "DUP-OK"}])]

    [result] = with_client(emulator, work)
    assert result.outcome is Outcome.CREATED


def test_push_refuses_a_create_without_a_key_field(emulator: RunningEmulator) -> None:
    env = {**os.environ, **emulator.info.env(), "BC_COMPANY": "CRONUS USA, Inc."}
    pushed = subprocess.run(
        [sys.executable, "-m", "bcbridge", "push", "contacts", "--action", "create"],
        env=env,
        input='{"displayName": "Twice?"}\n',
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert pushed.returncode != 0
    assert "no idempotency keys" in pushed.stderr and "Traceback" not in pushed.stderr
