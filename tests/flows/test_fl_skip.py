"""A task skipped by hand (`bcbridge tasks skip`) stays skipped when its record comes again,
whatever stage it failed at: the transformers or the reading of its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from bcbridge.cli import main
from bcbridge.store import RunStatus, TaskStatus
from tests.flows.conftest import run_flow, store_of, write_project


def skip(project: Path, task_id: int) -> None:
    with pytest.raises(SystemExit) as ended:
        main(["tasks", "skip", str(task_id), "--config", str(project)])
    assert ended.value.code == 0


@pytest.mark.parametrize(
    ("line", "stage"),
    [('{"id": "2", "price": "12.5O"}', "transform"), ('{"id": "2", "price"', "read")],
)
def test_a_skipped_record_that_comes_again_stays_skipped(
    tmp_path: Path, line: str, stage: str
) -> None:
    (tmp_path / "in.jsonl").write_text(f'{{"id": "1", "price": "3.5"}}\n{line}\n')
    flow = {"from": "in.jsonl", "transform": [{"convert": {"price": "decimal"}}], "to": "out.jsonl"}
    project = write_project(tmp_path / "bcbridge.yaml", {"flows": {"copy": flow}})
    assert run_flow(project, "copy").status == RunStatus.FAILED
    store = store_of(project)
    try:
        (failed,) = store.tasks("copy", status=TaskStatus.FAILED)
        assert failed.stage == stage
        skip(project, failed.id)

        again = run_flow(project, "copy")
        assert again.status == RunStatus.OK, again
        assert again.counts[TaskStatus.SKIPPED.value] >= 1
        task = store.task(failed.id)
        assert task is not None and task.status == TaskStatus.SKIPPED
    finally:
        store.close()
