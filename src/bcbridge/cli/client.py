"""`bcbridge client grant|check|logout`: obtain a token, show it redacted, prove it against BC;
forget the cached tokens."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import anyio
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bcbridge.cli._common import print_json, print_table
from bcbridge.cli._settings import CONFIG_OPTION, fail, load_settings
from bcbridge.client import BusinessCentralClient, GrantResult
from bcbridge.config import ClientSettings
from bcbridge.errors import BCBridgeError

group = typer.Typer(help="Check access to Business Central.", no_args_is_help=True)


def _settings(
    config: Path | None,
    base_url: str | None,
    authority_url: str | None,
    tenant: str | None,
    environment: str | None,
    client_id: str | None,
    client_secret: str | None,
    ca_bundle: Path | None,
) -> ClientSettings:
    return load_settings(
        config,
        base_url=base_url,
        authority_url=authority_url,
        tenant_id=tenant,
        environment=environment,
        client_id=client_id,
        client_secret=client_secret,
        ca_bundle=ca_bundle,
    )


async def _grant(settings: ClientSettings) -> GrantResult:
    async with BusinessCentralClient(settings) as bc:
        return await bc.grant()


def _run(settings_args: tuple[object, ...]) -> GrantResult:
    try:
        settings = _settings(*settings_args)  # type: ignore[arg-type]
        return anyio.run(_grant, settings)
    except BCBridgeError as exc:
        raise fail(exc) from None


BASE_URL = typer.Option(None, "--base-url", help="BC API base URL (BC_BASE_URL).")
AUTHORITY = typer.Option(None, "--authority-url", help="Entra authority URL (BC_AUTHORITY_URL).")
TENANT = typer.Option(None, "--tenant", help="Tenant id (BC_TENANT_ID).")
ENVIRONMENT = typer.Option(None, "--environment", help="BC environment (BC_ENVIRONMENT).")
CLIENT_ID = typer.Option(None, "--client-id", help="App (client) id (BC_CLIENT_ID).")
SECRET = typer.Option(None, "--client-secret", help="Prefer BC_CLIENT_SECRET: flags show in ps.")
CA = typer.Option(None, "--ca-bundle", help="CA file to trust, e.g. the emulator's (BC_CA_BUNDLE).")
JSON = typer.Option(False, "--json", help="One JSON object on stdout (shape above).")


@group.command()
def grant(
    config: Path | None = CONFIG_OPTION,
    base_url: str | None = BASE_URL,
    authority_url: str | None = AUTHORITY,
    tenant: str | None = TENANT,
    environment: str | None = ENVIRONMENT,
    client_id: str | None = CLIENT_ID,
    client_secret: str | None = SECRET,
    ca_bundle: Path | None = CA,
    json_output: bool = JSON,
) -> None:
    """Obtain a token, show it (redacted) with its claims, and list the companies it reaches.

    Example: BC_TENANT_ID=... BC_CLIENT_ID=... BC_CLIENT_SECRET=... bcbridge client grant

    --json: {"token": "eyJ0eX…c2lnbm", "expires_at": "2026-01-31T13:00:00+00:00",
    "claims": {"aud": "...", "roles": [...], "appid": "...", "tid": "..."},
    "companies": [{"name": "CRONUS USA, Inc.", "id": "..."}]} (the token is never whole)
    """
    result = _run(
        (config, base_url, authority_url, tenant, environment, client_id, client_secret, ca_bundle)
    )
    if json_output:
        print_json(_grant_json(result))
        return
    console = Console()
    table = Table(title="Access granted", show_header=False)
    table.add_row("Token", result.token)
    table.add_row(
        "Expires", datetime.fromtimestamp(result.expires_at, UTC).isoformat(timespec="seconds")
    )
    for claim in ("aud", "roles", "appid", "tid"):
        table.add_row(claim, str(result.claims.get(claim, "")))
    console.print(table)
    companies = Table(title="Companies reached")
    companies.add_column("Name", no_wrap=True)  # what --company takes: never cut
    companies.add_column("Id", no_wrap=True)
    for company in result.companies:
        companies.add_row(escape(company.name), company.id)
    print_table(companies)


def _grant_json(result: GrantResult) -> dict[str, object]:
    return {
        "token": result.token,  # redacted by grant(): its first and last characters only
        "expires_at": datetime.fromtimestamp(result.expires_at, UTC).isoformat(),
        "claims": {claim: result.claims.get(claim) for claim in ("aud", "roles", "appid", "tid")},
        "companies": [{"name": company.name, "id": company.id} for company in result.companies],
    }


@group.command()
def check(
    config: Path | None = CONFIG_OPTION,
    base_url: str | None = BASE_URL,
    authority_url: str | None = AUTHORITY,
    tenant: str | None = TENANT,
    environment: str | None = ENVIRONMENT,
    client_id: str | None = CLIENT_ID,
    client_secret: str | None = SECRET,
    ca_bundle: Path | None = CA,
    json_output: bool = JSON,
) -> None:
    """Like grant, quietly: one line, exit code 0 when BC accepts the app.

    Example: bcbridge client check --config bcbridge.yaml && echo ok

    --json: {"ok": true, "companies": 2}. A failure prints nothing on stdout: one line on
    stderr, exit code 2 (settings) or 3 (sign-in refused, BC or network).
    """
    result = _run(
        (config, base_url, authority_url, tenant, environment, client_id, client_secret, ca_bundle)
    )
    if json_output:
        print_json({"ok": True, "companies": len(result.companies)})
        return
    typer.echo(f"ok: {len(result.companies)} companies reached")


@group.command()
def logout() -> None:
    """Forget the cached tokens of every client (in $XDG_CACHE_HOME/bcbridge, else
    ~/.cache/bcbridge): the next command signs in again.

    Example: bcbridge client logout
    """
    from bcbridge.auth import forget_tokens, user_cache_folder

    folder = user_cache_folder()
    gone = forget_tokens(folder)
    typer.echo(f"signed out: {len(gone)} cached token file(s) removed from {folder}")


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="client")
