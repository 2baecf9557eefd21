"""`bcbridge -v` and `--log-file`: the client's request log (method, URL, status, time, attempt)
for any command, with no token or secret in it; off again once the command is done."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bcbridge._logging import RequestLog
from bcbridge.cli import _register, app
from bcbridge.config import ClientSettings
from bcbridge.testing import RunningEmulator


def cli(env: dict[str, str], *args: str) -> Any:
    _register()
    return CliRunner().invoke(app, list(args), env=env, prog_name="bcbridge")


@pytest.fixture
def env(bc_emulator: RunningEmulator) -> dict[str, str]:
    return {**os.environ, **bc_emulator.info.env()}


def log_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith('{"event"')]


def test_verbose_prints_each_attempt_and_the_token_without_secrets(
    bc_emulator: RunningEmulator, env: dict[str, str]
) -> None:
    bc_emulator.fault("status", count=1, status=503, path_contains="companies")
    result = cli(env, "--verbose", "companies", "--json")
    assert result.exit_code == 0, result.stderr
    lines = log_lines(result.stderr)
    http = [line for line in lines if line["event"] == "http"]
    assert [(line["method"], line["status"], line["attempt"]) for line in http] == [
        ("GET", 503, 1),
        ("GET", 200, 2),
    ]
    assert all(line["url"].endswith("/companies") and line["duration_ms"] >= 0 for line in http)
    (token,) = [line for line in lines if line["event"] == "token"]
    assert token["ok"] is True and token["source"] == "identity_provider"
    assert json.loads(result.stdout)  # the command's own output stays clean on stdout
    assert bc_emulator.info.client_secret not in result.stderr
    assert "Bearer" not in result.stderr and "eyJ" not in result.stderr


def test_the_short_flag_and_quiet_by_default(env: dict[str, str]) -> None:
    assert log_lines(cli(env, "-v", "companies").stderr)
    assert log_lines(cli(env, "companies").stderr) == []


def test_log_file_gets_the_lines_and_stderr_none(env: dict[str, str], tmp_path: Path) -> None:
    target = tmp_path / "requests.log"
    result = cli(env, "--log-file", str(target), "companies")
    assert result.exit_code == 0, result.stderr
    assert log_lines(result.stderr) == []
    logged = log_lines(target.read_text())
    assert [line["status"] for line in logged if line["event"] == "http"] == [200]
    again = cli(env, "--log-file", str(target), "-v", "companies")  # both: appended and shown
    assert log_lines(again.stderr)
    assert len(log_lines(target.read_text())) > len(logged)


def test_a_log_file_that_cannot_be_written_is_a_usage_error(
    env: dict[str, str], tmp_path: Path
) -> None:
    result = cli(env, "--log-file", str(tmp_path / "missing" / "x.log"), "entities")
    assert result.exit_code == 2
    assert "--log-file" in result.stderr and "Traceback" not in result.stderr


def test_the_log_ends_with_the_command(env: dict[str, str]) -> None:
    assert cli(env, "-v", "companies").exit_code == 0
    assert RequestLog(ClientSettings.from_env(env)).enabled is False
