"""`bcbridge serve` as a real process: the JSON line with the login URL, the scheduler (a 1 s
schedule runs twice), and a clean stop on SIGTERM and Ctrl-C (SIGINT)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bcbridge.cli import main
from bcbridge.store import Store
from tests.dashboard.conftest import GOOD, copy_project

pytestmark = pytest.mark.slow  # real `bcbridge serve` processes: left out of `make test-fast`


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """`bcbridge serve --port 0 --json` on a project whose flow runs every second."""
    project = copy_project(tmp_path, [GOOD], schedule="1s")
    process = start_serve(project, tmp_path)
    yield process
    if process.poll() is None:
        process.kill()
        process.wait()


SERVE = [sys.executable, "-m", "bcbridge", "serve"]


def start_serve(project: Path, folder: Path) -> subprocess.Popen[str]:
    """`bcbridge serve --port 0 --json` on `project`, signed in only by its login link."""
    env = {k: v for k, v in os.environ.items() if k != "BCBRIDGE_DASHBOARD_PASSWORD"}
    return subprocess.Popen(
        [*SERVE, "--config", str(project), "--port", "0", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=folder,
    )


def _announced(process: subprocess.Popen[str]) -> dict[str, str]:
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line, process.stderr.read() if process.stderr else ""
    return dict(json.loads(line))


def _ended(process: subprocess.Popen[str], how: signal.Signals) -> tuple[int, str, str]:
    process.send_signal(how)
    out, err = process.communicate(timeout=30)
    return process.returncode, out, err


def test_serve_announces_its_login_url_runs_on_schedule_and_stops_on_sigterm(
    serve: subprocess.Popen[str], tmp_path: Path
) -> None:
    started = time.monotonic()
    announced = _announced(serve)
    url = announced["url"]
    assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")
    assert announced["login_url"].startswith(f"{url}/login?token=")
    with httpx.Client(base_url=url) as client:
        assert client.get("/flows").status_code == 303  # not signed in
        signed = client.get(announced["login_url"], follow_redirects=True)
        assert signed.status_code == 200 and "copy" in signed.text
        assert "/tmp" in signed.text or str(tmp_path) in signed.text
        again = httpx.get(announced["login_url"])  # another browser: the token is spent
        assert "used already" in again.text

    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        while len(store.runs("copy")) < 2:
            assert time.monotonic() - started < 20, "the 1 s schedule did not run twice"
            time.sleep(0.1)
        assert all(run["status"] in ("ok", "running") for run in store.runs("copy"))
    finally:
        store.close()
    code, out, err = _ended(serve, signal.SIGTERM)
    assert code == 0, err
    assert out.count("\n") == 0  # the JSON line was the only output
    assert "Traceback" not in err


def test_ctrl_c_stops_serve_cleanly(serve: subprocess.Popen[str]) -> None:
    announced = _announced(serve)
    assert httpx.get(announced["url"] + "/login").status_code == 200
    code, _, err = _ended(serve, signal.SIGINT)
    assert code == 0, err
    assert "stopping" in err and "Traceback" not in err
    with pytest.raises(httpx.ConnectError):
        httpx.get(announced["url"] + "/login")


def test_a_run_in_flight_finishes_its_chunk_when_serve_is_stopped(tmp_path: Path) -> None:
    """SIGTERM while a scheduled run works: the chunk in flight is written and recorded, the
    run ends `interrupted` (not crashed), its lease is released, and serve exits 0."""
    (tmp_path / "slow_step.py").write_text(
        "import time\n\n\ndef step(record, context):\n    time.sleep(0.02)\n    return record\n"
    )
    copy_project(tmp_path, [])
    lines = "".join(f'{{"id": "{n}", "price": "1"}}\n' for n in range(2000))
    (tmp_path / "in.jsonl").write_text(lines)
    project = tmp_path / "bcbridge.yaml"
    flow = {
        "from": "in.jsonl",
        "transform": [{"python": "slow_step:step"}],
        "to": "out.jsonl",
        "chunk_size": 20,
        "schedule": "1s",
    }
    project.write_text(json.dumps({"store": "sqlite:///state.db", "flows": {"slow": flow}}))
    process = start_serve(project, tmp_path)
    try:
        _announced(process)
        store = Store(f"sqlite:///{tmp_path / 'state.db'}")
        try:
            deadline = time.monotonic() + 20
            while not store.count_tasks("slow").get("done"):
                assert time.monotonic() < deadline, "the scheduled run did not start"
                time.sleep(0.05)
            code, _, err = _ended(process, signal.SIGTERM)
            assert code == 0, err
            (run,) = store.runs("slow")
            assert run["status"] == "interrupted", run
            done = store.count_tasks("slow")["done"]
            assert 0 < done < 2000 and done % 20 == 0  # whole chunks only
            assert run["counts"]["read"] == done
            assert store.lease("slow") is None
        finally:
            store.close()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_port_in_use_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = copy_project(tmp_path, [GOOD])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit) as ended:
            main(["serve", "--config", str(project), "--port", str(port)])
    assert ended.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"--port {port}: cannot listen there" in err
