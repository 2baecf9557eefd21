"""Flows into files and tables write each record exactly once: across ordinary reruns, a broken
input line, a full disk and SIGKILL at random points. Input files are read strictly."""

from __future__ import annotations

import csv
import os
import random
import resource
import shutil
import signal
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from bcbridge.testing import RunningEmulator
from tests.flows.conftest import (
    BC,
    BCBRIDGE,
    CRONUS,
    SEED,
    cli,
    kill_runs_at_random,
    run_flow,
    store_of,
    write_project,
)
from tests.pg_server import PostgresServer, as_server_user, free_port, postgres_bin

pytestmark = pytest.mark.slow  # subprocesses/emulator-heavy: left out of `make test-fast`


def file_project(folder: Path, source: str, target: str, *, chunk: int = 40, **extra: Any) -> Path:
    return write_project(
        folder / "bcbridge.yaml",
        {
            **extra,
            "flows": {"copy": {"from": source, "to": target, "chunk_size": chunk}},
        },
    )


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))


def numbers_in(path: Path) -> Counter[str]:
    """Each line parses, whole; how many times each record number is in the file."""
    if path.suffix == ".csv":
        with path.open(newline="") as handle:
            return Counter(row["number"] for row in csv.DictReader(handle))
    return Counter(orjson.loads(line)["number"] for line in path.read_bytes().splitlines())


def items(count: int, prefix: str = "N") -> list[dict[str, Any]]:
    return [
        {"number": f"{prefix}{n:05d}", "displayName": f"Item {n} " + "x" * 40} for n in range(count)
    ]


# --- ordinary reruns -----------------------------------------------------------------------------


@pytest.mark.parametrize("out", ["out.jsonl", "out.csv"])
def test_reruns_after_fixing_a_broken_line_write_each_record_once(tmp_path: Path, out: str) -> None:
    lines = [b'{"number":"A1"}', b'{"number":"A2"}', b'{"number":"A3"', b'{"number":"A4"}']
    (tmp_path / "in.jsonl").write_bytes(b"\n".join([*lines, b'{"number":"A5"}', b""]))
    project = file_project(tmp_path, "in.jsonl", out)

    first = run_flow(project, "copy")
    assert first.status == "failed" and first.counts["failed"] == 1  # the others went on
    assert numbers_in(tmp_path / out) == Counter({"A1": 1, "A2": 1, "A4": 1, "A5": 1})
    (failed,) = store_of(project).tasks("copy", "failed")
    assert f"{tmp_path / 'in.jsonl'}:3: not JSON" in str(failed.last_error)

    fixed = (tmp_path / "in.jsonl").read_bytes().replace(b'"A3"\n', b'"A3"}\n')
    (tmp_path / "in.jsonl").write_bytes(fixed)
    for _ in range(3):
        assert run_flow(project, "copy").status == "ok"
    assert numbers_in(tmp_path / out) == Counter({f"A{n}": 1 for n in range(1, 6)})
    assert not store_of(project).tasks("copy", "failed")  # the fixed line's task is closed


def test_a_chunk_written_but_not_settled_is_cut_back_and_written_once(tmp_path: Path) -> None:
    """What a run killed between its write and the store's commit leaves: bytes after the saved
    offset (here a half line). The next run cuts them off before it writes."""
    write_jsonl(tmp_path / "in.jsonl", items(80))
    project = file_project(tmp_path, "in.jsonl", "out.jsonl")
    assert run_flow(project, "copy").status == "ok"
    with (tmp_path / "out.jsonl").open("ab") as handle:
        handle.write(b'{"number":"N00079","displayName":"It')
    write_jsonl(tmp_path / "in.jsonl", items(120))
    assert run_flow(project, "copy").status == "ok"
    assert numbers_in(tmp_path / "out.jsonl") == Counter({r["number"]: 1 for r in items(120)})


def test_a_csv_cut_back_to_empty_gets_its_header_again(tmp_path: Path) -> None:
    """A first run killed before its first chunk was settled: the offset saved at its start is 0,
    so the next run writes the header and every row once."""
    write_jsonl(tmp_path / "in.jsonl", items(30))
    project = file_project(tmp_path, "in.jsonl", "out.csv")
    store = store_of(project)
    store.save_cursor("writer:copy", {"path": str(tmp_path / "out.csv"), "offset": 0})
    (tmp_path / "out.csv").write_text("number,displayName\nN00000,Item 0\nN000")
    assert run_flow(project, "copy").status == "ok"
    text = (tmp_path / "out.csv").read_bytes().decode()
    assert text.startswith("number,displayName\r\n") and text.count("number,displayName") == 1
    assert numbers_in(tmp_path / "out.csv") == Counter({r["number"]: 1 for r in items(30)})


# --- a full disk ---------------------------------------------------------------------------------


def limited_run(
    env: dict[str, str], project: Path, max_bytes: int
) -> subprocess.CompletedProcess[str]:
    """`bcbridge run` whose files may not grow past `max_bytes` (EFBIG, as a full disk fails)."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    return subprocess.run(
        [*BCBRIDGE, "run", "copy", "--config", str(project)],
        env={**env, "COLUMNS": "250"},
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=limit,
    )


def assert_whole_chunks(path: Path, chunk: int) -> None:
    data = path.read_bytes()
    assert data.endswith(b"\n") and len(data.splitlines()) % chunk == 0
    for line in data.splitlines():
        orjson.loads(line)


def test_a_file_that_cannot_grow_ends_the_run_cleanly_and_the_rerun_completes(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    """The store is in PostgreSQL (another process), so only the output hits the limit."""
    write_jsonl(tmp_path / "in.jsonl", items(300))
    project = file_project(
        tmp_path, "in.jsonl", "out.jsonl", chunk=40, store=postgres.new_database()
    )
    done = limited_run(dict(os.environ), project, max_bytes=9000)
    assert done.returncode == 2  # the output cannot be written: fix it, run again
    assert "Traceback" not in done.stderr
    assert f"file too large writing {tmp_path / 'out.jsonl'}: File too large" in done.stderr
    assert store_of(project).runs("copy", limit=1)[0]["status"] == "error"
    assert_whole_chunks(tmp_path / "out.jsonl", 40)

    assert run_flow(project, "copy").status == "ok"
    assert numbers_in(tmp_path / "out.jsonl") == Counter({r["number"]: 1 for r in items(300)})


def test_a_full_disk_ends_the_run_cleanly_and_the_rerun_completes(tmp_path: Path) -> None:
    """A real ENOSPC, on a 64 KiB tmpfs (mounting needs root: skipped without it; the test above
    covers the same path with a file size limit)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        write_jsonl(tmp_path / "in.jsonl", items(1200))
        project = file_project(tmp_path, "in.jsonl", "disk/out.jsonl", chunk=50)
        done = cli(dict(os.environ), "run", "copy", "--config", str(project))
        assert done.returncode == 2 and "Traceback" not in done.stderr
        message = f"disk full writing {disk / 'out.jsonl'}: No space left on device"
        assert message in " ".join(done.stderr.split())  # rich may wrap the line
        assert store_of(project).runs("copy", limit=1)[0]["status"] == "error"
        assert_whole_chunks(disk / "out.jsonl", 50)

        subprocess.run(["mount", "-o", "remount,size=1m", str(disk)], check=True)
        assert run_flow(project, "copy").status == "ok"
        assert numbers_in(disk / "out.jsonl") == Counter({r["number"]: 1 for r in items(1200)})
    finally:
        subprocess.run(["umount", str(disk)], check=True)


# --- strict input files --------------------------------------------------------------------------


def test_bad_csv_rows_fail_alone_naming_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_bytes(
        b"\xef\xbb\xbfnumber,displayName,unitPrice\r\n"  # a BOM, as Excel writes it
        b"SH-1,Chair,10\r\n"
        b"SH-2\r\n"  # short
        b"SH-3,Desk,20,oops,again\r\n"  # ragged
        b'SH-4,"Two\r\nlines",30\r\n'
        b"SH-5,Lamp,40\r\n"
    )
    project = file_project(tmp_path, "in.csv", "out.jsonl")
    result = run_flow(project, "copy")
    assert result.status == "failed" and result.counts["failed"] == 2
    rows = [orjson.loads(line) for line in (tmp_path / "out.jsonl").read_bytes().splitlines()]
    assert [r["number"] for r in rows] == ["SH-1", "SH-4", "SH-5"]
    assert rows[1]["displayName"] == "Two\r\nlines"
    errors = sorted(str(t.last_error) for t in store_of(project).tasks("copy", "failed"))
    where = tmp_path / "in.csv"
    assert errors[0].startswith(f"read: {where}:3: 1 cells where the header has 3: no displayName")
    assert errors[1].startswith(f"read: {where}:4: 5 cells where the header has 3")

    retried = cli(dict(os.environ), "tasks", "retry", "--failed", "--config", str(project))
    assert retried.returncode == 1  # nothing to deliver: the line is still not a record
    again = store_of(project).tasks("copy", "failed")
    assert len(again) == 2 and all("fix the line in the file" in str(t.last_error) for t in again)
    assert numbers_in(tmp_path / "out.jsonl") == Counter({"SH-1": 1, "SH-4": 1, "SH-5": 1})


def test_a_latin1_file_is_named_with_the_byte_and_read_with_its_encoding(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_bytes("number,displayName\nL-1,Café\n".encode("latin-1"))
    project = file_project(tmp_path, "in.csv", "out.jsonl")
    done = cli(dict(os.environ), "run", "copy", "--config", str(project))
    assert done.returncode == 2 and "Traceback" not in done.stderr  # bad input: exit 2
    assert f"{tmp_path / 'in.csv'}:2: byte 26 (0xe9) is not utf-8" in " ".join(done.stderr.split())

    write_project(
        project,
        {
            "flows": {
                "copy": {"from": {"reader": "in.csv", "encoding": "latin-1"}, "to": "out.jsonl"}
            }
        },
    )
    assert run_flow(project, "copy").status == "ok"
    assert orjson.loads((tmp_path / "out.jsonl").read_bytes())["displayName"] == "Café"


# --- SQL targets ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg_with_password() -> Iterator[str]:
    """A PostgreSQL server that checks passwords (the shared one trusts everyone): its URL."""
    binaries = postgres_bin()
    folder = Path(tempfile.mkdtemp(prefix="bcbridge-pgpw-"))
    (folder / "pw").write_text("right-pw\n")
    if os.geteuid() == 0:
        for path in (folder, folder / "pw"):
            shutil.chown(path, "postgres", "postgres")
    data, port = folder / "data", free_port()
    auth = ["-U", "postgres", "--auth=scram-sha-256", f"--pwfile={folder / 'pw'}"]
    subprocess.run(
        as_server_user([str(binaries / "initdb"), "-D", str(data), *auth]),
        check=True,
        capture_output=True,
        cwd=folder,
    )
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    pg_ctl = [str(binaries / "pg_ctl"), "-D", str(data)]
    start = [*pg_ctl, "-o", options, "-l", str(folder / "log"), "-w", "start"]
    subprocess.run(as_server_user(start), check=True, capture_output=True, cwd=folder)
    try:
        yield f"postgresql+psycopg://postgres:right-pw@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(as_server_user([*pg_ctl, "-m", "immediate", "stop"]), capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def test_a_wrong_database_password_is_one_line_with_the_password_masked(
    tmp_path: Path, pg_with_password: str
) -> None:
    write_jsonl(tmp_path / "in.jsonl", items(3))
    wrong = pg_with_password.replace("right-pw", "s3cret-wrong")
    project = file_project(tmp_path, "in.jsonl", f"{wrong}#items")
    done = cli(dict(os.environ), "run", "copy", "--config", str(project))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "s3cret-wrong" not in done.stderr
    said = " ".join(done.stderr.split())
    assert f"cannot write to {wrong.replace('s3cret-wrong', '***')}#items" in said
    assert 'password authentication failed for user "postgres"' in said

    file_project(tmp_path, "in.jsonl", f"{pg_with_password}#items")
    assert run_flow(project, "copy").status == "ok"
    assert len(sql_rows(pg_with_password, "items")) == 3


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_bc_customers_to_sql_take_their_column_types_from_the_catalog(
    tmp_path: Path, bc_env: dict[str, str], bc: BC, backend: str, request: pytest.FixtureRequest
) -> None:
    """Many customers have creditLimit 0 (real BC writes a zero decimal as 0): the column is
    still NUMERIC, so 1234.56 goes in as 1234.56, not 1235."""
    first = bc.all(CRONUS, "customers", **{"$orderby": "number"})[1]
    bc.patch(CRONUS, "customers", first, creditLimit=1234.56)
    url = (
        request.getfixturevalue("postgres").new_database()
        if backend == "postgresql"
        else f"sqlite:///{tmp_path / 'out.db'}"
    )
    incoming = {"entity": "customers", "company": CRONUS, "page_size": 50}
    keep = ["id", "number", "creditLimit", "taxLiable", "lastModifiedDateTime"]
    project = write_project(
        tmp_path / "bcbridge.yaml",
        {
            "incoming": {"customers": incoming},
            "flows": {
                "copy": {
                    "from": "customers",
                    "transform": [{"keep": keep}],
                    "to": {"writer": f"{url}#customers", "key": "id"},
                }
            },
        },
    )
    assert run_flow(project, "copy").status == "ok"
    engine = sa.create_engine(url)
    columns = {c["name"]: c["type"] for c in sa.inspect(engine).get_columns("customers")}
    engine.dispose()
    assert isinstance(columns["creditLimit"], sa.Numeric)
    assert not isinstance(columns["creditLimit"], sa.Integer | sa.Float)
    assert isinstance(columns["taxLiable"], sa.Boolean)
    rows = {r["id"]: r for r in sql_rows(url, "customers")}
    for customer in bc.all(CRONUS, "customers"):
        row = rows[customer["id"]]
        assert Decimal(str(row["creditLimit"])) == Decimal(repr(customer["creditLimit"]))
        assert row["lastModifiedDateTime"] == customer["lastModifiedDateTime"]  # as BC wrote it
    assert Decimal(str(rows[first["id"]]["creditLimit"])) == Decimal("1234.56")


def test_a_value_that_does_not_fit_the_bc_type_fails_its_record(
    tmp_path: Path, bc_env: dict[str, str]
) -> None:
    """`default` keeps the meaning of BC's creditLimit (decimal): text there is refused, where
    a table typed from the values alone would have made the column text."""
    incoming = {"entity": "customers", "company": CRONUS}
    project = write_project(
        tmp_path / "bcbridge.yaml",
        {
            "incoming": {"customers": incoming},
            "flows": {
                "copy": {
                    "from": "customers",
                    "transform": [{"keep": ["id", "number"]}, {"default": {"creditLimit": "n/a"}}],
                    "to": {"writer": f"sqlite:///{tmp_path / 'out.db'}#customers", "key": "id"},
                }
            },
        },
    )
    result = run_flow(project, "copy")
    assert result.status == "failed" and result.counts["failed"] == result.counts["read"] > 0
    (task, *_) = store_of(project).tasks("copy", "failed")
    assert "field 'creditLimit': cannot store 'n/a' exactly in a num column" in str(task.last_error)


# --- SIGKILL -------------------------------------------------------------------------------------


def test_sigkill_while_copying_a_file_to_jsonl(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    print(f"\ncrash test seed: {SEED} (BCBRIDGE_CRASH_SEED={SEED} replays it)")
    records = items(1500)
    write_jsonl(tmp_path / "in.jsonl", records)
    project = file_project(tmp_path, "in.jsonl", "out.jsonl", chunk=100)
    killed = kill_runs_at_random(dict(os.environ), project, "copy", rng, len(records), kills=3)
    done = cli(dict(os.environ), "run", "copy", "--config", str(project))
    assert done.returncode == 0, done.stderr
    assert numbers_in(tmp_path / "out.jsonl") == Counter({r["number"]: 1 for r in records})
    assert killed >= 1


def test_sigkill_while_copying_bc_customers_to_jsonl(
    tmp_path: Path, bc_emulator_factory: Any
) -> None:
    rng = random.Random(SEED + 1)
    print(f"\ncrash test seed: {SEED} (BCBRIDGE_CRASH_SEED={SEED} replays it)")
    many: RunningEmulator = bc_emulator_factory(latency_ms=5, scale="customers=1000")
    env = {**os.environ, **many.info.env()}
    incoming = {"entity": "customers", "company": CRONUS, "page_size": 100}
    project = write_project(
        tmp_path / "bcbridge.yaml",
        {
            "incoming": {"customers": {**incoming, "cursor": "lastModifiedDateTime"}},
            "flows": {"copy": {"from": "customers", "to": "out.jsonl", "chunk_size": 100}},
        },
    )
    killed = kill_runs_at_random(env, project, "copy", rng, 1000, kills=3)
    done = cli(env, "run", "copy", "--config", str(project))
    assert done.returncode == 0, done.stderr
    counts = numbers_in(tmp_path / "out.jsonl")
    assert len(counts) == 1000 and set(counts.values()) == {1}, f"killed {killed} times"
    assert killed >= 1


def sql_rows(url: str, table: str) -> list[dict[str, Any]]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(sa.text(f"SELECT * FROM {table}")).mappings()]
    engine.dispose()
    return rows
