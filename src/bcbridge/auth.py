"""Where the client's bearer tokens come from: any `TokenSource`.

- `MsalTokenSource` (the default, built from the settings): MSAL's client-credentials flow,
  renewed before expiry. MSAL is synchronous, so it runs on a worker thread; a lock makes
  concurrent requests share one renewal. MSAL's error dicts become `AuthError` with the AADSTS
  code and a plain hint.
- `StaticToken`: one token given by the caller (tests, or a token obtained elsewhere).

MSAL's token cache lives in memory by default, one per `MsalTokenSource`. It is kept in a file
when asked: `token_cache=` (or the settings' `token_cache_file`), or for every source created
while `keep_tokens_in(folder)` is in force (the CLI does that with `user_cache_folder()`, so a
session of commands takes one token). Such a file is written atomically with mode 0600; its name
is a hash of the authority, the tenant, the app and the credential, so tenants, apps and
authorities never share one and a changed secret signs in afresh. A corrupt or unreadable file is
ignored with a one-line warning: the worst it costs is a new token.

`Tokens` is the client's view of a source: a `Token` per request, and one renewal after a 401.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import re
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import anyio
import jwt
import requests

from bcbridge import _redact
from bcbridge._files import write_atomic
from bcbridge._logging import RequestLog
from bcbridge.config import ClientSettings
from bcbridge.errors import AuthError

__all__ = [
    "MsalTokenSource",
    "StaticToken",
    "Token",
    "TokenSource",
    "Tokens",
    "forget_tokens",
    "keep_tokens_in",
    "msal_session",
    "token_cache_path",
    "user_cache_folder",
]

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
CACHE_FILE_PREFIX = "msal-"
STALE_CACHE_SECONDS = 2 * 86400  # Entra tokens live at most a day; older cache files hold none
log = logging.getLogger("bcbridge.auth")


@dataclass(frozen=True)
class Token:
    """A bearer token and when it expires and was issued (``time.time()`` seconds)."""

    value: str
    expires_at: float  # time.time()
    issued_at: float = field(default_factory=time.time)

    @classmethod
    def of(cls, value: str) -> Token:
        """A token known only by its value: it expires when its ``exp`` claim says, if any."""
        claims = _claims(value)
        exp, iat = claims.get("exp"), claims.get("iat")
        return cls(
            value,
            float(exp) if isinstance(exp, int | float) else math.inf,
            float(iat) if isinstance(iat, int | float) else time.time(),
        )

    @property
    def claims(self) -> dict[str, Any]:
        """The token's claims, read without verification (BC verifies; we only display);
        empty for a token that is not a JWT."""
        return _claims(self.value)

    def fresh(self, margin: float) -> bool:
        """Still valid `margin` seconds from now."""
        return time.time() < self.expires_at - margin


def _claims(value: str) -> dict[str, Any]:
    try:
        claims: dict[str, Any] = jwt.decode(value, options={"verify_signature": False})
    except jwt.DecodeError:
        return {}
    return claims


@runtime_checkable
class TokenSource(Protocol):
    """Gives the client its bearer tokens (``BusinessCentralClient(settings, auth=...)``)."""

    async def token(self) -> str:
        """A token BC should accept now; renewed by the source when it is about to expire."""
        ...

    def invalidate(self, token: str) -> None:
        """BC refused `token` (401): the next `token()` must not return it again.

        Called from the event loop, so it must not block; the client then asks `token()` once
        more and repeats the request, and a second 401 reaches the caller.
        """
        ...


class StaticToken:
    """A fixed token; it cannot be renewed, so after a 401 the retry sends it again and fails."""

    def __init__(self, value: str):
        _redact.register_secret(value)
        self._value = value

    def __repr__(self) -> str:
        return f"StaticToken({_redact.token(self._value)!r})"

    async def token(self) -> str:
        """The token given."""
        return self._value

    def invalidate(self, token: str) -> None:
        """Nothing to renew: the caller gave this token and gets BC's answer to it."""


class Tokens:
    """The client's view of a `TokenSource`: a `Token` per request, renewal after a 401."""

    def __init__(self, source: TokenSource):
        self.source = source
        self._last: Token | None = None

    async def token(self, *, stale: Token | None = None) -> Token:
        """A token for the next request; `stale` is one BC just refused."""
        if stale is not None:
            self.source.invalidate(stale.value)
        value = await self.source.token()
        last = self._last
        if last is None or last.value != value:
            last = self._last = Token.of(value)  # decoded once per token, not per request
        return last


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
    """The HTTP session MSAL talks to Entra with: `ca_bundle` alone is trusted when given
    (the emulator's), else the system's; no proxy or CA settings from the environment."""
    if ca_bundle is None:
        session = requests.Session()
        session.trust_env = False  # system trust store via certifi, no proxy surprises
        session.verify = ssl.get_default_verify_paths().cafile or True
        return session
    return _CASession(str(ca_bundle))


class MsalTokenSource:
    """Client-credentials tokens from Entra ID (or the emulator) through MSAL.

    `token_cache`: a file to keep MSAL's cache in across processes; by default the settings'
    `token_cache_file`, else a file under the `keep_tokens_in` folder when one is in force,
    else memory only.
    """

    def __init__(self, settings: ClientSettings, *, token_cache: Path | None = None):
        self.settings = settings
        if settings.client_secret is not None:
            _redact.register_secret(settings.client_secret.get_secret_value())
        self._app: Any = None
        self._token: Token | None = None
        self._refused: str | None = None  # set without the lock: invalidate must not block
        self._lock = threading.Lock()
        self._cache: Any = None
        self.cache_file = token_cache or settings.token_cache_file
        self._cache_folder: Path | None = None  # set when the file is one of a folder we keep
        if self.cache_file is None and _kept_in is not None:
            self._cache_folder = _kept_in
            self.cache_file = token_cache_path(settings, _kept_in)
        self._log = RequestLog(settings)

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

            if self.cache_file is not None:
                self._cache = _load_cache(self.cache_file)
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

    def _acquire(self) -> Token:
        """A fresh token, never the one BC refused last."""
        with self._lock:
            current = self._token
            stale = current is not None and current.value == self._refused
            if current is not None and not stale and current.fresh(renew_margin(current)):
                return current  # fresh, or another caller already renewed the refused one
            started = time.monotonic()
            try:
                app = self._msal()
                if stale:
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
            self._log.record(
                event="token",
                url=self.settings.authority,
                source=result.get("token_source", "identity_provider"),
                ok="access_token" in result,
                duration_ms=round((time.monotonic() - started) * 1000),
            )
            token = self._token = token_from_result(result)
            self._save_cache()
            return token

    def _save_cache(self) -> None:
        if self.cache_file is None or self._cache is None or not self._cache.has_state_changed:
            return
        _write_private(self.cache_file, self._cache.serialize())
        self._cache.has_state_changed = False
        if self._cache_folder is not None:  # never in a folder a user chose for one file
            _prune(self._cache_folder, keep=self.cache_file)

    async def current(self) -> Token:
        """The token with its expiry as MSAL reported it."""
        return await anyio.to_thread.run_sync(self._acquire)

    async def token(self) -> str:
        """A token from MSAL's cache, or a new one when it is near expiry or was refused."""
        return (await self.current()).value

    def invalidate(self, token: str) -> None:
        """BC refused `token`: the next `token()` gets a new one from Entra."""
        self._refused = token


def renew_margin(token: Token) -> float:
    """How long before expiry a token is renewed: a tenth of its lifetime, at most 5 minutes.

    (A tenth of the *remaining* life, as this once was, shrinks with the token and never
    renews early: every token then ran out, and a request had to meet a 401 first.)"""
    return min(RENEW_MARGIN_MAX, 0.1 * max(token.expires_at - token.issued_at, 0))


def token_from_result(result: dict[str, Any]) -> Token:
    """The token in Entra's token-endpoint answer (as MSAL returns it), or its error as
    `AuthError` with the AADSTS code and a hint."""
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


# --- the token cache file ------------------------------------------------------------------

_kept_in: Path | None = None  # keep_tokens_in(): where sources created now keep their cache


def user_cache_folder() -> Path:
    """`$XDG_CACHE_HOME/bcbridge`, else `~/.cache/bcbridge` (a relative XDG_CACHE_HOME is
    ignored, as the XDG spec says)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".cache"
    return root / "bcbridge"


def keep_tokens_in(folder: Path | None) -> None:
    """Every `MsalTokenSource` created from now on keeps MSAL's cache in a file under `folder`
    (one per authority, tenant, app and credential); None: in memory, the library default."""
    global _kept_in
    _kept_in = folder


def token_cache_path(settings: ClientSettings, folder: Path) -> Path:
    """The cache file of these settings' authority, tenant, app and credential in `folder`.

    The credential enters the name through a salted, stretched hash (a certificate through its
    thumbprint), so that a changed secret is proved by a new sign-in and no name gives a weak
    secret away."""
    if settings.client_secret is not None:
        salt = f"bcbridge-token-cache|{settings.client_id}".encode()
        secret = settings.client_secret.get_secret_value().encode()
        credential = hashlib.pbkdf2_hmac("sha256", secret, salt, 20_000).hex()
    else:
        assert settings.certificate is not None
        credential = settings.certificate.thumbprint.lower()
    parts = (settings.authority.lower(), settings.client_id.lower(), credential)
    digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]
    return folder / f"{CACHE_FILE_PREFIX}{digest}.json"


def _prune(folder: Path, keep: Path) -> None:
    """Delete cache files untouched for longer than any token lives (an emulator on another
    port each time would otherwise leave one file per run)."""
    too_old = time.time() - STALE_CACHE_SECONDS
    for path in folder.glob(f"{CACHE_FILE_PREFIX}*.json"):
        with contextlib.suppress(OSError):
            if path != keep and path.stat().st_mtime < too_old:
                path.unlink()


def forget_tokens(folder: Path) -> list[Path]:
    """Delete every token cache file in `folder`; the files deleted."""
    gone = []
    for path in sorted(folder.glob(f"{CACHE_FILE_PREFIX}*.json")):
        path.unlink(missing_ok=True)
        gone.append(path)
    return gone


def _load_cache(path: Path) -> Any:
    """MSAL's cache from `path`; an empty one (and a warning) when the file cannot be used."""
    import msal

    cache = msal.SerializableTokenCache()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return cache
    except (OSError, UnicodeDecodeError) as exc:
        _warn(path, type(exc).__name__)
        return cache
    try:
        cache.deserialize(text)
        _check_shape(cache.serialize())
    except ValueError:
        _warn(path, "not a token cache")
        return msal.SerializableTokenCache()
    return cache


def _check_shape(text: str) -> None:
    """MSAL trusts its file: a valid JSON of another shape would fail later, inside MSAL."""
    import json

    data = json.loads(text)
    tables = list(data.values()) if isinstance(data, dict) else [None]
    entries_are_mappings = (
        isinstance(table, dict) and all(isinstance(entry, dict) for entry in table.values())
        for table in tables
    )
    if not all(entries_are_mappings):
        raise ValueError("not a token cache")


def _write_private(path: Path, text: str) -> None:
    """Replace `path` with `text` atomically, readable by the user alone; a warning if not."""
    try:
        write_atomic(path, text, private=True)
    except OSError as exc:
        _warn(path, f"cannot write it ({type(exc).__name__})")


_warned: set[Path] = set()  # one warning per file and process, not one per read and write


def _warn(path: Path, reason: str) -> None:
    if path in _warned:
        return
    _warned.add(path)
    log.warning(
        "warning: token cache %s ignored: %s; a new token is requested (`bcbridge client "
        "logout` removes it)",
        path,
        reason,
    )
