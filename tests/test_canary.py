"""One canary: secrets planted in every input path must come out nowhere.

Each secret is a distinct `CANARY-s3cr3t-<random>` value: the client secret of a project client
(through `${VAR}`, and as BC_CLIENT_SECRET for a refused sign-in), the password of a PostgreSQL
store and of a PostgreSQL writer (a real server that trusts any password, so the flows do run),
the password of a writer that cannot be reached, the message a `python:` transformer raises,
and the line of a project file with a YAML syntax error. The CLI runs as it would for a user
(subprocesses, request logging on), and every output stream, every file under the test's folder
and every row of the PostgreSQL databases is searched for "s3cr3t" and for the emulator's real
client secret.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa

from bcbridge.testing import RunningEmulator
from tests.flows.conftest import CRONUS, cli
from tests.pg_server import PostgresServer

MARK = "s3cr3t"


def canary() -> str:
    return f"CANARY-{MARK}-{secrets.token_hex(8)}"


def client_block(secret_variable: str) -> str:
    return (
        "    base_url: ${BC_BASE_URL}\n"
        "    authority_url: ${BC_AUTHORITY_URL}\n"
        "    tenant_id: ${BC_TENANT_ID}\n"
        "    environment: ${BC_ENVIRONMENT}\n"
        "    client_id: ${BC_CLIENT_ID}\n"
        f"    client_secret: ${{{secret_variable}}}\n"
        "    ca_bundle: ${BC_CA_BUNDLE}\n"
        "    log_requests: true\n"
        "    log_file: http.log\n"
    )


def project_text(store: str, writer: str) -> str:
    return (
        f"store: {store}\n"
        "clients:\n  bc:\n" + client_block("BC_CLIENT_SECRET") + "  leaky:\n"
        "" + client_block("CANARY_CLIENT_SECRET") + "incoming:\n"
        f"  customers: {{client: bc, entity: customers, company: '{CRONUS}'}}\n"
        "flows:\n"
        "  customers_out: {from: customers, to: out/customers.jsonl}\n"
        f"  items_to_db: {{from: items.jsonl, to: {{writer: '{writer}', key: number}}}}\n"
        "  leaky_transform:\n"
        "    from: items.jsonl\n"
        "    transform: [{python: 'canary_step:step'}]\n"
        "    to: out/leaky.jsonl\n"
    )


def test_no_secret_shows_anywhere(
    tmp_path: Path, bc_emulator: RunningEmulator, postgres: PostgresServer
) -> None:
    planted = {
        "CANARY_CLIENT_SECRET": canary(),
        "CANARY_STORE_PASSWORD": canary(),
        "CANARY_WRITER_PASSWORD": canary(),
        "CANARY_DOWN_PASSWORD": canary(),
        "CANARY_YAML_SECRET": canary(),
    }
    real_secret = bc_emulator.info.client_secret
    env = {**os.environ, **bc_emulator.info.env(), **planted, "COLUMNS": "250"}
    store_db, writer_db = postgres.new_database(), postgres.new_database()

    def with_password(url: str, variable: str) -> str:
        return url.replace("postgres@", f"postgres:${{{variable}}}@")

    (tmp_path / "canary_step.py").write_text(
        "import os\n\n\ndef step(record, context):\n"
        "    raise ValueError('rejected with ' + os.environ['CANARY_CLIENT_SECRET'])\n"
    )
    (tmp_path / "items.jsonl").write_text(
        '{"number": "CAN-1", "displayName": "Canary one"}\n'
        '{"number": "CAN-2", "displayName": "Canary two"}\n'
    )
    project = tmp_path / "bcbridge.yaml"
    project.write_text(
        project_text(
            with_password(store_db, "CANARY_STORE_PASSWORD"),
            with_password(writer_db, "CANARY_WRITER_PASSWORD") + "#items_copy",
        )
    )
    unreachable = tmp_path / "unreachable.yaml"
    unreachable.write_text(
        "store: sqlite:///state.db\nflows:\n  down:\n    from: items.jsonl\n"
        "    to: 'postgresql+psycopg://u:${CANARY_DOWN_PASSWORD}@127.0.0.1:1/db#t'\n"
    )
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "clients:\n  bc:\n    tenant_id: t\n    client_id: c\n"
        "    client_secret: ${CANARY_YAML_SECRET} [oops: here\n"
    )
    clients = tmp_path / "clients.yaml"
    clients.write_text("clients:\n  bc:\n" + client_block("BC_CLIENT_SECRET"))
    leaky = tmp_path / "leaky.yaml"
    leaky.write_text("clients:\n  leaky:\n" + client_block("CANARY_CLIENT_SECRET"))

    def bcbridge(*args: str, **overrides: str) -> subprocess.CompletedProcess[str]:
        return cli({**env, **overrides}, *args, cwd=tmp_path)

    config = ("--config", str(project))
    runs = {
        "flows list": bcbridge("flows", "list", *config),
        "run": bcbridge("run", *config),
        "tasks list": bcbridge("tasks", "list", *config),
        "tasks retry": bcbridge("tasks", "retry", "--failed", *config),
        "client grant": bcbridge("client", "grant", "--config", str(clients)),
        "client check (project)": bcbridge("client", "check", *config),
        "client check (leaky)": bcbridge("client", "check", "--config", str(leaky)),
        "client check (env)": bcbridge(
            "client", "check", BC_CLIENT_SECRET=planted["CANARY_CLIENT_SECRET"]
        ),
        "pull": bcbridge(
            "pull",
            "customers",
            "--company",
            CRONUS,
            "--out",
            "pulled.jsonl",
            "--config",
            str(clients),
        ),
        "push": bcbridge(
            "push",
            "items",
            "--company",
            CRONUS,
            "--action",
            "upsert",
            "--key-field",
            "number",
            "--in",
            "items.jsonl",
            "--config",
            str(clients),
        ),
        "unreachable writer": bcbridge("run", "--config", str(unreachable)),
        "unreachable tasks": bcbridge("tasks", "list", "--config", str(unreachable)),
        "broken yaml": bcbridge("flows", "list", "--config", str(broken)),
        "broken yaml (debug)": bcbridge(
            "flows", "list", "--config", str(broken), BCBRIDGE_DEBUG="1"
        ),
    }
    for task_id in failed_tasks(store_db):
        runs[f"tasks show {task_id}"] = bcbridge("tasks", "show", str(task_id), *config)

    leaks, tracebacks = [], []
    for name, done in runs.items():
        for stream, text in (("stdout", done.stdout), ("stderr", done.stderr)):
            if MARK in text or real_secret in text:
                leaks.append(f"{name} {stream}")
        if "Traceback" in done.stdout + done.stderr and "debug" not in name:
            tracebacks.append(name)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            if MARK.encode() in content or real_secret.encode() in content:
                leaks.append(str(path.relative_to(tmp_path)))
    for database in (store_db, writer_db):
        for table, text in table_texts(database):
            if MARK in text or real_secret in text:
                leaks.append(f"{database.rsplit('/', 1)[-1]}.{table}")
    assert not leaks, f"a secret shows in: {leaks}"
    assert not tracebacks, f"a traceback reached the user in: {tracebacks}"

    # the paths were taken: the flows ran, the leaky step failed, the bad inputs were refused
    assert runs["run"].returncode == 1, runs["run"].stderr
    assert "rejected with ***" in runs["tasks list"].stdout
    assert any(name.startswith("tasks show") for name in runs)
    assert runs["client check (leaky)"].returncode == 3
    assert runs["client grant"].returncode == 0, runs["client grant"].stderr
    assert runs["client check (env)"].returncode == 3
    assert runs["pull"].returncode == 0 and runs["push"].returncode == 0, runs["push"].stderr
    assert runs["unreachable writer"].returncode != 0
    assert (
        runs["broken yaml"].returncode == 2
        and "${CANARY_YAML_SECRET}" in runs["broken yaml"].stderr
    )
    assert (tmp_path / "http.log").stat().st_size > 0


def failed_tasks(url: str) -> list[int]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            query = sa.text("SELECT id FROM tasks WHERE status = 'failed'")
            return [int(row[0]) for row in conn.execute(query)]
    finally:
        engine.dispose()


def table_texts(url: str) -> list[tuple[str, str]]:
    """Every table of a database with all its rows as text."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            names = sa.inspect(conn).get_table_names()
            return [
                (name, repr(conn.execute(sa.text(f'SELECT * FROM "{name}"')).all()))
                for name in names
            ]
    finally:
        engine.dispose()


pytestmark = pytest.mark.slow  # subprocesses/emulator-heavy: left out of `make test-fast`
