"""`bcbridge --version`, `-h` everywhere, and `bcbridge emulator start|status|stop|env`.

The emulator's lifecycle runs real processes (a detached emulator must outlive the command that
started it, and `stop` signals it); the state file lives in a private XDG_STATE_HOME per test.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer

from bcbridge import __version__
from bcbridge.cli import app, main
from bcbridge.emulator.process import shared_state_dir

BCBRIDGE = [sys.executable, "-m", "bcbridge"]
DOCUMENTED = {0, 1, 2, 3, 4, 130}


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`bcbridge ARGS` in this process: exit code, stdout, stderr."""
    try:
        main(list(args))
    except SystemExit as ended:
        code = ended.code if isinstance(ended.code, int) else 0
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private XDG_STATE_HOME (and the shared test CA): no test touches the user's record."""
    home = tmp_path / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(home))
    monkeypatch.setenv("BCBRIDGE_EMULATOR_HOME", str(shared_state_dir()))
    monkeypatch.setenv("NO_COLOR", "1")
    return home


@pytest.fixture
def cli_env(state_home: Path) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("BC_")}


def bcbridge(
    env: dict[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BCBRIDGE, *args], env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def detached(cli_env: dict[str, str]) -> Iterator[subprocess.CompletedProcess[str]]:
    """`emulator start --detach` with a small scale; stopped (by pid) whatever the test did."""
    started = bcbridge(
        cli_env, "emulator", "start", "--detach", "--port", "0", "--scale", "customers=2000"
    )
    yield started
    record = Path(cli_env["XDG_STATE_HOME"]) / "bcbridge" / "emulator.json"
    if record.exists():
        pid = json.loads(record.read_text())["pid"]
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# --- version and help ------------------------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "--version")
    assert (code, out) == (0, f"bcbridge {__version__}\n")


def _command_paths(group: typer.Typer, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for command in group.registered_commands:
        yield (*prefix, command.name or str(command.callback.__name__ if command.callback else ""))
    for sub in group.registered_groups:
        name = sub.name or ""
        yield (*prefix, name)
        assert sub.typer_instance is not None
        yield from _command_paths(sub.typer_instance, (*prefix, name))


def test_dash_h_is_help_on_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    run_cli(capsys, "--help")  # registers the command groups
    paths = [(), *_command_paths(app)]
    assert ("emulator", "start") in paths and ("init",) in paths
    for path in paths:
        code, out, err = run_cli(capsys, *path, "-h")
        assert code == 0, (path, err)
        assert "Usage:" in out and "Traceback" not in out + err, path


def test_the_old_emulator_form_points_to_start(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "emulator", "--port", "0", "--json")
    assert code == 2 and out == ""
    assert err.strip() == (
        "error: 'bcbridge emulator --port': the emulator starts with "
        "'bcbridge emulator start --port 0 --json' (same flags; --detach runs it in the background)"
    )


# --- the lifecycle ---------------------------------------------------------------------------


@pytest.mark.slow  # real processes: a detached emulator must outlive its starter
def test_detach_status_env_stop(
    detached: subprocess.CompletedProcess[str], cli_env: dict[str, str]
) -> None:
    assert detached.returncode == 0, detached.stderr
    # the total follows the seed (every set has rows); the customers are what --scale asked
    seeding = r"seeding [\d,]+ records in 2 companies \(2,000 customers in CRONUS USA, Inc\.\)"
    assert re.search(seeding, detached.stderr), detached.stderr
    record = Path(cli_env["XDG_STATE_HOME"]) / "bcbridge" / "emulator.json"
    assert stat.S_IMODE(record.stat().st_mode) == 0o600  # it holds the client secret
    assert stat.S_IMODE(record.parent.stat().st_mode) == 0o700
    pid = json.loads(record.read_text())["pid"]
    assert 'eval "$(bcbridge emulator env)"' in detached.stderr

    status = bcbridge(cli_env, "emulator", "status", "--json")
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert shown["running"] is True and shown["pid"] == pid
    assert "client_secret" not in shown and "emu~" not in status.stdout

    env = bcbridge(cli_env, "emulator", "env")
    assert env.returncode == 0, env.stderr
    exported = dict(shlex.split(line)[1].split("=", 1) for line in env.stdout.splitlines())
    assert exported["BC_BASE_URL"] == shown["base_url"]
    assert set(exported) == {
        "BC_BASE_URL", "BC_AUTHORITY_URL", "BC_TENANT_ID", "BC_ENVIRONMENT",
        "BC_CLIENT_ID", "BC_CLIENT_SECRET", "BC_CA_BUNDLE",
    }  # fmt: skip

    # the README's wiring, in a real shell: the exports make `client grant` reach the emulator
    command = shlex.join(BCBRIDGE)
    wired = subprocess.run(
        ["bash", "-c", f'eval "$({command} emulator env)" && {command} client grant'],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert wired.returncode == 0, wired.stderr
    assert "CRONUS USA, Inc." in wired.stdout

    second = bcbridge(cli_env, "emulator", "start", "--detach", "--port", "0")
    assert second.returncode == 4  # busy: one recorded emulator at a time
    assert f"already running at {shown['base_url']} (pid {pid})" in second.stderr

    stopped = bcbridge(cli_env, "emulator", "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert f"(pid {pid})" in stopped.stderr
    assert not record.exists()
    assert _gone(pid)

    after = bcbridge(cli_env, "emulator", "status")
    assert after.returncode == 3 and "no emulator running" in after.stderr
    no_env = bcbridge(cli_env, "emulator", "env")
    assert no_env.returncode == 3 and no_env.stdout == ""  # eval of nothing: harmless


def _gone(pid: int) -> bool:
    """The process ended: no such pid, or a zombie its parent has not reaped yet."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat_line.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


@pytest.mark.parametrize("command", ["status", "env", "stop"])
def test_a_stale_record_is_reported_and_removed(
    command: str, state_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record = state_home / "bcbridge" / "emulator.json"
    record.parent.mkdir(parents=True)
    info = {
        "base_url": "https://127.0.0.1:9", "authority_url": "https://127.0.0.1:9",
        "tenant_id": "t", "environment": "production", "api_root": "https://127.0.0.1:9/x",
        "scope": "s", "client_id": "c", "client_secret": "emu~x", "disabled_client_id": "d",
        "disabled_client_secret": "emu~y", "ca_bundle": "/nowhere.pem", "companies": [],
    }  # fmt: skip
    pid = _dead_pid()
    record.write_text(json.dumps({"pid": pid, "started_at": "2026-01-01", "info": info}))
    code, out, err = run_cli(capsys, "emulator", command)
    assert code == (0 if command == "stop" else 3), err
    assert f"(pid {pid}) is no longer running; removed the record" in err
    assert not record.exists() and out == "" and "Traceback" not in err


@pytest.mark.parametrize(
    "text", ["{not json", "[]", '{"pid": "x", "info": {}}', '{"pid": 1, "info": []}', ""]
)
def test_an_unreadable_record_is_reported_and_removed(
    text: str, state_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record = state_home / "bcbridge" / "emulator.json"
    record.parent.mkdir(parents=True)
    record.write_text(text)
    code, _, err = run_cli(capsys, "emulator", "status")
    assert code == 3 and "is unreadable" in err and "Traceback" not in err
    assert not record.exists()


@pytest.mark.slow  # real emulator processes
def test_a_taken_port_is_one_line(cli_env: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        for flags in (["--detach"], []):
            done = bcbridge(cli_env, "emulator", "start", "--port", port, *flags)
            assert done.returncode == 2, done.stderr
            errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
            assert len(errors) == 1 and "in use" in errors[0], done.stderr
            assert "Traceback" not in done.stderr
    assert not (Path(cli_env["XDG_STATE_HOME"]) / "bcbridge" / "emulator.json").exists()


@pytest.mark.slow  # real emulator processes
@pytest.mark.parametrize("ended_by", ["ctrl-c", "emulator stop"])
def test_the_foreground_emulator_is_recorded_while_it_runs(
    ended_by: str, cli_env: dict[str, str]
) -> None:
    record = Path(cli_env["XDG_STATE_HOME"]) / "bcbridge" / "emulator.json"
    process = subprocess.Popen(
        [*BCBRIDGE, "emulator", "start", "--port", "0"],
        env=cli_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not record.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert record.exists()
        assert json.loads(record.read_text())["pid"] == process.pid
        status = bcbridge(cli_env, "emulator", "status")
        assert status.returncode == 0, status.stderr
        if ended_by == "ctrl-c":
            process.send_signal(signal.SIGINT)
        else:
            assert bcbridge(cli_env, "emulator", "stop").returncode == 0
        _, err = process.communicate(timeout=30)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == (130 if ended_by == "ctrl-c" else 0)
    assert "Press Ctrl-C to stop." in err and "Traceback" not in err
    assert not record.exists()


def _processes_with(marker: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and not _gone(int(proc.name)):
            with contextlib.suppress(OSError):
                if marker.encode() in proc.joinpath("cmdline").read_bytes().split(b"\0"):
                    found.append(int(proc.name))
    return found


@pytest.mark.slow  # real processes, and a seed that takes seconds
@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="looks for the child in /proc")
def test_ctrl_c_while_detaching_leaves_no_emulator_behind(cli_env: dict[str, str]) -> None:
    seed = "987123"  # marks the child emulator's command line
    flags = ["--port", "0", "--seed", seed, "--scale", "customers=300000"]
    process = subprocess.Popen(
        [*BCBRIDGE, "emulator", "start", "--detach", *flags],
        env=cli_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        assert "starting the emulator: seeding" in process.stderr.readline()
        deadline = time.monotonic() + 30
        while not _processes_with(seed) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _processes_with(seed), "the child emulator never started"
        process.send_signal(signal.SIGINT)
        process.wait(30)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 130
    assert _processes_with(seed) == []
    assert not (Path(cli_env["XDG_STATE_HOME"]) / "bcbridge" / "emulator.json").exists()


# --- progress while seeding ------------------------------------------------------------------


def test_the_seeder_tells_how_far_it_is() -> None:
    from bcbridge.emulator.seed import DEFAULT_COUNTS
    from bcbridge.emulator.service import DataService

    steps: list[tuple[str, int, int]] = []
    service = DataService(None)
    try:
        service.seed(1, {"customers": 2500}, lambda *step: steps.append(step))
    finally:
        service.close()
    customers = [step for step in steps if step[0] == "seeding customers"]
    assert customers[:3] == [("seeding customers", 0, 2500), ("seeding customers", 1000, 2500),
                             ("seeding customers", 2000, 2500)]  # fmt: skip
    assert ("seeding customers", 2500, 2500) in customers
    assert ("seeding customers", DEFAULT_COUNTS["customers"], DEFAULT_COUNTS["customers"]) in (
        steps  # the second company
    )
    written = [step for step in steps if step[0] == "writing rows"]
    assert written and all(done <= total for _, done, total in written)
    assert written[-1][1] == written[-1][2]  # the last chunk of the last company: all written


@pytest.mark.slow  # an emulator process
def test_start_emulator_passes_the_childs_seeding_steps_on() -> None:
    from bcbridge.testing import start_emulator

    steps: list[tuple[str, int, int]] = []
    with start_emulator(scale={"customers": 1500}, progress=lambda *s: steps.append(s)) as bc:
        assert bc.stats() is not None  # it answers after the steps
    assert ("seeding customers", 1500, 1500) in steps
    assert steps[-1][0] == "writing rows"


def test_an_unwritable_state_folder_is_one_line_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")
    monkeypatch.setenv("XDG_STATE_HOME", str(blocked))  # a file: no folder can be made in it
    code, _, err = run_cli(capsys, "emulator", "start", "--detach", "--port", "0")
    assert code == 2, err
    assert err.startswith(f"error: XDG_STATE_HOME: cannot keep the emulator's record in {blocked}")
    assert len(err.strip().splitlines()) == 1


@pytest.mark.slow  # a real detached process
def test_the_json_line_gives_the_settings_by_their_bc_names(cli_env: dict[str, str]) -> None:
    """Programs wiring the CLI read the same names as `emulator env` prints, not other ones."""
    started = bcbridge(cli_env, "emulator", "start", "--detach", "--port", "0", "--json")
    try:
        assert started.returncode == 0, started.stderr
        line = json.loads(started.stdout)
        assert line["env"]["BC_BASE_URL"] == line["base_url"]
        assert line["env"]["BC_CLIENT_SECRET"] == line["client_secret"]
        assert set(line["env"]) >= {"BC_TENANT_ID", "BC_CLIENT_ID", "BC_CA_BUNDLE"}
    finally:
        assert bcbridge(cli_env, "emulator", "stop").returncode == 0
