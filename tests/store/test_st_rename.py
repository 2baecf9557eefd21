"""A flow or an incoming renamed: the store's state follows (on both backends), never while a
process runs the flow, never onto a flow the store already knows."""

from __future__ import annotations

import pytest

from bcbridge.store import FlowBusy, Store, StoreError, TaskStatus, TaskUpdate


def test_a_flows_runs_tasks_and_cursors_follow_its_new_name(store_url: str) -> None:
    store = Store(store_url)
    try:
        run = store.start_run("copy")
        tasks = store.register("copy", run, [("1", {"id": 1}), ("2", {"id": 2})])
        store.settle([TaskUpdate(task.id, TaskStatus.DONE) for task in tasks])
        store.end_run(run, "ok", {"read": 2})
        store.save_cursor("copy:customers", {"at": 1})
        store.save_cursor("writer:copy", {"offset": 10})
        store.save_cursor("copycat:customers", {"at": 2})  # another flow, a longer name

        store.rename_flow("copy", "copy_v2")
        assert [r["id"] for r in store.runs("copy_v2")] == [run] and store.runs("copy") == []
        assert store.count_tasks("copy_v2") == {"done": 2}
        assert store.cursor("copy_v2:customers") == {"at": 1}
        assert store.cursor("writer:copy_v2") == {"offset": 10}
        assert store.cursor("copycat:customers") == {"at": 2}
        # the same records come again under the new name: found done, nothing to send
        again = store.register("copy_v2", store.start_run("copy_v2"), [("1", {"id": 1})])
        assert [task.id for task in again] == [tasks[0].id]

        store.rename_incoming("customers", "cust")
        assert store.cursor("copy_v2:cust") == {"at": 1} and store.cursor("copycat:cust")
        assert store.cursor("copy_v2:customers") is None
    finally:
        store.close()


def test_no_rename_while_the_flow_runs_or_onto_a_flow_the_store_knows(store_url: str) -> None:
    store = Store(store_url)
    try:
        store.start_run("copy")
        store.start_run("other")
        lease = store.acquire_lease("copy", holder="elsewhere:1:x")
        with pytest.raises(FlowBusy):
            store.rename_flow("copy", "copy_v2")
        store.release_lease(lease)
        with pytest.raises(StoreError, match="'other' already"):
            store.rename_flow("copy", "other")
        assert len(store.runs("copy")) == 1 and len(store.runs("other")) == 1
    finally:
        store.close()
