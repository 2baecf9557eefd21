"""The project file edited in place (bcbridge.projectfile): layout kept, secrets in .env,
every change checked by the CLI's loader, stale versions refused, concurrent editors safe."""

from __future__ import annotations

import difflib
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path

import anyio
import filelock
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bcbridge.cli import main
from bcbridge.cli.demo import examples_dir
from bcbridge.cli.init import PROJECT
from bcbridge.errors import Busy
from bcbridge.flowconfig import load_project
from bcbridge.flows import FlowRunner
from bcbridge.projectfile import Conflict, InvalidChange, ProjectFile, Secret
from bcbridge.store import Store

CANARY = "canary-7f3Q~secret.value_9"
CLIENT = {
    "tenant_id": "contoso.onmicrosoft.com",
    "client_id": "00000000-0000-0000-0000-000000000001",
}


@pytest.fixture(autouse=True)
def no_bc_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the project and its .env count (a BC_* or BCBRIDGE_* variable would win)."""
    for name in list(os.environ):
        if name.startswith(("BC_", "BCBRIDGE_")):
            monkeypatch.delenv(name)


@pytest.fixture
def starter(tmp_path: Path) -> Path:
    """`bcbridge init`'s project: comments, a commented-out flow, sequences indented."""
    path = tmp_path / "bcbridge.yaml"
    path.write_text(PROJECT)
    return path


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """examples/bcbridge.yaml: a flow mapping over two lines, a folded scalar, comments."""
    shutil.copytree(examples_dir(), tmp_path, dirs_exist_ok=True)
    return tmp_path / "bcbridge.yaml"


def changed_lines(before: str, after: str) -> tuple[list[str], list[str]]:
    """The lines removed and the lines added."""
    diff = list(difflib.ndiff(before.splitlines(), after.splitlines()))
    return [d[2:] for d in diff if d.startswith("- ")], [d[2:] for d in diff if d.startswith("+ ")]


def files_of(path: Path) -> tuple[str, str | None]:
    env = path.parent / ".env"
    return path.read_text(), env.read_text() if env.exists() else None


def test_an_edit_changes_only_its_lines(example: Path) -> None:
    before = example.read_text()
    project = ProjectFile(example)
    snapshot = project.read()
    assert snapshot.problems == []
    flow = snapshot.item("flows", "customers_to_sqlite")
    assert flow is not None
    flow["schedule"] = "5m"
    version = project.put("flows", "customers_to_sqlite", flow, version=snapshot.version)
    project.put(
        "incoming",
        "vendors",
        {"entity": "vendors", "company": "CRONUS USA, Inc.", "params": {"$top": 5}},
        version=version,
    )
    after = example.read_text()
    removed, added = changed_lines(before, after)
    assert removed == ["    schedule: 15m"]
    assert added == [
        "  vendors:",
        "    entity: vendors",
        "    company: CRONUS USA, Inc.",
        "    params:",
        "      $top: 5",
        "    schedule: 5m",
    ]
    # the new incoming follows the last one, above the comment lines heading `outgoing:`
    assert after.index("  vendors:") < after.index("outgoing:")
    assert load_project(example).incoming["vendors"].params == {"$top": 5}


def test_new_and_deleted_items_keep_the_comments_where_they_were(starter: Path) -> None:
    before = starter.read_text()
    project = ProjectFile(starter)
    version = project.read().version
    version = project.put("clients", "bc", {**CLIENT, "client_secret": CANARY}, version=version)
    version = project.put(
        "flows", "copy", {"from": "customers", "to": "out/copy.csv"}, version=version
    )
    middle = starter.read_text()
    removed, _ = changed_lines(before, middle)
    assert removed == []  # every comment and line of the file is still there, in order
    assert middle.index("clients:") < middle.index("# What to read from Business Central.")
    assert middle.index("  copy:") < middle.index("  # Items from a CSV file")
    for name in ("copy",):
        version = project.delete("flows", name, version=version)
    project.delete("clients", "bc", version=version)
    removed, added = changed_lines(before, starter.read_text())
    assert removed == [] and added == ["clients: {}"]


def test_text_that_yaml_would_read_as_something_else_is_quoted(starter: Path) -> None:
    project = ProjectFile(starter)
    outgoing = {
        "entity": "items",
        "action": "upsert",
        "key_field": "number",
        "company": "2024",
        "params": {"a": "no", "b": "on", "c": "1e3", "d": " spaced "},
    }
    project.put("outgoing", "odd", outgoing, version=project.read().version)
    config = load_project(starter)  # read by PyYAML (YAML 1.1), where no is false
    assert config.outgoing["odd"].company == "2024"
    assert config.outgoing["odd"].params == outgoing["params"]


def test_a_secret_goes_to_the_env_file_and_nowhere_else(starter: Path) -> None:
    env = starter.parent / ".env"
    env.write_text("# mine\nOTHER=1  # kept\n")
    starter.chmod(0o640)
    project = ProjectFile(starter)
    project.put(
        "clients", "bc", {**CLIENT, "client_secret": CANARY}, version=project.read().version
    )

    assert CANARY not in starter.read_text()
    assert 'client_secret: "${BCBRIDGE_BC_CLIENT_SECRET}"' in starter.read_text()
    assert env.read_text() == f"# mine\nOTHER=1  # kept\nBCBRIDGE_BC_CLIENT_SECRET='{CANARY}'\n"
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    assert stat.S_IMODE(starter.stat().st_mode) == 0o640  # the project's own mode kept
    snapshot = project.read()
    assert CANARY not in repr(snapshot) and CANARY not in json.dumps(snapshot.sections)
    assert snapshot.sections["clients"]["bc"]["client_secret"] == Secret.SET
    # the loader (and so every command) reads the .env beside the project
    secret = load_project(starter).client_settings("bc").client_secret
    assert secret is not None and secret.get_secret_value() == CANARY


def test_a_secret_is_kept_replaced_or_removed(starter: Path) -> None:
    env = starter.parent / ".env"
    project = ProjectFile(starter)
    version = project.put(
        "clients", "bc", {**CLIENT, "client_secret": CANARY}, version=project.read().version
    )
    form = project.read().item("clients", "bc")
    assert form is not None and form["client_secret"] == Secret.SET
    form["environment"] = "sandbox"  # saved back with "set": the secret stays
    version = project.put("clients", "bc", form, version=version)
    assert CANARY in env.read_text()
    version = project.put("clients", "bc", {**CLIENT, "client_secret": "new"}, version=version)
    assert env.read_text() == "BCBRIDGE_BC_CLIENT_SECRET='new'\n"
    key = starter.parent / "key.pem"
    key.write_text("not read here")
    certificate = {"private_key_path": "key.pem", "thumbprint": "AB" * 20}
    with pytest.raises(InvalidChange) as refused:  # the secret kept: two credentials
        project.put("clients", "bc", {**CLIENT, "certificate": certificate}, version=version)
    assert [p.path for p in refused.value.problems] == ["clients.bc"]
    version = project.put(
        "clients",
        "bc",
        {**CLIENT, "client_secret": None, "certificate": certificate},
        version=version,
    )
    assert env.read_text() == ""
    assert project.read().sections["clients"]["bc"]["client_secret"] == Secret.NOT_SET


def test_a_replaced_secret_changes_the_quotes_it_needs(starter: Path) -> None:
    """The loader puts the secret in the YAML's text before parsing it: `"${VAR}"` breaks on a
    secret with a " in it, so its reference is written '${VAR}' (and back)."""
    project = ProjectFile(starter)
    for secret in ("plain", 'with " quote', "back\\slash", "it's", "plain"):
        project.put("clients", "bc", {**CLIENT, "client_secret": secret}, version=project.version())
        loaded = load_project(starter).client_settings("bc").client_secret
        assert loaded is not None and loaded.get_secret_value() == secret


def test_a_secret_written_in_the_yaml_by_hand_moves_to_the_env_file(starter: Path) -> None:
    text = starter.read_text().replace(
        "incoming:",
        f"clients:\n  bc: {{tenant_id: t, client_id: c, client_secret: {CANARY}}}\n\nincoming:",
        1,
    )
    starter.write_text(text)
    project = ProjectFile(starter)
    form = project.read().item("clients", "bc")
    assert form == {"tenant_id": "t", "client_id": "c", "client_secret": Secret.SET}
    project.put("clients", "bc", {**form, "environment": "sandbox"}, version=project.version())
    assert CANARY not in starter.read_text()
    assert (starter.parent / ".env").read_text() == f"BCBRIDGE_BC_CLIENT_SECRET='{CANARY}'\n"
    secret = load_project(starter).client_settings("bc").client_secret
    assert secret is not None and secret.get_secret_value() == CANARY


def test_the_environment_wins_over_the_env_file(
    starter: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = ProjectFile(starter)
    project.put(
        "clients", "bc", {**CLIENT, "client_secret": CANARY}, version=project.read().version
    )
    monkeypatch.setenv("BCBRIDGE_BC_CLIENT_SECRET", "from-the-environment")
    secret = load_project(starter).client_settings("bc").client_secret
    assert secret is not None and secret.get_secret_value() == "from-the-environment"


def test_a_password_in_a_url_goes_to_the_env_file(starter: Path) -> None:
    project = ProjectFile(starter)
    url = f"postgresql+psycopg://bridge:{CANARY}@db.example/bcbridge"
    version = project.set_store(url, version=project.read().version)
    text = starter.read_text()
    assert CANARY not in text
    assert 'store: "postgresql+psycopg://bridge:${BCBRIDGE_STORE_PASSWORD}@db.example' in text
    assert load_project(starter).store == url
    shown = project.read().sections["store"]
    assert shown == "postgresql+psycopg://bridge:${BCBRIDGE_STORE_PASSWORD}@db.example/bcbridge"
    project.set_store(shown, version=version)  # saved back as read: nothing changes
    assert starter.read_text() == text


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(secret=st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=30))
def test_any_secret_reads_back_as_it_was_given(starter: Path, secret: str) -> None:
    project = ProjectFile(starter)
    data = {**CLIENT, "client_secret": secret}
    try:
        project.put("clients", "bc", data, version=project.version())
    except InvalidChange as refused:  # a secret with both ' and " (or \): said, not mangled
        assert {p.path for p in refused.problems} == {"clients.bc.client_secret"}
        assert "'" in secret and ('"' in secret or "\\" in secret)
        return
    loaded = load_project(starter).client_settings("bc").client_secret
    assert loaded is not None and loaded.get_secret_value() == secret
    assert 'client_secret: "${BCBRIDGE_BC_CLIENT_SECRET}"' in starter.read_text() or (
        "client_secret: '${BCBRIDGE_BC_CLIENT_SECRET}'" in starter.read_text()
    )


def test_an_invalid_change_is_refused_at_its_fields(starter: Path) -> None:
    project = ProjectFile(starter)
    version = project.read().version
    before = files_of(starter)
    with pytest.raises(InvalidChange) as refused:
        project.put("incoming", "bad", {"entity": "custmers", "page_size": 0}, version=version)
    problems = {p.path: p.message for p in refused.value.problems}
    assert set(problems) == {"incoming.bad.page_size"}  # the entity is checked once it loads
    assert problems["incoming.bad.page_size"] == "must be at least 1"
    with pytest.raises(InvalidChange) as refused:
        project.put("incoming", "bad", {"entity": "custmers"}, version=version)
    [problem] = refused.value.problems
    assert (problem.section, problem.item, problem.field) == ("incoming", "bad", "entity")
    assert problem.message.startswith("unknown entity set 'custmers' (did you mean 'customers'?)")
    assert problem.text.startswith(f"{starter}:")
    with pytest.raises(InvalidChange) as refused:  # a flow reads it
        project.delete("incoming", "customers", version=version)
    assert [p.path for p in refused.value.problems] == ["flows.customers_to_file.from"]
    with pytest.raises(InvalidChange) as refused:
        project.rename("incoming", "customers", "customers", version=version)
    assert refused.value.problems[0].path == "incoming.customers"
    with pytest.raises(InvalidChange) as refused:
        project.put(
            "clients", "bc", {**CLIENT, "client_secret": CANARY, "tenant": "x"}, version=version
        )
    assert [p.path for p in refused.value.problems] == ["clients.bc.tenant"]
    assert CANARY not in repr(refused.value.problems) and CANARY not in str(refused.value)
    assert files_of(starter) == before  # neither file touched, no .env made
    assert not list(starter.parent.glob(".*check*"))  # nor a checked copy left behind


def test_a_file_broken_by_hand_can_be_mended_one_item_at_a_time(starter: Path) -> None:
    starter.write_text(starter.read_text().replace("entity: items", "entity: itemz"))
    project = ProjectFile(starter)
    snapshot = project.read()
    assert [p.path for p in snapshot.problems] == ["outgoing.items.entity"]
    version = project.put(  # an edit elsewhere adds no problem: saved
        "incoming", "vendors", {"entity": "vendors", "company": "X"}, version=snapshot.version
    )
    with pytest.raises(InvalidChange) as refused:  # one that adds a problem is refused
        project.put("incoming", "more", {"entity": "nope"}, version=version)
    assert [p.path for p in refused.value.problems] == ["incoming.more.entity"]
    outgoing = project.read().item("outgoing", "items")
    assert outgoing is not None
    project.put("outgoing", "items", {**outgoing, "entity": "items"}, version=version)
    assert project.read().problems == []


def test_a_problem_that_stops_the_loader_blocks_every_edit_but_its_mend(starter: Path) -> None:
    """A wrong type stops the loader before it checks names and entity sets: an edit then
    cannot be checked, so it is refused with that problem, until it is mended."""
    starter.write_text(starter.read_text().replace("schedule: 15m", "schedule: every now"))
    project = ProjectFile(starter)
    version = project.read().version
    with pytest.raises(InvalidChange) as refused:
        project.put("incoming", "more", {"entity": "nope"}, version=version)
    assert [p.path for p in refused.value.problems] == ["flows.customers_to_file.schedule"]
    flow = project.read().item("flows", "customers_to_file")
    assert flow is not None
    project.put("flows", "customers_to_file", {**flow, "schedule": "1h"}, version=version)
    assert project.read().problems == []


def test_a_rename_follows_the_references(starter: Path) -> None:
    project = ProjectFile(starter)
    version = project.put(
        "clients", "bc", {**CLIENT, "client_secret": CANARY}, version=project.read().version
    )
    incoming = project.read().item("incoming", "customers")
    assert incoming is not None
    version = project.put("incoming", "customers", {**incoming, "client": "bc"}, version=version)
    version = project.rename("incoming", "customers", "bc_customers", version=version)
    project.rename("clients", "bc", "cronus", version=version)
    config = load_project(starter)
    assert config.flows["customers_to_file"].source.incoming == "bc_customers"
    assert config.incoming["bc_customers"].client == "cronus"
    assert list(config.incoming) == ["bc_customers"]
    secret = config.client_settings("cronus").client_secret
    assert secret is not None and secret.get_secret_value() == CANARY


def test_a_stale_version_is_refused(starter: Path) -> None:
    project = ProjectFile(starter)
    version = project.read().version
    starter.write_text(starter.read_text().replace("schedule: 15m", "schedule: 1h"))
    edited = starter.read_text()
    incoming = {"entity": "vendors", "company": "X"}
    with pytest.raises(Conflict, match="changed since it was read"):
        project.put("incoming", "vendors", incoming, version=version)
    assert starter.read_text() == edited
    version = project.read().version
    (starter.parent / ".env").write_text("ADDED=1\n")  # the .env is part of the version
    with pytest.raises(Conflict):
        project.put("incoming", "vendors", incoming, version=version)
    project.put("incoming", "vendors", incoming, version=project.read().version)
    assert (
        "schedule: 1h" in starter.read_text() and "ADDED=1" in (starter.parent / ".env").read_text()
    )


def save_with_retries(path: Path, name: str) -> int:
    """Add a flow as a form would: read, save, and on a conflict read again. The conflicts met."""
    project, conflicts = ProjectFile(path), 0
    while True:
        version = project.read().version
        try:
            project.put(
                "flows", name, {"from": "customers", "to": f"out/{name}.csv"}, version=version
            )
            return conflicts
        except Conflict:
            conflicts += 1


def test_threads_saving_at_once_lose_no_update(starter: Path) -> None:
    names = [f"flow_{number}" for number in range(8)]
    conflicts: list[int] = []
    threads = [
        threading.Thread(target=lambda n=name: conflicts.append(save_with_retries(starter, n)))
        for name in names
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(conflicts) == len(names)
    assert set(names) <= set(load_project(starter).flows)


def test_a_save_waits_for_the_lock_another_editor_holds(starter: Path) -> None:
    project = ProjectFile(starter, lock_timeout=0.2)
    version = project.read().version
    before = files_of(starter)
    with filelock.FileLock(str(project.lock_path)), pytest.raises(Busy, match="try again"):
        project.put("flows", "late", {"from": "customers", "to": "out/x.csv"}, version=version)
    assert files_of(starter) == before
    project.put("flows", "late", {"from": "customers", "to": "out/x.csv"}, version=version)


def test_one_of_two_saves_from_one_version_wins(starter: Path) -> None:
    project = ProjectFile(starter)
    version = project.read().version
    project.put("flows", "first", {"from": "customers", "to": "out/a.csv"}, version=version)
    with pytest.raises(Conflict):
        project.put("flows", "second", {"from": "customers", "to": "out/b.csv"}, version=version)
    assert "first" in load_project(starter).flows and "second" not in load_project(starter).flows


PROCESS_SAVES = """
import sys
from pathlib import Path
from tests.test_projectfile import save_with_retries
for number in range(4):
    save_with_retries(Path(sys.argv[1]), f"{sys.argv[2]}_{number}")
"""


@pytest.mark.slow  # real processes or a wide notification window
def test_processes_saving_at_once_lose_no_update(starter: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "src"), str(root)])}
    workers = [
        subprocess.Popen([sys.executable, "-c", PROCESS_SAVES, str(starter), name], env=env)
        for name in ("left", "right")
    ]
    assert [worker.wait(timeout=120) for worker in workers] == [0, 0]
    flows = set(load_project(starter).flows)
    assert {f"{side}_{n}" for side in ("left", "right") for n in range(4)} <= flows


def test_the_cli_accepts_an_edited_project(
    starter: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the `default` client's BC_* variables from the .env too
    (starter.parent / ".env").write_text("BC_TENANT_ID=t\nBC_CLIENT_ID=c\nBC_CLIENT_SECRET=s\n")
    project = ProjectFile(starter)
    version = project.put(
        "clients", "bc", {**CLIENT, "client_secret": CANARY}, version=project.read().version
    )
    project.put("flows", "copy", {"from": "customers", "to": "out/copy.csv"}, version=version)
    for command in (["check"], ["flows", "list"]):
        with pytest.raises(SystemExit) as ended:
            main([*command, "--config", str(starter)])
        out, err = capsys.readouterr()
        assert ended.value.code == 0, out + err
        assert "copy" in out and CANARY not in out + err


def test_an_edited_project_runs(tmp_path: Path) -> None:
    path = tmp_path / "bcbridge.yaml"
    (tmp_path / "in.jsonl").write_text(
        '{"number": "1", "name": "a"}\n{"number": "2", "name": "b"}\n'
    )
    project = ProjectFile(path)  # no file yet: the first save makes it
    version = project.set_store("sqlite:///state.db", version=project.read().version)
    flow = {"from": "in.jsonl", "transform": [{"rename": {"name": "displayName"}}], "to": "out.csv"}
    project.put("flows", "copy", flow, version=version)
    config = load_project(path)
    store = Store(config.store)
    try:
        result = anyio.run(FlowRunner(config, store).run, "copy")
    finally:
        store.close()
    assert (result.status, result.failed, result.error) == ("ok", 0, None)
    assert (tmp_path / "out.csv").read_text().splitlines() == ["number,displayName", "1,a", "2,b"]
