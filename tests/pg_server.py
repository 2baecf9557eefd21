"""A real PostgreSQL server for the tests of the store on it.

It is started once per session, from the server binaries on the machine
(`.ci/ensure-postgres` installs them in CI): `initdb` into a temporary folder, `pg_ctl start` on a
free port of 127.0.0.1, and each test gets a database of its own. No binaries is a failure that
says what to install, not a skip: a skipped backend would be an untested promise."""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa


def postgres_bin() -> Path:
    found = shutil.which("initdb") or next(
        iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)), None
    )
    if not found:
        pytest.fail(
            "PostgreSQL server binaries (initdb, pg_ctl) not found: install the 'postgresql' "
            "package, or run .ci/ensure-postgres"
        )
    return Path(found).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PostgresServer:
    port: int
    _names: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        name = f"bcbridge_test_{next(self._names)}"
        engine = sa.create_engine(self.url(), isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {name}"))
        engine.dispose()
        return self.url(name)


def as_server_user(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root; as root, run it as the `postgres` system user."""
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    binaries = postgres_bin()
    folder = Path(tempfile.mkdtemp(prefix="bcbridge-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    data, port = folder / "data", free_port()
    pg_ctl = [str(binaries / "pg_ctl"), "-D", str(data)]

    def run(command: list[str]) -> None:
        done = subprocess.run(as_server_user(command), capture_output=True, text=True, cwd=folder)
        if done.returncode != 0:
            log = folder / "server.log"
            detail = log.read_text() if log.exists() else ""
            pytest.fail(f"{command[0]} failed: {done.stderr}{done.stdout}\n{detail}")

    run([str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"])
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    run([*pg_ctl, "-o", options, "-l", str(folder / "server.log"), "-w", "start"])
    try:
        yield PostgresServer(port)
    finally:
        subprocess.run(as_server_user([*pg_ctl, "-m", "immediate", "stop"]), capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)
