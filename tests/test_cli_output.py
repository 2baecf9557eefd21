"""Output for people and for scripts: `--json` documents, tables that never cut the names a
user types, failures grouped by reason with the commands that list and retry them, and honest
empties. In-process (`bcbridge.cli.main`); only the BC-backed runs need an emulator process,
because `run` and `client` build their clients from the BC_* settings."""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from bcbridge.cli import main
from bcbridge.cli._common import group_failures, print_failures, task_failure
from bcbridge.store import Task, TaskStatus
from bcbridge.testing import RunningEmulator

LONG_FLOW = "a_rather_long_flow_name_that_people_must_type_whole"  # 51 characters


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Any:
    """Run `bcbridge ARGS...` in this process: (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as ended:
            main(list(args))
        out, err = capsys.readouterr()
        code = ended.value.code
        return (code if isinstance(code, int) else 1), out, err

    return run


@pytest.fixture
def piped(monkeypatch: pytest.MonkeyPatch) -> None:
    """stdout and stderr are not terminals, whatever runs the tests."""
    monkeypatch.setenv("TTY_COMPATIBLE", "0")
    monkeypatch.setenv("COLUMNS", "80")


@pytest.fixture
def terminal_80(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("COLUMNS", "80")


def write_project(folder: Path, flows: dict[str, Any], **sections: Any) -> Path:
    path = folder / "project.yaml"
    path.write_text(yaml.safe_dump({**sections, "flows": flows}, sort_keys=False))
    return path


@pytest.fixture
def failing_project(tmp_path: Path) -> tuple[Path, list[str]]:
    """A file-to-file flow with a long name whose transformer fails on 2 of 3 records, keyed
    by GUIDs; returns the project file and the GUIDs of the two that fail."""
    ids = [str(uuid.uuid4()) for _ in range(3)]
    rows = [f"{ids[0]},1.5", f"{ids[1]},abc", f"{ids[2]},xyz"]
    (tmp_path / "in.csv").write_text("id,price\n" + "\n".join(rows) + "\n")
    flow = {"from": "in.csv", "transform": [{"convert": {"price": "decimal"}}], "to": "out.jsonl"}
    return write_project(tmp_path, {LONG_FLOW: flow}), ids[1:]


# --- run: failures explained -------------------------------------------------------------------


def test_run_json_is_one_document_with_failures_grouped(
    cli: Any, failing_project: tuple[Path, list[str]], piped: None
) -> None:
    project, _ = failing_project
    code, out, err = cli("run", "--config", str(project), "--json")
    assert code == 1
    runs = json.loads(out)  # stdout holds the document and nothing else
    assert [run["flow"] for run in runs] == [LONG_FLOW]
    run = runs[0]
    assert run["status"] == "failed"
    assert run["counts"] == {"read": 3, "written": 1, "failed": 2}
    assert run["error"] is None
    assert [(f["reason"], f["count"]) for f in run["failures"]] == [("transform", 2)]
    assert "cannot convert" in run["failures"][0]["example"]
    config = shlex.quote(str(project))
    assert run["commands"] == [
        f"bcbridge tasks list --flow {LONG_FLOW} --status failed --config {config}",
        f"bcbridge tasks retry --failed --flow {LONG_FLOW} --config {config}",
    ]
    # the people's version on stderr: the count per reason with an example, and the commands
    assert "2 x transform: step 'convert'" in err
    for command in run["commands"]:
        assert command in err


def test_the_printed_commands_list_and_retry_the_failed_records(
    cli: Any, failing_project: tuple[Path, list[str]], piped: None
) -> None:
    project, failing_ids = failing_project
    _, out, _ = cli("run", "--config", str(project), "--json")
    list_command, retry_command = json.loads(out)[0]["commands"]
    code, out, _ = cli(*shlex.split(list_command)[1:], "--json")
    assert code == 0
    assert sorted(task["record_key"] for task in json.loads(out)) == sorted(failing_ids)
    code, _, err = cli(*shlex.split(retry_command)[1:])
    assert code == 1  # the data is still wrong: they fail again, and say why
    assert "2 x transform: step 'convert'" in err
    assert list_command in err


def test_commands_leave_out_config_when_it_is_the_default(
    cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, piped: None
) -> None:
    (tmp_path / "in.csv").write_text("number,price\nA1,abc\n")
    flow = {"from": "in.csv", "transform": [{"convert": {"price": "decimal"}}], "to": "o.jsonl"}
    (tmp_path / "bcbridge.yaml").write_text(yaml.safe_dump({"flows": {"f": flow}}))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BCBRIDGE_CONFIG", raising=False)
    code, out, _ = cli("run", "--json")
    assert code == 1
    assert json.loads(out)[0]["commands"] == [
        "bcbridge tasks list --flow f --status failed",
        "bcbridge tasks retry --failed --flow f",
    ]


def test_a_run_without_failures_says_nothing_about_them(
    cli: Any, tmp_path: Path, piped: None
) -> None:
    (tmp_path / "in.csv").write_text("number,price\nA1,1.5\n")
    project = write_project(tmp_path, {"f": {"from": "in.csv", "to": "o.jsonl"}})
    code, out, err = cli("run", "--config", str(project), "--json")
    assert code == 0
    assert json.loads(out) == [
        {
            "flow": "f",
            "run_id": 1,
            "status": "ok",
            "counts": {"read": 1, "written": 1},
            "error": None,
            "failures": [],
            "commands": [],
        }
    ]
    assert "by reason" not in err and "tasks retry" not in err


# --- grouping ----------------------------------------------------------------------------------


def _task(error: str | None, status: str = TaskStatus.FAILED) -> Task:
    now = datetime.now(UTC)
    return Task(1, "f", 1, None, "h", status, 1, error, None, {}, "send", now, now)


@pytest.mark.parametrize(
    ("error", "status", "reason", "message"),
    [
        (
            "400 BadRequest_InvalidToken An If-Match header is required",
            TaskStatus.FAILED,
            "BadRequest_InvalidToken",
            "An If-Match header is required",
        ),
        ("409 Internal_EntityWithSameKeyExists", TaskStatus.FAILED, "", ""),
        ("400 The value is wrong", TaskStatus.FAILED, "HTTP 400", "The value is wrong"),
        ("503 Service unavailable", TaskStatus.FAILED, "HTTP 503", "Service unavailable"),
        ("transform: step 'convert': bad", TaskStatus.FAILED, "transform", "step 'convert': bad"),
        ("read: line 3: not CSV; fix the file", TaskStatus.FAILED, "read", "line 3: not CSV; fix"),
        (
            "timed out after 30s; then `bcbridge tasks retry 4` to send it or ...",
            TaskStatus.UNKNOWN,
            "answer lost",
            "timed out after 30s",
        ),
        (None, TaskStatus.FAILED, "error", "no reason recorded"),
        ("disk full", TaskStatus.FAILED, "error", "disk full"),
    ],
)
def test_task_failure_reads_the_reason_from_the_stored_error(
    error: str | None, status: str, reason: str, message: str
) -> None:
    found_reason, found_message = task_failure(_task(error, status))
    if reason == "":  # a code alone: the code is its own message
        assert (found_reason, found_message) == ("Internal_EntityWithSameKeyExists",) * 2
    else:
        assert found_reason == reason
        assert found_message.startswith(message)


def test_groups_are_counted_most_frequent_first_with_the_first_example() -> None:
    groups = group_failures(
        [
            ("Application_EvaluateException", "bad enum"),
            ("Application_StringExceededLength", "too long: 150"),
            ("Application_StringExceededLength", "too long: 120"),
        ]
    )
    assert [g.line() for g in groups] == [
        "2 x Application_StringExceededLength: too long: 150",
        "1 x Application_EvaluateException: bad enum",
    ]


def test_examples_are_one_short_line_without_secrets() -> None:
    secrets = "postgresql://app:s3cr3t-pw@db/x Bearer eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl"
    (group,) = group_failures([("error", f"line one\nline two {secrets} " + "x" * 500)])
    assert "\n" not in group.example and len(group.example) <= 160
    assert "s3cr3t" not in group.example and "eyJ" not in group.example


# --- tables that never cut names ---------------------------------------------------------------


def _whole_in_some_line(name: str, text: str) -> bool:
    return any(name in line for line in text.splitlines())


@pytest.mark.parametrize("where", ["piped", "terminal_80"])
def test_task_table_never_cuts_flow_names_or_keys(
    cli: Any, failing_project: tuple[Path, list[str]], where: str, request: pytest.FixtureRequest
) -> None:
    request.getfixturevalue(where)
    project, failing_ids = failing_project
    cli("run", "--config", str(project))
    code, out, _ = cli("tasks", "list", "--config", str(project))
    assert code == 0
    out = re.sub(r"\x1b\[[0-9;]*m", "", out)  # the terminal's colours
    for name in (LONG_FLOW, *failing_ids):
        assert _whole_in_some_line(name, out), out
    if where == "piped":  # one line per task: grep finds a task with all it holds
        rows = [line for line in out.splitlines() if failing_ids[0] in line]
        assert len(rows) == 1 and "cannot convert" in rows[0]


def test_wide_shows_every_column(
    cli: Any, failing_project: tuple[Path, list[str]], terminal_80: None
) -> None:
    project, _ = failing_project
    cli("run", "--config", str(project))
    _, narrow, _ = cli("tasks", "list", "--config", str(project))
    _, wide, _ = cli("tasks", "list", "--config", str(project), "--wide")
    assert "Attempts" not in narrow.split("left out")[0]  # no room at 80 columns
    assert "Updated" not in narrow.split("left out")[0]
    assert "left out for want of room: Updated, Attempts (--wide shows them)" in narrow
    assert "Attempts" in wide and "Updated" in wide


@pytest.mark.parametrize("where", ["piped", "terminal_80"])
def test_flows_and_runs_tables_never_cut_flow_names(
    cli: Any, failing_project: tuple[Path, list[str]], where: str, request: pytest.FixtureRequest
) -> None:
    request.getfixturevalue(where)
    project, _ = failing_project
    _, _, err = cli("run", "--config", str(project))
    _, out, _ = cli("flows", "list", "--config", str(project))
    for text in (err, out):
        assert _whole_in_some_line(LONG_FLOW, re.sub(r"\x1b\[[0-9;]*m", "", text)), text


# --- --json on lists and show ------------------------------------------------------------------


def test_flows_list_json(cli: Any, failing_project: tuple[Path, list[str]], piped: None) -> None:
    project, _ = failing_project
    _, out, _ = cli("flows", "list", "--config", str(project), "--json")
    (never,) = json.loads(out)
    assert never["name"] == LONG_FLOW and never["last_run"] is None and never["tasks"] == {}
    cli("run", "--config", str(project))
    _, out, _ = cli("flows", "list", "--config", str(project), "--json")
    (flow,) = json.loads(out)
    assert flow["from"] == str(project.parent / "in.csv")
    assert flow["to"] == str(project.parent / "out.jsonl")
    assert flow["schedule"] is None
    assert flow["tasks"] == {"done": 1, "failed": 2}
    assert flow["last_run"]["status"] == "failed"
    started = datetime.fromisoformat(flow["last_run"]["started_at"])
    assert started.tzinfo is not None and abs(datetime.now(UTC) - started).total_seconds() < 60


def test_tasks_list_and_show_json(
    cli: Any, failing_project: tuple[Path, list[str]], piped: None
) -> None:
    project, failing_ids = failing_project
    cli("run", "--config", str(project))
    code, out, _ = cli("tasks", "list", "--config", str(project), "--status", "failed", "--json")
    assert code == 0
    tasks = json.loads(out)
    assert {task["record_key"] for task in tasks} == set(failing_ids)
    assert set(tasks[0]) == {
        "id",
        "flow",
        "run_id",
        "record_key",
        "status",
        "attempts",
        "last_error",
        "result_id",
        "stage",
        "created_at",
        "updated_at",
    }
    assert tasks[0]["last_error"].startswith("transform: ")
    code, out, _ = cli("tasks", "show", str(tasks[0]["id"]), "--config", str(project), "--json")
    shown = json.loads(out)
    assert code == 0 and shown["payload"]["id"] == tasks[0]["record_key"]
    assert {k: v for k, v in shown.items() if k not in ("payload", "hash")} == tasks[0]


# --- honest empties ----------------------------------------------------------------------------


def test_tasks_list_with_no_match_names_the_filters(
    cli: Any, failing_project: tuple[Path, list[str]], piped: None
) -> None:
    project, _ = failing_project
    cli("run", "--config", str(project))
    args = ("tasks", "list", "--config", str(project), "--status", "skipped")
    code, out, err = cli(*args, "--flow", LONG_FLOW)
    assert (code, out) == (0, "")  # no empty table
    assert f"no skipped tasks for flow {LONG_FLOW}" in err
    code, out, err = cli(*args, "--json")
    assert (code, json.loads(out)) == (0, [])
    assert "no skipped tasks" in err


def test_tasks_list_for_a_flow_the_project_lacks_is_a_usage_error(
    cli: Any, failing_project: tuple[Path, list[str]], piped: None
) -> None:
    project, _ = failing_project
    code, out, err = cli("tasks", "list", "--config", str(project), "--flow", LONG_FLOW[:-1])
    assert (code, out) == (2, "")
    assert f"did you mean {LONG_FLOW!r}?" in err and "Traceback" not in err


def test_unknown_status_is_rejected_with_the_valid_ones(
    cli: Any, failing_project: tuple[Path, list[str]], piped: None
) -> None:
    project, _ = failing_project
    code, out, err = cli("tasks", "list", "--config", str(project), "--status", "falied")
    assert (code, out) == (2, "")
    text = " ".join(err.replace("│", " ").split())
    assert "did you mean 'failed'?" in text
    assert "valid: 'pending', 'sending', 'done', 'failed', 'unknown', 'skipped'" in text


def test_flows_list_on_a_project_without_flows(cli: Any, tmp_path: Path, piped: None) -> None:
    project = write_project(tmp_path, {})
    code, out, err = cli("flows", "list", "--config", str(project))
    assert (code, out) == (0, "")
    assert f"no flows in {project}" in err
    code, out, _ = cli("flows", "list", "--config", str(project), "--json")
    assert (code, json.loads(out)) == (0, [])


# --- against BC (an emulator process: `run` and `client` read the BC_* settings) ---------------


@pytest.fixture
def bc_env(bc_emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch) -> RunningEmulator:
    for name, value in bc_emulator.info.env().items():
        monkeypatch.setenv(name, value)
    return bc_emulator


def test_run_groups_bc_failures_by_error_code(
    cli: Any, tmp_path: Path, bc_env: RunningEmulator, piped: None
) -> None:
    tag = uuid.uuid4().hex[:6].upper()
    rows = [
        f"X{tag}1,{'long name ' * 15},Inventory",
        f"X{tag}2,{'longer name ' * 15},Inventory",
        f"X{tag}3,Fine name,Invntory",
        f"X{tag}4,Fine name,Inventory",
    ]
    (tmp_path / "items.csv").write_text("number,displayName,type\n" + "\n".join(rows) + "\n")
    outgoing = {
        "items": {
            "entity": "items",
            "company": "CRONUS USA, Inc.",
            "action": "upsert",
            "key_field": "number",
        }
    }
    project = write_project(
        tmp_path, {"items_in": {"from": "items.csv", "to": "items"}}, outgoing=outgoing
    )
    code, out, err = cli("run", "--config", str(project), "--json")
    assert code == 1, err
    (run,) = json.loads(out)
    assert run["counts"]["failed"] == 3
    assert [(f["reason"], f["count"]) for f in run["failures"]] == [
        ("Application_StringExceededLength", 2),
        ("Application_EvaluateException", 1),
    ]
    assert "2 x Application_StringExceededLength: The length of the string" in err
    assert "1 x Application_EvaluateException: " in err


def test_client_grant_and_check_json(cli: Any, bc_env: RunningEmulator, piped: None) -> None:
    code, out, err = cli("client", "grant", "--json")
    assert code == 0, err
    grant = json.loads(out)
    assert set(grant) == {"token", "expires_at", "claims", "companies"}
    assert "CRONUS USA, Inc." in [company["name"] for company in grant["companies"]]
    assert all(uuid.UUID(company["id"]) for company in grant["companies"])
    assert datetime.fromisoformat(grant["expires_at"]) > datetime.now(UTC)
    assert grant["claims"]["tid"] == bc_env.info.tenant_id
    assert len(grant["token"]) < 40  # redacted: a real token is hundreds of characters
    code, out, _ = cli("client", "check", "--json")
    assert (code, json.loads(out)) == (0, {"ok": True, "companies": len(grant["companies"])})


def test_client_grant_companies_table_keeps_guids_whole(
    cli: Any, bc_env: RunningEmulator, terminal_80: None
) -> None:
    _, out, _ = cli("client", "grant", "--json")
    companies = json.loads(out)["companies"]
    _, out, _ = cli("client", "grant")
    out = re.sub(r"\x1b\[[0-9;]*m", "", out)
    for company in companies:
        assert _whole_in_some_line(company["id"], out)
        assert _whole_in_some_line(company["name"], out)


def test_run_with_a_mistyped_flow_suggests_the_right_one(
    cli: Any, failing_project: tuple[Path, list[str]], piped: None
) -> None:
    project, _ = failing_project
    code, out, err = cli("run", LONG_FLOW.replace("whole", "hole"), "--config", str(project))
    assert (code, out) == (2, "")
    assert f"did you mean {LONG_FLOW!r}?" in err and "Traceback" not in err


def test_retry_and_skip_json(
    cli: Any, failing_project: tuple[Path, list[str]], piped: None
) -> None:
    project, failing_ids = failing_project
    cli("run", "--config", str(project))
    config = ("--config", str(project))
    code, out, err = cli("tasks", "retry", "--failed", "--flow", LONG_FLOW, *config, "--json")
    assert code == 1
    (run,) = json.loads(out)
    assert run["flow"] == LONG_FLOW and run["counts"]["failed"] == 2
    assert [(f["reason"], f["count"]) for f in run["failures"]] == [("transform", 2)]
    _, out, _ = cli("tasks", "list", "--status", "failed", *config, "--json")
    ids = [str(task["id"]) for task in json.loads(out)]
    code, out, _ = cli("tasks", "skip", *ids, *config, "--json")
    assert code == 0
    skipped = json.loads(out)
    assert {task["status"] for task in skipped} == {"skipped"}
    assert {task["record_key"] for task in skipped} == set(failing_ids)
    # nothing failed any more: the retry says so and exits 0
    code, out, err = cli("tasks", "retry", "--failed", "--flow", LONG_FLOW, *config, "--json")
    assert (code, json.loads(out)) == (0, [])
    assert f"no failed tasks for flow {LONG_FLOW}: nothing to retry" in err


@pytest.mark.slow  # real processes or a wide notification window
def test_run_every_json_prints_one_line_per_round(
    failing_project: tuple[Path, list[str]],
) -> None:
    """A real process: --every loops until Ctrl-C, each round one JSON document on one line."""
    project, _ = failing_project
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bcbridge",
            "run",
            "--every",
            "1s",
            "--json",
            "--config",
            str(project),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    try:
        rounds = [json.loads(process.stdout.readline()) for _ in range(2)]
    finally:
        process.send_signal(signal.SIGINT)
        rest, err = process.communicate(timeout=60)
    assert process.returncode == 1, err  # records failed: the first trouble is the exit code
    for line in rest.splitlines():
        rounds.append(json.loads(line))
    assert all([run["flow"] for run in runs] == [LONG_FLOW] for runs in rounds)
    assert rounds[0][0]["counts"]["failed"] == 2


def test_run_on_a_project_without_flows_says_so(cli: Any, tmp_path: Path, piped: None) -> None:
    project = write_project(tmp_path, {})
    code, out, err = cli("run", "--config", str(project), "--json")
    assert (code, out) == (2, "")
    assert f"no flows in {project} to run" in err


def test_print_failures_says_when_it_grouped_only_the_latest(
    capsys: pytest.CaptureFixture[str], piped: None
) -> None:
    groups = group_failures([("BadRequest", "bad value")] * 3)
    print_failures("f", groups, ["bcbridge tasks list --flow f --status failed"], total=12_000)
    err = capsys.readouterr().err
    assert "f: 12,000 record(s) not delivered, by reason:" in err
    assert "3 x BadRequest: bad value" in err
    assert "(the reasons of the latest 3 of them)" in err
    assert "  bcbridge tasks list --flow f --status failed" in err


def test_print_failures_gives_the_commands_even_without_reasons(
    capsys: pytest.CaptureFixture[str], piped: None
) -> None:
    print_failures("f", [], ["bcbridge tasks retry --failed --flow f"], total=2)
    err = capsys.readouterr().err
    assert "f: 2 record(s) not delivered:" in err
    assert "bcbridge tasks retry --failed --flow f" in err
    print_failures("f", [], ["bcbridge tasks retry --failed --flow f"], total=0)
    assert capsys.readouterr().err == ""


def test_client_check_json_failure_leaves_stdout_empty(
    cli: Any, bc_env: RunningEmulator, monkeypatch: pytest.MonkeyPatch, piped: None
) -> None:
    monkeypatch.setenv("BC_CLIENT_SECRET", "not-the-secret-at-all")
    code, out, err = cli("client", "check", "--json")
    assert (code, out) == (3, "")
    assert err.startswith("error: ") and "not-the-secret-at-all" not in err
