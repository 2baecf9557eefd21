"""The attempts a store keeps per task (on both backends): the newest first, each with the
request-log lines of its delivery, the last KEPT_ATTEMPTS only, and no delivery left behind."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

from bcbridge.store import KEPT_ATTEMPTS, Attempt, Store


def test_only_the_last_attempts_of_a_task_are_kept(store_url: str) -> None:
    store = Store(store_url)
    try:
        run = store.start_run("f")
        (task,) = store.register("f", run, [("k", {"id": 1})])
        other = store.register("f", run, [("k2", {"id": 2})])[0]
        now = datetime.now(UTC)
        failed = Attempt(task.id, 0, now, now, "failed", 500, "X", "boom")
        for number in range(1, KEPT_ATTEMPTS + 6):
            failed.attempt = number
            store.settle([], attempts=[failed], requests=[f'{{"n": {number}}}'])
        store.settle([], attempts=[Attempt(other.id, 1, now, now, "created")])
        kept = store.attempts(task.id, limit=100)
        assert [a.attempt for a in kept] == list(range(KEPT_ATTEMPTS + 5, 5, -1))
        assert kept[-1].requests == ['{"n": 6}']  # each with its own delivery's lines
        assert len(store.attempts(other.id)) == 1  # another task's are not touched
        engine = sa.create_engine(store_url)  # the deliveries of dropped attempts are dropped too
        with engine.connect() as conn:
            count = conn.execute(sa.text("SELECT count(*) FROM task_deliveries")).scalar()
        engine.dispose()
        assert count == KEPT_ATTEMPTS
    finally:
        store.close()
