"""`bcbridge init [FOLDER]`: a starter project that loads, and runs as written against the
emulator; existing files are never overwritten without --force."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bcbridge import load_project
from bcbridge.cli import main
from bcbridge.testing import RunningEmulator

WRITTEN = ("bcbridge.yaml", ".env.example", ".gitignore")


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
    except SystemExit as ended:
        code = ended.code if isinstance(ended.code, int) else 0
    out, err = capsys.readouterr()
    return code, out, err


def test_the_starter_project_runs_against_the_emulator(
    tmp_path: Path,
    bc_emulator: RunningEmulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = tmp_path / "project"
    code, out, err = run_cli(capsys, "init", str(folder))
    assert code == 0, err
    assert sorted(path.name for path in folder.iterdir()) == sorted(WRITTEN)
    assert f"bcbridge run customers_to_file --config {folder / 'bcbridge.yaml'}" in out

    project = load_project(folder / "bcbridge.yaml")
    assert list(project.flows) == ["customers_to_file"]
    assert list(project.incoming) == ["customers"] and list(project.outgoing) == ["items"]

    for name, value in bc_emulator.info.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("BC_COMPANY", raising=False)
    code, _, err = run_cli(
        capsys, "run", "customers_to_file", "--config", str(folder / "bcbridge.yaml")
    )
    assert code == 0, err
    lines = (folder / "out" / "customers.jsonl").read_text().splitlines()
    assert len(lines) >= 40  # the seeded customers (other tests may add some)
    assert set(json.loads(lines[0])) == {"id", "number", "displayName", "email", "city"}


def test_the_starter_files_hold_no_secret_and_ignore_what_must_not_be_committed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(capsys, "init", str(tmp_path))[0] == 0
    settings = dict(
        line.split("=", 1)
        for line in (tmp_path / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert settings["BC_CLIENT_SECRET"] == "" and settings["BC_TENANT_ID"] == ""
    assert {"BC_CLIENT_ID", "BC_ENVIRONMENT", "BC_COMPANY"} <= set(settings)
    ignored = (tmp_path / ".gitignore").read_text().splitlines()
    assert {".env", ".bcbridge/", "out/"} <= set(ignored)


def test_existing_files_are_named_and_kept_unless_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bcbridge.yaml").write_text("mine\n")
    (tmp_path / ".gitignore").write_text("node_modules/\n")
    code, out, err = run_cli(capsys, "init", str(tmp_path))
    assert code == 2 and out == ""
    assert err == (
        f"error: {tmp_path / 'bcbridge.yaml'}, {tmp_path / '.gitignore'} already exist; "
        "nothing written (--force overwrites)\n"
    )
    assert (tmp_path / "bcbridge.yaml").read_text() == "mine\n"
    assert not (tmp_path / ".env.example").exists()  # all or nothing

    code, _, err = run_cli(capsys, "init", str(tmp_path), "--force")
    assert code == 0, err
    assert "customers_to_file" in (tmp_path / "bcbridge.yaml").read_text()


def test_a_file_is_not_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "taken").write_text("")
    code, _, err = run_cli(capsys, "init", str(tmp_path / "taken"))
    assert code == 2 and err.startswith("error: FOLDER:") and len(err.splitlines()) == 1


def test_init_in_the_current_folder_needs_no_config_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_cli(capsys, "init")
    assert code == 0
    assert out.splitlines()[-1].strip() == "bcbridge run customers_to_file"
    assert (tmp_path / "bcbridge.yaml").exists()
