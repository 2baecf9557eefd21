"""`bcbridge serve` killed (SIGKILL) while it processes notifications: after its restart the
stored notifications are processed, nothing lost, nothing doubled. Real processes: the
emulator and serve."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from bcbridge.cli import main
from bcbridge.testing import RunningEmulator, start_emulator
from tests.webhooks.conftest import project_file, wait_for

pytestmark = pytest.mark.slow  # real processes

SERVE = [sys.executable, "-m", "bcbridge", "serve"]
COUNT = 300  # one window, under BC's collection threshold: 300 notifications in one POST


@pytest.fixture(scope="module")
def emulator() -> Iterator[RunningEmulator]:
    # each read waits 50 ms: processing 300 notifications takes long enough to be cut short
    with start_emulator(webhook_delay_s=0.2, webhook_time_scale=600.0, latency_ms=50) as running:
        yield running


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_serve(project: Path, port: int, env: dict[str, str]) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [*SERVE, "--config", str(project), "--port", str(port), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line, process.stderr.read() if process.stderr else ""
    assert json.loads(line)["url"].endswith(f":{port}")
    return process


def versions(out: Path) -> Counter[tuple[str, str]]:
    if not out.exists():
        return Counter()
    lines = [orjson.loads(line) for line in out.read_bytes().splitlines() if line.strip()]
    return Counter((str(r.get("id")), str(r.get("displayName"))) for r in lines)


def test_notifications_stored_before_a_kill_are_processed_after_the_restart(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    port = free_port()
    project = project_file(tmp_path, port, check_s=0.5, chunk_size=10)
    env = {
        **{k: v for k, v in os.environ.items() if k != "BCBRIDGE_DASHBOARD_PASSWORD"},
        **emulator.info.env(),
    }
    out = tmp_path / "out.jsonl"
    serve = start_serve(project, port, env)
    try:
        wait_for(lambda: emulator.webhooks()["subscriptions"], what="the subscription")
        wait_for(lambda: out.exists() and out.stat().st_size > 0, what="the first pull")
        time.sleep(1.0)  # the first pull's end
        with emulator.http_client() as api:
            company = f"companies({emulator.info.company_id()})"
            requests = [
                {
                    "id": str(n),
                    "method": "POST",
                    "url": f"{company}/customers",
                    "body": {"displayName": f"Killed {n}"},
                }
                for n in range(COUNT)
            ]
            made: dict[str, str] = {}
            for start in range(0, COUNT, 100):
                answer = api.post("$batch", json={"requests": requests[start : start + 100]})
                assert answer.status_code == 200, answer.text
                made.update(
                    (r["body"]["id"], r["body"]["displayName"]) for r in answer.json()["responses"]
                )

        def some_arrived() -> bool:
            found = versions(out)
            return 0 < sum(1 for pair in made.items() if found[pair]) < COUNT

        wait_for(some_arrived, timeout=30, what="processing under way")
        serve.send_signal(signal.SIGKILL)
        serve.wait(10)
        found = versions(out)
        assert sum(1 for pair in made.items() if found[pair]) < COUNT  # cut short
        serve = start_serve(project, port, env)

        def all_arrived() -> bool:
            found = versions(out)
            return all(found[pair] for pair in made.items())

        wait_for(all_arrived, timeout=60, what="every customer after the restart")
        assert {versions(out)[pair] for pair in made.items()} == {1}
        assert emulator.webhooks()["dropped"] == 0
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.communicate(timeout=30)


def test_the_subscriptions_commands_list_renew_delete_and_create(
    emulator: RunningEmulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    port = free_port()
    # serve looks at its subscription every 10 minutes here: the commands act alone meanwhile
    project = project_file(tmp_path, port, check_s=600, chunk_size=10)
    for name, value in emulator.info.env().items():
        monkeypatch.setenv(name, value)
    env = {k: v for k, v in os.environ.items() if k != "BCBRIDGE_DASHBOARD_PASSWORD"}
    serve = start_serve(project, port, env)
    try:

        def ours() -> list[dict[str, object]]:  # the module's other tests leave theirs
            found = emulator.webhooks()["subscriptions"]
            return [s for s in found if f":{port}/" in str(s["notificationUrl"])]

        wait_for(ours, what="the subscription")

        def listed() -> list[dict[str, object]]:
            capsys.readouterr()
            assert cli("subscriptions", "list", "--config", str(project), "--json") == 0
            rows: list[dict[str, object]] = json.loads(capsys.readouterr().out)
            return rows

        # serve saves the subscription once BC answered its POST
        (row,) = wait_for(lambda: (rows := listed()) and rows[0]["inBC"] and rows)
        assert row["incoming"] == "customers"
        assert "clientState" not in json.dumps(row)
        handshakes = emulator.webhooks()["handshakes"]
        assert cli("subscriptions", "renew", "customers", "--config", str(project)) == 0
        assert emulator.webhooks()["handshakes"] == handshakes + 1
        assert cli("subscriptions", "delete", "customers", "--config", str(project)) == 0
        assert ours() == []
        assert listed() == [{"incoming": "customers", "subscriptionId": None, "inBC": False}]
        assert cli("subscriptions", "create", "customers", "--config", str(project)) == 0
        (again,) = ours()
        (row,) = listed()
        assert row["subscriptionId"] == again["subscriptionId"] and row["inBC"] is True
        assert cli("subscriptions", "renew", "nobody", "--config", str(project)) == 2
        assert "not a webhook incoming" in capsys.readouterr().err
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.communicate(timeout=30)


def cli(*args: str) -> int:
    try:
        main(list(args))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
