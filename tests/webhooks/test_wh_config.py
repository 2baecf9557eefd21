"""The project file's webhook settings: checked at load, each problem one line naming its key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bcbridge.cli import main
from bcbridge.flowconfig import check_project, load_project
from tests.flows.conftest import write_project


def project(tmp_path: Path, incoming: dict[str, Any], **extra: Any) -> Path:
    return write_project(
        tmp_path / "bcbridge.yaml",
        {
            "incoming": {"hooked": {"entity": "customers", "company": "C", **incoming}},
            "flows": {"out": {"from": "hooked", "to": "out.jsonl"}},
            **extra,
        },
    )


def problems(path: Path) -> list[str]:
    return [problem.text for problem in check_project(path)[1]]


def test_a_webhook_incoming_loads_with_its_defaults(tmp_path: Path) -> None:
    path = project(
        tmp_path,
        {"trigger": "webhook", "cursor": "lastModifiedDateTime"},
        serve={"public_url": "https://hooks.example.com/"},
    )
    config = load_project(path)
    incoming = config.incoming["hooked"]
    assert (incoming.reconcile, incoming.on_delete) == ("1h", "tombstone")
    assert config.serve.public_url == "https://hooks.example.com"
    assert config.schedule_of("out") == "1h"  # the reconciliation pull is the flow's schedule
    assert list(config.webhook_incoming()) == ["hooked"]


@pytest.mark.parametrize(
    ("incoming", "extra", "expected"),
    [
        ({"trigger": "webhook"}, {}, "incoming.hooked: trigger: webhook needs cursor"),
        (
            {"trigger": "webhook", "cursor": "lastModifiedDateTime", "entity": "contacts"},
            {},
            "incoming.hooked.trigger: BC sends no webhooks for 'contacts'",
        ),
        (
            {"trigger": "webhook", "cursor": "lastModifiedDateTime", "key": "x"},
            {},
            "incoming.hooked.key: a webhook incoming reads the whole entity set",
        ),
        (
            {"trigger": "webhook", "cursor": "lastModifiedDateTime", "on_delete": "delete"},
            {},
            "incoming.hooked.on_delete: delete removes the row of the record's key from a SQL "
            "table, but flow 'out' does not write to one with a key",
        ),
        ({"trigger": "push"}, {}, "incoming.hooked.trigger"),
        ({"reconcile": "often"}, {}, "incoming.hooked.reconcile"),
        ({"on_delete": "purge"}, {}, "incoming.hooked.on_delete"),
        ({}, {"serve": {"public_url": "bcbridge.example.com"}}, "serve.public_url"),
        ({}, {"serve": {"public_url": "https://x.example.com/?a=1"}}, "without ?query"),
    ],
)
def test_a_wrong_webhook_setting_is_one_line_naming_its_key(
    tmp_path: Path, incoming: dict[str, Any], extra: dict[str, Any], expected: str
) -> None:
    found = problems(project(tmp_path, incoming, **extra))
    assert len(found) == 1, found
    assert expected in found[0]
    assert str(tmp_path / "bcbridge.yaml") in found[0]


def test_serve_refuses_a_webhook_incoming_without_a_public_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BCBRIDGE_PUBLIC_URL", raising=False)
    path = project(tmp_path, {"trigger": "webhook", "cursor": "lastModifiedDateTime"})
    with pytest.raises(SystemExit) as ended:
        main(["serve", "--config", str(path), "--port", "0"])
    assert ended.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "incoming hooked: trigger: webhook needs the URL where BC reaches this server" in err
    assert "BCBRIDGE_PUBLIC_URL" in err


def test_serve_refuses_a_public_url_that_is_not_a_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = project(tmp_path, {"trigger": "webhook", "cursor": "lastModifiedDateTime"})
    with pytest.raises(SystemExit) as ended:
        main(["serve", "--config", str(path), "--port", "0", "--public-url", "ftp://x"])
    assert ended.value.code == 2
    assert "--public-url: 'ftp://x' is not an absolute http(s) URL" in capsys.readouterr().err
