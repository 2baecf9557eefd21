"""`bcbridge subscriptions list|create|renew|delete`: the webhook subscriptions of a project's
incoming with `trigger: webhook`, for inspecting and repairing by hand (`bcbridge serve` keeps
them by itself). The clientState is a secret: it is never shown, and the store keeps only its
digest."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import typer
from rich.markup import escape
from rich.table import Table

from bcbridge.cli._common import print_json, print_table, stderr
from bcbridge.cli._settings import fail
from bcbridge.cli.flows import JSON_OPTION, PROJECT_OPTION
from bcbridge.client import BusinessCentralClient
from bcbridge.errors import BCBridgeError, ConfigError
from bcbridge.flowconfig import PUBLIC_URL_ENV, ProjectConfig, check_public_url, find_config
from bcbridge.flowconfig import load_project as load_project_file
from bcbridge.store import Store
from bcbridge.webhooks import SubscriptionManager, WebhookStore

group = typer.Typer(
    help="Webhook subscriptions in BC of the incoming with trigger: webhook.",
    no_args_is_help=True,
)
INCOMING_ARGUMENT = typer.Argument(..., help="A webhook incoming of the project.")
PUBLIC_URL_OPTION = typer.Option(
    None,
    "--public-url",
    envvar=PUBLIC_URL_ENV,
    help="Where BC reaches `bcbridge serve` (default: serve.public_url of the project).",
)


def _with_manager(
    config: Path | None,
    public_url: str | None,
    work: Callable[[SubscriptionManager, Callable[[str], Awaitable[BusinessCentralClient]]], Any],
) -> Any:
    """Run `work` with the project's subscription manager and its BC clients; an expected
    error ends the command with its one line and exit code."""
    try:
        project = load_project_file(find_config(config))
        if public_url is not None:
            try:
                public_url = check_public_url(public_url)
            except ValueError as exc:
                raise ConfigError(f"--public-url: {exc}") from None
        store = Store(project.store)
    except BCBridgeError as exc:
        raise fail(exc) from None
    manager = SubscriptionManager(
        project, WebhookStore(store), public_url or project.serve.public_url
    )
    try:
        return anyio.run(_run, project, manager, work)
    except BCBridgeError as exc:
        raise fail(exc) from None
    finally:
        store.close()


async def _run(
    project: ProjectConfig,
    manager: SubscriptionManager,
    work: Callable[[SubscriptionManager, Callable[[str], Awaitable[BusinessCentralClient]]], Any],
) -> Any:
    async with AsyncExitStack() as stack:
        opened: dict[str, BusinessCentralClient] = {}

        async def client(name: str) -> BusinessCentralClient:
            if name not in opened:
                made = BusinessCentralClient(project.client_settings(name))
                opened[name] = await stack.enter_async_context(made)
            return opened[name]

        return await work(manager, client)


@group.command("list")
def subscriptions_list(
    config: Path | None = PROJECT_OPTION,
    json_output: bool = JSON_OPTION,
) -> None:
    """Each webhook incoming with its subscription: id, expiry, whether BC still has it, how
    many notifications with a wrong clientState were refused.

    --json prints a JSON array, one object per incoming: {"incoming": "customers",
    "subscriptionId": "..." or null, "expirationDateTime": "...", "inBC": true, "refused": 0}
    """

    async def work(
        manager: SubscriptionManager, client: Callable[[str], Awaitable[BusinessCentralClient]]
    ) -> list[dict[str, Any]]:
        rows = []
        for name, incoming in manager.project.webhook_incoming().items():
            row = manager.store.subscription(name)
            found: dict[str, Any] = {"incoming": name, "subscriptionId": None, "inBC": False}
            if row is not None and row.subscription_id:
                found.update(row.as_json())
                found["inBC"] = await manager.in_bc(await client(incoming.client), row)
            rows.append(found)
        return rows

    rows: list[dict[str, Any]] = _with_manager(config, None, work)
    if json_output:
        print_json(rows)
        return
    if not rows:
        stderr.print("no incoming with trigger: webhook in the project")
        return
    table = Table("Incoming", "Subscription", "Expires", "In BC", "Refused")
    for row in rows:
        table.add_row(
            escape(row["incoming"]),
            row["subscriptionId"] or "-",
            _when(row.get("expirationDateTime")),
            "yes" if row["inBC"] else "no",
            str(row.get("refused", 0)),
        )
    print_table(table)


def _when(text: str | None) -> str:
    if not text:
        return "-"
    moment = datetime.fromisoformat(text)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@group.command("create")
def subscriptions_create(
    incoming: str = INCOMING_ARGUMENT,
    config: Path | None = PROJECT_OPTION,
    public_url: str | None = PUBLIC_URL_OPTION,
) -> None:
    """A new subscription for INCOMING (the one it had is deleted in BC first). BC shakes
    hands with <public_url>/webhooks/INCOMING: `bcbridge serve` must be reachable there.

    Example: bcbridge subscriptions create customers --config bcbridge.yaml
    """

    async def work(
        manager: SubscriptionManager, client: Callable[[str], Awaitable[BusinessCentralClient]]
    ) -> None:
        bc = await client(_webhook_client(manager, incoming))
        old = manager.store.subscription(incoming)
        if old is not None and old.subscription_id:
            await manager.delete(bc, old)
        row = await manager.create(bc, incoming)
        stderr.print(f"created {row.subscription_id}, expires {_when(row.expires_at.isoformat())}")

    _with_manager(config, public_url, work)


@group.command("renew")
def subscriptions_renew(
    incoming: str = INCOMING_ARGUMENT,
    config: Path | None = PROJECT_OPTION,
) -> None:
    """Renew INCOMING's subscription now (PATCH with If-Match; BC shakes hands again)."""

    async def work(
        manager: SubscriptionManager, client: Callable[[str], Awaitable[BusinessCentralClient]]
    ) -> None:
        bc = await client(_webhook_client(manager, incoming))
        row = _known(manager, incoming)
        row = await manager.renew(bc, row)
        stderr.print(f"renewed {row.subscription_id}, expires {_when(row.expires_at.isoformat())}")

    _with_manager(config, None, work)


@group.command("delete")
def subscriptions_delete(
    incoming: str = INCOMING_ARGUMENT,
    config: Path | None = PROJECT_OPTION,
) -> None:
    """Delete INCOMING's subscription in BC and forget it (a running `bcbridge serve` creates
    a new one at its next look, if the incoming still has trigger: webhook)."""

    async def work(
        manager: SubscriptionManager, client: Callable[[str], Awaitable[BusinessCentralClient]]
    ) -> None:
        row = manager.store.subscription(incoming)
        if row is None:
            raise ConfigError(f"incoming {incoming!r} has no subscription", field="incoming")
        known = manager.project.incoming.get(incoming)
        bc = await client(known.client if known else "default")
        await manager.delete(bc, row)
        stderr.print(f"deleted {row.subscription_id}")

    _with_manager(config, None, work)


def _webhook_client(manager: SubscriptionManager, incoming: str) -> str:
    """The client of a webhook incoming (a ConfigError naming the valid ones otherwise)."""
    return manager.incoming_config(incoming).client


def _known(manager: SubscriptionManager, incoming: str) -> Any:
    row = manager.store.subscription(incoming)
    if row is None or not row.subscription_id:
        raise ConfigError(
            f"incoming {incoming!r} has no subscription yet: `bcbridge subscriptions create "
            f"{incoming}` makes one",
            field="incoming",
        )
    return row


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="subscriptions")
