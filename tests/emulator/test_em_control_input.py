"""The control endpoints and the emulator's options refuse bad input with 400 / exit 2, not 500."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from bcbridge.errors import ConfigError
from bcbridge.testing import RunningEmulator, start_emulator
from tests.emulator.conftest import api_client, control_client

NOT_AN_OBJECT = [b"not json", b"[1, 2]", b'"text"', b"42", b"null", b"{bad"]

BAD_BODIES = [
    ("/_emulator/faults", {"bogus": 1}, "bogus: unknown field"),
    ("/_emulator/faults", {"count": "x"}, "count: input should be a valid integer"),
    ("/_emulator/faults", {"count": "5"}, "count: input should be a valid integer"),
    ("/_emulator/faults", {"status": 99}, "status: input should be greater than or equal to 400"),
    ("/_emulator/faults", {"kind": "explode"}, "kind: input should be 'status', 'drop' or"),
    ("/_emulator/faults", {"seconds": 10**6}, "seconds: input should be less than"),
    ("/_emulator/config", {"latency_ms": -1}, "latency_ms: input should be greater than"),
    ("/_emulator/config", {"latency_ms": 600_000}, "latency_ms: input should be less than"),
    ("/_emulator/config", {"rate_limit": "abc"}, "rate_limit: expected REQUESTS/SECONDS"),
    ("/_emulator/config", {"rate_limit": "0/5"}, "rate_limit: expected at least 1 request"),
    ("/_emulator/config", {"rate_limit": "5/nan"}, "rate_limit: expected at least 1 request"),
    ("/_emulator/config", {"rate_limit": 5}, "rate_limit: input should be a valid string"),
    ("/_emulator/config", {"max_concurrent": 0}, "max_concurrent: input should be greater"),
    ("/_emulator/config", {"max_queue": -1}, "max_queue: input should be greater"),
    ("/_emulator/config", {"token_lifetime": 0}, "token_lifetime: input should be greater"),
    ("/_emulator/config", {"token_lifetime": True}, "token_lifetime: input should be a valid"),
    ("/_emulator/config", {"speed": 1}, "speed: unknown field; expected one of: token_lifetime"),
    ("/_emulator/seed", {"scale": {"customers": -5}}, "scale.customers: input should be greater"),
    ("/_emulator/seed", {"scale": {"nosuchentity": 1}}, "scale: unknown entity set 'nosuch"),
    ("/_emulator/seed", {"scale": {"customers": 10**9}}, "scale.customers: input should be less"),
    ("/_emulator/seed", {"scale": [1]}, "scale: input should be a valid dictionary"),
    ("/_emulator/seed", {"seed": "x"}, "seed: input should be a valid integer"),
    ("/_emulator/reset", {"hard": True}, "hard: unknown field"),
    ("/_emulator/entities", {}, "publisher: required; group: required"),
]
CUSTOM = {"publisher": "contoso", "group": "app", "version": "v1.0", "entity": "car"}


@pytest.fixture(scope="module")
def emulator() -> Iterator[RunningEmulator]:
    """An emulator process (not the in-process one): these tests also read its log, where an
    unhandled error would leave a traceback."""
    with start_emulator() as running:
        yield running


@pytest.fixture(scope="module")
def control(emulator: RunningEmulator) -> Iterator[httpx.Client]:
    with control_client(emulator) as client:
        yield client


@pytest.mark.parametrize("path", ["faults", "config", "seed", "entities", "reset"])
@pytest.mark.parametrize("body", NOT_AN_OBJECT)
def test_a_body_that_is_not_a_json_object_is_a_400(
    control: httpx.Client, path: str, body: bytes
) -> None:
    response = control.post(f"/_emulator/{path}", content=body)
    assert response.status_code == 400, response.text
    assert response.json() == {
        "error": {"code": "BadRequest", "message": response.json()["error"]["message"]}
    }
    assert response.json()["error"]["message"].startswith("body: expected a JSON object, got ")


@pytest.mark.parametrize(("path", "body", "expected"), BAD_BODIES)
def test_a_wrong_field_is_named_in_a_400(
    control: httpx.Client, path: str, body: dict[str, object], expected: str
) -> None:
    response = control.post(path, json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "BadRequest"
    assert error["message"].startswith(expected), error["message"]


def test_a_refused_config_changes_nothing(emulator: RunningEmulator, control: httpx.Client) -> None:
    before = control.post("/_emulator/config", json={}).json()
    refused = control.post(
        "/_emulator/config", json={"latency_ms": 5, "token_lifetime": 0, "rate_limit": "0/5"}
    )
    assert refused.status_code == 400
    assert "token_lifetime" in refused.text and "rate_limit" in refused.text
    assert control.post("/_emulator/config", json={}).json() == before
    with api_client(emulator) as api:  # tokens still last, requests still flow
        assert api.get("companies").status_code == 200


def test_good_bodies_still_work(emulator: RunningEmulator, control: httpx.Client) -> None:
    changed = control.post("/_emulator/config", json={"latency_ms": 1, "queue_timeout_s": 30})
    assert changed.status_code == 200 and changed.json()["latency_ms"] == 1
    assert changed.json()["queue_timeout_s"] == 30.0
    control.post("/_emulator/config", json={"latency_ms": 0}).raise_for_status()
    assert control.post("/_emulator/faults", json={"count": 1, "retry_after": 2}).json() == {
        "pending": 1
    }
    emulator.clear_faults()
    assert control.post("/_emulator/reset").status_code == 200  # an empty body is {}
    assert control.post("/_emulator/seed", json={"scale": {"customers": 3}}).status_code == 200
    with api_client(emulator) as api:
        customers = api.get(f"companies({emulator.info.company_id()})/customers").json()
    assert len(customers["value"]) == 3
    emulator.seed(scale={})


def test_custom_entities_are_checked(control: httpx.Client) -> None:
    def register(**spec: object) -> httpx.Response:
        return control.post("/_emulator/entities", json={**CUSTOM, **spec})

    fields = "id:guid:ro code price:decimal"
    assert register(name="cars", fields=fields).status_code == 201
    assert register(name="cars", fields=fields).status_code == 200  # the same again: no change
    other = register(name="cars", fields="id:guid:ro other")
    assert other.status_code == 400 and "already served" in other.text
    cases: dict[str, dict[str, Any]] = {
        "fields: expected the catalog's": {"name": "vans", "fields": "id:guid:ro x:nosuchtype"},
        "fields: a custom entity needs an 'id'": {"name": "vans", "fields": "code"},
        "fields: property names must be identifiers": {"name": "vans", "fields": "id:guid _seq"},
        "name: string should match pattern": {"name": "no spaces", "fields": fields},
        "publisher: input should be a valid string": {"publisher": 5, "name": "x", "fields": "id"},
    }
    for expected, spec in cases.items():
        response = register(**spec)
        assert response.status_code == 400, (spec, response.text)
        assert response.json()["error"]["message"].startswith(expected), response.text


def test_no_traceback_in_the_emulator_log(emulator: RunningEmulator) -> None:
    assert not [line for line in emulator.log if "Traceback" in line], list(emulator.log)


# --- the same bounds on the CLI and in start_emulator ---------------------------------------

BAD_FLAGS = [
    (["--max-concurrent", "0"], "--max-concurrent: input should be greater than or equal to 1"),
    (["--max-queue", "-1"], "--max-queue: input should be greater than or equal to 0"),
    (["--rate-limit", "0/5"], "--rate-limit: expected at least 1 request per"),
    (["--token-lifetime", "0"], "--token-lifetime: input should be greater than or equal to 1"),
    (["--latency-ms", "600000"], "--latency-ms: input should be less than or equal to 60000"),
    (["--scale", "nosuch=1"], "--scale: unknown entity set 'nosuch'"),
    (["--scale", "customers=-1"], "--scale: expected NAME=COUNT"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("flags", "expected"), BAD_FLAGS)
def test_cli_refuses_limits_that_would_hang(flags: list[str], expected: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bcbridge", "emulator", "start", "--port", "0", *flags],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert done.returncode == 2, done
    assert done.stderr.startswith(f"error: {expected}"), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"max_concurrent": 0}, "max_concurrent: input should be greater than or equal to 1"),
        ({"rate_limit": "0/5"}, "rate_limit: expected at least 1 request per"),
        ({"latency_ms": 10**6}, "latency_ms: input should be less than or equal to 60000"),
        ({"scale": {"customers": -1}}, "scale.customers: input should be greater"),
        ({"speed": 3}, "speed: unknown start_emulator option; expected one of: host"),
    ],
)
def test_start_emulator_refuses_before_starting(options: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as raised:
        start_emulator(**options)
    assert str(raised.value).startswith(expected), raised.value


def test_running_emulator_methods_raise_the_message(emulator: RunningEmulator) -> None:
    with pytest.raises(ConfigError, match=r"^/_emulator/config: max_queue: input should be"):
        emulator.configure(max_queue=-1)
    with pytest.raises(ConfigError, match=r"^/_emulator/faults: kind: input should be"):
        emulator.fault("explode")
