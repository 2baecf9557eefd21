"""Secrets never shown, errors in one line with a documented exit code, checks at load."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import anyio
import pytest

from bcbridge import _redact
from bcbridge.cli import main
from bcbridge.config import ClientSettings
from bcbridge.errors import (
    AuthError,
    Busy,
    ConfigError,
    NotFound,
    TransformError,
    TransportError,
    exit_code,
)
from bcbridge.flowconfig import load_project
from bcbridge.flows import FlowRunner
from bcbridge.store import Store
from tests.flows.conftest import cli


def fresh_secret() -> str:
    return f"CANARY-s3cr3t-{secrets.token_hex(6)}"


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The real `main()` in this process: its exit code, stdout and stderr."""
    with pytest.raises(SystemExit) as ended:
        main(list(args))
    out, err = capsys.readouterr()
    return int(ended.value.code or 0), out, err


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- secrets -------------------------------------------------------------------------------------


def test_a_yaml_error_on_the_secret_line_quotes_the_line_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = fresh_secret()
    monkeypatch.setenv("MY_SECRET", secret)
    project = write(
        tmp_path / "bcbridge.yaml",
        "clients:\n  bc:\n    tenant_id: t\n    client_id: c\n"
        "    client_secret: ${MY_SECRET} [x: y\nflows: {}\n",
    )
    with pytest.raises(ConfigError) as error:
        load_project(project)
    message = str(error.value)
    assert secret not in message
    assert f"{project}:5: not valid YAML" in message and "${MY_SECRET}" in message
    assert "\n" not in message


def test_secret_looking_variables_are_registered_and_others_are_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    password, token, plain = fresh_secret(), fresh_secret(), f"plain-{secrets.token_hex(4)}"
    monkeypatch.setenv("DBPW", password)
    monkeypatch.setenv("SOME_TOKEN", token)
    monkeypatch.setenv("PLAIN_VALUE", plain)
    project = write(
        tmp_path / "bcbridge.yaml",
        "store: postgresql+psycopg://u:${DBPW}@127.0.0.1:1/db\n"
        "flows:\n  f:\n    from: in.jsonl\n"
        "    transform: [{set: {a: '${SOME_TOKEN}', b: '${PLAIN_VALUE}'}}]\n"
        "    to: out.jsonl\n",
    )
    load_project(project)
    shown = _redact.text(f"{password} {token} {plain}")
    assert password not in shown and token not in shown and plain in shown


def test_urls_are_masked_in_repr_and_dumps_but_not_for_the_code(tmp_path: Path) -> None:
    store_password, writer_password = fresh_secret(), fresh_secret()
    store = f"postgresql+psycopg://u:{store_password}@127.0.0.1:1/db"
    writer = f"postgresql+psycopg://u:{writer_password}@127.0.0.1:1/db#t"
    project = write(
        tmp_path / "bcbridge.yaml",
        f"store: {store}\nflows:\n  f:\n    from: in.jsonl\n    to: '{writer}'\n",
    )
    config = load_project(project)
    assert config.store == store and config.flows["f"].target.writer == writer
    for shown in (repr(config), config.model_dump_json(), str(config.model_dump())):
        assert store_password not in shown and writer_password not in shown
        assert "u:***@127.0.0.1" in shown


def test_flows_list_masks_a_writer_url_password(tmp_path: Path) -> None:
    password = "pw"  # too short to be a registered secret: masked as a URL's password
    writer = f"postgresql+psycopg://u:{password}@127.0.0.1:1/db#t"
    project = write(
        tmp_path / "bcbridge.yaml",
        f"store: sqlite:///state.db\nflows:\n  f:\n    from: in.jsonl\n    to: '{writer}'\n",
    )
    listed = cli(dict(os.environ), "flows", "list", "--config", str(project))
    assert listed.returncode == 0, listed.stderr
    assert "postgresql+psycopg://u:***@127.0.0.1:1/db#t" in listed.stdout
    assert f":{password}@" not in listed.stdout


def test_a_transformer_error_quoting_the_client_secret_is_stored_masked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = fresh_secret()
    monkeypatch.setenv("LEAKY_CLIENT_SECRET", secret)
    module = f"leaky_{secrets.token_hex(4)}"
    write(
        tmp_path / f"{module}.py",
        "import os\n\ndef step(record, context):\n"
        "    raise ValueError('cannot: ' + os.environ['LEAKY_CLIENT_SECRET'])\n",
    )
    write(tmp_path / "in.jsonl", '{"id": "1"}\n')
    project = write(
        tmp_path / "bcbridge.yaml",
        "store: sqlite:///state.db\n"
        "clients:\n  bc:\n    tenant_id: t\n    client_id: c\n"
        "    client_secret: ${LEAKY_CLIENT_SECRET}\n"
        f"flows:\n  f:\n    from: in.jsonl\n    transform: [{{python: '{module}:step'}}]\n"
        "    to: out.jsonl\n",
    )
    config = load_project(project)
    store = Store(config.store)
    try:
        result = anyio.run(FlowRunner(config, store).run, "f")
        [task] = store.tasks("f")
    finally:
        store.close()
    assert result.counts["failed"] == 1
    assert task.last_error is not None and "cannot: ***" in task.last_error
    assert secret not in (tmp_path / "state.db").read_bytes().decode(errors="replace")


# --- one line, documented exit codes -------------------------------------------------------------

FLOW = "flows:\n  f:\n    from: in.jsonl\n    transform: {transform}\n    to: out.jsonl\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("flows:\n  - a\n  - b\n", ":1: flows: expected a mapping (key: value)"),
        ("a: &x [1, *x]\n", ":1: not valid YAML: a.1 refers to itself through an alias"),
        (
            FLOW.format(transform="[{renam: {a: b}}]"),
            ":4: flows.f.transform[0].step: unknown step 'renam' (did you mean rename?)",
        ),
        (
            FLOW.format(transform="[{filter: 'a[?'}]"),
            ":4: flows.f.transform[0]: filter: not a JMESPath expression",
        ),
        (
            FLOW.format(transform="[{python: 'no_such_module_x:fn'}]"),
            ":4: flows.f.transform[0]: python: cannot load 'no_such_module_x:fn'",
        ),
        (
            FLOW.format(transform="[{keep: id}]"),
            ":4: flows.f.transform[0]: keep: expected a list of field names",
        ),
        (
            FLOW.format(transform="[{rename: 5}]"),
            ":4: flows.f.transform[0]: rename: expected a mapping of field names",
        ),
        (
            "flows:\n  f: {from: in.jsonl, to: 'sqlite:///o.db'}\n",
            ":2: flows.f.to: a SQL target needs its table after '#'",
        ),
        (
            "flows:\n  f: {from: in.jsonl, to: 'bogus+x://u:pw@h/y#t'}\n",
            ":2: flows.f.to: unknown kind of database 'bogus+x'",
        ),
        (
            "flows:\n  f: {from: in.xlsx, to: out.jsonl}\n",
            ":2: flows.f.from: cannot tell the format of",
        ),
        (
            "flows:\n  f:\n    form: in.jsonl\n    to: out.jsonl\n",
            ":3: flows.f.form: unknown key 'form' (did you mean 'from'?)",
        ),
    ],
)
def test_a_bad_project_file_is_one_line_and_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    project = write(tmp_path / "bcbridge.yaml", text)
    code, _, err = run_cli(capsys, "flows", "list", "--config", str(project))
    assert code == 2, err
    assert f"{project}{expected}" in err
    assert "Traceback" not in err


def test_a_bug_is_one_line_with_code_70_and_the_traceback_only_on_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = fresh_secret()
    _redact.register_secret(secret)

    def broken(path: Path) -> None:
        raise RuntimeError(f"unexpected {secret}")

    monkeypatch.setattr("bcbridge.cli.flows.load_project", broken)
    project = write(tmp_path / "bcbridge.yaml", "flows: {}\n")
    monkeypatch.delenv("BCBRIDGE_DEBUG", raising=False)
    code, out, err = run_cli(capsys, "flows", "list", "--config", str(project))
    assert code == 70
    assert err.startswith("error: RuntimeError: unexpected *** - this is a bug")
    assert "BCBRIDGE_DEBUG=1" in err and err.count("\n") == 1
    assert "Traceback" not in err + out and secret not in err + out

    monkeypatch.setenv("BCBRIDGE_DEBUG", "1")
    code, _, err = run_cli(capsys, "flows", "list", "--config", str(project))
    assert code == 70 and "Traceback" in err and "RuntimeError" in err and secret not in err


def test_every_error_kind_has_its_documented_exit_code() -> None:
    assert exit_code(ConfigError("x")) == 2
    assert exit_code(TransformError("x", step="map")) == 2
    assert exit_code(AuthError("x")) == 3
    assert exit_code(TransportError("x")) == 3
    assert exit_code(NotFound(404, "NotFound", "x")) == 3
    assert exit_code(Busy("x")) == 4
    assert exit_code(KeyboardInterrupt()) == 130
    assert exit_code(RuntimeError("x")) == 70


def test_settings_errors_are_in_the_users_words(tmp_path: Path) -> None:
    environ = {"BC_CLIENT_ID": "c", "BC_CLIENT_SECRET": fresh_secret()}
    with pytest.raises(ConfigError) as missing:
        ClientSettings.from_env(environ)
    assert str(missing.value).startswith("BC_TENANT_ID is not set: export BC_TENANT_ID=")

    with pytest.raises(ConfigError) as both:
        ClientSettings.from_env(
            {**environ, "BC_TENANT_ID": "t"},
            certificate={"private_key_path": write(tmp_path / "k.pem", "key"), "thumbprint": "AB"},
        )
    assert "both client_secret and certificate are given: keep one" in str(both.value)
    assert "Value error" not in str(both.value)

    with pytest.raises(ConfigError) as no_file:  # was a FileNotFoundError when first used
        ClientSettings.from_env({**environ, "BC_TENANT_ID": "t", "BC_CA_BUNDLE": "/no/ca.pem"})
    assert "BC_CA_BUNDLE: no file at /no/ca.pem" in str(no_file.value)

    with pytest.raises(ConfigError) as no_folder:  # was a FileNotFoundError when first logged
        ClientSettings.from_env({**environ, "BC_TENANT_ID": "t"}, log_file="/no/such/http.log")
    assert "log_file: the folder /no/such does not exist" in str(no_folder.value)
