"""`tasks list --status` takes only the statuses tasks have: a typo is refused with the valid
ones (exit 2), never answered with an empty table that looks like "nothing failed"."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.flows.conftest import cli, write_project


@pytest.mark.slow
def test_an_unknown_status_is_refused_with_the_valid_ones(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text('{"id": "1"}\n')
    project = write_project(
        tmp_path / "bcbridge.yaml", {"flows": {"copy": {"from": "in.jsonl", "to": "out.jsonl"}}}
    )
    typo = cli(dict(os.environ), "tasks", "list", "--status", "falied", "--config", str(project))
    assert typo.returncode == 2 and "Traceback" not in typo.stderr
    assert "falied" in typo.stderr and "'failed'" in typo.stderr and "'unknown'" in typo.stderr

    ran = cli(dict(os.environ), "run", "copy", "--config", str(project))
    assert ran.returncode == 0, ran.stderr
    done = cli(dict(os.environ), "tasks", "list", "--status", "done", "--config", str(project))
    assert done.returncode == 0 and "copy" in done.stdout
