"""Tokens through MSAL's client-credentials flow, renewed before they expire.

MSAL is synchronous, so it runs on a worker thread; a lock makes concurrent requests share one
renewal. MSAL's error dicts become `AuthError` with the AADSTS code and a plain hint.
"""

from __future__ import annotations

import os
import re
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import jwt
import requests

from bcbridge import _redact
from bcbridge.config import ClientSettings
from bcbridge.errors import AuthError

__all__ = ["Token", "TokenProvider", "msal_session"]

_HINTS = {
    "AADSTS7000215": "The client secret is wrong: use the secret's Value, not its ID.",
    "AADSTS7000222": "The client secret has expired: create a new one in the app registration.",
    "AADSTS700016": "The app (client id) is not registered in this tenant, or the tenant is wrong.",
    "AADSTS90002": "The tenant does not exist: check tenant_id.",
    "AADSTS70011": "The scope is wrong: BC needs https://api.businesscentral.dynamics.com/.default.",
    "AADSTS7000218": "The request needs a client secret or a certificate.",
    "AADSTS500011": "The resource is not in the tenant: grant the Business Central API permission.",
}
RENEW_MARGIN_MAX = 300.0


@dataclass(frozen=True)
class Token:
    value: str
    expires_at: float  # time.time()

    @property
    def claims(self) -> dict[str, Any]:
        """The token's claims, read without verification (BC verifies; we only display)."""
        claims: dict[str, Any] = jwt.decode(self.value, options={"verify_signature": False})
        return claims

    def fresh(self, margin: float) -> bool:
        return time.time() < self.expires_at - margin


class _CASession(requests.Session):
    """MSAL's HTTP session: REQUESTS_CA_BUNDLE must not override our CA (bc-api.md §2.3a)."""

    def __init__(self, ca_bundle: str):
        super().__init__()
        self.trust_env = False
        self.ca_bundle = ca_bundle

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs["verify"] = self.ca_bundle
        return super().request(*args, **kwargs)


def msal_session(ca_bundle: Path | None) -> requests.Session:
    if ca_bundle is None:
        session = requests.Session()
        session.trust_env = False  # system trust store via certifi, no proxy surprises
        session.verify = ssl.get_default_verify_paths().cafile or True
        return session
    return _CASession(str(ca_bundle))


class TokenProvider:
    def __init__(self, settings: ClientSettings):
        self.settings = settings
        if settings.client_secret is not None:
            _redact.register_secret(settings.client_secret.get_secret_value())
        self._app: Any = None
        self._token: Token | None = None
        self._lock = threading.Lock()
        self._cache: Any = None

    def _credential(self) -> str | dict[str, str]:
        if self.settings.client_secret is not None:
            return self.settings.client_secret.get_secret_value()
        cert = self.settings.certificate
        assert cert is not None
        credential = {
            "private_key": cert.private_key_path.read_text(),
            "thumbprint": cert.thumbprint,
        }
        if cert.public_certificate_path:
            credential["public_certificate"] = cert.public_certificate_path.read_text()
        return credential

    def _msal(self) -> Any:
        if self._app is None:
            import msal

            if self.settings.token_cache_file:
                self._cache = msal.SerializableTokenCache()
                if self.settings.token_cache_file.exists():
                    self._cache.deserialize(self.settings.token_cache_file.read_text())
            self._app = msal.ConfidentialClientApplication(
                self.settings.client_id,
                client_credential=self._credential(),
                authority=self.settings.authority,
                validate_authority=False,
                instance_discovery=False,
                http_client=msal_session(self.settings.ca_bundle),
                token_cache=self._cache,
            )
        return self._app

    def _acquire(self, stale: Token | None) -> Token:
        """A fresh token; `stale` is one BC refused, which must not be handed out again."""
        with self._lock:
            current = self._token
            if (
                current is not None
                and current is not stale
                and current.fresh(self._margin(current))
            ):
                return current  # fresh, or another caller already renewed the stale one
            try:
                app = self._msal()
                if stale is not None:
                    # MSAL refuses force_refresh for client credentials; drop its cached token
                    app.remove_tokens_for_client()
                result = app.acquire_token_for_client(self.settings.scopes)
            except ValueError as exc:  # MSAL refuses a malformed authority or credential
                raise AuthError(
                    _redact.text(str(exc)), hint="Check authority_url and tenant_id."
                ) from None
            except requests.RequestException as exc:
                raise AuthError(
                    f"cannot reach the identity endpoint {self.settings.authority}: "
                    f"{type(exc).__name__}",
                    hint="Check authority_url, the network, and ca_bundle.",
                ) from None
            token = self._token = _token_from(result)
            self._save_cache()
            return token

    def _margin(self, token: Token) -> float:
        lifetime = max(token.expires_at - time.time(), 0)
        return min(RENEW_MARGIN_MAX, 0.1 * lifetime) if lifetime else 0

    def _save_cache(self) -> None:
        path = self.settings.token_cache_file
        if path is None or self._cache is None or not self._cache.has_state_changed:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(self._cache.serialize())
        path.chmod(0o600)

    async def token(self, *, stale: Token | None = None) -> Token:
        return await anyio.to_thread.run_sync(self._acquire, stale)


def _token_from(result: dict[str, Any]) -> Token:
    if "access_token" in result:
        value = str(result["access_token"])
        _redact.register_secret(value)
        expires_in = float(result.get("expires_in", 3599))
        return Token(value, time.time() + expires_in)
    description = _redact.text(str(result.get("error_description", "")))
    match = re.search(r"AADSTS\d+", description)
    code = match.group(0) if match else None
    first_line = description.split(" Trace ID:")[0].strip() or str(result.get("error", "error"))
    raise AuthError(
        f"{result.get('error', 'error')}: "
        + (first_line.removeprefix(f"{code}: ") if code else first_line),
        code=code,
        hint=_HINTS.get(code or "", "Check the app registration and its credentials."),
    )
