from __future__ import annotations

from pathlib import Path

import pytest

from bcbridge.errors import ConfigError, TransformError
from bcbridge.transform import Chain, Convert, Rename, load_chain, load_chain_file

RECORD = {
    "number": "C1",
    "name": "Ada",
    "city": "Oslo",
    "qty": "3",
    "price": "2.50",
    "tags": ["a", "b"],
}


def test_every_step_in_order_without_touching_the_input() -> None:
    chain = load_chain(
        [
            {"map": {"label": "join('-', [number, city])", "first_tag": "tags[0]"}},
            {"rename": {"name": "displayName"}},
            {"set": {"source": "csv", "ref": "{record.number}/{cursor}"}},
            {"default": {"country": "NO", "city": "unused"}},
            {"convert": {"qty": "int", "price": "decimal"}},
            {"drop": ["tags"]},
            {
                "step": "keep",
                "fields": [
                    "number",
                    "displayName",
                    "label",
                    "first_tag",
                    "source",
                    "ref",
                    "country",
                    "qty",
                    "price",
                    "city",
                ],
            },
        ]
    )
    before = dict(RECORD)
    result = chain.apply(RECORD, {"cursor": "2024-01-01"})
    assert before == RECORD
    assert result == {
        "number": "C1",
        "displayName": "Ada",
        "city": "Oslo",
        "qty": 3,
        "price": 2.5,
        "label": "C1-Oslo",
        "first_tag": "a",
        "source": "csv",
        "ref": "C1/2024-01-01",
        "country": "NO",
    }


def test_filter_drops_and_counts() -> None:
    chain = load_chain([{"filter": "to_number(qty) > `2`"}])
    kept = list(chain.run([{"qty": "1"}, {"qty": "3"}, {"qty": "5"}]))
    assert [r["qty"] for r in kept] == ["3", "5"]
    assert chain.counts == {"in": 3, "out": 2, "filtered": 1}


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        ("bool", "yes", True),
        ("bool", "0", False),
        ("date", "2024-02-03T10:00:00", "2024-02-03"),
        ("datetime", "2024-02-03T10:00:00+01:00", "2024-02-03T09:00:00.000Z"),
        ("str", 5, "5"),
        ("int", "", None),
    ],
)
def test_convert_types(kind: str, value: object, expected: object) -> None:
    assert Convert({"v": kind}).apply({"v": value}, {})["v"] == expected


def test_errors_name_step_record_and_field() -> None:
    chain = Chain([Rename({"a": "b"}), Convert({"qty": "int"})])
    with pytest.raises(TransformError) as info:
        list(chain.run([{"number": "I9", "qty": "many"}]))
    assert (info.value.step, info.value.record, info.value.field) == ("convert", "number=I9", "qty")
    with pytest.raises(TransformError, match="record #1"):
        list(load_chain([{"convert": {"x": "bool"}}]).run([{"x": "yes"}, {"x": "maybe"}]))
    with pytest.raises(TransformError, match=r"no value for 'record.missing'"):
        load_chain([{"set": {"a": "{record.missing}"}}]).apply({}, {})


def test_unknown_step_lists_valid_ones_and_bad_arguments_are_config_errors() -> None:
    with pytest.raises(
        ConfigError,
        match=r"unknown step 'renam' \(did you mean rename\?\).*valid steps: map, rename",
    ):
        load_chain([{"renam": {"a": "b"}}])
    with pytest.raises(ConfigError, match="unknown type 'money'"):
        load_chain([{"convert": {"a": "money"}}])
    with pytest.raises(ConfigError, match="not a JMESPath expression"):
        load_chain([{"map": {"a": "[[["}}])


def test_python_escape_hatch() -> None:
    chain = load_chain([{"python": "tests.transform.helpers_for_tests:shout"}])
    assert chain.apply({"name": "ada"}, {"run": 7}) == {"name": "ADA", "run": 7}
    assert chain.apply({"name": "x", "skip": True}, {}) is None
    with pytest.raises(TransformError, match="raised RuntimeError: boom"):
        load_chain([{"python": "tests.transform.helpers_for_tests.explode"}]).apply({}, {})
    with pytest.raises(ConfigError, match="cannot load"):
        load_chain([{"python": "tests.nowhere:fn"}])


def test_chain_from_a_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(
        "transform:\n  - rename: {name: displayName}\n  - step: drop\n    fields: [city]\n"
    )
    assert load_chain_file(path).apply({"name": "A", "city": "B"}) == {"displayName": "A"}
    path.write_text("- nosuch: {}\n")
    with pytest.raises(ConfigError, match=f"{path}: transform\\[0\\].step: unknown step"):
        load_chain_file(path)
