"""A stand-in for Microsoft Entra ID: token endpoint, OpenID discovery, JWKS, token checks.

Enough of Entra for an unmodified `msal.ConfidentialClientApplication` to get client-credentials
tokens (bc-api.md §2.1, §2.3a), and for the API to check them the way BC does (§2.4).
"""

from __future__ import annotations

import base64
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.requests import Request
from starlette.responses import JSONResponse

from bcbridge.emulator.config import BC_AUDIENCE, BC_SCOPE
from bcbridge.emulator.errors import invalid_credentials

KEY_ID = "bcbridge-emulator-1"
ROLES = ["API.ReadWrite.All"]


@dataclass(frozen=True)
class App:
    """An app registration in Entra, and whether BC's "Microsoft Entra Applications" enables it."""

    client_id: str
    client_secret: str
    enabled_in_bc: bool


@dataclass(frozen=True)
class Principal:
    tenant_id: str
    client_id: str

    @property
    def key(self) -> str:
        return f"{self.tenant_id}/{self.client_id}"


class Identity:
    def __init__(
        self,
        tenant_id: str,
        apps: list[App],
        signing_key: rsa.RSAPrivateKey,
        token_lifetime: int,
    ):
        self.tenant_id = tenant_id
        self.apps = {app.client_id: app for app in apps}
        self.signing_key = signing_key
        self.public_key = signing_key.public_key()
        self.token_lifetime = token_lifetime
        self.tokens_issued = 0  # reported by /_emulator/stats, so tests can see renewals

    # --- Entra side ---------------------------------------------------------------------

    def discovery(self, request: Request) -> JSONResponse:
        tenant = request.path_params["tenant"]
        base = f"{request.url.scheme}://{request.url.netloc}/{tenant}"
        return JSONResponse(
            {
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "jwks_uri": f"{base}/discovery/v2.0/keys",
                "issuer": f"{base}/v2.0",
                "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
                "response_types_supported": ["code", "id_token", "token"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "tenant_region_scope": "EU",
            }
        )

    def jwks(self, request: Request) -> JSONResponse:
        numbers = self.public_key.public_numbers()
        return JSONResponse(
            {
                "keys": [
                    {
                        "kty": "RSA",
                        "use": "sig",
                        "kid": KEY_ID,
                        "alg": "RS256",
                        "n": _b64_int(numbers.n),
                        "e": _b64_int(numbers.e),
                    }
                ]
            }
        )

    async def token(self, request: Request) -> JSONResponse:
        tenant = request.path_params["tenant"]
        # Parsed by hand: Starlette's form parser needs python-multipart, which this does not.
        fields = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
        if tenant != self.tenant_id:
            return _entra_error(
                400,
                "invalid_request",
                90002,
                f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID.",
            )
        if fields.get("grant_type") != "client_credentials":
            return _entra_error(
                400,
                "unsupported_grant_type",
                70003,
                "The app requested an unsupported grant type; only client_credentials is emulated.",
            )
        app = self.apps.get(fields.get("client_id", ""))
        if app is None:
            return _entra_error(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{fields.get('client_id', '')}' was not found in the "
                f"directory '{tenant}'. This can happen if the application has not been installed "
                "by the administrator of the tenant.",
            )
        if fields.get("client_secret") != app.client_secret:
            return _entra_error(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is "
                f"the client secret value, not the client secret ID, for a secret added to app "
                f"'{app.client_id}'.",
            )
        if fields.get("scope", "").split() != [BC_SCOPE]:
            return _entra_error(
                400,
                "invalid_scope",
                70011,
                f"The provided value for the input parameter 'scope' is not valid. The scope "
                f"must be '{BC_SCOPE}' for the client credentials flow.",
            )
        self.tokens_issued += 1
        return JSONResponse(
            {
                "token_type": "Bearer",
                "expires_in": self.token_lifetime,
                "ext_expires_in": self.token_lifetime,
                "access_token": self.issue(app.client_id),
            }
        )

    def issue(self, client_id: str, *, lifetime: int | None = None) -> str:
        now = int(time.time())
        claims = {
            "aud": BC_AUDIENCE,
            "iss": f"https://sts.windows.net/{self.tenant_id}/",
            "iat": now,
            "nbf": now,
            "exp": now + (lifetime if lifetime is not None else self.token_lifetime),
            "appid": client_id,
            "appidacr": "1",
            "idtyp": "app",
            "oid": str(uuid.uuid5(uuid.NAMESPACE_OID, client_id)),
            "roles": ROLES,
            "tid": self.tenant_id,
            "ver": "1.0",
        }
        return jwt.encode(claims, self.signing_key, algorithm="RS256", headers={"kid": KEY_ID})

    # --- BC side ------------------------------------------------------------------------

    def authenticate(self, authorization: str | None) -> Principal:
        """Check signature, audience, issuer and expiry; the app must be enabled in BC."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise invalid_credentials()
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self.public_key,
                algorithms=["RS256"],
                audience=BC_AUDIENCE,
                issuer=f"https://sts.windows.net/{self.tenant_id}/",
                options={"require": ["exp", "aud", "iss", "tid", "appid"]},
            )
        except jwt.PyJWTError:
            raise invalid_credentials() from None
        app = self.apps.get(str(claims["appid"]))
        if app is None or not app.enabled_in_bc:
            raise invalid_credentials()
        return Principal(str(claims["tid"]), app.client_id)


def _b64_int(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _entra_error(status: int, error: str, code: int, description: str) -> JSONResponse:
    """Entra's error JSON (bc-api.md §2.1); the exact status per code is UNCONFIRMED."""
    trace_id, correlation_id = str(uuid.uuid4()), str(uuid.uuid4())
    timestamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return JSONResponse(
        {
            "error": error,
            "error_description": f"AADSTS{code}: {description} Trace ID: {trace_id} "
            f"Correlation ID: {correlation_id} Timestamp: {timestamp}",
            "error_codes": [code],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
        },
        status_code=status,
    )
