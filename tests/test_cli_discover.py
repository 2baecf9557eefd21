"""`bcbridge entities [NAME]`, `bcbridge companies`, and shell completion of entity names, flow
names and push actions (the completion functions, and typer's completion protocol)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from bcbridge import catalog
from bcbridge.cli import _complete, _register, app
from bcbridge.publisher import WRITE_ACTIONS
from bcbridge.testing import RunningEmulator


def cli(*args: str, env: dict[str, str] | None = None) -> Any:
    _register()
    return CliRunner().invoke(app, list(args), env=env, prog_name="bcbridge")


# --- entities ----------------------------------------------------------------------------------


def test_entities_lists_every_set_with_names_never_cut() -> None:
    result = cli("entities", env={"COLUMNS": "60"})
    assert result.exit_code == 0, result.output
    names_shown = {line.split("│")[1].strip() for line in result.stdout.splitlines() if "│" in line}
    assert set(catalog.names()) <= names_shown  # whole names, on one line each


def test_entities_json_is_the_catalog() -> None:
    result = cli("entities", "--json")
    assert result.exit_code == 0
    listed = {row["name"]: row for row in json.loads(result.stdout)}
    assert list(listed) == list(catalog.names())
    invoices = listed["salesInvoices"]
    assert invoices["actions"] == list(catalog.get("salesInvoices").actions)
    assert invoices["operations"] == ["GET", "POST", "PATCH", "DELETE"]
    assert listed["companies"]["operations"] == ["GET"]
    assert listed["bankAccounts"]["fields"] == len(catalog.get("bankAccounts").fields)
    assert listed["bankAccounts"]["write_rules_known"] is False  # fields from $metadata only
    assert listed["customers"]["write_rules_known"] is True
    assert "approvalEntries" not in listed  # in Microsoft's docs, not in BC's $metadata


def test_entity_details_show_operations_actions_and_fields() -> None:
    result = cli("entities", "salesInvoices", env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "GET POST PATCH DELETE" in out and "makeCorrectiveCreditMemo" in out
    number = next(line for line in out.splitlines() if "│ number " in line)
    assert "yes" in number  # read-only
    customers = cli("entities", "customers", env={"COLUMNS": "120"}).stdout
    display_name = next(line for line in customers.splitlines() if "│ displayName " in line)
    assert "string" in display_name and "100" in display_name


def test_entity_details_as_json() -> None:
    result = cli("entities", "customers", "--json")
    data = json.loads(result.stdout)
    fields = {f["name"]: f for f in data["fields"]}
    expected = catalog.get("customers").field("displayName")
    assert fields["displayName"] == {
        "name": "displayName",
        "type": "string",
        "max_length": expected.max_length,
        "read_only": False,
        "options": [],
    }
    assert fields["id"]["read_only"] is True
    assert fields["blocked"]["options"] == list(catalog.get("customers").field("blocked").options)
    assert data["natural_key"] == "number" and data["key"] == "id"


def test_a_set_bc_does_not_declare_is_unknown() -> None:
    result = cli("entities", "approvalEntries")  # Microsoft's docs list it; BC's $metadata not
    assert result.exit_code != 0


def test_a_set_known_from_metadata_lists_its_fields_and_says_what_is_unknown() -> None:
    result = cli("entities", "bankAccounts", env={"COLUMNS": "120"})
    assert result.exit_code == 0
    assert "from BC's $metadata" in result.stdout and "Fields of bankAccounts" in result.stdout


@pytest.mark.parametrize(
    ("typed", "suggested"),
    [("custmers", "customers"), ("Customers", "customers"), ("salesOrder", "salesOrders")],
)
def test_a_misspelled_entity_gets_did_you_mean(typed: str, suggested: str) -> None:
    result = cli("entities", typed)
    assert result.exit_code == 2
    assert f"did you mean {suggested}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_an_entity_nothing_like_any_points_to_the_list() -> None:
    result = cli("entities", "zzzzqqq")
    assert result.exit_code == 2
    assert "did you mean" not in result.stderr and "bcbridge entities" in result.stderr


# --- companies ---------------------------------------------------------------------------------


def test_companies_from_bc(bc_emulator: RunningEmulator) -> None:
    env = {**os.environ, **bc_emulator.info.env()}
    result = cli("companies", "--json", env=env)
    assert result.exit_code == 0, result.stderr
    companies = json.loads(result.stdout)
    assert [c["id"] for c in companies] == [c["id"] for c in bc_emulator.info.companies]
    assert {"id", "name", "displayName"} == set(companies[0])
    table = cli("companies", env=env | {"COLUMNS": "200"})
    assert table.exit_code == 0
    for company in companies:
        assert company["id"] in table.stdout and company["name"] in table.stdout


def test_companies_without_settings_is_one_line_exit_2(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BC_TENANT_ID", "BC_CLIENT_ID", "BC_CLIENT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    result = cli("companies")
    assert result.exit_code == 2
    assert "BC_TENANT_ID" in result.stderr and "Traceback" not in result.stderr


# --- completion --------------------------------------------------------------------------------


def context(params: dict[str, Any], args: list[str] | None = None) -> typer.Context:
    _register()
    ctx = typer.Context(typer.main.get_command(app))
    ctx.params.update(params)
    ctx.args = args or []
    return ctx


def test_entity_names_complete_from_the_catalog() -> None:
    assert _complete.entity_names("salesInv") == ["salesInvoiceLines", "salesInvoices"]
    assert _complete.entity_names("SALESINVOICEL") == ["salesInvoiceLines"]
    assert _complete.entity_names("") == list(catalog.names())
    assert _complete.entity_names("nothing") == []


def test_actions_are_the_write_actions_and_the_entitys_bound_actions() -> None:
    assert _complete.actions(context({"entity": "items"}), "") == list(WRITE_ACTIONS)
    orders = _complete.actions(context({"entity": "salesOrders"}), "")
    assert orders == [*WRITE_ACTIONS, *catalog.get("salesOrders").actions]
    assert _complete.actions(context({}, ["salesInvoices"]), "p") == ["post", "postAndSend"]
    every_bound = {a for s in catalog.CATALOG.values() for a in s.actions}
    assert set(_complete.actions(context({}), "")) == set(WRITE_ACTIONS) | every_bound


def test_flow_names_come_from_the_project_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "p.yaml"
    project.write_text("flows:\n  vendors_out: {}\n  vendors_in: {}\n  items: {}\n")
    assert _complete.flow_names(context({"config": project}), "vend") == [
        "vendors_out",
        "vendors_in",
    ]
    monkeypatch.setenv("BCBRIDGE_CONFIG", str(project))
    assert _complete.flow_names(context({}), "") == ["vendors_out", "vendors_in", "items"]
    for broken in ("flows: [a, b]\n", "{{{", "- just a list\n"):
        project.write_text(broken)
        assert _complete.flow_names(context({}), "") == []
    monkeypatch.setenv("BCBRIDGE_CONFIG", str(tmp_path / "missing.yaml"))
    assert _complete.flow_names(context({}), "") == []


def complete(words: str, env: dict[str, str] | None = None) -> list[str]:
    """What bash completion offers after `words` (the last word being the one completed)."""
    parts = words.split(" ")
    variables = {
        "_BCBRIDGE_COMPLETE": "complete_bash",
        "COMP_WORDS": words,
        "COMP_CWORD": str(len(parts) - 1),
        **(env or {}),
    }
    result = cli(env=variables)
    assert result.exit_code == 0, result.output
    words_out: list[str] = result.stdout.split()
    return words_out


def test_the_shell_completes_entities_actions_and_flows(tmp_path: Path) -> None:
    assert complete("bcbridge pull custom") == [
        n for n in catalog.names() if n.startswith("customer")
    ]
    assert complete("bcbridge push vendo") == [
        "vendorPaymentJournals",
        "vendorPayments",
        "vendorPurchases",
        "vendors",
    ]
    assert complete("bcbridge push salesQuotes --action make") == ["makeInvoice", "makeOrder"]
    assert complete("bcbridge entities purchaseO") == ["purchaseOrderLines", "purchaseOrders"]
    project = tmp_path / "bcbridge.yaml"
    project.write_text("flows:\n  customers_to_sqlite: {}\n  items_from_csv: {}\n")
    env = {"BCBRIDGE_CONFIG": str(project)}
    assert complete("bcbridge run ", env) == ["customers_to_sqlite", "items_from_csv"]
    assert complete("bcbridge run items_from_csv c", env) == ["customers_to_sqlite"]
    assert complete("bcbridge tasks list --flow it", env) == ["items_from_csv"]
    assert complete("bcbridge tasks retry --failed --flow cu", env) == ["customers_to_sqlite"]
    assert complete(f"bcbridge run --config {project} cust") == ["customers_to_sqlite"]
