"""Writers leave OData annotations (`@odata.etag`, `field@odata.mediaReadLink`, in expanded
records too) out of files and tables unless asked: the same for `pull` and for flows' writers
(`to: {writer: ..., annotations: true}`). The caller's records keep them (cursors read ETags)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from bcbridge.sinks import open_writer, without_annotations
from tests.flows.conftest import run_flow, write_project


def record(number: str) -> dict[str, Any]:
    return {
        "@odata.etag": f'W/"{number}"',
        "number": number,
        "picture@odata.mediaReadLink": "https://bc/picture",
        "lines": [{"@odata.etag": 'W/"l"', "lineNumber": 1000}],
    }


def test_without_annotations_copies_and_leaves_the_input_alone() -> None:
    original = record("A1")
    assert without_annotations(original) == {"number": "A1", "lines": [{"lineNumber": 1000}]}
    assert original == record("A1")


@pytest.mark.parametrize("spec", ["out.jsonl", "out.csv", "sqlite:///{folder}/out.db#t"])
def test_each_writer_leaves_annotations_out_by_default(tmp_path: Path, spec: str) -> None:
    spec = spec.format(folder=tmp_path)
    target = spec if "://" in spec else str(tmp_path / spec)
    records = [record("A1"), record("A2")]
    with open_writer(target, key="number") as writer:
        writer.write_many(records)
    assert records == [record("A1"), record("A2")]  # the caller's records are not changed
    assert written_fields(tmp_path, spec) == ["number", "lines"]


@pytest.mark.parametrize("spec", ["out.jsonl", "out.csv", "sqlite:///{folder}/out.db#t"])
def test_annotations_true_keeps_them(tmp_path: Path, spec: str) -> None:
    spec = spec.format(folder=tmp_path)
    target = spec if "://" in spec else str(tmp_path / spec)
    with open_writer(target, key="number", annotations=True) as writer:
        writer.write_many([record("A1")])
    assert written_fields(tmp_path, spec) == list(record("A1"))


def written_fields(folder: Path, spec: str) -> list[str]:
    if spec.endswith(".jsonl"):
        first = orjson.loads((folder / spec).read_bytes().splitlines()[0])
        assert isinstance(first, dict)
        return list(first)
    if spec.endswith(".csv"):
        with (folder / spec).open(newline="") as handle:
            return next(csv.reader(handle))
    engine = sa.create_engine(spec.partition("#")[0])
    try:
        return [column["name"] for column in sa.inspect(engine).get_columns("t")]
    finally:
        engine.dispose()


@pytest.mark.parametrize("keep", [False, True])
def test_a_flow_writer_drops_annotations_unless_its_to_says_annotations(
    tmp_path: Path, keep: bool
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"".join(orjson.dumps(record(f"A{n}")) + b"\n" for n in range(3)))
    target: dict[str, Any] = {"writer": "out.csv"}
    if keep:
        target["annotations"] = True
    project = write_project(
        tmp_path / "bcbridge.yaml", {"flows": {"copy": {"from": "in.jsonl", "to": target}}}
    )
    result = run_flow(project, "copy")
    assert result.status == "ok", result.error
    with (tmp_path / "out.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["number"] for row in rows] == ["A0", "A1", "A2"]
    assert ("@odata.etag" in rows[0]) is keep
