"""The CLI's token cache: a session of commands takes one token from the emulator's real token
endpoint (through real MSAL), `client logout` forgets it, the file is the user's alone, it holds
no secret, a damaged file costs a warning and a new token, never a traceback; and the library
keeps its tokens in memory unless asked."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from typer.testing import CliRunner

from bcbridge import auth
from bcbridge.auth import MsalTokenSource, token_cache_path, user_cache_folder
from bcbridge.cli import _register, app
from bcbridge.config import ClientSettings
from bcbridge.testing import RunningEmulator

CANARY = "CANARY-s3cr3t-9f2c41d7"


def tokens_issued(emulator: RunningEmulator) -> int:
    return int(emulator.stats()["tokens_issued"])


def cli_process(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bcbridge", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def cli(env: dict[str, str], *args: str) -> Any:
    """The CLI in this process (typer's runner: stdout and stderr apart)."""
    _register()
    return CliRunner().invoke(app, list(args), env=env, prog_name="bcbridge")


@pytest.fixture
def cache_home(tmp_path: Path) -> Path:
    return tmp_path / "xdg"


@pytest.fixture
def env(bc_emulator: RunningEmulator, cache_home: Path) -> dict[str, str]:
    return {**os.environ, **bc_emulator.info.env(), "XDG_CACHE_HOME": str(cache_home)}


@pytest.mark.slow  # real processes or a wide notification window
def test_a_session_of_commands_takes_one_token_and_logout_forgets_it(
    bc_emulator: RunningEmulator, env: dict[str, str], cache_home: Path
) -> None:
    before = tokens_issued(bc_emulator)
    first = cli_process(env, "companies", "--json")
    assert first.returncode == 0, first.stderr
    second = cli_process(env, "-v", "companies", "--json")
    assert second.returncode == 0, second.stderr
    assert tokens_issued(bc_emulator) == before + 1
    assert '"source":"cache"' in second.stderr  # -v tells where the token came from

    folder = cache_home / "bcbridge"
    (cache_file,) = folder.iterdir()
    assert stat.S_IMODE(cache_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700

    logout = cli_process(env, "client", "logout")
    assert logout.returncode == 0, logout.stderr
    assert "1 cached token file(s) removed" in logout.stdout
    assert list(folder.iterdir()) == []
    third = cli_process(env, "companies")
    assert third.returncode == 0, third.stderr
    assert tokens_issued(bc_emulator) == before + 2


def test_no_secret_in_the_cache_folder_or_the_output(
    bc_emulator: RunningEmulator, env: dict[str, str], cache_home: Path
) -> None:
    refused = cli(env | {"BC_CLIENT_SECRET": CANARY}, "-v", "companies")
    assert refused.exit_code == 3, refused.output
    accepted = cli(env, "-v", "companies")
    assert accepted.exit_code == 0, accepted.stderr
    files = list((cache_home / "bcbridge").iterdir())
    assert files, "the accepted sign-in was cached"
    cached = json.loads(files[0].read_text())
    access_tokens = [entry["secret"] for entry in cached["AccessToken"].values()]
    assert access_tokens
    real_secret = bc_emulator.info.client_secret
    for path in cache_home.rglob("*"):
        text = path.name + (path.read_text() if path.is_file() else "")
        assert CANARY not in text and "s3cr3t" not in text
        assert real_secret not in text
    for output in (refused.stdout, refused.stderr, accepted.stdout, accepted.stderr):
        assert "s3cr3t" not in output and real_secret not in output
        assert not any(token in output for token in access_tokens)
        assert "Traceback" not in output


@pytest.mark.parametrize(
    "damage",
    ["garbage", "[]", '{"AccessToken": ["not", "a", "table"]}', "directory", "latin-1"],
)
def test_a_damaged_cache_file_costs_a_warning_and_a_new_token(
    bc_emulator: RunningEmulator,
    env: dict[str, str],
    cache_home: Path,
    damage: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = ClientSettings.from_env(env)
    path = token_cache_path(settings, cache_home / "bcbridge")
    path.parent.mkdir(parents=True)
    if damage == "directory":
        path.mkdir()  # cannot be read nor replaced
    elif damage == "latin-1":
        path.write_bytes(b"\xff\xfe not utf-8 \xe9")
    else:
        path.write_text(damage)
    before = tokens_issued(bc_emulator)
    with caplog.at_level(logging.WARNING, logger="bcbridge.auth"):
        result = cli(env, "companies", "--json")
    assert result.exit_code == 0, result.stderr
    assert tokens_issued(bc_emulator) == before + 1
    warnings = [r.getMessage() for r in caplog.records if r.name == "bcbridge.auth"]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert str(path) in warnings[0] and "client logout" in warnings[0]
    if damage != "directory":  # the good cache replaced the damaged file: the next call uses it
        assert cli(env, "companies").exit_code == 0
        assert tokens_issued(bc_emulator) == before + 1


@pytest.mark.slow  # real processes or a wide notification window
def test_the_warning_is_one_line_on_stderr_of_a_real_process(
    env: dict[str, str], cache_home: Path
) -> None:
    path = token_cache_path(ClientSettings.from_env(env), cache_home / "bcbridge")
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    result = cli_process(env, "companies", "--json")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("\n") == 1 and "token cache" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_library_keeps_tokens_in_memory_even_after_a_cli_command(
    env: dict[str, str], cache_home: Path
) -> None:
    settings = ClientSettings.from_env(env)
    assert MsalTokenSource(settings).cache_file is None
    assert cli(env, "companies").exit_code == 0
    assert MsalTokenSource(settings).cache_file is None  # the CLI's opt-in ended with it
    chosen = cache_home / "mine.json"
    assert MsalTokenSource(settings, token_cache=chosen).cache_file == chosen


def test_tenants_apps_authorities_and_credentials_never_share_a_file(tmp_path: Path) -> None:
    base = {"tenant_id": "t1", "client_id": "app1", "client_secret": "secret-one"}

    def path(**changes: str) -> Path:
        return token_cache_path(ClientSettings(**(base | changes)), tmp_path)

    variants = [
        path(),
        path(tenant_id="t2"),
        path(client_id="app2"),
        path(authority_url="https://login.example.test"),
        path(client_secret="secret-two"),
    ]
    assert len(set(variants)) == len(variants)
    assert path() == path(environment="sandbox")  # one token serves every environment
    assert all("secret" not in p.name for p in variants)


def test_the_cache_folder_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert user_cache_folder() == tmp_path / "bcbridge"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert user_cache_folder() == Path.home() / ".cache" / "bcbridge"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert user_cache_folder() == Path.home() / ".cache" / "bcbridge"


def test_logout_with_nothing_cached(env: dict[str, str]) -> None:
    result = cli(env, "client", "logout")
    assert result.exit_code == 0
    assert "0 cached token file(s)" in result.stdout
    assert auth.forget_tokens(Path(env["XDG_CACHE_HOME"]) / "nowhere") == []


def test_stale_cache_files_are_pruned_but_never_beside_a_chosen_file(
    env: dict[str, str], cache_home: Path, tmp_path: Path
) -> None:
    three_days_ago = time.time() - 3 * 86400
    folder = cache_home / "bcbridge"
    folder.mkdir(parents=True)
    old, recent = folder / "msal-old.json", folder / "msal-recent.json"
    for path in (old, recent):
        path.write_text("{}")
    os.utime(old, (three_days_ago, three_days_ago))
    assert cli(env, "companies").exit_code == 0
    assert not old.exists() and recent.exists()

    chosen = tmp_path / "mine" / "tokens.json"
    chosen.parent.mkdir()
    neighbour = chosen.parent / "msal-not-ours.json"
    neighbour.write_text("{}")
    os.utime(neighbour, (three_days_ago, three_days_ago))
    source = MsalTokenSource(ClientSettings.from_env(env), token_cache=chosen)
    assert anyio.run(source.token)
    assert stat.S_IMODE(chosen.stat().st_mode) == 0o600
    assert neighbour.exists()
