"""SIGKILL at random points of a run, over and over, then a run to the end: every record is in
the target, and BC holds each exactly once. Ctrl-C stops cleanly and the next run resumes.

The random points come from a seed printed at the start (set BCBRIDGE_CRASH_SEED to replay)."""

from __future__ import annotations

import csv
import os
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bcbridge.testing import RunningEmulator, start_emulator
from tests.flows.conftest import (
    BC,
    CRONUS,
    FABRIKAM,
    SEED,
    cli,
    ctrl_c_when,
    kill_runs_at_random,
    start_run,
    store_of,
    write_project,
)


@pytest.fixture(scope="module")
def emulator() -> Iterator[RunningEmulator]:
    """Slow enough (latency) that a kill lands mid-run, with enough orders to copy."""
    with start_emulator(latency_ms=15, scale="salesOrders=120") as running:
        yield running


@pytest.fixture(scope="module")
def rng() -> random.Random:
    print(f"\ncrash test seed: {SEED} (BCBRIDGE_CRASH_SEED={SEED} replays it)")
    return random.Random(SEED)


def finish(env: dict[str, str], project: Path, flow: str) -> None:
    done = cli(env, "run", flow, "--config", str(project), timeout=300)
    assert done.returncode == 0, done.stderr
    tasks = store_of(project).tasks(flow, limit=None)
    assert {t.status for t in tasks} == {"done"}, [
        (t.record_key, t.last_error) for t in tasks if t.status != "done"
    ]


def items_csv_project(folder: Path, count: int, prefix: str, store: str | None = None) -> Path:
    with (folder / "items.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["number", "displayName"])
        writer.writerows([f"{prefix}{n:05d}", f"Crash item {n}"] for n in range(count))
    outgoing = {"entity": "items", "company": CRONUS, "action": "create", "key_field": "number"}
    return write_project(
        folder / "bcbridge.yaml",
        {
            **({"store": store} if store else {}),
            "outgoing": {"items": {**outgoing, "batch_size": 40}},
            "flows": {"load": {"from": "items.csv", "to": "items", "chunk_size": 40}},
        },
    )


def orders_copy_project(folder: Path) -> Path:
    return write_project(
        folder / "bcbridge.yaml",
        {
            "incoming": {
                "orders": {
                    "entity": "salesOrders",
                    "company": CRONUS,
                    "cursor": "lastModifiedDateTime",
                    "params": {"$expand": "salesOrderLines"},
                    "page_size": 15,
                }
            },
            "outgoing": {
                "copies": {
                    "entity": "salesOrders",
                    "company": FABRIKAM,
                    "action": "create",
                    "key_field": "externalDocumentNumber",
                    "batch_size": 5,
                }
            },
            "flows": {
                "copy": {
                    "from": "orders",
                    "transform": [
                        {"set": {"externalDocumentNumber": "K-{record.number}"}},
                        {
                            "map": {
                                "salesOrderLines": "salesOrderLines[].{lineType: lineType, "
                                "lineObjectNumber: lineObjectNumber, quantity: quantity}"
                            }
                        },
                        {"keep": ["externalDocumentNumber", "customerNumber", "salesOrderLines"]},
                    ],
                    "to": "copies",
                    "chunk_size": 5,
                }
            },
        },
    )


def customers_project(folder: Path) -> Path:
    incoming: dict[str, Any] = {
        "entity": "customers",
        "company": CRONUS,
        "cursor": "lastModifiedDateTime",
        "page_size": 100,
    }
    return write_project(
        folder / "bcbridge.yaml",
        {
            "incoming": {"customers": incoming},
            "flows": {
                "mirror": {
                    "from": "customers",
                    "transform": [{"keep": ["id", "number", "displayName"]}],
                    "to": {"writer": "sqlite:///mirror.db#customers", "key": "id"},
                    "chunk_size": 100,
                }
            },
        },
    )


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_sigkill_while_creating_items_from_a_file(
    tmp_path: Path,
    bc_env: dict[str, str],
    bc: BC,
    rng: random.Random,
    backend: str,
    request: pytest.FixtureRequest,
) -> None:
    """On each store backend: a kill lands between PostgreSQL's commits as it does SQLite's."""
    prefix = {"sqlite": "K", "postgresql": "P"}[backend]
    store = request.getfixturevalue("postgres").new_database() if backend == "postgresql" else None
    project = items_csv_project(tmp_path, 1200, prefix=prefix, store=store)
    killed = kill_runs_at_random(bc_env, project, "load", rng, total=1200)
    finish(bc_env, project, "load")
    numbers = Counter(i["number"] for i in bc.all(CRONUS, "items") if i["number"][0] == prefix)
    assert len(numbers) == 1200 and set(numbers.values()) == {1}, f"killed {killed} times"
    assert killed >= 1


def test_sigkill_while_copying_orders_between_companies(
    tmp_path: Path, bc_env: dict[str, str], bc: BC, rng: random.Random
) -> None:
    project = orders_copy_project(tmp_path)
    killed = kill_runs_at_random(bc_env, project, "copy", rng, total=120)
    finish(bc_env, project, "copy")
    source = {o["number"] for o in bc.all(CRONUS, "salesOrders")}
    copies = Counter(
        o["externalDocumentNumber"]
        for o in bc.all(FABRIKAM, "salesOrders")
        if o["externalDocumentNumber"].startswith("K-")
    )
    assert set(copies) == {f"K-{n}" for n in source}, f"killed {killed} times"
    assert set(copies.values()) == {1}
    assert killed >= 1


def test_sigkill_while_mirroring_customers_to_sqlite(
    tmp_path: Path, bc_emulator_factory: Any, rng: random.Random
) -> None:
    many = bc_emulator_factory(latency_ms=15, scale="customers=1500")
    env = {**os.environ, **many.info.env()}
    project = customers_project(tmp_path)
    killed = kill_runs_at_random(env, project, "mirror", rng, total=1500)
    finish(env, project, "mirror")
    bc = BC(many)
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'mirror.db'}")
    with engine.connect() as conn:
        ids = [row[0] for row in conn.execute(sa.text("SELECT id FROM customers"))]
    engine.dispose()
    assert sorted(ids) == sorted(c["id"] for c in bc.all(CRONUS, "customers"))
    assert len(ids) == 1500 and killed >= 1
    bc.close()


def test_ctrl_c_stops_after_the_chunk_in_flight_and_the_next_run_resumes(
    tmp_path: Path, bc_env: dict[str, str], bc: BC
) -> None:
    project = items_csv_project(tmp_path, 800, prefix="C")
    process = start_run(bc_env, project, "load")
    store = store_of(project)
    err = ctrl_c_when(process, lambda: bool(store.tasks("load", "done", limit=1)), within=30)
    assert process.returncode == 130, err
    assert "stopping after the records in flight" in err
    assert store.runs("load", limit=1)[0]["status"] == "interrupted"
    assert not store.tasks("load", "sending")  # nothing left half-sent
    done_before = len(store.tasks("load", "done", limit=None))
    assert 0 < done_before < 800

    finish(bc_env, project, "load")
    last = store.runs("load", limit=1)[0]
    assert last["counts"]["skipped"] == done_before  # resumed, not repeated
    numbers = Counter(i["number"] for i in bc.all(CRONUS, "items") if i["number"][0] == "C")
    assert len(numbers) == 800 and set(numbers.values()) == {1}


pytestmark = pytest.mark.slow  # subprocesses/emulator-heavy: left out of `make test-fast`
