"""The one place that masks secrets: in URLs, headers, bodies and free text.

Known secrets (the client secret, access tokens) are registered as they appear, so that any text
about to be logged or put into an exception can be scrubbed, whatever its shape.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"
SENSITIVE_HEADERS = {"authorization", "proxy-authorization", "cookie", "set-cookie"}
SENSITIVE_PARAMS = {"client_secret", "access_token", "code", "assertion", "client_assertion", "sig"}
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+")
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]+")
# scheme://user:PASSWORD@host in free text (a driver's message, a traceback, a table cell)
_URL_PASSWORD = re.compile(r"(?i)([a-z][a-z0-9+.-]*://[^\s/:@'\"]*:)([^\s@/'\"]+)(@)")

_known: set[str] = set()
_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Remember a secret so that `text` masks it wherever it appears."""
    if value and len(value) >= 6:
        with _lock:
            _known.add(value)


def text(value: str) -> str:
    """`value` with known secrets, URL passwords, bearer tokens and JWTs masked."""
    with _lock:
        known = sorted(_known, key=len, reverse=True)
    for secret in known:
        value = value.replace(secret, MASK)
    value = _URL_PASSWORD.sub(lambda m: m.group(1) + MASK + m.group(3), value)
    value = _BEARER.sub(lambda m: m.group(1) + MASK, value)
    return _JWT.sub(MASK, value)


def register_url(value: str | None) -> None:
    """Remember the password of a URL (a store or writer URL) as a known secret."""
    if value and "://" in value:
        register_secret(urlsplit(value.partition("#")[0]).password)


def url(value: str) -> str:
    parts = urlsplit(value)
    if parts.query:
        query = [
            (k, MASK if k.lower() in SENSITIVE_PARAMS else v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
        ]
        parts = parts._replace(query=urlencode(query, safe="$,'()*"))
    if parts.password:
        parts = parts._replace(netloc=parts.netloc.replace(parts.password, MASK))
    return text(urlunsplit(parts))


def headers(values: Mapping[str, str]) -> dict[str, str]:
    return {k: MASK if k.lower() in SENSITIVE_HEADERS else text(v) for k, v in values.items()}


def token(value: str) -> str:
    """First and last 6 characters, for showing which token it is without giving it away."""
    if len(value) <= 16:
        return MASK
    return f"{value[:6]}…{value[-6:]}"
