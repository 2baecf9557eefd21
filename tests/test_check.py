"""The project file checked at load (by every command that reads it) and by `bcbridge check`:
names through the catalog, actions, key fields, enums, steps, python modules, duplicate keys,
relative paths anchored to the file; errors as `file:line: key: message (did you mean ...?)`."""

from __future__ import annotations

import json
import os
import tempfile
import textwrap
from pathlib import Path

import pytest
from hypothesis import given

from bcbridge.cli import main
from bcbridge.errors import ConfigError
from bcbridge.flowconfig import load_project
from bcbridge.testing import RunningEmulator
from tests.test_fuzz_cli import FUZZ, assert_handled, project_texts
from tests.test_fuzz_cli import run_cli as fuzz_cli

CRONUS = "CRONUS USA, Inc."

GOOD = """\
incoming:
  customers: {entity: customers, company: "CRONUS USA, Inc.", cursor: lastModifiedDateTime}
outgoing:
  items: {entity: items, company: "CRONUS USA, Inc.", action: upsert, key_field: number}
  invoices: {entity: salesInvoices, company: "CRONUS USA, Inc.", action: post, key: "{id}"}
flows:
  customers_to_file:
    from: customers
    to: out/customers.jsonl
  items_from_file:
    from: items.jsonl
    to: items
"""


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as ended:
        main(list(args))
    out, err = capsys.readouterr()
    return int(ended.value.code or 0), out, err


def project(folder: Path, text: str) -> Path:
    path = folder / "bcbridge.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def problems_in(folder: Path, text: str) -> list[str]:
    """The lines of the error `flows list` ends with (it loads the project as every command)."""
    path = project(folder, text)
    with pytest.raises(ConfigError) as error:
        load_project(path)
    return str(error.value).splitlines()


@pytest.fixture(autouse=True)
def bc_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings for the `default` client, so that only the project is judged."""
    for name, value in {
        "BC_TENANT_ID": "t",
        "BC_CLIENT_ID": "c",
        "BC_CLIENT_SECRET": "s",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("BC_BASE_URL", "BC_CA_BUNDLE", "BC_COMPANY", "BC_AUTHORITY_URL"):
        monkeypatch.delenv(name, raising=False)


def test_a_good_project_loads_with_a_bound_action(tmp_path: Path) -> None:
    config = load_project(project(tmp_path, GOOD))
    assert config.outgoing["invoices"].action == "post"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("entity: customers", "entity: custmers"),
            ":2: incoming.customers.entity: unknown entity set 'custmers' "
            "(did you mean 'customers'?); valid: accountingPeriods",
        ),
        (
            ("action: upsert", "action: upsertt"),
            ":4: outgoing.items.action: items has no action 'upsertt' (did you mean 'upsert'?); "
            "valid: create, update, upsert, delete",
        ),
        (
            ("action: post", "action: pots"),
            ":5: outgoing.invoices.action: salesInvoices has no action 'pots' (did you mean "
            "'post'?); valid: create, update, upsert, delete, post, postAndSend",
        ),
        (
            ("key_field: number", "key_field: numbr"),
            ":4: outgoing.items.key_field: items has no field 'numbr' (did you mean 'number'?)",
        ),
        (
            (", key_field: number}", "}"),
            ":4: outgoing.items: upsert matches records on a key field: add key_field:",
        ),
        (
            ("action: upsert", "action: upsert, etag: fetchh"),
            ":4: outgoing.items.etag: unknown value 'fetchh' (did you mean 'fetch'?); "
            "valid: fetch, record, force",
        ),
        (
            ("cursor: lastModifiedDateTime", "cursor: lastModified"),
            ":2: incoming.customers.cursor: customers has no field 'lastModified' "
            "(did you mean 'lastModifiedDateTime'?)",
        ),
        (
            ("    to: items\n", "    to: itmes\n"),
            ":12: flows.items_from_file.to: unknown outgoing 'itmes' (did you mean 'items'?); "
            "defined: items, invoices",
        ),
        (
            ("    from: items.jsonl\n", "    from: {reader: items.jsonl, format: jsnl}\n"),
            ":11: flows.items_from_file.from.format: unknown value 'jsnl' "
            "(did you mean 'jsonl'?); valid: jsonl, csv",
        ),
    ],
)
def test_names_enums_and_fields_are_checked_at_load_with_the_valid_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: tuple[str, str], expected: str
) -> None:
    path = project(tmp_path, GOOD.replace(*change))
    code, _, err = run_cli(capsys, "flows", "list", "--config", str(path))
    assert code == 2, err
    assert f"error: {path}{expected}" in err
    assert "Traceback" not in err


def test_a_read_only_entity_set_lists_only_what_it_allows(tmp_path: Path) -> None:
    text = GOOD.replace("entity: items,", "entity: generalLedgerEntries,")
    (problem,) = problems_in(tmp_path, text)
    assert "generalLedgerEntries has no action 'upsert'; valid: none" in problem


def test_a_name_given_twice_is_an_error_not_the_last_one_wins(tmp_path: Path) -> None:
    text = GOOD + "  customers_to_file:\n    from: customers\n    to: other.jsonl\n"
    (problem,) = problems_in(tmp_path, text)
    assert problem == (
        f"{tmp_path / 'bcbridge.yaml'}:13: flows.customers_to_file: given twice (first at line "
        "7); YAML would keep only the last one: rename or remove one of them"
    )


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = GOOD.replace("entity: customers", "entity: custmers").replace(
        "action: upsert", "action: upsertt"
    )
    problems = problems_in(tmp_path, text)
    assert [p.split(": ")[1] for p in problems] == [
        "incoming.customers.entity",
        "outgoing.items.action",
    ]


def test_an_incomings_old_transform_key_points_to_params_transform(tmp_path: Path) -> None:
    text = GOOD.replace("cursor: lastModifiedDateTime}", "transform: [{keep: [number]}]}")
    (problem,) = problems_in(tmp_path, text)
    assert ":2: incoming.customers.transform: " in problem
    assert "called params_transform: rename the key" in problem
    assert "the flow's transform:" in problem


def test_params_transform_steps_are_built_at_load(tmp_path: Path) -> None:
    good = GOOD.replace("cursor: lastModifiedDateTime}", "params_transform: [{set: {$top: 2}}]}")
    assert load_project(project(tmp_path, good)).incoming["customers"].params_transform
    bad = good.replace("{set:", "{sett:")
    (problem,) = problems_in(tmp_path, bad)
    assert ":2: incoming.customers.params_transform[0].step: unknown step 'sett'" in problem


def test_python_steps_import_from_the_project_folder_or_name_the_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path.parent)  # not the project's folder
    (tmp_path / "check_steps_here.py").write_text(
        "def upper(record, context):\n    return record\n"
    )
    flows = (
        "flows:\n  f:\n    from: in.jsonl\n    transform: [{python: 'check_steps_here:upper'}]\n"
    )
    good = project(tmp_path, flows + "    to: out.jsonl\n")
    assert load_project(good).flows["f"].transform
    bad = flows.replace("check_steps_here", "check_steps_nowhere") + "    to: out.jsonl\n"
    (problem,) = problems_in(tmp_path, bad)
    assert problem.startswith(f"{good}:4: flows.f.transform[0]")
    assert "No module named 'check_steps_nowhere' (put the module next to the project file" in (
        problem
    )


def test_clients_relative_paths_are_next_to_the_project_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ca.pem").write_text("not read at load")
    (tmp_path / "key.pem").write_text("not read at load")
    (tmp_path / "logs").mkdir()
    text = """\
    clients:
      bc:
        tenant_id: t
        client_id: c
        certificate: {private_key_path: key.pem, thumbprint: AB}
        ca_bundle: ca.pem
        log_file: logs/http.log
    """
    path = project(tmp_path, text)
    monkeypatch.chdir(tmp_path.parent)
    settings = load_project(path).clients["bc"]
    assert settings.ca_bundle == tmp_path / "ca.pem"
    assert settings.log_file == tmp_path / "logs/http.log"
    assert settings.certificate is not None
    assert settings.certificate.private_key_path == tmp_path / "key.pem"
    (tmp_path / "ca.pem").unlink()
    (problem,) = problems_in(tmp_path, text)
    assert f":6: clients.bc.ca_bundle: no file at {tmp_path / 'ca.pem'}" in problem


# --- bcbridge check ---------------------------------------------------------------------------


def test_check_says_ok_per_section_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = project(tmp_path, GOOD)
    code, out, err = run_cli(capsys, "check", "--config", str(path))
    assert code == 0, out + err
    for section in ("file", "store", "clients", "incoming", "outgoing", "flows"):
        assert f"  {section:<9} ok" in out
    assert "customers_to_file, items_from_file" in out


def test_check_lists_problems_per_section_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BC_TENANT_ID")
    text = GOOD.replace("action: upsert", "action: upsertt")
    path = project(tmp_path, text.replace("entity: salesInvoices", "entity: salesInvoice"))
    code, out, _ = run_cli(capsys, "check", "--config", str(path), "--json")
    assert code == 2
    report = json.loads(out)
    assert report["ok"] is False
    sections = report["sections"]
    assert sections["incoming"] == {"ok": True, "problems": [], "notes": ["customers"]}
    action, entity = sections["outgoing"]["problems"]
    assert action.startswith(f"{path}:4: outgoing.items.action: items has no action 'upsertt'")
    assert entity.startswith(
        f"{path}:5: outgoing.invoices.entity: unknown entity set 'salesInvoice' (did you mean "
        "'salesInvoices'?)"
    )
    (tenant,) = sections["clients"]["problems"]
    assert "BC_TENANT_ID is not set: export BC_TENANT_ID=" in tenant


def test_check_without_a_project_file_names_the_way_to_give_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BCBRIDGE_CONFIG", raising=False)
    code, _, err = run_cli(capsys, "check")
    assert code == 2
    assert "no config file at bcbridge.yaml (use --config or BCBRIDGE_CONFIG)" in err


@pytest.fixture
def emulator_env(bc_emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in bc_emulator.info.env().items():
        monkeypatch.setenv(name, value)


@pytest.mark.usefixtures("emulator_env")
def test_check_connect_proves_the_client_and_each_company(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = project(tmp_path, GOOD)
    code, out, err = run_cli(capsys, "check", "--config", str(path), "--connect", "--json")
    assert code == 0, out + err
    notes = json.loads(out)["sections"]["connect"]["notes"]
    assert any(note.startswith("client default: signed in;") for note in notes)
    assert any(note.startswith(f"incoming.customers: company {CRONUS} (") for note in notes)


@pytest.mark.usefixtures("emulator_env")
def test_check_connect_names_a_company_that_does_not_exist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = project(
        tmp_path,
        GOOD.replace(
            'company: "CRONUS USA, Inc.", action: upsert', "company: Cronos, action: upsert"
        ),
    )
    code, out, _ = run_cli(capsys, "check", "--config", str(path), "--connect")
    assert code == 2
    assert "outgoing.items.company: 'Cronos' matches no company; the companies are:" in out
    assert "incoming" in out and "1 problem(s)" in out


@pytest.mark.usefixtures("emulator_env")
def test_check_connect_with_a_refused_secret_exits_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BC_CLIENT_SECRET", "not-the-secret")
    path = project(tmp_path, GOOD)
    code, out, err = run_cli(capsys, "check", "--config", str(path), "--connect")
    assert code == 3, out + err
    assert "client default:" in out
    assert "not-the-secret" not in out + err


def test_check_offline_does_not_connect(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Plain `check` never talks to BC: settings pointing nowhere still pass."""
    os.environ["BC_BASE_URL"] = "https://127.0.0.1:9"
    try:
        code, out, _ = run_cli(capsys, "check", "--config", str(project(tmp_path, GOOD)))
    finally:
        del os.environ["BC_BASE_URL"]
    assert code == 0 and "connect" not in out


@pytest.mark.usefixtures("emulator_env")
def test_params_transform_changes_the_request_and_transform_the_records(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The two kinds of transformers, named apart: `params_transform:` of an incoming sets
    $top on the request; the flow's `transform:` keeps two fields of each record."""
    path = project(
        tmp_path,
        """\
        incoming:
          customers:
            entity: customers
            company: "CRONUS USA, Inc."
            params_transform: [{set: {$top: "3"}}]
        flows:
          three:
            from: customers
            transform: [{keep: [number, displayName]}]
            to: out/three.jsonl
        """,
    )
    code, out, err = run_cli(capsys, "run", "three", "--config", str(path))
    assert code == 0, out + err
    rows = [json.loads(line) for line in (tmp_path / "out/three.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    assert all(set(row) == {"number", "displayName"} for row in rows)


def readme_projects() -> list[str]:
    """The YAML blocks of the README's "Projects and flows" section."""
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Projects and flows", 1)[1].split("\n## ", 1)[0]
    return [block.split("```", 1)[0] for block in section.split("```yaml\n")[1:]]


@pytest.mark.parametrize("text", readme_projects())
def test_the_readmes_projects_pass_the_check(tmp_path: Path, text: str) -> None:
    assert load_project(project(tmp_path, text)).flows


def test_the_examples_pass_the_check(capsys: pytest.CaptureFixture[str]) -> None:
    examples = Path(__file__).parents[1] / "examples" / "bcbridge.yaml"
    code, out, err = run_cli(capsys, "check", "--config", str(examples))
    assert code == 0, out + err


def test_a_field_name_yaml_reads_as_a_value_says_to_quote_it(tmp_path: Path) -> None:
    text = (
        "flows:\n  f:\n    from: in.csv\n    transform: [{rename: {No: number}}]\n    to: o.jsonl\n"
    )
    (problem,) = problems_in(tmp_path, text)
    assert ":4: flows.f.transform[0]: rename: False is not text but a bool to YAML: put the " in (
        problem
    )
    quoted = text.replace("{No: number}", '{"No": number}')
    assert load_project(project(tmp_path, quoted)).flows
    values = text.replace("{rename: {No: number}}", "{set: {n: 1, done: no}}")
    assert load_project(project(tmp_path, values)).flows  # a value may be a number or a bool


def test_the_yaml_enums_are_the_ones_the_code_accepts() -> None:
    from typing import get_args

    from bcbridge import publisher, sinks
    from bcbridge.flowconfig import EtagPolicy, Format

    assert get_args(EtagPolicy) == publisher.ETAG_POLICIES
    assert get_args(Format) == sinks.FORMATS


def test_check_names_an_incoming_without_a_company(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = project(
        tmp_path,
        GOOD.replace('entity: customers, company: "CRONUS USA, Inc.", ', "entity: customers, "),
    )
    code, out, _ = run_cli(capsys, "check", "--config", str(path))
    assert code == 2
    assert (
        f"{path}:2: incoming.customers: no company: add company: <its name or id>, or give the "
        "client 'default' one (BC_COMPANY)"
    ) in out


def test_check_reports_an_unknown_entity_without_a_company_in_its_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = project(tmp_path, "incoming:\n  c: {entity: custmers}\n")
    code, out, err = run_cli(capsys, "check", "--config", str(path))
    assert code == 2 and not err
    assert "  incoming  1 problem(s)" in out
    assert f"{path}:2: incoming.c.entity: unknown entity set 'custmers'" in out


@FUZZ
@given(text=project_texts)
def test_check_of_any_project_file_is_a_report_and_a_documented_code(text: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bcbridge.yaml"
        path.write_text(text)
        for extra in ((), ("--json",)):
            code, output = fuzz_cli("check", "--config", str(path), *extra)
            assert_handled(code, output)
            assert code in (0, 2), output


def test_a_mistyped_flow_or_client_name_gets_the_closest_one(tmp_path: Path) -> None:
    config = load_project(project(tmp_path, GOOD))
    with pytest.raises(ConfigError) as flow:
        config.flow("customer_to_file")
    assert str(flow.value).endswith(
        "no flow named 'customer_to_file' (did you mean 'customers_to_file'?); "
        "defined: customers_to_file, items_from_file"
    )
    with pytest.raises(ConfigError) as client:
        config.client_settings("defualt")
    assert "no client named 'defualt' (did you mean 'default'?); defined: default" in str(
        client.value
    )


def test_a_flows_params_transform_points_to_its_incoming(tmp_path: Path) -> None:
    text = GOOD.replace(
        "    from: customers\n", "    from: customers\n    params_transform: [{set: {$top: 1}}]\n"
    )
    (problem,) = problems_in(tmp_path, text)
    assert problem == (
        f"{tmp_path / 'bcbridge.yaml'}:9: flows.customers_to_file.params_transform: "
        "request-parameter transformers belong to the incoming the flow reads: move them to "
        "incoming.customers.params_transform; a flow's transform: changes the records"
    )
