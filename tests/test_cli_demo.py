"""`bcbridge demo` without surprises: it never reaches the tenant of the shell or of a
./bcbridge.yaml unless --project is given, and what it reports as landed exists when it says so."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa

from bcbridge.cli import main
from bcbridge.cli.demo import examples_dir
from bcbridge.testing import RunningEmulator

# A tenant that must never be reached: nothing listens there.
REAL_TENANT = {
    "BC_BASE_URL": "https://127.0.0.1:9",
    "BC_AUTHORITY_URL": "https://127.0.0.1:9",
    "BC_TENANT_ID": "11111111-1111-1111-1111-111111111111",
    "BC_CLIENT_ID": "22222222-2222-2222-2222-222222222222",
    "BC_CLIENT_SECRET": "real-secret",
    "BC_COMPANY": "Real Company",
    "BC_SOURCE_COMPANY": "Real Source",
}


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
    except SystemExit as ended:
        code = ended.code if isinstance(ended.code, int) else 0
    out, err = capsys.readouterr()
    return code, out, err


def landed(err: str) -> dict[str, str]:
    return {
        line.split("│")[1].strip(): line.split("│")[2].strip()
        for line in err.splitlines()
        if line.startswith("│ ") and line.count("│") == 3
    }


@pytest.fixture
def real_shell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with a project of its own, in a shell set up for a real tenant."""
    shutil.copytree(examples_dir(), tmp_path, dirs_exist_ok=True)
    for name, value in REAL_TENANT.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("BC_CA_BUNDLE", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.slow  # starts its own emulator process
def test_the_demo_never_reaches_the_tenant_of_the_shell_or_of_the_folder(
    real_shell: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(capsys, "demo")
    assert code == 0, err
    assert "note: bcbridge.yaml is not used: the demo runs on its own emulator" in err
    assert "'bcbridge demo --project bcbridge.yaml'" in err
    rows = landed(err)
    assert rows["customers table in customers.db"] == "40"
    assert rows["sales orders copied into Fabrikam & O'Brien, Ltd."] == "8"
    # said to be temporary, and it is gone
    assert "files in a temporary folder, removed when the demo ends" in err
    assert "The demo ran in a temporary folder, removed now; 'bcbridge demo --keep'" in err
    assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob("bcbridge-demo-*/out"))
    assert not (real_shell / ".bcbridge").exists() and not (real_shell / "out").exists()
    # the shell's settings are back as they were
    assert {name: os.environ.get(name) for name in REAL_TENANT} == REAL_TENANT


@pytest.mark.slow  # starts its own emulator process
def test_what_the_kept_demo_reports_as_landed_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "demo", "--keep")
    assert code == 0, err
    kept = re.search(r"Demo folder kept: (\S+)", err)
    assert kept is not None, err
    folder = Path(kept.group(1))
    try:
        database = folder / "out" / "customers.db"
        assert landed(err)[f"customers table in {database}"] == "40"
        engine = sa.create_engine(f"sqlite:///{database}")
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM customers")).scalar() == 40
        engine.dispose()
        assert "temporary" not in err
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_project_runs_that_project_against_its_tenant(
    tmp_path: Path,
    bc_emulator: RunningEmulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run_cli(capsys, "init", str(tmp_path))[0] == 0
    for name, value in bc_emulator.info.env().items():  # the project's tenant
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("BC_COMPANY", raising=False)
    code, _, err = run_cli(capsys, "demo", "--project", str(tmp_path / "bcbridge.yaml"))
    assert code == 0, err
    assert "against the tenant it configures" in err
    assert (tmp_path / "out" / "customers.jsonl").stat().st_size > 0
