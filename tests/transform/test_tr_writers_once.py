"""Writers and readers at the edges: SQL column types that never round, widen or drop; exact
decimals in JSON Lines; file offsets and cut-back; strict readers; the store's rules that keep a
writer's output exactly once."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from bcbridge.catalog import FieldType
from bcbridge.errors import ConfigError, WriteError
from bcbridge.sinks import (
    BadRecord,
    FileWriter,
    SqlWriter,
    open_reader,
    open_writer,
    read_records,
)
from bcbridge.store import Store, TaskUpdate
from tests.pg_server import PostgresServer


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'out.db'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.new_database()


def rows_of(url: str, table: str = "t") -> list[dict[str, Any]]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(sa.text(f"SELECT * FROM {table}")).mappings()]
    engine.dispose()
    return rows


def column_types(url: str, table: str = "t") -> dict[str, Any]:
    engine = sa.create_engine(url)
    columns = {c["name"]: c["type"] for c in sa.inspect(engine).get_columns(table)}
    engine.dispose()
    return columns


def is_numeric(kind: Any) -> bool:
    return isinstance(kind, sa.Numeric) and not isinstance(kind, sa.Integer | sa.Float)


# --- SQL ---------------------------------------------------------------------------------------


def test_a_column_widens_to_numeric_and_a_late_field_is_added(db_url: str) -> None:
    writer = SqlWriter(db_url, "t", key="number")
    assert writer.write_chunk([{"number": "I1", "unitPrice": 10}]) == [None]
    later: list[dict[str, Any]] = [
        {"number": "I2", "unitPrice": 10.75, "email": "a@b.c"},
        {"number": "I3", "x": None},
    ]
    assert writer.write_chunk(later) == [None, None]
    writer.close()
    assert is_numeric(column_types(db_url)["unitPrice"])
    rows = {r["number"]: r for r in rows_of(db_url)}
    assert Decimal(str(rows["I2"]["unitPrice"])) == Decimal("10.75")
    assert rows["I2"]["email"] == "a@b.c" and rows["I1"]["email"] is None

    again = SqlWriter(db_url, "t", key="number")  # a later run widens a table it did not create
    assert again.write_chunk([{"number": "I4", "unitPrice": "call us"}]) == [None]
    again.close()
    assert isinstance(column_types(db_url)["unitPrice"], sa.Text)
    rows = {r["number"]: r for r in rows_of(db_url)}
    assert rows["I4"]["unitPrice"] == "call us" and rows["I2"]["unitPrice"] == "10.75"


def test_numeric_columns_read_back_as_the_numbers_written(db_url: str) -> None:
    writer = SqlWriter(db_url, "t", key="number")
    writer.write_chunk([{"number": "R1", "price": 10.75}, {"number": "R2", "price": 3}])
    writer.close()
    got = sorted(open_reader(f"{db_url}#t"), key=lambda r: r["number"])
    assert got == [{"number": "R1", "price": 10.75}, {"number": "R2", "price": 3}]
    assert isinstance(got[1]["price"], int)


def test_decimals_go_in_exactly_or_refuse_their_record(db_url: str) -> None:
    writer = SqlWriter(db_url, "t", key="number")
    refused = writer.write_chunk(
        [
            {"number": "D1", "amount": Decimal("1234567.891")},
            {"number": "D2", "amount": Decimal("0.1")},
            {"number": "D3", "amount": 3},
        ]
    )
    assert refused == [None, None, None]
    many_digits = Decimal("12345678901234.56789")
    result = writer.write_chunk([{"number": "D4", "amount": many_digits}])
    writer.close()
    rows = {r["number"]: Decimal(str(r["amount"])) for r in rows_of(db_url)}
    assert rows["D1"] == Decimal("1234567.891") and rows["D2"] == Decimal("0.1")
    assert rows["D3"] == 3
    if db_url.startswith("sqlite"):  # a double keeps 15 digits: refused, not rounded
        assert result[0] is not None and "more than 15 significant digits" in result[0]
        assert "D4" not in rows
    else:
        assert result == [None] and rows["D4"] == many_digits


def test_catalog_types_fix_the_columns_and_misfits_fail_alone(db_url: str) -> None:
    types = {
        "unitPrice": FieldType.DECIMAL,
        "inventory": FieldType.INT,
        "blocked": FieldType.BOOL,
        "postingDate": FieldType.DATE,
        "lastModifiedDateTime": FieldType.DATETIME,
    }
    writer = SqlWriter(db_url, "t", key="id", types=types)
    when = "2026-01-31T10:20:30.1234567Z"  # 7 digits: a timestamp column would lose one
    good = {
        "id": "1",
        "unitPrice": 0,
        "inventory": 5,
        "blocked": False,
        "postingDate": "0001-01-01",
        "lastModifiedDateTime": when,
    }
    refused = writer.write_chunk(
        [
            good,
            {"id": "2", "unitPrice": 10.75},
            {"id": "3", "unitPrice": "ten"},
            {"id": "4", "inventory": 2.5},
            {"id": "5", "postingDate": "31/01/2026"},
            {"id": "6", "blocked": "yes"},
            {"unitPrice": 1},
        ]
    )
    writer.close()
    assert refused[:2] == [None, None]
    assert "field 'unitPrice': cannot store 'ten' exactly in a num column" in str(refused[2])
    assert "not a whole number" in str(refused[3])
    assert "not a date" in str(refused[4]) and "not true or false" in str(refused[5])
    assert "no value for the key field 'id'" in str(refused[6])
    columns = column_types(db_url)
    assert is_numeric(columns["unitPrice"]) and isinstance(columns["inventory"], sa.Integer)
    assert isinstance(columns["blocked"], sa.Boolean)
    assert isinstance(columns["lastModifiedDateTime"], sa.Text)
    rows = {r["id"]: r for r in rows_of(db_url)}
    assert set(rows) == {"1", "2"}
    assert rows["1"]["lastModifiedDateTime"] == when
    assert Decimal(str(rows["2"]["unitPrice"])) == Decimal("10.75")


def test_a_table_an_older_version_typed_from_a_first_zero_is_widened(db_url: str) -> None:
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sa.text('CREATE TABLE t (id TEXT PRIMARY KEY, "unitPrice" BIGINT)'))
        conn.execute(sa.text("INSERT INTO t VALUES ('1', 0)"))
    engine.dispose()
    writer = SqlWriter(db_url, "t", key="id", types={"unitPrice": FieldType.DECIMAL})
    assert writer.write_chunk([{"id": "2", "unitPrice": 10.75}]) == [None]
    writer.close()
    assert is_numeric(column_types(db_url)["unitPrice"])
    rows = {r["id"]: Decimal(str(r["unitPrice"])) for r in rows_of(db_url)}
    assert rows == {"1": 0, "2": Decimal("10.75")}


def test_nested_values_with_decimals_are_exact_json_text(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'out.db'}"
    writer = SqlWriter(url, "t")
    lines = [{"quantity": Decimal("2.50"), "unitPrice": Decimal("0.1")}]
    assert writer.write_chunk([{"number": "S1", "lines": lines}]) == [None]
    writer.close()
    assert rows_of(url)[0]["lines"] == '[{"quantity":2.50,"unitPrice":0.1}]'


# --- files -------------------------------------------------------------------------------------


def test_jsonl_writes_decimals_as_the_numbers_they_are(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    with open_writer(str(path)) as writer:
        writer.write({"a": Decimal("10.750"), "b": Decimal("1E+2"), "c": "\x00not a mark"})
    assert path.read_bytes() == b'{"a":10.750,"b":100,"c":"\\u0000not a mark"}\n'
    assert orjson.loads(path.read_bytes())["a"] == 10.75


def test_a_file_writer_tracks_its_offset_and_is_cut_back_to_it(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    writer = open_writer(str(path), append=True)
    assert isinstance(writer, FileWriter)
    writer.resume(None)
    writer.write_chunk([{"n": 1}, {"n": 2}])
    saved = writer.committed()
    assert saved == {"path": str(path), "offset": path.stat().st_size}
    writer.write_chunk([{"n": 3}])  # written, but (say) the run died before settling it
    writer.close()

    again = open_writer(str(path), append=True)
    assert isinstance(again, FileWriter)
    again.resume(saved["offset"])
    again.write_chunk([{"n": 3}, {"n": 4}])
    again.close()
    assert [orjson.loads(x)["n"] for x in path.read_bytes().splitlines()] == [1, 2, 3, 4]

    path.write_bytes(b'{"n":1}\n')
    shorter = open_writer(str(path), append=True)
    assert isinstance(shorter, FileWriter)
    with pytest.raises(WriteError, match=r"holds 8 bytes, fewer than the \d+ this flow wrote"):
        shorter.resume(saved["offset"])
    shorter.close()


def test_without_an_offset_a_partial_last_line_is_cut(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    path.write_bytes(b"number,name\r\nA,x\r\nB,y")
    writer = open_writer(str(path), append=True)
    assert isinstance(writer, FileWriter)
    writer.resume(None)
    assert writer.write_chunk([{"number": "B", "name": "y"}, {"number": "C", "extra": 1}]) == [
        None,
        f"{path}: the record has columns the CSV header lacks: extra; "
        "add a `keep` transformer or write JSON Lines",
    ]
    writer.close()
    assert path.read_bytes() == b"number,name\r\nA,x\r\nB,y\r\n"


# --- readers -----------------------------------------------------------------------------------


def test_a_broken_jsonl_line_is_a_bad_record_and_the_rest_come(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"n": 1}\n{"n": \n[1]\n{"n": 4}\n')
    got = list(read_records(str(path)))
    assert got[0] == {"n": 1} and got[3] == {"n": 4}
    assert isinstance(got[1], BadRecord) and got[1].line == 2 and got[1].raw == '{"n": '
    assert str(got[1]).startswith(f"{path}:2: not JSON")
    assert isinstance(got[2], BadRecord) and "expected a JSON object" in got[2].error


def test_large_csv_fields_are_records(tmp_path: Path) -> None:
    note = "x" * (10 * 1024 * 1024)
    path = tmp_path / "in.csv"
    path.write_text(f'number,note\nBIG,"{note}"\nSMALL,ok\n')
    got = list(read_records(str(path)))
    assert got == [{"number": "BIG", "note": note}, {"number": "SMALL", "note": "ok"}]


def test_encodings_that_are_not_ascii_compatible_or_unknown_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("a\n1\n")
    with pytest.raises(ConfigError, match="not ASCII-compatible"):
        list(read_records(str(path), encoding="utf-16"))
    with pytest.raises(ConfigError, match="unknown encoding 'klingon'"):
        list(read_records(str(path), encoding="klingon"))


# --- the store ---------------------------------------------------------------------------------


def test_settle_saves_the_cursor_with_the_tasks(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    run = store.start_run("f")
    (task,) = store.register("f", run, [("1", {"n": 1})])
    store.settle([TaskUpdate(task.id, "done")], cursor=("writer:f", {"offset": 8, "path": "x"}))
    assert store.cursor("writer:f") == {"offset": 8, "path": "x"}
    settled = store.task(task.id)
    assert settled is not None and settled.status == "done"
    store.close()


def test_a_done_task_is_redelivered_after_a_finished_run_only_when_asked(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    first = store.start_run("f")
    (task,) = store.register("f", first, [("1", {"n": 1})])
    store.settle([TaskUpdate(task.id, "done")])
    store.end_run(first, "ok", {})
    second = store.start_run("f")
    (kept,) = store.register("f", second, [("1", {"n": 1})], redeliver_done=False)
    assert kept.status == "done"  # an appending writer: written once, skipped ever after
    store.end_run(second, "ok", {})
    third = store.start_run("f")
    (again,) = store.register("f", third, [("1", {"n": 1})])
    assert again.status == "pending"  # BC targets: sent again (matched on the key, so no double)
    store.close()
