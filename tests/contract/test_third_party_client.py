"""A Business Central client that is not ours, bc-cli (PyPI ``bc-cli``, import ``bcli``), against
the emulator over real HTTPS with a real MSAL token (issue 13; docs/third-party-client.md).

bc-cli is used as published. Only what points it at Business Central is changed: its base URL
(``bcli._url.BC_BASE_URL``) and the hosts it lets a bearer token go to
(``bcli._url._ALLOWED_HOST_SUFFIXES``), which are module constants; the CA that signs the
emulator's certificate (``SSL_CERT_FILE``, read by httpx); and the login: its own
client-credentials provider builds MSAL against login.microsoftonline.com, so the token comes from
an MSAL app pointed at the emulator's authority, handed to bc-cli through its ``auth=`` provider.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msal
import pytest

from bcbridge.emulator.process import RunningEmulator, msal_http_client

bcli = pytest.importorskip("bcli", reason="bc-cli is a dev extra (pip install -e '.[dev]')")
from bcli import AsyncBCClient  # noqa: E402
from bcli.errors import BCLIError  # noqa: E402
from bcli.registry._importers import import_from_metadata  # noqa: E402


class EmulatorLogin:
    """bc-cli's `AuthProvider`: client credentials through MSAL, at the emulator's authority."""

    def __init__(self, emulator: RunningEmulator):
        info = emulator.info
        self.scope = info.scope
        self.app = msal.ConfidentialClientApplication(
            info.client_id,
            client_credential=info.client_secret,
            authority=info.authority,
            validate_authority=False,
            instance_discovery=False,
            http_client=msal_http_client(info.ca_bundle),
        )
        self.tokens_issued = 0

    async def get_access_token(self) -> str:
        result = await asyncio.to_thread(self.app.acquire_token_for_client, [self.scope])
        assert "access_token" in result, result
        self.tokens_issued += result.get("token_source") == "identity_provider"
        return str(result["access_token"])

    def clear_cache(self) -> None:
        for account in self.app.get_accounts():
            self.app.remove_account(account)


@pytest.fixture
def pointed_at(bc_emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch) -> RunningEmulator:
    """bc-cli's base URL, token host allowlist and trusted CA set to the emulator's."""
    info = bc_emulator.info
    monkeypatch.setattr(bcli._url, "BC_BASE_URL", f"{info.base_url}/v2.0")
    host = urlsplit(info.base_url).hostname
    monkeypatch.setattr(bcli._url, "_ALLOWED_HOST_SUFFIXES", (host,))
    monkeypatch.setenv("SSL_CERT_FILE", info.ca_bundle)
    return bc_emulator


@pytest.fixture
def login(pointed_at: RunningEmulator) -> EmulatorLogin:
    return EmulatorLogin(pointed_at)


def client(emulator: RunningEmulator, login: EmulatorLogin) -> AsyncBCClient:
    info = emulator.info
    return AsyncBCClient(
        tenant_id=info.tenant_id,
        client_id=info.client_id,
        environment=info.environment,
        company_id=info.company_id(),
        auth=login,
    )


def test_reads_companies_lists_and_filters(
    pointed_at: RunningEmulator, login: EmulatorLogin
) -> None:
    async def run() -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
        async with client(pointed_at, login) as bc:
            companies = await bc.list_companies()
            first = (await bc.query("customers").top(1).get())[0]
            query = bc.query("customers").filter(f"city eq '{first['city']}'")
            found = await query.select("number", "city").orderby("number desc").top(5).get()
            one = await bc.get("customers", first["id"])
            return companies, found, one.raw

    companies, found, one = asyncio.run(run())
    assert one["id"] and one["@odata.etag"].startswith('W/"')
    assert {c["name"] for c in companies} == {c["name"] for c in pointed_at.info.companies}
    assert found and len({row["city"] for row in found}) == 1
    assert [row["number"] for row in found] == sorted((r["number"] for r in found), reverse=True)
    assert login.tokens_issued >= 1


def test_create_update_with_etag_and_delete(
    pointed_at: RunningEmulator, login: EmulatorLogin
) -> None:
    async def run() -> None:
        async with client(pointed_at, login) as bc:
            created = await bc.post("items", {"displayName": "bc-cli widget", "unitPrice": 12.5})
            assert created["displayName"] == "bc-cli widget" and created["number"]
            changed = await bc.patch(
                "items", created["id"], {"unitPrice": 14}, etag=created["@odata.etag"]
            )
            assert changed["unitPrice"] == 14
            assert changed["@odata.etag"] != created["@odata.etag"]
            with pytest.raises(BCLIError, match=r"409|changed"):  # the ETag is stale now
                await bc.patch(
                    "items", created["id"], {"unitPrice": 1}, etag=created["@odata.etag"]
                )
            await bc.delete("items", created["id"], etag=changed["@odata.etag"])
            remaining = await bc.query("items").filter(f"id eq {created['id']}").get()
            assert remaining == []

    asyncio.run(run())


def test_reads_metadata(pointed_at: RunningEmulator, login: EmulatorLogin) -> None:
    async def run() -> list[Any]:
        async with client(pointed_at, login) as bc:
            return await import_from_metadata(
                bc._ensure_transport(), pointed_at.info.environment, "", "", ""
            )

    endpoints = {e.entity_set_name: e for e in asyncio.run(run())}
    assert {"customers", "salesInvoices", "attachments", "pictures", "pdfDocument"} <= set(
        endpoints
    )
    assert {"number", "displayName", "balanceDue"} <= set(endpoints["customers"].field_names)


def test_attachment_upload_and_media_downloads(
    pointed_at: RunningEmulator, login: EmulatorLogin, tmp_path: Path
) -> None:
    source = tmp_path / "terms.txt"
    source.write_bytes(b"Payment within 30 days.\n")

    async def run() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        async with client(pointed_at, login) as bc:
            customer = (await bc.query("customers").top(1).get())[0]
            uploaded = await bc.upload_attachment("Customer", customer["id"], source)
            attachment = await bc.get_media(
                "documentAttachments", uploaded["id"], tmp_path / "back.txt"
            )
            invoice = (await bc.query("salesInvoices").top(1).get())[0]
            pdf = await bc.get_media("pdfDocument", invoice["id"], tmp_path / "invoice.pdf")
            return uploaded, attachment, pdf

    uploaded, attachment, pdf = asyncio.run(run())
    assert uploaded["byteSize"] == source.stat().st_size and uploaded["record"]
    assert (tmp_path / "back.txt").read_bytes() == source.read_bytes()
    assert attachment["media_field"] == "attachmentContent"
    assert pdf["media_field"] == "pdfDocumentContent"
    assert pdf["content_type"] == "application/pdf"
    assert (tmp_path / "invoice.pdf").read_bytes().startswith(b"%PDF-")
