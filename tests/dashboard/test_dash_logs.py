"""What `bcbridge serve` logs about an unexpected error (uvicorn's error log, a run's bug)
shows no secret, and no traceback unless BCBRIDGE_DEBUG=1."""

from __future__ import annotations

import logging
import secrets

import pytest

from bcbridge import _redact
from bcbridge.dashboard.service import SERVER_LOGGERS, mask_secrets_in_logs


@pytest.mark.parametrize("debug", ["", "1"])
@pytest.mark.parametrize("name", SERVER_LOGGERS)
def test_an_error_logged_by_the_server_has_its_secrets_masked(
    name: str, debug: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("BCBRIDGE_DEBUG", debug)
    secret = f"CANARY-s3cr3t-{secrets.token_hex(8)}"
    _redact.register_secret(secret)
    mask_secrets_in_logs()
    try:
        raise RuntimeError(f"the store said {secret}")
    except RuntimeError:
        logging.getLogger(name).exception("Exception in ASGI application with %s", secret)
    logged = caplog.text
    assert "Exception in ASGI application" in logged and "RuntimeError" in logged
    assert secret not in logged and "s3cr3t" not in logged
    assert ("Traceback" in logged) is bool(debug)
