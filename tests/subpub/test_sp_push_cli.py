"""`bcbridge push` as a daily tool (issue 12): a dry run that predicts what BC would refuse,
record by record; failures grouped by BC's error code with the command that retries them;
`--retry-failed FILE` alone for records BC refused and for records the transformers failed on;
no failed-records file unless something failed; the first Ctrl-C stops a push waiting on stdin.

Most tests run the CLI in this process (`bcbridge.cli.main`) against the session's emulator
process; the Ctrl-C test needs a real process."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bcbridge import catalog
from bcbridge.cli import main
from bcbridge.client import BusinessCentralClient
from bcbridge.publisher import Publisher, preview
from bcbridge.testing import InProcessEmulator, RunningEmulator
from tests.flows.conftest import BC, BCBRIDGE, CRONUS
from tests.subpub.conftest import with_client

LONG_NAME = "N" * 101  # items.displayName is Text[100]


def bcbridge(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Run the CLI in this process: (exit code, stderr)."""
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    return int(exited.value.code or 0), capsys.readouterr().err


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "250")
    return tmp_path


@pytest.fixture
def bc_env(
    bc_emulator: RunningEmulator, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """The BC_* variables of the session's emulator process, set for the in-process CLI."""
    bc_emulator.clear_faults()
    env = {**bc_emulator.info.env(), "BC_COMPANY": CRONUS}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def outcome_counts(err: str) -> dict[str, str]:
    """The rows of the outcome table printed on stderr."""
    rows = [line.strip("│ ").split("│") for line in err.splitlines() if line.startswith("│")]
    return {name.strip(): count.strip() for name, count in rows}


def write_lines(path: Path, *lines: Any) -> Path:
    path.write_text("".join(line if isinstance(line, str) else json.dumps(line) for line in lines))
    return path


def records(path: Path, *items: dict[str, Any] | str) -> Path:
    return write_lines(path, *[(i if isinstance(i, str) else json.dumps(i)) + "\n" for i in items])


STEPS = "- rename: {ItemNo: number, Price: unitPrice}\n- set: {displayName: '{record.Name}'}\n"
STEPS += "- drop: [Name]\n"


def item_input(folder: Path, prefix: str) -> Path:
    """One record of each kind: fine, an unknown property, a bad price, a name too long, a
    line that is not JSON, and a record the transformers fail on (no Name)."""
    (folder / "steps.yaml").write_text(STEPS)
    return records(
        folder / "in.jsonl",
        {"ItemNo": f"{prefix}1", "Name": "fine", "Price": 3},
        {"ItemNo": f"{prefix}2", "Name": "colourful", "colour": "red"},
        {"ItemNo": f"{prefix}3", "Name": "cheap", "Price": "cheap"},
        {"ItemNo": f"{prefix}4", "Name": LONG_NAME},
        "not json",
        {"ItemNo": f"{prefix}6"},
    )


def push_args(prefix: str, *more: str) -> list[str]:
    args = ["push", "items", "--action", "upsert", "--key-field", "number", "--in", "in.jsonl"]
    return [*args, "--transform", "steps.yaml", *more]


# --- the dry run --------------------------------------------------------------------------------


def test_dry_run_predicts_each_refusal_fails_only_that_record_and_shows_payloads(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    item_input(folder, "DRY")
    code, err = bcbridge(capsys, *push_args("DRY"), "--dry-run", "--show", "10")
    assert code == 1, err  # failures predicted, as the real run would end
    assert "Traceback" not in err
    assert outcome_counts(err) == {"failed": "5", "read": "6", "would send": "1"}
    assert "The property 'colour' does not exist on type 'Microsoft.NAV.item'" in err
    assert "5 record(s) would fail, by reason:" in err
    assert "2 x BadRequest:" in err  # colour and the price: one code, counted together
    assert "1 x Application_StringExceededLength:" in err
    assert "1 x transform:" in err and "1 x read:" in err and "in.jsonl:5" in err
    assert '{"number":"DRY1","unitPrice":3,"displayName":"fine"}' in err  # a payload shown
    assert not (folder / "failed.jsonl").exists() and not (folder / ".bcbridge").exists()


def test_dry_run_shows_a_few_payloads_by_default_and_none_with_show_0(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = records(
        folder / "in.jsonl", *[{"number": f"DRS{n}", "displayName": "x"} for n in range(20)]
    )
    base = ["push", "items", "--action", "upsert", "--key-field", "number", "--in", str(source)]
    code, err = bcbridge(capsys, *base, "--dry-run")
    assert code == 0, err
    assert err.count("record ") == 3 and "DRS2" in err and "DRS3" not in err
    assert outcome_counts(err) == {"read": "20", "would send": "20"}
    code, err = bcbridge(capsys, *base, "--dry-run", "--show", "0")
    assert code == 0 and "record 1" not in err


def test_dry_run_names_read_only_fields_it_leaves_out(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = records(
        folder / "in.jsonl",
        {"number": "DRO1", "displayName": "x", "inventory": 5, "@odata.etag": 'W/"x"'},
    )
    args = ["push", "items", "--action", "upsert", "--key-field", "number", "--in", str(source)]
    code, err = bcbridge(capsys, *args, "--dry-run")
    assert code == 0, err
    assert "not sent (read-only in BC): inventory (1)" in err
    assert '{"number":"DRO1","displayName":"x"}' in err


PREDICTED: list[tuple[dict[str, Any], str | None]] = [
    ({"number": "PRD1", "displayName": "fine", "unitPrice": 2.5}, None),
    ({"number": "PRD2", "colour": "red"}, "BadRequest"),
    ({"number": "PRD3", "unitPrice": "2.5"}, "BadRequest"),
    ({"number": "PRD4", "blocked": "yes"}, "BadRequest"),
    ({"number": "PRD5", "displayName": LONG_NAME}, "Application_StringExceededLength"),
    ({"number": "PRD6", "type": "Hardware"}, "Application_EvaluateException"),
    ({"number": "PRD7", "itemCategoryId": "not-a-guid"}, "Application_InvalidGUID"),
    ({"number": "PRD8", "inventory": 3, "displayName": "read-only left out"}, None),
    ({"displayName": "no number"}, "KeyMissing"),
    ({"number": "P" * 21}, "Application_StringExceededLength"),
]


def test_the_dry_runs_prediction_is_what_the_publisher_gets_from_bc(
    inprocess_emulator: InProcessEmulator,
) -> None:
    """The truth test: each record previewed, then really upserted through a Publisher."""
    payloads = [payload for payload, _ in PREDICTED]

    async def work(bc: BusinessCentralClient) -> list[str | None]:
        publisher = Publisher(bc, "items", "upsert", key_field="number")
        return [
            None if r.ok else r.code async for r in publisher.publish([dict(p) for p in payloads])
        ]

    real = with_client(inprocess_emulator, work)
    predicted = [
        preview("items", "upsert", payload, key_field="number").code for payload in payloads
    ]
    assert predicted == [code for _, code in PREDICTED]
    assert real == predicted


def test_the_catalogs_refusals() -> None:
    items = catalog.get("items")
    assert catalog.refusal(items, "displayName", "x") is None
    assert catalog.refusal(items, "displayName", None) is None  # BC blanks it
    read_only = catalog.refusal(items, "inventory", 1)
    assert read_only is not None and read_only.code == "BadRequest_InvalidOperation"
    assert catalog.refusal(items, "inventory", 1, allow_read_only={"inventory"}) is None
    too_long = catalog.refusal(items, "number", "X" * 21)
    assert too_long is not None and "less than or equal to 20" in too_long.message
    assert catalog.refusal(items, "unitPrice", True) is not None  # a bool is no number
    invoices = catalog.get("salesInvoices")
    assert catalog.refusal(invoices, "invoiceDate", "2024-02-30") is not None
    assert catalog.refusal(invoices, "invoiceDate", "2024-02-29") is None


# --- a real push --------------------------------------------------------------------------------


@pytest.mark.slow  # the emulator process or a CLI subprocess
def test_failures_are_grouped_by_code_and_the_readme_retry_line_replays_them(
    bc_env: dict[str, str],
    bc_emulator: RunningEmulator,
    folder: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    item_input(folder, "RTY")
    code, err = bcbridge(capsys, *push_args("RTY"))
    assert code == 1, err
    assert "5 record(s) not delivered, by reason:" in err
    assert "kept in failed.jsonl" in err
    assert "2 x BadRequest:" in err and "x Application_StringExceededLength:" in err
    assert "CorrelationId" not in err  # the example without BC's per-request noise
    assert "\n  bcbridge push --retry-failed failed.jsonl" in err
    assert "1 of them failed in the transformers" in err
    entries = [json.loads(line) for line in (folder / "failed.jsonl").read_text().splitlines()]
    broken = next(e for e in entries if e["code"] == "TransformError")
    assert broken["payload"] is None and broken["record"] == {"ItemNo": "RTY6"}
    assert broken["transform"][1] == {"set": {"displayName": "{record.Name}"}}

    # the user fixes what BC refused and the record the transformers failed on, in the file
    for entry in entries:
        if entry["record"] and entry["record"]["ItemNo"] == "RTY6":
            entry["record"]["Name"] = "named at last"
        if entry["payload"]:
            entry["payload"].pop("colour", None)
            entry["payload"]["unitPrice"] = 1
            entry["payload"]["displayName"] = entry["payload"]["displayName"][:100]
    write_lines(folder / "failed.jsonl", *[json.dumps(e) + "\n" for e in entries])
    code, err = bcbridge(capsys, "push", "--retry-failed", "failed.jsonl")  # the README's line
    assert code == 1, err  # the line that is not JSON cannot be sent: it stays
    left = [json.loads(line) for line in (folder / "failed.jsonl").read_text().splitlines()]
    assert [e["code"] for e in left] == ["ReadError"] and "in.jsonl:5" in left[0]["message"]

    bc = BC(bc_emulator)
    try:
        found = bc.all(CRONUS, "items", **{"$filter": "startswith(number,'RTY')"})
    finally:
        bc.close()
    assert {item["number"]: item["displayName"] for item in found} == {
        "RTY1": "fine",
        "RTY2": "colourful",
        "RTY3": "cheap",
        "RTY4": "N" * 100,
        "RTY6": "named at last",  # transformed again with the steps kept in the file
    }


@pytest.mark.slow  # the emulator process or a CLI subprocess
def test_a_push_where_nothing_fails_creates_no_failed_file(
    bc_env: dict[str, str], folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = records(folder / "ok.jsonl", {"number": "NOF1", "displayName": "fine"})
    args = ["push", "items", "--action", "upsert", "--key-field", "number", "--in", str(source)]
    code, err = bcbridge(capsys, *args)
    assert code == 0, err
    assert not (folder / "failed.jsonl").exists()
    assert "failed" not in err


@pytest.mark.slow  # the emulator process or a CLI subprocess
def test_push_without_input_does_not_read_a_stdin_that_is_not_piped(folder: Path) -> None:
    """/dev/null (as cron gives) is no more a pipe than a terminal is: say what to give."""
    args = ["push", "items", "--action", "upsert", "--key-field", "number"]
    with open(os.devnull) as nothing:
        refused = subprocess.run(
            [*BCBRIDGE, *args], stdin=nothing, capture_output=True, text=True, timeout=60
        )
    assert refused.returncode == 2, refused.stderr
    assert "--in FILE" in refused.stderr and "--in -" in refused.stderr
    assert "Traceback" not in refused.stderr


# --- Ctrl-C ---------------------------------------------------------------------------------------


@pytest.mark.slow  # the emulator process or a CLI subprocess
def test_the_first_ctrl_c_stops_a_push_waiting_on_stdin(
    bc_env: dict[str, str], folder: Path
) -> None:
    """The pipe stays open and idle: the push waits for a line that never comes. The first
    SIGINT ends the input; what was read is delivered, the push says how to resume (130)."""
    args = ["push", "items", "--action", "upsert", "--key-field", "number", "--in", "-"]
    process = subprocess.Popen(
        [*BCBRIDGE, *args, "--batch-size", "2"],
        env={**os.environ, **bc_env, "COLUMNS": "250"},
        cwd=folder,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None
    for n in range(5):
        process.stdin.write(json.dumps({"number": f"SIG{n}", "displayName": "x"}) + "\n")
    process.stdin.flush()
    database = folder / ".bcbridge" / "push.db"
    deadline = time.monotonic() + 60
    while not _done_tasks(database) >= 4:  # two chunks delivered; the fifth record waits
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
        process.stdin.close()
    err = process.stderr.read() if process.stderr else ""
    assert process.returncode == 130, err
    assert "interrupted" in err and "run it again to resume" in err
    assert _done_tasks(database) == 5  # the record read before Ctrl-C was delivered too


def _done_tasks(database: Path) -> int:
    if not database.exists():
        return 0
    try:
        with sqlite3.connect(database, timeout=1) as conn:
            row = conn.execute("select count(*) from tasks where status='done'").fetchone()
            return int(row[0])
    except sqlite3.OperationalError:
        return 0


VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.text(max_size=120),
    st.sampled_from(["Inventory", "Service", "Hardware", "not-a-guid", "12.5", "true"]),
)
# properties with no references to other records (a valid but unknown id would be BC's
# business rule, which a preview does not claim to know)
PROPERTIES = ["displayName", "displayName2", "unitPrice", "unitCost", "blocked", "type", "gtin"]
PROPERTIES += ["inventory", "colour", "taxGroupId"]
COUNTER = iter(range(10**6))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(PROPERTIES), VALUES, max_size=4))
def test_a_preview_never_disagrees_with_the_emulator(
    inprocess_emulator: InProcessEmulator, fields: dict[str, Any]
) -> None:
    if isinstance(fields.get("taxGroupId"), str) and catalog.is_guid(fields["taxGroupId"]):
        fields.pop("taxGroupId")  # an existing-or-not reference: a business rule
    payload = {"number": f"HYP{next(COUNTER):05d}", **fields}

    async def work(bc: BusinessCentralClient) -> list[str | None]:
        publisher = Publisher(bc, "items", "upsert", key_field="number")
        return [None if r.ok else r.code async for r in publisher.publish([dict(payload)])]

    predicted = preview("items", "upsert", payload, key_field="number").code
    assert with_client(inprocess_emulator, work) == [predicted], payload
