"""`bcbridge init [FOLDER]`: a starter project that runs as written against the emulator."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer

from bcbridge.errors import EXIT_USAGE

PROJECT = """\
# bcbridge project. Check it with `bcbridge flows list`; run it with `bcbridge run`.
#
# The client settings come from the BC_* environment variables (see .env.example). For a
# local Business Central:   bcbridge emulator start --detach && eval "$(bcbridge emulator env)"
# Relative paths (the store, files, SQLite databases) are relative to this file.

# Where runs, cursors and one task per record are kept: any SQLAlchemy URL.
store: sqlite:///.bcbridge/state.db

# What to read from Business Central.
incoming:
  customers:
    entity: customers                     # an API v2.0 entity set
    company: "${BC_COMPANY:-CRONUS USA, Inc.}"
    cursor: lastModifiedDateTime          # incremental: each run reads what changed since the last
    params: {$select: "id,number,displayName,email,city,lastModifiedDateTime"}

# What to write to Business Central: an action on an entity set.
outgoing:
  items:
    entity: items
    company: "${BC_COMPANY:-CRONUS USA, Inc.}"
    action: upsert                        # create, update, upsert, delete, or a bound action
    key_field: number                     # upsert: update the item with this number, or create it

# Flows join a source (an incoming, or a file) to a target (an outgoing, or a file).
flows:
  customers_to_file:
    from: customers
    transform:                            # record transformer steps, applied in order
      - keep: [id, number, displayName, email, city]
    to: out/customers.jsonl               # .jsonl, .csv, or sqlite:///out/bc.db#customers
    schedule: 15m                         # for `bcbridge run --scheduled`

  # Items from a CSV file (columns number, displayName, unitPrice) into BC:
  # items_from_csv:
  #   from: items.csv
  #   transform:
  #     - convert: {unitPrice: decimal}
  #   to: items
"""

ENV_EXAMPLE = """\
# The settings every bcbridge command reads. Copy to .env (never commit it), fill in, then
#   set -a; . ./.env; set +a
# For the local emulator instead:  eval "$(bcbridge emulator env)"
# the app registration in Entra ID: directory (tenant) id, application (client) id, secret
BC_TENANT_ID=
BC_CLIENT_ID=
BC_CLIENT_SECRET=
BC_ENVIRONMENT=production
BC_COMPANY="CRONUS USA, Inc."
# Only for a Business Central other than Microsoft's (the emulator sets these three):
# BC_BASE_URL=https://api.businesscentral.dynamics.com
# BC_AUTHORITY_URL=https://login.microsoftonline.com
# BC_CA_BUNDLE=/path/to/ca.pem
"""

GITIGNORE = """\
# secrets, the run store, and what the flows write
.env
.bcbridge/
out/
"""

FILES = {"bcbridge.yaml": PROJECT, ".env.example": ENV_EXAMPLE, ".gitignore": GITIGNORE}


def init(
    folder: Path = typer.Argument(Path("."), help="Where to write the project (made if missing)."),
    force: bool = typer.Option(False, "--force", help="Overwrite files that already exist."),
) -> None:
    """Write a starter project: bcbridge.yaml, .env.example and .gitignore.

    The project's flow runs as written against the emulator.
    Example: bcbridge init my-project
    """
    if folder.exists() and not folder.is_dir():
        typer.echo(f"error: FOLDER: {folder} is a file; give a folder", err=True)
        raise typer.Exit(EXIT_USAGE)
    existing = [name for name in FILES if (folder / name).exists()]
    if existing and not force:
        names = ", ".join(str(folder / name) for name in existing)
        typer.echo(
            f"error: {names} already exist{'s' if len(existing) == 1 else ''}; nothing written "
            "(--force overwrites)",
            err=True,
        )
        raise typer.Exit(EXIT_USAGE)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in FILES.items():
            (folder / name).write_text(text)
    except OSError as exc:
        typer.echo(f"error: FOLDER: cannot write the project in {folder}: {exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    config = folder / "bcbridge.yaml"
    flag = "" if folder.resolve() == Path.cwd() else f" --config {shlex.quote(str(config))}"
    typer.echo(
        f"Wrote {', '.join(FILES)} in {folder}.\n"
        "Next, against a local Business Central:\n"
        '  bcbridge emulator start --detach && eval "$(bcbridge emulator env)"\n'
        f"  bcbridge run customers_to_file{flag}"
    )


def register(app: typer.Typer) -> None:
    app.command("init")(init)
