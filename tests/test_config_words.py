"""Configuration errors in the user's words: the BC_* variable or the YAML key the user writes,
never pydantic's phrasing or field paths, a hint that says what to do, and no reference to
documents users do not have."""

from __future__ import annotations

import textwrap
from pathlib import Path

import anyio
import pytest

from bcbridge import client as client_module
from bcbridge.cli import main
from bcbridge.cli._settings import load_settings
from bcbridge.client import BusinessCentralClient
from bcbridge.config import ClientSettings
from bcbridge.errors import BCAPIError, ConfigError
from bcbridge.flowconfig import load_project

PYDANTIC_WORDS = (
    "Field required",
    "Value error",
    "Input should be",
    "Extra inputs are not permitted",
    "validation error",
    "type=",
    "errors.pydantic.dev",
    "bc-api.md",
)
ENVIRON = {"BC_TENANT_ID": "t1", "BC_CLIENT_ID": "c1", "BC_CLIENT_SECRET": "s1"}


def error_of(call: object, *args: object, **kwargs: object) -> str:
    with pytest.raises(ConfigError) as error:
        call(*args, **kwargs)  # type: ignore[operator]
    message = str(error.value)
    for words in PYDANTIC_WORDS:
        assert words not in message, message
    return message


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as ended:
        main(list(args))
    out, err = capsys.readouterr()
    return int(ended.value.code or 0), out, err


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


# --- the environment ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["BC_TENANT_ID", "BC_CLIENT_ID", "BC_CLIENT_SECRET"])
def test_a_missing_variable_is_named_with_what_to_export(name: str) -> None:
    environ = {key: value for key, value in ENVIRON.items() if key != name}
    message = error_of(ClientSettings.from_env, environ)
    assert message.startswith(f"{name} is not set: export {name}=<")
    assert "environment:" not in message and "tenant_id" not in message


def test_the_whole_api_root_in_bc_base_url_says_what_to_set(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in ENVIRON.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("BC_BASE_URL", "https://127.0.0.1:8443/v2.0/t1/sandbox/api/v2.0/")
    code, _, err = run_cli(capsys, "client", "grant")
    assert code == 2, err
    assert err.strip() == (
        "error: BC_BASE_URL: holds the whole API root, but bcbridge adds "
        "/v2.0/<tenant>/<environment>/api/v2.0 itself: set the host alone, "
        "BC_BASE_URL=https://127.0.0.1:8443, BC_TENANT_ID=t1, BC_ENVIRONMENT=sandbox"
    )


@pytest.mark.parametrize(
    ("base_url", "expected"),
    [
        ("https://api.businesscentral.dynamics.com", None),
        ("https://proxy.example.com/bc", None),  # a path of its own is fine
        ("https://h/v2.0", "set the host alone, BC_BASE_URL=https://h"),
        ("https://h/api/v2.0", "set the host alone, BC_BASE_URL=https://h"),
        ("api.businesscentral.dynamics.com", "expected an https:// URL"),
    ],
)
def test_bc_base_url_is_a_host(base_url: str, expected: str | None) -> None:
    environ = {**ENVIRON, "BC_BASE_URL": base_url}
    if expected is None:
        assert ClientSettings.from_env(environ).api_root.startswith(base_url)
    else:
        assert expected in error_of(ClientSettings.from_env, environ)


def test_a_missing_ca_bundle_names_the_variable_and_the_path() -> None:
    message = error_of(ClientSettings.from_env, {**ENVIRON, "BC_CA_BUNDLE": "/no/ca.pem"})
    assert message.startswith("BC_CA_BUNDLE: no file at /no/ca.pem")


# --- YAML ---------------------------------------------------------------------------------------


def test_yaml_settings_name_the_key_the_user_writes(tmp_path: Path) -> None:
    path = write(
        tmp_path / "bc.yaml",
        """\
        tenant_id: t1
        client_id: c1
        base_url: https://h/v2.0/t1/production/api/v2.0
        timeout: soon
        """,
    )
    lines = error_of(ClientSettings.from_yaml, path).splitlines()
    assert lines == [
        f"{path}:3: base_url: holds the whole API root, but bcbridge adds "
        "/v2.0/<tenant>/<environment>/api/v2.0 itself: give the host alone, base_url: "
        "https://h, tenant_id: t1, environment: production",
        f"{path}:4: timeout: expected a number, e.g. 30 or 2.5",
    ]
    path.write_text("tenant_id: t1\nclient_id: c1\n")
    assert error_of(ClientSettings.from_yaml, path) == (
        f"{path}: (top level): no credential: add client_secret: ${{BC_CLIENT_SECRET}}, or "
        "certificate: {private_key_path: key.pem, thumbprint: <SHA-1 thumbprint>}"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "flows:\n  f1:\n    form: in.jsonl\n    to: out.jsonl\n",
            [":3: flows.f1.form: unknown key 'form' (did you mean 'from'?); valid: from,"],
        ),
        (
            "flows:\n  f1: {to: out.jsonl}\n",
            [":2: flows.f1.from: missing: add from: <an incoming name, a file or a SQL URL>"],
        ),
        (
            "flows:\n  f1: {from: in.jsonl, to: out.jsonl, chunk_size: 0}\n",
            [":2: flows.f1.chunk_size: must be at least 1"],
        ),
        (
            "outgoing:\n  o: {entity: items, action: create, allow_duplicates: maybe}\n",
            [":2: outgoing.o.allow_duplicates: expected true or false"],
        ),
        (
            "incoming:\n  i: {entity: items, params: [a]}\n",
            [":2: incoming.i.params: expected a mapping (key: value)"],
        ),
        (
            "clients:\n  bc: {tenant_id: t, client_id: c, client_secret: s, enviroment: x}\n",
            [":2: clients.bc.enviroment: unknown key 'enviroment' (did you mean 'environment'?)"],
        ),
        (
            "flow:\n  f1: {from: in.jsonl, to: out.jsonl}\n",
            [
                ":1: flow: unknown key 'flow' (did you mean 'flows'?); valid: store, clients, "
                "incoming, outgoing, flows"
            ],
        ),
        (
            "flows:\n  f1: {from: {}, to: out.jsonl}\n",
            [
                ":2: flows.f1: from: give an incoming name or a reader (a file or a SQL URL); "
                "neither is given"
            ],
        ),
        (
            "flows:\n  f1: {from: {reader: in.csv, encoding: latin-9x}, to: out.jsonl}\n",
            [":2: flows.f1.from.encoding: unknown text encoding 'latin-9x'; e.g. utf-8"],
        ),
        (
            "clients:\n  bc: {client_id: c, client_secret: s}\n",
            [":2: clients.bc.tenant_id: missing: add tenant_id: <the Entra tenant id"],
        ),
    ],
)
def test_project_errors_are_in_the_users_words(
    tmp_path: Path, text: str, expected: list[str]
) -> None:
    path = write(tmp_path / "bcbridge.yaml", text)
    lines = error_of(load_project, path).splitlines()
    assert len(lines) == len(expected), lines
    for line, wanted in zip(lines, expected, strict=True):
        assert line.startswith(f"{path}{wanted}"), line


def test_a_client_file_anchors_its_paths_and_suggests_client_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ca.pem").write_text("not read here")
    path = write(
        tmp_path / "clients.yaml",
        """\
        clients:
          bc: {tenant_id: t, client_id: c, client_secret: s, ca_bundle: ca.pem}
        """,
    )
    monkeypatch.chdir(tmp_path.parent)
    assert load_settings(path).ca_bundle == tmp_path / "ca.pem"
    message = error_of(load_settings, path, client="bcc")
    assert message == f"{path}: clients: no client named 'bcc' (did you mean 'bc'?); valid: bc"


def test_hints_cite_no_document_users_do_not_have() -> None:
    for hint in client_module._AUTH_HINTS.values():
        assert "bc-api" not in hint and "§" not in hint


def test_an_unset_variable_names_the_file_line_and_what_to_do(tmp_path: Path) -> None:
    path = write(tmp_path / "bcbridge.yaml", "# ${CHECK_NOT_SET_X}\nstore: '${CHECK_NOT_SET_X}'\n")
    assert error_of(load_project, path) == (
        f"{path}:2: environment variable CHECK_NOT_SET_X is not set and has no default: "
        "export it, or write ${CHECK_NOT_SET_X:-<default>}"
    )


def test_settings_from_flags_without_a_variable_are_named_by_their_key(tmp_path: Path) -> None:
    """A setting that has no BC_* variable (from a flag or the code) is named by its key; it
    used to be looked up among the variables and raise KeyError."""
    key = tmp_path / "key.pem"
    key.write_text("not read here")
    message = error_of(
        ClientSettings.from_env,
        {"BC_TENANT_ID": "t1", "BC_CLIENT_ID": "c1"},
        certificate={"private_key_path": str(key)},
        timeout="soon",
    )
    assert message.splitlines() == [
        "environment: certificate.thumbprint: missing: add thumbprint: <the certificate's "
        "SHA-1 thumbprint>",
        "environment: timeout: expected a number, e.g. 30 or 2.5",
    ]


def test_the_emulators_messages_cite_no_internal_document(bc_client: BusinessCentralClient) -> None:
    async def unsupported_function() -> str:
        company = (await bc_client.companies())[0].id
        with pytest.raises(BCAPIError) as refused:
            await bc_client.get_json(
                f"companies({company})/customers", {"$filter": "length(number) gt 3"}
            )
        return str(refused.value)

    message = anyio.run(unsupported_function)
    assert "not supported in $filter" in message
    assert "bc-api" not in message and "§" not in message


def test_problems_from_the_environment_carry_the_variables_name() -> None:
    from pydantic import ValidationError

    from bcbridge.config import ENVIRONMENT, problems_of

    with pytest.raises(ValidationError) as invalid:
        ClientSettings.model_validate({"client_id": "c", "base_url": "h"})
    found = problems_of(invalid.value, source=ENVIRONMENT, model=ClientSettings)
    assert [problem.path for problem in found] == ["BC_BASE_URL", "BC_TENANT_ID"]
