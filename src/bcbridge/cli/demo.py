"""`bcbridge demo`: the main job, end to end, on a fresh machine.

It starts the local emulator on a free port, runs the example flows (`examples/`) against it
from a scratch folder, changes two customers in BC and runs the incremental flow again, shows
the summary, a few tasks and what landed, and stops the emulator. It never reaches a real
tenant: the BC_* variables of the shell are set aside while it runs, and a ./bcbridge.yaml is
ignored. Only `--project FILE` runs a project's flows against the tenant that project names.
The scratch folder is removed at the end unless `--keep`; what "What landed" shows says so.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import sqlalchemy as sa
import typer
from rich.table import Table

from bcbridge.cli._common import (
    ctrl_c_stops,
    run_flows,
    runs_exit_code,
    stderr,
    summary,
    task_table,
)
from bcbridge.cli._settings import fail
from bcbridge.config import ClientSettings
from bcbridge.errors import BCBridgeError
from bcbridge.flowconfig import ProjectConfig, default_config, load_project
from bcbridge.flows import RunResult
from bcbridge.store import Store

SOURCE_COMPANY = "CRONUS USA, Inc."
TARGET_COMPANY = "Fabrikam & O'Brien, Ltd."


def examples_dir() -> Path:
    """The examples shipped in the wheel, or `examples/` of a source checkout."""
    shipped = Path(str(resources.files("bcbridge") / "examples"))
    if shipped.is_dir():
        return shipped
    return Path(__file__).resolve().parents[3] / "examples"


def demo(
    keep: bool = typer.Option(
        False, help="Keep the scratch folder with what the flows wrote (its path is printed)."
    ),
    project: Path | None = typer.Option(
        None,
        "--project",
        help="Run this project's flows instead, against the tenant it configures (not the "
        "emulator).",
    ),
) -> None:
    """Run the example flows against a local Business Central emulator (no tenant needed).

    Never touches a real tenant unless --project FILE is given.
    Example: bcbridge demo --keep
    """
    stop = threading.Event()
    try:
        with ctrl_c_stops(stop):
            if project is not None:
                results = _against_project(project, stop)
            else:
                _mention_ignored_project()
                results = _with_emulator(keep, stop)
    except BCBridgeError as exc:
        raise fail(exc) from None
    raise typer.Exit(runs_exit_code(results))


def _mention_ignored_project() -> None:
    configured = default_config()
    if configured.exists():
        stderr.print(
            f"note: {configured} is not used: the demo runs on its own emulator "
            f"('bcbridge demo --project {configured}' runs your flows against your tenant)",
            highlight=False,
            soft_wrap=True,
        )


@contextmanager
def _emulator_settings(settings: dict[str, str]) -> Iterator[None]:
    """The emulator's BC_* variables instead of the shell's for the time of the demo, so no
    variable meant for a real tenant (BC_COMPANY, BC_SOURCE_COMPANY, ...) reaches a flow."""
    saved = {name: value for name, value in os.environ.items() if name.startswith("BC_")}
    for name in saved:
        del os.environ[name]
    os.environ.update(settings)
    try:
        yield
    finally:
        for name in [name for name in os.environ if name.startswith("BC_")]:
            del os.environ[name]
        os.environ.update(saved)


def _against_project(path: Path, stop: threading.Event) -> list[RunResult]:
    stderr.print(f"Running the flows of {path} against the tenant it configures.")
    project = load_project(path)
    store = Store(project.store)
    try:
        results = run_flows(project, store, list(project.flows), stop)
    finally:
        store.close()
    summary(results)
    return results


def _with_emulator(keep: bool, stop: threading.Event) -> list[RunResult]:
    from bcbridge.cli.emulator import seeding, seeding_text
    from bcbridge.emulator.process import start_emulator

    folder = Path(tempfile.mkdtemp(prefix="bcbridge-demo-"))
    shutil.copytree(
        examples_dir(), folder, dirs_exist_ok=True, ignore=shutil.ignore_patterns("out", ".*")
    )
    try:
        with seeding(seeding_text({})) as display:
            emulator = start_emulator(progress=display.update)
        with emulator, _emulator_settings(emulator.info.env()):
            stderr.print(f"Business Central emulator at {emulator.info.api_root}", soft_wrap=True)
            results = _run_examples(folder, keep, stop)
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)
    if keep:
        stderr.print(
            f"Demo folder kept: {folder}  (bcbridge tasks list --config {folder}/bcbridge.yaml)",
            highlight=False,
            soft_wrap=True,
        )
    else:
        stderr.print(
            "The demo ran in a temporary folder, removed now; 'bcbridge demo --keep' keeps it.",
            highlight=False,
            soft_wrap=True,
        )
    return results


def _run_examples(folder: Path, keep: bool, stop: threading.Event) -> list[RunResult]:
    project = load_project(folder / "bcbridge.yaml")
    store = Store(project.store)
    try:
        results = run_flows(project, store, list(project.flows), stop)
        if not stop.is_set():
            changed = _change_customers(2)
            stderr.print(f"Changed {changed} customers in BC; the incremental flow again:")
            results += run_flows(project, store, ["customers_to_sqlite"], stop)
        summary(results)
        stderr.print(task_table(store.tasks("copy_sales_orders", limit=5)))
        _show_landed(project, kept=keep)
    finally:
        store.close()
    return results


def _change_customers(count: int) -> int:
    from bcbridge.sync import Client

    with Client(ClientSettings.from_env()) as bc:
        company = bc.resolve_company(SOURCE_COMPANY)
        path = f"companies({company.id})/customers"
        customers = bc.get_json(path, {"$top": count})["value"]
        for customer in customers:
            bc.request(
                "PATCH",
                f"{path}({customer['id']})",
                json={"phoneNumber": "+1 555 0100"},
                headers={"If-Match": customer["@odata.etag"]},
            )
    return len(customers)


def _show_landed(project: ProjectConfig, *, kept: bool) -> None:
    """What the flows left on each side: rows in the SQLite table, orders in the target company.
    The table's file is named by its full path when it is kept, else said to be temporary."""
    from bcbridge.sync import Client

    table = Table(
        title="What landed",
        caption=None if kept else "files in a temporary folder, removed when the demo ends",
    )
    table.add_column("Where")
    table.add_column("Records", justify="right")
    writer = str(project.flows["customers_to_sqlite"].target.writer)
    url, _, name = writer.partition("#")
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text(f'SELECT count(*) FROM "{name}"')).scalar()
    engine.dispose()
    database = Path(url.removeprefix("sqlite:///"))
    where = str(database) if kept else database.name
    table.add_row(f"{name} table in {where}", f"{rows:,}")
    with Client(ClientSettings.from_env()) as bc:
        company = bc.resolve_company(TARGET_COMPANY)
        path = f"companies({company.id})/salesOrders"
        copies = bc.get_json(
            path, {"$filter": "startswith(externalDocumentNumber,'CRONUS-')", "$count": "true"}
        )
        items = bc.get_json(
            f"companies({bc.resolve_company(SOURCE_COMPANY).id})/items",
            {"$filter": "startswith(number,'I9')", "$count": "true"},
        )
    table.add_row(f"sales orders copied into {TARGET_COMPANY}", f"{copies['@odata.count']:,}")
    table.add_row(f"items from items.csv created in {SOURCE_COMPANY}", f"{items['@odata.count']:,}")
    stderr.print(table)
