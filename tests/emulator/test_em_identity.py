"""Tokens come from real MSAL; the API checks them as BC does (bc-api.md §2).

MSAL, discovery and TLS need the emulator as a process (``bc_emulator``); the API's checks of
tokens run on the in-process emulator.
"""

from __future__ import annotations

import ssl
import time

import httpx
import jwt
import pytest

from bcbridge.testing import InProcessEmulator, RunningEmulator, bc_token
from tests.emulator.conftest import api_client, assert_bc_error


def test_msal_gets_an_rs256_token_with_bc_claims(bc_emulator: RunningEmulator) -> None:
    result = bc_token(bc_emulator.info)
    assert result["token_type"] == "Bearer" and result["expires_in"] == 3599
    header = jwt.get_unverified_header(result["access_token"])
    claims = jwt.decode(result["access_token"], options={"verify_signature": False})
    assert header["alg"] == "RS256"
    assert claims["aud"] == "https://api.businesscentral.dynamics.com"
    info = bc_emulator.info
    assert claims["tid"] == info.tenant_id and claims["appid"] == info.client_id
    assert claims["exp"] > time.time()


def test_wrong_secret_and_unknown_app_get_entra_errors(bc_emulator: RunningEmulator) -> None:
    wrong = bc_token(bc_emulator.info, secret="not-the-secret")
    assert wrong["error"] == "invalid_client" and "AADSTS7000215" in wrong["error_description"]
    unknown = bc_token(bc_emulator.info, client_id="11111111-2222-3333-4444-555555555555")
    assert unknown["error"] == "unauthorized_client" and 700016 in unknown["error_codes"]


def test_an_app_not_enabled_in_bc_gets_a_token_then_401(bc_emulator: RunningEmulator) -> None:
    info = bc_emulator.info
    token = bc_token(info, client_id=info.disabled_client_id, secret=info.disabled_client_secret)
    assert "access_token" in token
    with api_client(bc_emulator, token["access_token"]) as api:
        assert_bc_error(api.get("companies"), 401, "Authentication_InvalidCredentials")


def test_missing_forged_and_foreign_tokens_are_refused(emulator: InProcessEmulator) -> None:
    claims = jwt.decode(
        emulator.request_token()["access_token"], options={"verify_signature": False}
    )
    from cryptography.hazmat.primitives.asymmetric import rsa

    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(claims, other_key, algorithm="RS256")
    for token in ("", forged, "not.a.jwt"):
        with api_client(emulator, token or "x") as api:
            assert_bc_error(api.get("companies"), 401, "Authentication_InvalidCredentials")


@pytest.mark.slow
def test_expired_tokens_are_refused(inprocess_emulator_factory) -> None:  # type: ignore[no-untyped-def]
    emulator = inprocess_emulator_factory(token_lifetime=1)
    with api_client(emulator) as api:
        assert api.get("companies").status_code == 200
        time.sleep(2.2)
        assert_bc_error(api.get("companies"), 401, "Authentication_InvalidCredentials")


def test_discovery_document_points_at_the_token_endpoint(bc_emulator: RunningEmulator) -> None:
    info = bc_emulator.info
    document = httpx.get(
        f"{info.authority}/v2.0/.well-known/openid-configuration",
        verify=ssl.create_default_context(cafile=info.ca_bundle),
    ).json()
    assert document["token_endpoint"] == f"{info.authority}/oauth2/v2.0/token"
    keys = httpx.get(
        document["jwks_uri"], verify=ssl.create_default_context(cafile=info.ca_bundle)
    ).json()["keys"]
    assert keys[0]["kty"] == "RSA"
