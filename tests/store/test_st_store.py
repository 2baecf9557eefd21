"""The store's contract, on SQLite and on PostgreSQL: schema from nothing, upgrades that keep the
data, cursors, runs, and the task rules a restarted run relies on (resume what was done in an
unfinished run, send again what came again after a finished one)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from bcbridge.errors import ConfigError
from bcbridge.store import Store, TaskUpdate, migrate, payload_hash
from tests.pg_server import free_port


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    opened = Store(store_url)
    yield opened
    opened.close()


def records(*numbers: int) -> list[tuple[str, dict[str, object]]]:
    return [(f"N{n}", {"number": f"N{n}", "displayName": f"Record {n}"}) for n in numbers]


def test_an_empty_database_gets_the_whole_schema(store_url: str) -> None:
    Store(store_url).close()
    engine = sa.create_engine(store_url)
    inspector = sa.inspect(engine)
    assert {"cursors", "runs", "tasks", "bc_budget", "alembic_version"} <= set(
        inspector.get_table_names()
    )
    assert "stage" in {column["name"] for column in inspector.get_columns("tasks")}
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == "0008"
    engine.dispose()
    Store(store_url).close()  # opening again is a no-op, not an error


def test_an_upgrade_from_the_first_schema_keeps_the_data(store_url: str) -> None:
    migrate(store_url, "0001")
    now = datetime.now(UTC)
    engine = sa.create_engine(store_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO cursors VALUES ('flow:incoming', :state, :now)"),
            {"state": '{"lastModifiedDateTime": "2026-01-01T00:00:00Z"}', "now": now},
        )
        conn.execute(
            sa.text(
                "INSERT INTO runs (flow, started_at, ended_at, status, counts)"
                " VALUES ('flow', :now, :now, 'ok', '{\"created\": 1}')"
            ),
            {"now": now},
        )
        conn.execute(
            sa.text(
                "INSERT INTO tasks (flow, run_id, record_key, hash, status, attempts, last_error,"
                " result_id, payload, created_at, updated_at) VALUES ('flow', 1, 'N1', :hash,"
                " 'failed', 2, 'BC said no', NULL, :payload, :now, :now)"
            ),
            {"hash": payload_hash({"number": "N1"}), "payload": '{"number": "N1"}', "now": now},
        )
    engine.dispose()

    store = Store(store_url)
    assert store.cursor("flow:incoming") == {"lastModifiedDateTime": "2026-01-01T00:00:00Z"}
    assert store.runs("flow")[0]["counts"] == {"created": 1}
    (task,) = store.tasks("flow")
    assert (task.status, task.attempts, task.last_error) == ("failed", 2, "BC said no")
    assert task.payload == {"number": "N1"} and task.stage == "send"  # the new column's default
    store.close()


def test_cursors_are_saved_and_replaced(store: Store) -> None:
    assert store.cursor("a:customers") is None
    store.save_cursor("a:customers", {"lastModifiedDateTime": "2026-01-01T00:00:00Z"})
    store.save_cursor("a:customers", {"lastModifiedDateTime": "2026-02-01T00:00:00Z"})
    store.save_cursor("b:customers", {"lastModifiedDateTime": "2025-01-01T00:00:00Z"})
    assert store.cursor("a:customers") == {"lastModifiedDateTime": "2026-02-01T00:00:00Z"}
    assert store.cursor("b:customers") == {"lastModifiedDateTime": "2025-01-01T00:00:00Z"}


def test_a_run_left_running_is_marked_crashed_by_the_next(store: Store) -> None:
    first = store.start_run("flow")
    second = store.start_run("flow")
    other = store.start_run("other")
    store.end_run(second, "ok", {"created": 3, "failed": 1})
    by_id = {run["id"]: run for run in store.runs()}
    assert by_id[first]["status"] == "crashed" and by_id[first]["ended_at"] is not None
    assert by_id[second]["status"] == "ok" and by_id[second]["counts"] == {
        "created": 3,
        "failed": 1,
    }
    assert by_id[other]["status"] == "running"  # another flow's run is none of its business
    assert [run["id"] for run in store.runs("flow")] == [second, first]  # newest first


def test_register_gives_one_task_per_record_in_input_order(store: Store) -> None:
    run = store.start_run("flow")
    items = records(3, 1, 2, 1)  # the same record twice in one chunk is one task
    found = store.register("flow", run, items)
    assert [task.record_key for task in found] == ["N3", "N1", "N2", "N1"]
    assert found[1].id == found[3].id and len({task.id for task in found}) == 3
    assert {task.status for task in found} == {"pending"}
    assert [task.id for task in store.register("flow", run, items)] == [t.id for t in found]
    assert store.register("other", run, items)[0].id != found[0].id  # tasks belong to a flow


def test_register_handles_more_records_than_one_in_list(store: Store) -> None:
    run = store.start_run("flow")
    found = store.register("flow", run, records(*range(1234)))
    assert len({task.id for task in found}) == 1234
    store.settle([TaskUpdate(task.id, "done") for task in found])
    assert store.count_tasks("flow") == {"done": 1234}


def test_a_restarted_run_resumes_what_the_crashed_run_did(store: Store) -> None:
    crashed = store.start_run("flow")
    first = store.register("flow", crashed, records(1, 2, 3))
    store.settle(
        [
            TaskUpdate(first[0].id, "done", result_id="id-1"),
            TaskUpdate(first[1].id, "sending"),  # in flight when the process died
        ]
    )
    resumed = store.start_run("flow")
    again = {task.record_key: task for task in store.register("flow", resumed, records(1, 2, 3))}
    assert again["N1"].status == "done" and again["N1"].result_id == "id-1"  # skipped
    assert again["N2"].status == "pending"  # sent again; a create is matched on its key first
    assert again["N3"].status == "pending"
    assert {task.run_id for task in again.values()} == {resumed}
    assert store.runs("flow")[1]["status"] == "crashed"


def test_a_record_seen_in_a_finished_run_is_sent_again(store: Store) -> None:
    finished = store.start_run("flow")
    (task,) = store.register("flow", finished, records(1))
    store.settle([TaskUpdate(task.id, "done")])
    store.end_run(finished, "ok", {"created": 1})
    later = store.start_run("flow")
    (again,) = store.register("flow", later, records(1))
    assert (again.id, again.status, again.run_id) == (task.id, "pending", later)


def test_settle_records_errors_attempts_and_a_new_payload(store: Store) -> None:
    run = store.start_run("flow")
    first, second = store.register("flow", run, records(1, 2), stage="transform")
    store.mark([first.id, second.id], "sending", attempt=True)
    store.settle(
        [
            TaskUpdate(first.id, "failed", error="400 BadRequest: displayName is too long"),
            TaskUpdate(second.id, "done", result_id="id-2", payload={"number": "N2", "x": 1}),
        ]
    )
    failed, done = store.task(first.id), store.task(second.id)
    assert failed is not None and done is not None
    assert (failed.status, failed.attempts, failed.stage) == ("failed", 1, "transform")
    assert failed.last_error == "400 BadRequest: displayName is too long"
    assert (done.status, done.result_id, done.stage) == ("done", "id-2", "send")
    assert done.payload == {"number": "N2", "x": 1}
    assert [t.id for t in store.tasks("flow", "failed")] == [first.id]
    assert store.task(10_000) is None


def test_two_stores_on_one_database_see_each_other(store_url: str) -> None:
    writer, reader = Store(store_url), Store(store_url)
    run = writer.start_run("flow")
    writer.register("flow", run, records(1))
    writer.save_cursor("flow:in", {"at": 1})
    assert reader.count_tasks("flow") == {"pending": 1}
    assert reader.cursor("flow:in") == {"at": 1}
    writer.close()
    reader.close()


def test_a_store_that_cannot_be_opened_is_a_clear_error_without_its_password() -> None:
    url = f"postgresql+psycopg://bc:hunter2secret@127.0.0.1:{free_port()}/state"
    with pytest.raises(ConfigError, match=r"store: cannot open the store at .*bc:\*\*\*@") as error:
        Store(url)
    assert "hunter2secret" not in str(error.value)
    assert "connection" in str(error.value).lower()  # the driver says why
    with pytest.raises(ConfigError, match="nosuchdb"):
        Store("nosuchdb://somewhere/state")
