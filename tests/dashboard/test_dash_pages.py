"""The dashboard's pages in this process: Run now runs the flow and shows its progress, tasks
are searched and paged, Retry and Skip work for one task and for all that match, the Runs page
and its chart show the history."""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bcbridge.dashboard import FlowService
from bcbridge.flowconfig import load_project
from bcbridge.store import RunStatus, Store, TaskStatus
from tests.dashboard.conftest import BAD, GOOD, copy_project, open_dashboard, run_now

pytestmark = pytest.mark.anyio


async def test_run_now_runs_the_flow_and_shows_how_it_ended(tmp_path: Path) -> None:
    async with open_dashboard(copy_project(tmp_path, [GOOD, BAD])) as dashboard:
        await dashboard.sign_in()
        fragment = await run_now(dashboard)
        assert "failed" in fragment and "read 2" in fragment and "written 1" in fragment
        assert (tmp_path / "out.jsonl").read_text().count('"id"') == 1
        (run,) = dashboard.store.runs("copy")
        assert run["status"] == RunStatus.FAILED
        flows = await dashboard.client.get("/flows")
        assert "done 1" in flows.text and "failed 1" in flows.text and ">failed</a>" in flows.text


async def test_run_now_does_not_start_a_flow_that_is_running(tmp_path: Path) -> None:
    project = load_project(copy_project(tmp_path, [GOOD] * 3))
    store = Store(project.store)
    service = FlowService(project, store, threading.Event())
    try:
        assert service.start("copy")
        assert not service.start("copy")  # not queued either
        service.join(30)
        assert len(store.runs("copy")) == 1
        assert service.start("copy")
        service.join(30)
        assert len(store.runs("copy")) == 2
    finally:
        store.close()


async def test_retry_after_the_transform_is_fixed_delivers_the_task(tmp_path: Path) -> None:
    project = copy_project(tmp_path, [GOOD, BAD])
    async with open_dashboard(project) as dashboard:
        await dashboard.sign_in()
        await run_now(dashboard)
        (failed,) = dashboard.store.tasks("copy", TaskStatus.FAILED)
        page = await dashboard.client.get(f"/tasks/{failed.id}")
        assert "12.5O" in page.text and "transform" in page.text and ">Retry<" in page.text
    copy_project(tmp_path, [GOOD, BAD], transform=False)  # the fix: no conversion
    async with open_dashboard(project) as dashboard:
        await dashboard.sign_in()
        csrf = await dashboard.csrf(f"/tasks/{failed.id}")
        answer = await dashboard.client.post(f"/tasks/{failed.id}/retry", data={"csrf_token": csrf})
        assert answer.headers["location"] == f"/tasks/{failed.id}"
        task = dashboard.store.task(failed.id)
        assert task is not None and task.status == TaskStatus.DONE, task
        page = await dashboard.client.get(f"/tasks/{failed.id}")
        assert "retried 1 task(s)" in page.text and ">Retry<" not in page.text
    assert '"12.5O"' in (tmp_path / "out.jsonl").read_text()


async def test_skip_one_task_and_all_that_match_a_search(tmp_path: Path) -> None:
    bad = [f'{{"id": "b{n}", "price": "x{n}"}}' for n in range(3)]
    async with open_dashboard(copy_project(tmp_path, [GOOD, *bad])) as dashboard:
        await dashboard.sign_in()
        await run_now(dashboard)
        failed = dashboard.store.tasks("copy", TaskStatus.FAILED)
        assert len(failed) == 3
        one = failed[0]
        csrf = await dashboard.csrf()
        await dashboard.client.post(f"/tasks/{one.id}/skip", data={"csrf_token": csrf})
        skipped = dashboard.store.task(one.id)
        assert skipped is not None and skipped.status == TaskStatus.SKIPPED
        assert skipped.last_error and skipped.last_error.startswith("skipped by hand (was failed")
        answer = await dashboard.client.post(
            "/tasks/skip", data={"csrf_token": csrf, "flow": "copy", "status": "failed"}
        )
        assert answer.headers["location"] == "/tasks?flow=copy&status=failed"
        assert dashboard.store.tasks("copy", TaskStatus.FAILED) == []
        assert len(dashboard.store.tasks("copy", TaskStatus.SKIPPED)) == 3
        page = await dashboard.client.get(answer.headers["location"])
        assert "skipped 2 task(s)" in page.text and "No task matches" in page.text


async def test_retry_all_that_match_reruns_the_failed_tasks(tmp_path: Path) -> None:
    bad = [f'{{"id": "b{n}", "price": "x{n}"}}' for n in range(2)]
    async with open_dashboard(copy_project(tmp_path, [GOOD, *bad])) as dashboard:
        await dashboard.sign_in()
        await run_now(dashboard)
        before = {task.id: task.updated_at for task in dashboard.store.tasks("copy")}
        csrf = await dashboard.csrf()
        await dashboard.client.post("/tasks/retry", data={"csrf_token": csrf, "flow": "copy"})
        dashboard.wait_for_runs()  # "all that match" are retried in the background
        failed = dashboard.store.tasks("copy", TaskStatus.FAILED)
        assert len(failed) == 2
        assert all(task.updated_at > before[task.id] for task in failed)  # transformed again
        (done,) = dashboard.store.tasks("copy", TaskStatus.DONE)
        assert done.updated_at == before[done.id]  # a done task is left alone
        page = await dashboard.client.get("/tasks?flow=copy")
        assert "copy: retrying 2 task(s), see Flows" in page.text
        progress = await dashboard.client.get("/flows/copy/progress")
        assert "failed:" in progress.text and "failed 2" in progress.text


async def test_tasks_are_searched_and_paged(tmp_path: Path) -> None:
    lines = [f'{{"id": "r{n:03}", "price": "{n}"}}' for n in range(120)]
    lines.append('{"id": "bad", "price": "?"}')
    async with open_dashboard(copy_project(tmp_path, lines)) as dashboard:
        await dashboard.sign_in()
        await run_now(dashboard)
        first = await dashboard.client.get("/tasks?flow=copy")
        assert "121 in all, page 1 of 3" in first.text
        assert len(re.findall(r'<a href="/tasks/\d+">', first.text)) == 50
        last = await dashboard.client.get("/tasks?flow=copy&page=3")
        assert len(re.findall(r'<a href="/tasks/\d+">', last.text)) == 21
        assert "newer</a>" in last.text and "older</a>" not in last.text
        by_key = await dashboard.client.get("/tasks?key=r007")
        assert "1 in all" in by_key.text and ">r007<" in by_key.text
        failed = await dashboard.client.get("/tasks?status=failed")
        assert "1 in all" in failed.text and ">bad<" in failed.text
        today = datetime.now(UTC).date()
        since = await dashboard.client.get(f"/tasks?since={today}&until={today}")
        assert "121 in all" in since.text
        tomorrow = today + timedelta(days=1)
        assert "0 in all" in (await dashboard.client.get(f"/tasks?since={tomorrow}")).text


async def test_runs_are_listed_with_durations_and_charted(tmp_path: Path) -> None:
    async with open_dashboard(copy_project(tmp_path, [GOOD, BAD])) as dashboard:
        await dashboard.sign_in()
        for _ in range(3):
            await run_now(dashboard)
        page = await dashboard.client.get("/runs?flow=copy")
        assert "3 in all" in page.text and page.text.count(" s</td>") == 3
        assert 'data-src="/runs/chart.json?flow=copy"' in page.text
        chart = (await dashboard.client.get("/runs/chart.json?flow=copy")).json()
        assert len(chart["labels"]) == 3 and chart["labels"][0].startswith("#1 ")
        assert chart["records"] == [2, 2, 2]
        assert chart["failures"] == [1, 1, 1]


async def test_a_flow_running_in_another_process_is_shown_and_not_run_twice(
    tmp_path: Path,
) -> None:
    async with open_dashboard(copy_project(tmp_path, [GOOD])) as dashboard:
        await dashboard.sign_in()
        other = Store(dashboard.store.url)
        lease = other.acquire_lease("copy", holder="elsewhere:1:x")
        try:
            flows = await dashboard.client.get("/flows")
            assert "running held by pid" in flows.text
            fragment = await run_now(dashboard)
            assert "busy" in fragment
            assert dashboard.store.runs("copy") == []
        finally:
            other.release_lease(lease)
            other.close()
