"""Exact decimals over real HTTP: a CSV of prices pushed through a flow into the emulator; and a
sync Client that is never closed does not keep its process alive."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from bcbridge import _json
from bcbridge.testing import RunningEmulator
from tests.flows.conftest import BC, CRONUS, cli, run_flow, store_of, write_project

# 19 significant digits: within BC's decimal (.NET System.Decimal, 28-29 digits), beyond a float.
WIDE = "12345678901234567.12"
PRICES = {
    "X1": "10.75",
    "X2": "0",
    "X3": "1234567.891",
    "X4": WIDE,
    "X5": "1e400",
    "X6": "NaN",
    "X7": "Infinity",
}
GOOD, BAD = ["X1", "X2", "X3", "X4"], ["X5", "X6", "X7"]


@pytest.fixture
def bc(emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[BC]:
    emulator.reset()
    for name, value in emulator.info.env().items():
        monkeypatch.setenv(name, value)
    view = BC(emulator)
    yield view
    view.close()


def prices_project(folder: Path, action: str = "create") -> Path:
    with (folder / "items.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["number", "displayName", "unitPrice"])
        for number, price in PRICES.items():
            writer.writerow([number, f"Price {price}", price])
    return write_project(
        folder / "bcbridge.yaml",
        {
            "outgoing": {
                "items": {
                    "entity": "items",
                    "company": CRONUS,
                    "action": action,
                    "key_field": "number",
                }
            },
            "flows": {
                "load": {
                    "from": "items.csv",
                    "transform": [{"convert": {"unitPrice": "decimal"}}],
                    "to": "items",
                }
            },
        },
    )


def exact_items(bc: BC) -> dict[str, Decimal]:
    """The items as BC's JSON holds them, every number read as an exact Decimal."""
    response = bc.client.request("GET", bc.path(CRONUS, "items"), params={"$top": 20000})
    return {
        item["number"]: item["unitPrice"]
        for item in _json.loads_exact(response.content)["value"]
        if item["number"] in PRICES
    }


def test_prices_land_exactly_and_impossible_ones_fail_naming_the_field(
    tmp_path: Path, bc: BC
) -> None:
    project = prices_project(tmp_path)
    result = run_flow(project, "load")
    assert result.counts["created"] == len(GOOD) and result.counts["failed"] == len(BAD)

    landed = exact_items(bc)
    assert sorted(landed) == GOOD  # nothing was created with a price of 0 for NaN or 1e400
    for number in ("X1", "X2", "X3"):
        assert landed[number] == Decimal(PRICES[number])
    # The emulator keeps Edm.Decimal in a SQLite REAL column (see emulator/store.py), so the
    # 19-digit price reads back rounded there; what we sent and keep is exact:
    assert landed["X4"] == pytest.approx(Decimal(WIDE))

    store = store_of(project)
    try:
        sent = {t.record_key: t for t in store.tasks("load", limit=None)}
        assert sent["X4"].status == "done" and sent["X4"].payload["unitPrice"] == Decimal(WIDE)
        assert b'"unitPrice":' + WIDE.encode() in _json.dumps(sent["X4"].payload)  # on the wire
        failed = store.tasks("load", "failed", limit=None)
    finally:
        store.close()
    shown = cli(dict(os.environ), "tasks", "show", str(sent["X4"].id), "--config", str(project))
    assert f'"unitPrice": {WIDE}' in shown.stdout, shown.stderr
    assert sorted(str(t.record_key) for t in failed) == BAD
    for task in failed:
        assert task.stage == "transform"
        assert "unitPrice" in str(task.last_error) and "convert" in str(task.last_error)


def test_an_upsert_of_the_same_prices_is_unchanged(tmp_path: Path, bc: BC) -> None:
    """Decimals we send compare equal to the floats BC's JSON gives back: nothing is re-sent."""
    project = prices_project(tmp_path, action="upsert")
    first = run_flow(project, "load")
    assert first.counts["created"] == len(GOOD)
    shutil.rmtree(tmp_path / ".bcbridge")  # a new store: every record is sent and compared again
    second = run_flow(project, "load")
    # the 19-digit price reads back rounded from the emulator (REAL column): one redundant PATCH
    assert second.counts["unchanged"] == len(GOOD) - 1, second.counts
    assert second.counts["updated"] == 1


def test_a_sync_client_never_closed_does_not_keep_the_process_alive(
    emulator: RunningEmulator,
) -> None:
    script = textwrap.dedent(
        """
        from bcbridge.config import ClientSettings
        from bcbridge.sync import Client

        client = Client(ClientSettings.from_env())
        print(len(client.companies()))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, **emulator.info.env()},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) >= 1
