"""`bcbridge entities [NAME]` and `bcbridge companies`: what there is to pull and push, and where.

`entities` reads the catalog (`bcbridge.catalog`, the one list of entity sets), so it needs no
sign-in; `companies` asks BC.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import anyio
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bcbridge import _json, catalog
from bcbridge.catalog import EntitySet, Field, Operation
from bcbridge.cli._settings import CONFIG_OPTION, fail, load_settings
from bcbridge.client import BusinessCentralClient, Company
from bcbridge.errors import BCBridgeError, ConfigError

JSON_OPTION = typer.Option(False, "--json", help="Print JSON for programs instead of a table.")


def _complete_entity(incomplete: str) -> list[str]:
    from bcbridge.cli._complete import entity_names

    return entity_names(incomplete)


def entities(
    name: str | None = typer.Argument(
        None,
        help="An entity set, e.g. customers: its operations, bound actions and fields.",
        autocompletion=_complete_entity,
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """List the entity sets bcbridge knows, or describe one: operations, bound actions, and its
    fields with their types, maximum lengths and whether BC lets you write them.

    Examples: bcbridge entities; bcbridge entities salesOrders --json
    """
    if name is None:
        sets = list(catalog.CATALOG.values())
        if as_json:
            _print_json([_summary(entity_set) for entity_set in sets])
        else:
            Console().print(_sets_table(sets))
        return
    if name not in catalog.CATALOG:
        raise fail(ConfigError(_unknown(name))) from None
    entity_set = catalog.CATALOG[name]
    if as_json:
        _print_json(_details(entity_set))
    else:
        _print_details(entity_set)


def companies(
    config: Path | None = CONFIG_OPTION,
    client: str | None = typer.Option(
        None, "--client", help="With --config: the client of its `clients:` map (default: first)."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """List the companies of the environment the settings reach (id, name, display name): the
    values --company and `company:` accept.

    Example: bcbridge companies --json
    """
    try:
        settings = load_settings(config, client)
        found = anyio.run(_companies, settings)
    except BCBridgeError as exc:
        raise fail(exc) from None
    if as_json:
        _print_json([{"id": c.id, "name": c.name, "displayName": c.display_name} for c in found])
        return
    table = Table(title=f"Companies ({len(found)})")
    table.add_column("Name", no_wrap=True)
    table.add_column("Display name", overflow="fold")
    table.add_column("Id", no_wrap=True)
    for company in found:
        table.add_row(escape(company.name), escape(company.display_name), company.id)
    Console().print(table)


def _unknown(name: str) -> str:
    """No such entity set: the closest names (a case slip first), or where the list is."""
    by_case = [known for known in catalog.CATALOG if known.casefold() == name.casefold()]
    close = by_case or difflib.get_close_matches(name, catalog.CATALOG, n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    return f"unknown entity set {name!r}; {hint}`bcbridge entities` lists them all"


async def _companies(settings: Any) -> list[Company]:
    async with BusinessCentralClient(settings) as bc:
        return await bc.companies()


# --- entity sets as data and as tables ---------------------------------------------------------


def _operations(entity_set: EntitySet) -> list[str]:
    return [str(op) for op in Operation if entity_set.allows(op)]


def _summary(entity_set: EntitySet) -> dict[str, Any]:
    return {
        "name": entity_set.name,
        "entity": entity_set.entity,
        "operations": _operations(entity_set),
        "actions": list(entity_set.actions),
        "fields": len(entity_set.fields) if entity_set.fields else None,
        "write_rules_known": entity_set.described,
    }


def _field(field: Field) -> dict[str, Any]:
    return {
        "name": field.name,
        "type": str(field.type),
        "max_length": field.max_length,
        "read_only": field.read_only,
        "options": list(field.options),
    }


def _details(entity_set: EntitySet) -> dict[str, Any]:
    return {
        **_summary(entity_set),
        "scope": str(entity_set.scope),
        "key": entity_set.key,
        "natural_key": entity_set.natural_key,
        "parent": entity_set.parent,
        "lines": entity_set.lines,
        "fields": [_field(field) for field in entity_set.fields],
        "navigations": [
            {"name": nav.name, "target": nav.target, "via": nav.via, "many": nav.many}
            for nav in entity_set.navigations
        ],
        "notes": entity_set.notes,
    }


def _sets_table(sets: list[EntitySet]) -> Table:
    table = Table(title=f"Entity sets ({len(sets)}): bcbridge entities NAME for the fields")
    table.add_column("Name", no_wrap=True)  # the name a user types: never cut
    table.add_column("Operations", overflow="fold")
    table.add_column("Bound actions", overflow="fold")
    table.add_column("Fields", justify="right")
    for entity_set in sets:
        table.add_row(
            entity_set.name,
            " ".join(_operations(entity_set)),
            " ".join(entity_set.actions) or "-",
            _fields_cell(entity_set),
        )
    return table


def _fields_cell(entity_set: EntitySet) -> str:
    if not entity_set.fields:
        return "not described"
    return f"{len(entity_set.fields)}" + ("" if entity_set.described else " (from $metadata)")


def _print_details(entity_set: EntitySet) -> None:
    console = Console()
    facts = [
        ("Entity set", entity_set.name),
        ("Entity type", entity_set.entity),
        ("Operations", " ".join(_operations(entity_set))),
        ("Bound actions", " ".join(entity_set.actions) or "-"),
        ("Key", entity_set.key),
        ("Natural key", entity_set.natural_key or "-"),
        ("Scope", str(entity_set.scope)),
    ]
    if entity_set.parent:
        facts.append(("Nested under", entity_set.parent))
    if entity_set.lines:
        facts.append(("Lines", entity_set.lines))
    for label, value in facts:
        console.print(f"[bold]{label}:[/] {escape(value)}")
    if entity_set.notes:
        console.print(f"[bold]Notes:[/] {escape(entity_set.notes)}")
    if not entity_set.fields:
        console.print(
            "Fields: not described in the catalog (BC serves them; bcbridge cannot check a "
            "payload for this set)."
        )
        return
    if not entity_set.described:
        console.print(
            "Fields: from BC's $metadata; BC's rules for writing them (read-only fields, "
            "checks) are not known yet, so a payload is checked for names and types only."
        )
    table = Table(title=f"Fields of {entity_set.name}")
    table.add_column("Name", no_wrap=True)
    table.add_column("Type", overflow="fold")
    table.add_column("Max length", justify="right")
    table.add_column("Read-only")
    for field in entity_set.fields:
        kind = str(field.type)
        if field.options:  # BC's blank option " " shown quoted, so that it can be seen
            kind += ": " + " | ".join(o if o.strip() == o else repr(o) for o in field.options)
        table.add_row(
            field.name,
            escape(kind),
            str(field.max_length) if field.max_length else "-",
            "yes" if field.read_only else "",
        )
    console.print(table)
    if entity_set.navigations:
        console.print(
            "[bold]Navigation (--expand):[/] "
            + ", ".join(
                f"{nav.name} -> {nav.target}{' (many)' if nav.many else ''}"
                for nav in entity_set.navigations
            )
        )


def _print_json(data: Any) -> None:
    typer.echo(_json.dumps(data, option=_json.OPT_INDENT_2).decode())


def register(app: typer.Typer) -> None:
    app.command()(entities)
    app.command()(companies)
