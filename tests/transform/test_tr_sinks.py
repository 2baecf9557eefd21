from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bcbridge.errors import ConfigError
from bcbridge.sinks import open_reader, open_writer

ROWS = [{"id": "1", "n": 1, "tags": ["a"]}, {"id": "2", "n": 2, "tags": []}]


def test_jsonl_round_trip_and_append(tmp_path: Path) -> None:
    path = str(tmp_path / "out.jsonl")
    with open_writer(path) as writer:
        writer.write_many(ROWS)
    with open_writer(path, append=True) as writer:
        writer.write({"id": "3", "n": 3})
    assert [r["id"] for r in open_reader(path)] == ["1", "2", "3"]
    assert next(iter(open_reader(path)))["tags"] == ["a"]


def test_csv_round_trip_refuses_new_columns(tmp_path: Path) -> None:
    path = str(tmp_path / "out.csv")
    with open_writer(path) as writer:
        writer.write_many(ROWS)
    assert list(open_reader(path)) == [
        {"id": "1", "n": "1", "tags": '["a"]'},
        {"id": "2", "n": "2", "tags": "[]"},
    ]
    writer = open_writer(path, append=True)
    writer.write({"id": "3", "n": 3, "tags": "", "extra": 1})
    with pytest.raises(ConfigError, match="columns the CSV header lacks: extra"):
        writer.close()


def test_sql_upsert_on_key(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}#customers"
    with open_writer(url, key="id") as writer:
        writer.write_many(ROWS)
    with open_writer(url, key="id") as writer:
        writer.write({"id": "2", "n": 20, "tags": ["z"]})
    rows = sorted(open_reader(url), key=lambda r: r["id"])
    assert rows == [{"id": "1", "n": 1, "tags": ["a"]}, {"id": "2", "n": 20, "tags": ["z"]}]
    with pytest.raises(ConfigError, match="no table 'nope'"):
        list(open_reader(f"sqlite:///{tmp_path / 'db.sqlite'}#nope"))
    with pytest.raises(ConfigError, match="needs its table after '#'"):
        open_writer(f"sqlite:///{tmp_path / 'db.sqlite'}")


def test_stdin_and_stdout(tmp_path: Path) -> None:
    code = (
        "from bcbridge.sinks import open_reader, open_writer\n"
        "with open_writer('-') as w:\n"
        "    for r in open_reader('-'):\n"
        "        w.write({**r, 'seen': True})\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        input='{"a": 1}\n\n{"a": 2}\n',
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.splitlines() == ['{"a":1,"seen":true}', '{"a":2,"seen":true}']


def test_formats_are_told_by_extension_or_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot tell the format"):
        open_writer(str(tmp_path / "x.txt"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": 1}\nnot json\n')
    with pytest.raises(ConfigError, match=r"bad\.jsonl:2: not JSON"):
        list(open_reader(str(bad)))


def test_large_input_streams(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    path.write_text("".join(f'{{"i": {i}}}\n' for i in range(50_000)))
    reader = open_reader(str(path))
    assert next(iter(reader)) == {"i": 0}  # a generator: nothing read ahead
    assert sum(1 for _ in reader) == 49_999
