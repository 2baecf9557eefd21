"""How every command that talks to BC gets its client settings: --config, flags, BC_* variables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from bcbridge import _redact
from bcbridge.config import ClientSettings
from bcbridge.errors import ConfigError, exit_code

CONFIG_OPTION = typer.Option(
    None, "--config", help="YAML file with client settings (a `clients:` map or one client)."
)


def load_settings(config: Path | None, client: str | None = None, **flags: Any) -> ClientSettings:
    """Flags win over the file, the file over the BC_* environment."""
    if config is None:
        return ClientSettings.from_env(**flags)
    from bcbridge.config import (
        anchor_settings_paths,
        did_you_mean,
        load_yaml,
        validate_settings,
    )

    data, lines = load_yaml(config)
    prefix: str | None = None
    if "clients" in data:
        clients = data["clients"] or {}
        if not isinstance(clients, dict):
            raise ConfigError(
                "expected a mapping of client names, e.g. clients: {bc: {tenant_id: ..., "
                "client_id: ..., client_secret: ${BC_CLIENT_SECRET}}}",
                source=str(config),
                field="clients",
            )
        name = client or next(iter(clients), None)
        if name is None:
            raise ConfigError(
                "no clients defined: add one, e.g. clients: {bc: {tenant_id: ..., client_id: "
                "..., client_secret: ${BC_CLIENT_SECRET}}}",
                source=str(config),
                field="clients",
            )
        if name not in clients:
            raise ConfigError(
                f"no client named {name!r}{did_you_mean(name, list(clients))}",
                source=str(config),
                field="clients",
            )
        data, prefix = clients[name], f"clients.{name}"
        if not isinstance(data, dict):
            raise ConfigError(
                "expected a mapping of settings (tenant_id: ..., client_id: ..., ...)",
                source=str(config),
                field=prefix,
            )
    # the file's relative paths (ca_bundle, ...) are next to it; a flag's, in the current folder
    data = anchor_settings_paths(data, config.resolve().parent)
    values = {**data, **{k: v for k, v in flags.items() if v is not None}}
    return validate_settings(values, source=str(config), lines=lines, prefix=prefix)


def fail(error: BaseException) -> typer.Exit:
    """Print an expected error (secrets masked) without a traceback; exit with its documented
    code (`bcbridge.errors.exit_code`: 2 for configuration and input, 3 for BC, 4 busy)."""
    typer.secho(f"error: {_redact.text(str(error))}", fg=typer.colors.RED, err=True)
    return typer.Exit(exit_code(error))
