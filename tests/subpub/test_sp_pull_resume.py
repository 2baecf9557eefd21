"""`bcbridge pull --state --out FILE`: a pull that stops mid-way (a 429 storm with retries spent)
and its rerun leave each record in the file once: the state keeps the output's byte offset with
the cursor, and the rerun cuts the file back to it before appending."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bcbridge.config import ENV_FIELDS
from bcbridge.subscriber import CursorState
from bcbridge.testing import RunningEmulator, start_emulator
from tests.flows.conftest import CRONUS, cli

pytestmark = pytest.mark.slow  # subprocesses/emulator-heavy: left out of `make test-fast`

CUSTOMERS = 2_500


@pytest.fixture(scope="module")
def emulator() -> Iterator[RunningEmulator]:
    with start_emulator(scale={"customers": CUSTOMERS}) as running:
        yield running


def settings_file(emulator: RunningEmulator, folder: Path) -> Path:
    """The emulator's client settings, with no retries: the first 429 stops the pull."""
    values: dict[str, Any] = {
        ENV_FIELDS[name]: value for name, value in emulator.info.env().items()
    }
    values.update(company=CRONUS, retry={"max_attempts": 1})
    path = folder / "bc.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def ids_in(path: Path, suffix: str) -> Counter[str]:
    if suffix == ".jsonl":
        return Counter(json.loads(line)["id"] for line in path.read_text().splitlines())
    lines = path.read_text().splitlines()
    column = lines[0].split(",").index("id")
    return Counter(line.split(",")[column] for line in lines[1:])


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_a_pull_stopped_by_429s_and_its_rerun_write_each_customer_once(
    suffix: str, emulator: RunningEmulator, tmp_path: Path
) -> None:
    emulator.reset()  # an empty rate window
    env = {**os.environ, "COLUMNS": "250"}
    out, state = tmp_path / f"c{suffix}", tmp_path / "c.json"
    args = ["pull", "customers", "--state", str(state), "--out", str(out), "--page-size", "100"]
    args += ["--select", "id,number,displayName,lastModifiedDateTime"]
    args += ["--config", str(settings_file(emulator, tmp_path))]
    emulator.configure(rate_limit="14/120")  # 12 pages of 100, then 429s
    stopped = cli(env, *args)
    assert stopped.returncode != 0 and "429" in stopped.stderr + stopped.stdout, stopped.stderr
    saved = json.loads(state.read_text())
    assert saved["output"] == {"path": str(out.resolve()), "offset": out.stat().st_size}
    assert 0 < sum(ids_in(out, suffix).values()) < CUSTOMERS

    emulator.configure(rate_limit="6000/300")
    emulator.reset()
    rerun = cli(env, *args)
    assert rerun.returncode == 0, rerun.stderr
    ids = ids_in(out, suffix)
    assert len(ids) == CUSTOMERS and max(ids.values()) == 1, ids.most_common(2)


def test_a_rerun_cuts_back_lines_written_after_the_saved_cursor(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    """As after a SIGKILL between a flush and the state's save: the file is longer than the
    state says. The rerun removes the extra lines and reads those records again."""
    env = {**os.environ, "COLUMNS": "250"}
    out, state = tmp_path / "c.jsonl", tmp_path / "c.json"
    args = ["pull", "customers", "--state", str(state), "--out", str(out)]
    # --annotations: the cursor of a pull killed at 1,000 is rebuilt from the file's ETags below
    args += ["--annotations", "--config", str(settings_file(emulator, tmp_path))]
    assert cli(env, *args).returncode == 0
    whole = out.read_bytes()
    lines = whole.splitlines(keepends=True)
    cut = len(b"".join(lines[:1000]))
    cursor = CursorState()
    for line in lines[:1000]:
        cursor.advance(json.loads(line))
    output = {"path": str(out.resolve()), "offset": cut}
    state.write_text(json.dumps({**cursor.to_json(), "output": output}))  # killed at 1,000
    rerun = cli(env, *args)
    assert rerun.returncode == 0, rerun.stderr
    assert "removed" in rerun.stderr
    ids = ids_in(out, ".jsonl")
    assert len(ids) == CUSTOMERS and max(ids.values()) == 1, ids.most_common(2)

    out.write_bytes(whole[: cut - 10])  # shorter than the state says: someone changed the file
    refused = cli(env, *args)
    assert (
        refused.returncode != 0 and "delete" in refused.stderr and "Traceback" not in refused.stderr
    )
