"""`bcbridge demo`: the main job, end to end, on a fresh machine.

With a project file (./bcbridge.yaml or $BCBRIDGE_CONFIG) it runs that project's flows against
the tenant it configures. Without one it starts the local emulator on a free port, runs the
example flows (`examples/`) against it from a scratch folder, changes two customers in BC and
runs the incremental flow again, shows the summary, a few tasks and what landed, and stops the
emulator.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
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


def _configured() -> Path | None:
    path = default_config()
    return path if path.exists() else None


def demo(
    keep: bool = typer.Option(False, help="Keep the scratch folder (its path is printed)."),
) -> None:
    """Run the example flows against a local Business Central emulator (no tenant needed).

    With ./bcbridge.yaml or $BCBRIDGE_CONFIG present, run that project's flows instead.
    """
    stop = threading.Event()
    try:
        with ctrl_c_stops(stop):
            configured = _configured()
            results = (
                _against_project(configured, stop) if configured else _with_emulator(keep, stop)
            )
    except BCBridgeError as exc:
        raise fail(exc) from None
    raise typer.Exit(runs_exit_code(results))


def _against_project(path: Path, stop: threading.Event) -> list[RunResult]:
    stderr.print(f"Running the flows of {path} (its own tenant).")
    project = load_project(path)
    store = Store(project.store)
    try:
        results = run_flows(project, store, list(project.flows), stop)
    finally:
        store.close()
    summary(results)
    return results


def _with_emulator(keep: bool, stop: threading.Event) -> list[RunResult]:
    from bcbridge.emulator.process import start_emulator

    stderr.print("No bcbridge.yaml here: starting the local Business Central emulator ...")
    folder = Path(tempfile.mkdtemp(prefix="bcbridge-demo-"))
    shutil.copytree(
        examples_dir(), folder, dirs_exist_ok=True, ignore=shutil.ignore_patterns("out", ".*")
    )
    with start_emulator() as emulator:
        os.environ.update(emulator.info.env())  # the examples' default client reads BC_*
        stderr.print(f"Business Central emulator at {emulator.info.api_root}")
        project = load_project(folder / "bcbridge.yaml")
        store = Store(project.store)
        results = run_flows(project, store, list(project.flows), stop)
        if not stop.is_set():
            changed = _change_customers(2)
            stderr.print(f"Changed {changed} customers in BC; the incremental flow again:")
            results += run_flows(project, store, ["customers_to_sqlite"], stop)
        summary(results)
        stderr.print(task_table(store.tasks("copy_sales_orders", limit=5)))
        _show_landed(project)
        store.close()
    if keep:
        stderr.print(
            f"Demo folder kept: {folder}  (bcbridge tasks list --config {folder}/bcbridge.yaml)"
        )
    else:
        shutil.rmtree(folder, ignore_errors=True)
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


def _show_landed(project: ProjectConfig) -> None:
    """What the flows left on each side: rows in the SQLite table, orders in the target company."""
    from bcbridge.sync import Client

    table = Table(title="What landed")
    table.add_column("Where")
    table.add_column("Records", justify="right")
    writer = str(project.flows["customers_to_sqlite"].target.writer)
    url, _, name = writer.partition("#")
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text(f'SELECT count(*) FROM "{name}"')).scalar()
    engine.dispose()
    table.add_row(f"{name} table in {Path(url.removeprefix('sqlite:///')).name}", f"{rows:,}")
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
