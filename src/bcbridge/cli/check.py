"""`bcbridge check`: the project file checked section by section, offline; with `--connect`,
each client's sign-in and each company the project names proven against BC."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import typer
from rich.console import Console
from rich.markup import escape

from bcbridge import _json, _redact, catalog
from bcbridge.cli._settings import fail
from bcbridge.client import BusinessCentralClient
from bcbridge.config import Problem, line_of
from bcbridge.errors import EXIT_OK, EXIT_USAGE, BCBridgeError, ConfigError, exit_code
from bcbridge.flowconfig import DEFAULT_CLIENT, ProjectConfig, check_project, find_config

SECTIONS = ("file", "store", "clients", "incoming", "outgoing", "flows")
stdout = Console(soft_wrap=True)  # a problem is one line: never cut, never wrapped mid-word


@dataclass
class Section:
    """What `check` found in one section of the project: problems, and what was proven."""

    name: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    code: int = EXIT_OK  # the exit code its worst problem calls for

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, text: str, code: int = EXIT_USAGE) -> None:
        self.problems.append(_redact.text(text))
        self.code = self.code or code


def check(
    config: Path | None = typer.Option(
        None, "--config", help="Project file (default: $BCBRIDGE_CONFIG, else ./bcbridge.yaml)."
    ),
    connect: bool = typer.Option(
        False,
        "--connect",
        help="Also sign in with each client and look up each company the project names.",
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout."),
) -> None:
    """Check a project file without running anything: keys, names, entity sets, actions,
    key fields, transformer steps, python modules, paths and drivers; with --connect, also
    each client's sign-in and each company.

    Exit codes: 0 all good; 2 problems in the project; 3 BC or sign-in refused (--connect).

    Example: bcbridge check --config examples/bcbridge.yaml --connect
    """
    try:
        path = find_config(config)
    except BCBridgeError as exc:
        raise fail(exc) from None
    project, problems = check_project(path)
    sections = {name: Section(name) for name in SECTIONS}
    for problem in problems:
        sections[_section_of(problem)].add(problem.text)
    if project is not None:
        _check_default_client(project, sections["clients"])
        _check_company_given(project, sections)
        _describe(project, sections)
    if connect:
        sections["connect"] = Section("connect")
        if project is None or not all(section.ok for section in sections.values()):
            sections["connect"].notes.append("skipped: fix the problems above first")
        else:
            anyio.run(_connect, project, sections["connect"])
    code = next((s.code for s in sections.values() if s.code), EXIT_OK)
    if as_json:
        document = {
            "config": str(path),
            "ok": code == EXIT_OK,
            "sections": {
                name: {"ok": s.ok, "problems": s.problems, "notes": s.notes}
                for name, s in sections.items()
            },
        }
        typer.echo(_json.dumps(document, option=_json.OPT_INDENT_2).decode())
    else:
        _print(path, sections.values())
    raise typer.Exit(code)


def _section_of(problem: Problem) -> str:
    return problem.section if problem.section in SECTIONS else "file"


def _clients_in_use(project: ProjectConfig) -> list[str]:
    """The client names the project's incoming and outgoing use, and the ones it defines."""
    used = [item.client for item in project.incoming.values()]
    used += [item.client for item in project.outgoing.values()]
    return list(dict.fromkeys([*project.clients, *used]))


def _check_default_client(project: ProjectConfig, section: Section) -> None:
    """The `default` client, when used and not defined, comes from the BC_* variables."""
    if DEFAULT_CLIENT in project.clients or DEFAULT_CLIENT not in _clients_in_use(project):
        return
    try:
        project.client_settings(DEFAULT_CLIENT)  # the BC_* variables, .env beside the project too
    except ConfigError as exc:
        for line in str(exc).splitlines():  # e.g. BC_TENANT_ID is not set: export ...
            section.add(f"client {DEFAULT_CLIENT!r} (from the BC_* environment): {line}")
    else:
        section.notes.append(f"{DEFAULT_CLIENT}: from the BC_* environment variables")


def _check_company_given(project: ProjectConfig, sections: dict[str, Section]) -> None:
    """Each incoming and outgoing of a company's entity set names its company, or its client
    has one (`company:` in the client, BC_COMPANY for the default one)."""
    for kind, items in (("incoming", project.incoming), ("outgoing", project.outgoing)):
        for name, item in items.items():
            if item.company or not _of_a_company(item.entity):
                continue
            try:
                client_company = project.client_settings(item.client).company
            except ConfigError:
                continue  # reported with the clients
            if not client_company:
                line = line_of(f"{kind}.{name}", project.lines)
                where = f"{project.source}:{line}" if line else project.source
                sections[kind].add(
                    f"{where}: {kind}.{name}: no company: add company: <its name or id>, or "
                    f"give the client {item.client!r} one ({_company_setting(item.client)})"
                )


def _of_a_company(entity: str) -> bool:
    """Whether the entity set lives under a company (an unknown one is reported elsewhere)."""
    entity_set = catalog.CATALOG.get(entity)
    return entity_set is not None and entity_set.scope is catalog.Scope.COMPANY


def _company_setting(client: str) -> str:
    return "BC_COMPANY" if client == DEFAULT_CLIENT else f"clients.{client}.company"


def _describe(project: ProjectConfig, sections: dict[str, Section]) -> None:
    """What each section that is fine holds, so "ok" says what was checked."""
    counts = {
        "clients": [name for name in _clients_in_use(project) if name in project.clients],
        "incoming": list(project.incoming),
        "outgoing": list(project.outgoing),
        "flows": list(project.flows),
    }
    for name, items in counts.items():
        if sections[name].ok and items:
            sections[name].notes.append(", ".join(items))
    sections["store"].notes.append(_redact.text(project.store))


async def _connect(project: ProjectConfig, section: Section) -> None:
    """Sign in with each client in use and list its companies; look up each company named."""
    for name in _clients_in_use(project):
        try:
            async with BusinessCentralClient(project.client_settings(name)) as bc:
                grant = await bc.grant()
                section.notes.append(
                    f"client {name}: signed in; {len(grant.companies)} company(ies): "
                    + ", ".join(company.name for company in grant.companies)
                )
                await _check_companies(project, name, bc, section)
        except BCBridgeError as exc:
            section.add(f"client {name}: {exc}".splitlines()[0], exit_code(exc))


async def _check_companies(
    project: ProjectConfig, client: str, bc: BusinessCentralClient, section: Section
) -> None:
    for kind, items in (("incoming", project.incoming), ("outgoing", project.outgoing)):
        for name, item in items.items():
            if item.client != client or not _of_a_company(item.entity):
                continue
            wanted = item.company or bc.settings.company
            if not wanted:
                continue  # reported offline
            try:
                company = await bc.resolve_company(wanted)
            except ConfigError as exc:
                section.add(f"{kind}.{name}.company: {str(exc).removeprefix('company: ')}")
            else:
                section.notes.append(f"{kind}.{name}: company {company.name} ({company.id})")


def _print(path: Path, sections: Any) -> None:
    stdout.print(f"[bold]{escape(str(path))}[/]")
    for section in sections:
        notes = f" ({escape('; '.join(section.notes))})" if section.notes else ""
        if section.ok:
            stdout.print(f"  {section.name:<9} [green]ok[/]{notes}")
            continue
        count = len(section.problems)
        stdout.print(f"  {section.name:<9} [red]{count} problem(s)[/]")
        for problem in section.problems:
            stdout.print(f"    {escape(problem)}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("check")(check)
