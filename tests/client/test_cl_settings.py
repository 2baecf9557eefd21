"""Client settings (environment, YAML, ${VAR}, errors, masked secrets), redaction, retry rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest

from bcbridge import _redact, _retry
from bcbridge.config import ClientSettings, RetryPolicy, expand_env
from bcbridge.errors import ConfigError

SECRET = "very-secret-value-123"
ENV = {
    "BC_TENANT_ID": "t1",
    "BC_CLIENT_ID": "c1",
    "BC_CLIENT_SECRET": SECRET,
    "BC_COMPANY": "CRONUS",
}


def test_environment_gives_settings_with_bc_defaults() -> None:
    settings = ClientSettings.from_env(ENV)
    assert (
        settings.api_root == "https://api.businesscentral.dynamics.com/v2.0/t1/production/api/v2.0"
    )
    assert settings.authority == "https://login.microsoftonline.com/t1"
    assert settings.scopes == ["https://api.businesscentral.dynamics.com/.default"]
    assert (settings.max_concurrency, settings.rate_limit.requests) == (5, 6000)
    assert settings.company == "CRONUS"
    assert SECRET not in repr(settings) and SECRET not in str(settings.model_dump())


def test_yaml_expands_variables_and_reports_file_line_and_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_SECRET", SECRET)
    good = tmp_path / "good.yaml"
    good.write_text(
        "tenant_id: ${TENANT:-t9}\nclient_id: c\nclient_secret: ${MY_SECRET}\n"
        "api_route: contoso/app/v1.0\n"
    )
    settings = ClientSettings.from_yaml(good)
    assert settings.tenant_id == "t9" and settings.api_root.endswith("/api/contoso/app/v1.0")
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "tenant_id: t\nclient_id: c\nclient_secret: ${MY_SECRET}\nmax_concurrency: many\n"
    )
    with pytest.raises(ConfigError) as info:
        ClientSettings.from_yaml(bad)
    assert f"{bad}:4: max_concurrency" in str(info.value)
    assert SECRET not in str(info.value)
    with pytest.raises(ConfigError, match="NOT_SET_ANYWHERE is not set"):
        expand_env("${NOT_SET_ANYWHERE}", {})


def test_exactly_one_credential_is_required() -> None:
    with pytest.raises(ConfigError, match="BC_CLIENT_SECRET is not set"):
        ClientSettings.from_env({"BC_TENANT_ID": "t", "BC_CLIENT_ID": "c"})


def test_redaction_masks_tokens_secrets_and_sensitive_query_parameters() -> None:
    _redact.register_secret(SECRET)
    jwt_like = "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJ4In0.c2lnbmF0dXJl"
    assert SECRET not in _redact.text(f"failed with {SECRET}")
    assert jwt_like not in _redact.text(f"Authorization: Bearer {jwt_like}")
    assert "client_secret=***" in _redact.url(f"https://x/token?client_secret={SECRET}&a=1")
    assert _redact.headers({"Authorization": "Bearer abc"})["Authorization"] == "***"
    assert _redact.token(jwt_like) == "eyJhbG…F0dXJl"


@pytest.mark.parametrize(
    ("status", "idempotent", "expected"),
    [
        (429, False, True),
        (503, False, True),
        (502, False, False),
        (504, True, True),
        (500, True, False),
        (404, True, False),
    ],
)
def test_retry_rules_never_repeat_a_write_that_may_have_landed(
    status: int, idempotent: bool, expected: bool
) -> None:
    assert _retry.should_retry_status(status, idempotent=idempotent) is expected


def test_dropped_connections_are_retried_only_for_idempotent_requests() -> None:
    dropped = httpx.RemoteProtocolError("peer closed")
    assert _retry.should_retry_exception(dropped, idempotent=True)
    assert not _retry.should_retry_exception(dropped, idempotent=False)
    assert _retry.should_retry_exception(httpx.ConnectError("refused"), idempotent=False)


def test_retry_after_in_seconds_or_as_a_date_and_capped_jittered_backoff() -> None:
    assert _retry.retry_after("7", cap=60) == 7
    assert _retry.retry_after("700", cap=60) == 60
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= (_retry.retry_after(later, cap=60) or 0) <= 30
    assert _retry.retry_after("soon", cap=60) is None
    policy = RetryPolicy(backoff_base=1, backoff_max=4)
    assert all(0 <= _retry.backoff(policy, attempt) <= 4 for attempt in range(1, 10))
