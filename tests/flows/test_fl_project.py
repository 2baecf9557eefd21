"""The project file: short forms, ${VAR} expansion, relative paths, and errors that name the
file, the line and the field, list the valid names, and never show a secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from bcbridge.errors import ConfigError
from bcbridge.flowconfig import load_project

SECRET = "s3cret-Value-That-Must-Not-Show"

GOOD = """\
store: sqlite:///state/bc.db
clients:
  bc:
    tenant_id: 00000000-0000-0000-0000-000000000001
    client_id: 00000000-0000-0000-0000-000000000002
    client_secret: "${BC_TEST_SECRET}"
    environment: "${BC_TEST_ENV:-sandbox}"
incoming:
  customers: {client: bc, entity: customers, company: CRONUS, cursor: lastModifiedDateTime}
outgoing:
  items: {client: bc, entity: items, action: upsert, key_field: number}
flows:
  to_file:
    from: customers
    to: out/customers.jsonl
  from_file:
    from: items.csv
    to: items
    schedule: "*/15 * * * *"
"""


def project(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bcbridge.yaml"
    path.write_text(text)
    return path


def load_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as error:
        load_project(project(tmp_path, text))
    message = str(error.value)
    assert SECRET not in message
    return message


@pytest.fixture(autouse=True)
def secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BC_TEST_SECRET", SECRET)
    monkeypatch.delenv("BC_TEST_ENV", raising=False)


def test_short_forms_variables_and_paths_next_to_the_project_file(tmp_path: Path) -> None:
    config = load_project(project(tmp_path, GOOD))
    to_file, from_file = config.flows["to_file"], config.flows["from_file"]
    assert (to_file.source.incoming, to_file.target.writer) == (
        "customers",
        str(tmp_path / "out/customers.jsonl"),
    )
    assert (from_file.source.reader, from_file.target.outgoing) == (
        str(tmp_path / "items.csv"),
        "items",
    )
    assert config.store == f"sqlite:///{tmp_path / 'state/bc.db'}"
    settings = config.client_settings("bc")
    assert settings.environment == "sandbox"  # ${VAR:-default}
    assert settings.client_secret is not None
    assert settings.client_secret.get_secret_value() == SECRET
    assert SECRET not in repr(settings) and SECRET not in repr(config)


def test_a_mistyped_incoming_name_lists_the_valid_ones(tmp_path: Path) -> None:
    message = load_error(tmp_path, GOOD.replace("from: customers", "from: custmers"))
    assert (
        f"{tmp_path / 'bcbridge.yaml'}:14: flows.to_file.from: unknown incoming 'custmers' "
        "(did you mean 'customers'?)"
    ) in message
    assert "defined: customers" in message


def test_a_wrong_type_names_the_line_and_the_field_path(tmp_path: Path) -> None:
    text = GOOD.replace("    to: items\n", "    to: items\n    chunk_size: lots\n")
    message = load_error(tmp_path, text)
    assert f"{tmp_path / 'bcbridge.yaml'}:19: flows.from_file.chunk_size:" in message
    assert "expected a whole number" in message


def test_an_unknown_field_is_named(tmp_path: Path) -> None:
    message = load_error(tmp_path, GOOD.replace("    schedule:", "    schedul:"))
    assert "flows.from_file.schedul: unknown key 'schedul' (did you mean 'schedule'?)" in message


def test_a_bad_schedule_is_reported_when_the_file_is_loaded(tmp_path: Path) -> None:
    message = load_error(tmp_path, GOOD.replace('"*/15 * * * *"', "every tuesday"))
    assert "flows.from_file.schedule:" in message and "cron expression" in message


def test_a_create_without_key_field_is_refused_with_the_reason(tmp_path: Path) -> None:
    text = GOOD.replace("action: upsert, key_field: number", "action: create")
    message = load_error(tmp_path, text)
    assert ":11: outgoing.items: create needs key_field" in message


def test_an_unknown_client_lists_the_defined_ones(tmp_path: Path) -> None:
    message = load_error(
        tmp_path, GOOD.replace("{client: bc, entity: items", "{client: b, entity: items")
    )
    expected = (
        ":11: outgoing.items.client: unknown client 'b' (did you mean 'bc'?); defined: bc, default"
    )
    assert expected in message


def test_a_bad_client_is_reported_at_load_without_its_secret(tmp_path: Path) -> None:
    message = load_error(tmp_path, GOOD.replace("    environment:", "    enviroment:"))
    assert "clients.bc.enviroment" in message


def test_an_unset_variable_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BC_TEST_SECRET")
    message = load_error(tmp_path, GOOD)
    assert "BC_TEST_SECRET is not set" in message
