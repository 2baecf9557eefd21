"""The deployment of deploy/compose.yaml as processes on this machine: a PostgreSQL server (in a
temporary folder, from the machine's PostgreSQL binaries), one `bcbridge serve` and N
`bcbridge worker`s, all on one project whose `store:` is `${BCBRIDGE_STORE}`.

    python deploy/local_topology.py --config bcbridge.yaml --workers 3

It prints one JSON line once everything is up: {"store": ..., "url": ..., "login_url": ...,
"workers": [pids]}; Ctrl-C or SIGTERM stops the workers and serve gracefully (they finish their
chunk), then PostgreSQL. The tests start the same topology (tests/workers/test_wk_topology.py).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

BCBRIDGE = [sys.executable, "-m", "bcbridge"]


def _binaries() -> Path:
    found = shutil.which("initdb") or next(
        iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)), None
    )
    if not found:
        sys.exit("error: PostgreSQL server binaries (initdb, pg_ctl) not found: install postgresql")
    return Path(found).parent


def _as_server_user(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run it as the `postgres` system user."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Postgres:
    """A throw-away PostgreSQL server: initdb, start on a free port, stop and remove."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="bcbridge-local-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        self.port = _free_port()
        self.pg_ctl = [str(_binaries() / "pg_ctl"), "-D", str(self.folder / "data")]

    def start(self) -> str:
        initdb = [str(_binaries() / "initdb"), "-D", str(self.folder / "data"), "-U", "postgres"]
        subprocess.run(_as_server_user(initdb), check=True, capture_output=True)
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
        log = str(self.folder / "server.log")
        start = [*self.pg_ctl, "-o", options, "-l", log, "-w", "start"]
        subprocess.run(_as_server_user(start), check=True, capture_output=True)
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        subprocess.run(_as_server_user([*self.pg_ctl, "-m", "fast", "stop"]), capture_output=True)
        shutil.rmtree(self.folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("bcbridge.yaml"))
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--port", type=int, default=0, help="serve's port (0: a free one)")
    args = parser.parse_args()
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    postgres = Postgres()
    processes: list[subprocess.Popen[str]] = []
    try:
        env = {**os.environ, "BCBRIDGE_STORE": postgres.start()}
        config = ["--config", str(args.config)]
        serve = subprocess.Popen(
            [*BCBRIDGE, "serve", *config, "--port", str(args.port), "--json"],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        processes.append(serve)
        announced = json.loads(serve.stdout.readline() if serve.stdout else "{}")
        processes += [
            subprocess.Popen([*BCBRIDGE, "worker", *config], env=env) for _ in range(args.workers)
        ]
        line = {
            "store": env["BCBRIDGE_STORE"],
            **announced,
            "workers": [p.pid for p in processes[1:]],
        }
        print(json.dumps(line), flush=True)
        while not stop.wait(0.5):
            if any(process.poll() is not None for process in processes):
                break
    finally:
        for process in reversed(processes):  # the workers first, then serve
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        codes = [process.wait(120) for process in processes]
        postgres.stop()
    sys.exit(0 if all(code == 0 for code in codes) else 1)


if __name__ == "__main__":
    main()
