"""`bcbridge pull` / `bcbridge push` end to end, as subprocesses, against the emulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bcbridge.testing import RunningEmulator
from tests.subpub.test_sp_publisher import read


def cli(
    emulator: RunningEmulator, *args: str, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **emulator.info.env(), "BC_COMPANY": "CRONUS USA, Inc."}
    return subprocess.run(
        [sys.executable, "-m", "bcbridge", *args],
        env=env,
        capture_output=True,
        text=True,
        input=input,
        timeout=120,
    )


def test_pull_incrementally_to_sqlite_and_jsonl(emulator: RunningEmulator, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    target = f"sqlite:///{tmp_path / 'out.db'}#contacts"
    first = cli(
        emulator, "pull", "contacts", "--state", str(state), "--out", target, "--page-size", "4"
    )
    assert first.returncode == 0, first.stderr
    assert "read" in first.stderr and json.loads(state.read_text())["value"]
    late = '{"displayName": "Late contact"}\n'
    failed = str(tmp_path / "f.jsonl")
    store = f"sqlite:///{tmp_path / 'push.db'}"
    cli(
        emulator,
        "push",
        "contacts",
        "--action",
        "create",
        "--allow-duplicates",
        "--failed",
        failed,
        "--store",
        store,
        input=late,
    )
    second = cli(
        emulator, "pull", "contacts", "--state", str(state), "--out", str(tmp_path / "delta.jsonl")
    )
    assert second.returncode == 0, second.stderr
    delta = [json.loads(line) for line in (tmp_path / "delta.jsonl").read_text().splitlines()]
    assert [r["displayName"] for r in delta] == ["Late contact"]
    filtered = cli(
        emulator,
        "pull",
        "customers",
        "--filter",
        "number eq 'C00012'",
        "--select",
        "number,displayName",
        "--format",
        "csv",
    )
    assert filtered.stdout.splitlines()[0] == "number,displayName"  # no @odata.etag column
    assert filtered.stdout.splitlines()[1].split(",")[0] == "C00012"


def test_push_keeps_bad_records_and_replays_them_after_a_fix(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    source = tmp_path / "cats.csv"
    source.write_text("code,displayName\nCLI1,One\nCLI2,Two\n,Blank code\n")
    transform = tmp_path / "t.yaml"
    transform.write_text("- filter: \"code != ''\"\n")
    failed = tmp_path / "failed.jsonl"
    store = f"sqlite:///{tmp_path / 'push.db'}"
    dry = cli(
        emulator,
        "push",
        "itemCategories",
        "--action",
        "create",
        "--key-field",
        "code",
        "--in",
        str(source),
        "--transform",
        str(transform),
        "--dry-run",
    )
    assert dry.returncode == 0 and "would send" in dry.stderr
    items = tmp_path / "items.jsonl"
    items.write_text(
        '{"number": "CLI-A", "displayName": "A", "unitPrice": 1}\n'
        '{"number": "CLI-B", "displayName": "B", "unitPrice": "cheap"}\n'
        '{"number": "CLI-C", "displayName": "C", "unitPrice": 3}\n'
    )
    pushed = cli(
        emulator,
        "push",
        "items",
        "--action",
        "upsert",
        "--key-field",
        "number",
        "--in",
        str(items),
        "--failed",
        str(failed),
        "--store",
        store,
    )
    assert pushed.returncode == 1 and "1 record(s) not delivered" in pushed.stderr
    [entry] = [json.loads(line) for line in failed.read_text().splitlines()]
    assert (
        entry["record"]["number"] == "CLI-B"
        and entry["status"] == 400
        and entry["code"] == "BadRequest"
    )
    assert {
        i["number"] for i in read(emulator, "items", {"$filter": "startswith(number,'CLI-')"})
    } == {"CLI-A", "CLI-C"}
    entry["payload"]["unitPrice"] = 2  # the fix, in what is sent
    failed.write_text(json.dumps(entry) + "\n")
    replay = cli(emulator, "push", "--retry-failed", str(failed), "--store", store)
    assert replay.returncode == 0, replay.stderr
    assert not failed.exists()
    assert {
        i["number"] for i in read(emulator, "items", {"$filter": "startswith(number,'CLI-')"})
    } == {"CLI-A", "CLI-B", "CLI-C"}


def test_bad_options_are_named(emulator: RunningEmulator) -> None:
    wrong = cli(emulator, "push", "items", "--action", "fly", "--in", "-", input="")
    assert (
        wrong.returncode == 2  # a usage error
        and "no action 'fly'" in wrong.stderr
        and "Traceback" not in wrong.stderr
    )
    unknown = cli(emulator, "pull", "customer")
    assert unknown.returncode == 2 and "did you mean customers" in unknown.stderr
    assert "Example:" in cli(emulator, "pull", "--help").stdout


pytestmark = pytest.mark.slow  # subprocesses/emulator-heavy: left out of `make test-fast`
