"""A saved cursor (a `pull --state` file or a store row) that was damaged or edited by hand is a
ConfigError naming the state, never a crash."""

from __future__ import annotations

from typing import Any

import pytest

from bcbridge.errors import ConfigError, exit_code
from bcbridge.subscriber import CursorState


@pytest.mark.parametrize(
    "data", [[1], "x", None, {"boundary": "x"}, {"field": 3}, {"value": {"a": 1}}]
)
def test_a_damaged_cursor_is_a_config_error(data: Any) -> None:
    with pytest.raises(ConfigError, match="not a saved cursor") as raised:
        CursorState.from_json(data)
    assert exit_code(raised.value) == 2


def test_a_saved_cursor_round_trips() -> None:
    cursor = CursorState("lastModifiedDateTime", "2026-01-01T00:00:00Z", {"id": "x"})
    assert CursorState.from_json(cursor.to_json()) == cursor
    assert CursorState.from_json({}) == CursorState("lastModifiedDateTime", None, {})
