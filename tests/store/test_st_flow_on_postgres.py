"""A flow whose store and target are both PostgreSQL: `store:` and `to:` take any SQLAlchemy URL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bcbridge.store import Store
from tests.flows.conftest import BC, CRONUS, run_flow, write_project
from tests.pg_server import PostgresServer


def test_incremental_customers_into_postgres_with_the_state_in_postgres(
    tmp_path: Path, postgres: PostgresServer, bc_emulator_factory: Any, monkeypatch: Any
) -> None:
    emulator = bc_emulator_factory()
    for name, value in emulator.info.env().items():
        monkeypatch.setenv(name, value)
    state, target = postgres.new_database(), postgres.new_database()
    project = write_project(
        tmp_path / "bcbridge.yaml",
        {
            "store": state,
            "incoming": {
                "customers": {
                    "entity": "customers",
                    "company": CRONUS,
                    "cursor": "lastModifiedDateTime",
                }
            },
            "flows": {
                "mirror": {
                    "from": "customers",
                    "transform": [{"keep": ["id", "number", "displayName"]}],
                    "to": {"writer": f"{target}#customers", "key": "id"},
                }
            },
        },
    )
    bc = BC(emulator)
    customers = bc.all(CRONUS, "customers")
    first = run_flow(project, "mirror")
    assert first.status == "ok" and first.counts["written"] == len(customers)

    bc.patch(CRONUS, "customers", customers[0], displayName="Renamed in BC")
    second = run_flow(project, "mirror")
    assert second.counts["read"] == 1 and second.counts["written"] == 1
    bc.close()

    engine = sa.create_engine(target)
    with engine.connect() as conn:
        rows: dict[str, str] = dict(
            conn.execute(sa.text('SELECT id, "displayName" FROM customers')).all()
        )
    engine.dispose()
    assert set(rows) == {c["id"] for c in customers}
    assert rows[customers[0]["id"]] == "Renamed in BC"

    store = Store(state)
    assert [run["status"] for run in store.runs("mirror")] == ["ok", "ok"]
    assert store.cursor("mirror:customers") is not None
    assert store.count_tasks("mirror") == {"done": len(customers) + 1}  # the change is a task too
    store.close()
