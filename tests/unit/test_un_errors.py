from __future__ import annotations

import pytest

import bcbridge
from bcbridge import errors


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (429, "Application_TooManyRequests", errors.Throttled),
        (503, "", errors.RetriableAPIError),
        (408, "", errors.RetriableAPIError),
        (404, "BadRequest_ResourceNotFound", errors.NotFound),
        (409, "Request_EntityChanged", errors.PreconditionFailed),
        (412, "", errors.PreconditionFailed),
        (409, "Internal_EntityWithSameKeyExists", errors.ValidationFailed),
        (401, "Authentication_InvalidCredentials", errors.Unauthorized),
        (400, "BadRequest_InvalidToken", errors.ValidationFailed),
    ],
)
def test_status_and_code_pick_the_branch_the_caller_acts_on(
    status: int, code: str, kind: type[errors.BCAPIError]
) -> None:
    error = errors.api_error_for(status, code, "msg", method="GET", url="https://x/y")
    assert type(error) is kind
    assert (error.status, error.code) == (status, code)
    assert isinstance(error, errors.BCBridgeError)


def test_final_error_lists_every_attempt() -> None:
    attempts = [errors.Attempt(1, 503, None, 0.1), errors.Attempt(2, None, "ReadError", 0.2)]
    error = errors.api_error_for(503, "", "busy", attempts=attempts, method="GET", url="u")
    assert "attempt 1: HTTP 503" in str(error) and "attempt 2: ReadError" in str(error)


def test_errors_name_where_the_problem_is() -> None:
    assert str(errors.ConfigError("expected a GUID", field="tenant_id", source="a.yaml")) == (
        "a.yaml: tenant_id: expected a GUID"
    )
    text = str(errors.TransformError("not a number", step="convert", record="C001", field="qty"))
    assert text == "step 'convert', record C001, field 'qty': not a number"
    auth = errors.AuthError("bad secret", code="AADSTS7000215", hint="create a new secret")
    assert auth.code == "AADSTS7000215" and "Hint: create a new secret" in str(auth)


def test_public_surface_is_pinned() -> None:
    assert "BCAPIError" in bcbridge.__all__
    for name in bcbridge.__all__:
        assert hasattr(bcbridge, name)
