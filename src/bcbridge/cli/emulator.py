"""`bcbridge emulator`: a local Business Central for tests, demos and CI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from bcbridge.emulator.config import EmulatorConfig, default_state_dir, describe, flag_name


def _show(info: dict[str, Any]) -> None:
    console = Console()
    table = Table(title="Business Central emulator", show_header=False)
    for label, key in (
        ("Base URL", "base_url"),
        ("Authority URL", "authority_url"),
        ("Tenant", "tenant_id"),
        ("Environment", "environment"),
        ("API root", "api_root"),
        ("Client id", "client_id"),
        ("Client secret", "client_secret"),
        ("CA bundle", "ca_bundle"),
    ):
        table.add_row(label, str(info[key]))
    for company in info["companies"]:
        table.add_row("Company", f"{company['name']}  ({company['id']})")
    console.print(table)
    console.print("Press Ctrl-C to stop.")


def emulator(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8080, help="Port; 0 picks a free one."),
    seed: int = typer.Option(1, help="Seed for the deterministic demo data and credentials."),
    scale: str = typer.Option("", help="Row counts, e.g. customers=100000,items=500."),
    token_lifetime: int = typer.Option(3599, help="Access-token lifetime, 1..86400 seconds."),
    latency_ms: int = typer.Option(0, help="Added latency per API request, 0..60000 ms."),
    rate_limit: str = typer.Option(
        "6000/300", help="REQUESTS/SECONDS per principal (>= 1 request, 0 < SECONDS <= 86400)."
    ),
    max_concurrent: int = typer.Option(5, help="Requests processed at once per principal (>= 1)."),
    max_queue: int = typer.Option(95, help="Requests waiting per principal before 429 (>= 0)."),
    data: Path | None = typer.Option(None, help="SQLite file to keep data in (default: memory)."),
    state_dir: Path = typer.Option(default_state_dir, help="Where the CA and keys are kept."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON line for scripts."),
) -> None:
    """Start a local Business Central API v2.0 with an Entra-style token endpoint.

    Example: bcbridge emulator --port 0 --scale customers=10000 --json
    """
    from bcbridge.emulator.server import announce_json, run

    try:
        config = EmulatorConfig.model_validate(
            {
                "host": host,
                "port": port,
                "seed": seed,
                "scale": scale,
                "token_lifetime": token_lifetime,
                "latency_ms": latency_ms,
                "rate_limit": rate_limit,
                "max_concurrent": max_concurrent,
                "max_queue": max_queue,
                "data": data,
                "state_dir": state_dir,
            }
        )
    except ValidationError as exc:
        typer.echo(f"error: {describe(exc, label=flag_name)}", err=True)
        raise typer.Exit(2) from None
    run(config, announce_json if as_json else _show)


def register(app: typer.Typer) -> None:
    app.command("emulator")(emulator)
