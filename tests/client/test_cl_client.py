"""The client against the emulator: auth errors, token renewal, limits, faults, logging, batch.

Most tests use the in-process emulator; MSAL's errors and renewals, and the CLI, use the
emulator process (real MSAL over TLS, real sockets).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from bcbridge.auth import StaticToken
from bcbridge.client import BatchOperation, BusinessCentralClient
from bcbridge.config import ClientSettings, RateLimit, RetryPolicy
from bcbridge.errors import (
    AuthError,
    ConfigError,
    NextLinkLoop,
    NotFound,
    TransportError,
    Unauthorized,
    ValidationFailed,
)
from bcbridge.sync import Client
from bcbridge.testing import EmulatorControl, InProcessEmulator, RunningEmulator, emulator_app


def run(coro_fn: Any, *args: Any) -> Any:
    return anyio.run(coro_fn, *args)


def _customer_ids(
    emulator: EmulatorControl, company: str, page_size: int, **overrides: Any
) -> list[str]:
    ids: list[str] = run(_pull_ids, emulator.client(**overrides), company, page_size)
    return ids


async def _pull_ids(bc: BusinessCentralClient, company: str, page_size: int) -> list[str]:
    async with bc:
        path = f"companies({company})/customers"
        return [
            r["id"]
            async for r in bc.iter_records(path, params={"$select": "id"}, page_size=page_size)
        ]


def test_each_auth_failure_has_its_own_clear_error(bc_emulator: RunningEmulator) -> None:
    info = bc_emulator.info  # real MSAL: its error answers become AuthError

    async def companies(settings: ClientSettings) -> None:
        async with BusinessCentralClient(settings) as bc:
            await bc.companies()

    with pytest.raises(AuthError) as wrong:
        run(companies, bc_emulator.settings(client_secret="wrong-secret"))
    assert wrong.value.code == "AADSTS7000215" and "Value, not its ID" in str(wrong.value)
    with pytest.raises(AuthError) as unknown:
        run(companies, bc_emulator.settings(client_id="11111111-2222-3333-4444-555555555555"))
    assert unknown.value.code == "AADSTS700016"
    disabled = bc_emulator.settings(
        client_id=info.disabled_client_id, client_secret=info.disabled_client_secret
    )
    with pytest.raises(Unauthorized) as refused:
        run(companies, disabled)
    assert refused.value.code == "Authentication_InvalidCredentials"
    assert "Microsoft Entra Applications" in str(refused.value)


@pytest.mark.slow
def test_msal_tokens_are_renewed_before_they_expire(bc_emulator: RunningEmulator) -> None:
    """A token in the last tenth of its life is replaced before it is sent, not after a 401."""

    async def two_reads_across_most_of_a_token_life() -> None:
        async with bc_emulator.client() as bc:
            await bc.get_json("companies")
            await anyio.sleep(1.85)  # of a 2 s token: the last 0.15 s is inside the renewal margin
            await bc.get_json("companies")

    before = bc_emulator.stats()
    bc_emulator.configure(token_lifetime=2)
    try:
        run(two_reads_across_most_of_a_token_life)
    finally:
        bc_emulator.configure(token_lifetime=3599)
    after = bc_emulator.stats()
    assert after["tokens_issued"] - before["tokens_issued"] == 2
    assert after["by_status"].get("401", 0) == before["by_status"].get("401", 0)


def test_a_client_reads_customers_over_asgi_transport_with_a_static_token() -> None:
    app, info = emulator_app()
    token = StaticToken(app.identity.issue(info.client_id))  # signed with the emulator's key
    path = f"companies({info.company_id()})/customers"

    async def customers() -> tuple[list[dict[str, Any]], int]:
        settings = ClientSettings.from_env(info.env())
        transport = httpx.ASGITransport(app)
        async with BusinessCentralClient(settings, auth=token, transport=transport) as bc:
            counted = await bc.get_json(path, {"$count": "true", "$top": 0})
            return [r async for r in bc.iter_records(path, page_size=7)], counted["@odata.count"]

    try:
        records, count = run(customers)
    finally:
        app.service.close()
    assert count > 7 and len({r["id"] for r in records}) == count


def test_a_refused_static_token_is_sent_twice_then_reported(
    inprocess_emulator: InProcessEmulator,
) -> None:
    before = inprocess_emulator.stats()["by_status"].get("401", 0)

    async def companies() -> None:
        settings = inprocess_emulator.settings()
        transport = inprocess_emulator.transport()
        forged = StaticToken("not-a-token-bc-accepts")
        async with BusinessCentralClient(settings, auth=forged, transport=transport) as bc:
            await bc.companies()

    with pytest.raises(Unauthorized, match="Microsoft Entra Applications"):
        run(companies)
    assert inprocess_emulator.stats()["by_status"]["401"] - before == 2


def test_in_process_tokens_get_entra_errors_too(inprocess_emulator: InProcessEmulator) -> None:
    async def companies() -> None:
        async with inprocess_emulator.client(client_secret="wrong-secret") as bc:
            await bc.companies()

    with pytest.raises(AuthError) as wrong:
        run(companies)
    assert wrong.value.code == "AADSTS7000215"


def test_the_bc_client_fixture_serves_one_event_loop_after_another(
    bc_client: BusinessCentralClient, inprocess_emulator: InProcessEmulator
) -> None:
    expected = [c["id"] for c in inprocess_emulator.info.companies]
    for _ in range(2):  # each anyio.run is a new event loop; the client goes to BC each time
        companies = run(lambda: bc_client.companies(refresh=True))
        assert [c.id for c in companies] == expected


@pytest.mark.slow
def test_50000_records_across_token_renewals_without_duplicates_or_gaps(
    inprocess_emulator_factory: Callable[..., InProcessEmulator],
) -> None:
    emulator = inprocess_emulator_factory(scale="customers=50000", token_lifetime=3, latency_ms=60)
    ids = _customer_ids(emulator, emulator.info.company_id(), 1000)
    assert len(ids) == 50_000 and len(set(ids)) == 50_000
    assert emulator.stats()["by_status"].get("200", 0) >= 50


@pytest.mark.slow
def test_limits_matching_bc_see_no_429_and_mismatched_limits_lose_nothing(
    inprocess_emulator_factory: Callable[..., InProcessEmulator],
) -> None:
    emulator = inprocess_emulator_factory(scale="customers=800", rate_limit="20/2")
    company = emulator.info.company_id()
    matched = RateLimit(requests=20, per_seconds=2)
    assert len(_customer_ids(emulator, company, 25, rate_limit=matched)) == 800
    assert emulator.stats()["throttled"] == 0
    loose = RateLimit(requests=10_000, per_seconds=1)
    assert len(set(_customer_ids(emulator, company, 25, rate_limit=loose))) == 800
    assert emulator.stats()["throttled"] > 0


@pytest.mark.slow
def test_503s_and_dropped_connections_mid_run_are_survived(inprocess_emulator_factory) -> None:  # type: ignore[no-untyped-def]
    emulator = inprocess_emulator_factory(scale="customers=1000")
    company = emulator.info.company_id()

    async def pull_with_faults() -> list[str]:
        ids: list[str] = []
        async with emulator.client(retry=RetryPolicy(backoff_base=0.05)) as bc:
            async for page in bc.iter_pages(f"companies({company})/customers", page_size=100):
                ids += [r["id"] for r in page.records]
                if page.number == 2:
                    emulator.fault("status", count=2, status=503, retry_after=1)
                if page.number == 5:
                    emulator.fault("drop", count=2)
        return ids

    ids = run(pull_with_faults)
    assert len(ids) == 1000 and len(set(ids)) == 1000
    by_status = emulator.stats()["by_status"]
    assert by_status["503"] == 2 and by_status["dropped"] == 2


def test_a_create_is_not_repeated_after_a_dropped_connection(
    inprocess_emulator: InProcessEmulator,
) -> None:
    company = inprocess_emulator.info.company_id()

    async def create() -> None:
        async with inprocess_emulator.client() as bc:
            await bc.request(
                "POST", f"companies({company})/itemCategories", json={"code": "DROPPED"}
            )

    inprocess_emulator.fault("drop", path_contains="itemCategories", method="POST")
    with pytest.raises(TransportError) as dropped:
        run(create)
    assert len(dropped.value.attempts) == 1


def test_request_log_has_one_line_per_attempt_and_no_secret(
    inprocess_emulator: InProcessEmulator, tmp_path: Path
) -> None:
    emulator = inprocess_emulator
    log = tmp_path / "requests.log"
    company = emulator.info.company_id()

    async def work() -> str:
        async with emulator.client(log_requests=True, log_file=log) as bc:
            emulator.fault("status", status=503, retry_after=0)
            await bc.get_json(f"companies({company})/items", {"$top": 1})
            with pytest.raises(NotFound):
                await bc.get_json(
                    f"companies({company})/items(00000000-0000-0000-0000-0000000000ff)"
                )
            return await bc.auth.token()

    token = run(work)
    text = log.read_text()
    lines = text.splitlines()
    assert len(lines) >= 3 and '"status":503' in lines[0] and '"attempt":2' in lines[1]
    assert '"correlation_id":"' in lines[1]
    assert emulator.info.client_secret not in text and token not in text
    assert token[:20] not in text and "Bearer" not in text


def test_companies_resolve_by_exact_name_or_id(inprocess_emulator: InProcessEmulator) -> None:
    awkward = inprocess_emulator.info.companies[1]

    async def resolve(name: str) -> str:
        async with inprocess_emulator.client() as bc:
            return (await bc.resolve_company(name)).id

    assert run(resolve, awkward["name"]) == awkward["id"]
    assert run(resolve, awkward["id"].upper()) == awkward["id"]
    assert run(resolve, awkward["name"].upper()) == awkward["id"]
    with pytest.raises(ConfigError, match=r"matches no company.*Fabrikam"):
        run(resolve, "Fabrikam")


def test_a_company_made_after_the_list_was_read_is_found(
    inprocess_emulator_factory: Callable[..., InProcessEmulator],
) -> None:
    """A client kept open (a worker's, across its jobs) keeps the companies it read; a company
    it does not know is looked for again before it is refused."""
    emulator = inprocess_emulator_factory()

    async def resolve_before_and_after_a_new_seed() -> tuple[str, str]:
        async with emulator.client() as bc:
            before = (await bc.resolve_company("CRONUS USA, Inc.")).id
            emulator.seed(seed=2)  # every company is made again, under a new id
            async with emulator.client() as fresh:
                after = (await fresh.resolve_company("CRONUS USA, Inc.")).id
            return before, (await bc.resolve_company(after)).id

    before, after = run(resolve_before_and_after_a_new_seed)
    assert after != before


def test_batch_chunks_and_returns_one_result_per_operation(
    inprocess_emulator: InProcessEmulator,
) -> None:
    company = inprocess_emulator.info.company_id()

    def operations(prefix: str, count: int, bad_at: int) -> list[BatchOperation]:
        url = f"companies({company})/itemCategories"
        ops = [BatchOperation("POST", url, {"code": f"{prefix}{i}"}) for i in range(count)]
        ops.insert(bad_at, BatchOperation("POST", url, {"code": 7}))
        return ops

    async def send(ops: list[BatchOperation], continue_on_error: bool) -> list[Any]:
        async with inprocess_emulator.client() as bc:
            return await bc.batch(ops, continue_on_error=continue_on_error)

    results = run(send, operations("BT", 130, 60), True)
    assert len(results) == 131 and sum(r.ok for r in results) == 130
    assert isinstance(results[60].error, ValidationFailed)
    assert results[60].error.code == "BadRequest"
    stopped = run(send, operations("BS", 9, 5), False)
    assert [r.status for r in stopped[:5]] == [201] * 5
    assert stopped[5].status == 400 and all(r.status == 0 for r in stopped[6:])
    assert "not run" in str(stopped[6].error)


def test_sync_facade_mirrors_the_async_client(inprocess_emulator: InProcessEmulator) -> None:
    emulator = inprocess_emulator
    with Client(emulator.settings(), auth=emulator.auth(), transport=emulator.transport()) as bc:
        company = bc.resolve_company("CRONUS USA, Inc.")
        items = list(bc.iter_records(f"companies({company.id})/items", page_size=7))
        assert len(items) == len({i["id"] for i in items}) >= 50


def test_a_looping_next_link_is_refused() -> None:
    def loop(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"value": [], "@odata.nextLink": "https://bc.test/same"})

    settings = ClientSettings(
        tenant_id="t", client_id="c", client_secret="s", base_url="https://bc.test"
    )

    async def pull() -> None:
        async with BusinessCentralClient(
            settings, auth=StaticToken("x" * 40), transport=httpx.MockTransport(loop)
        ) as bc:
            async for _ in bc.iter_pages("https://bc.test/same"):
                pass

    with pytest.raises(NextLinkLoop, match=r"same @odata\.nextLink twice"):
        run(pull)


@pytest.mark.slow
def test_cli_grant_and_check(bc_emulator: RunningEmulator) -> None:
    import os

    env = {**os.environ, **bc_emulator.info.env()}
    cli = [sys.executable, "-m", "bcbridge", "client"]
    granted = subprocess.run([*cli, "grant"], env=env, capture_output=True, text=True, timeout=60)
    assert granted.returncode == 0, granted.stderr
    assert "CRONUS USA, Inc." in granted.stdout and "Fabrikam & O'Brien, Ltd." in granted.stdout
    assert bc_emulator.info.client_secret not in granted.stdout
    env["BC_CLIENT_SECRET"] = "wrong-secret"
    checked = subprocess.run([*cli, "check"], env=env, capture_output=True, text=True, timeout=60)
    assert checked.returncode == 3 and "AADSTS7000215" in checked.stderr
    assert "Traceback" not in checked.stderr
