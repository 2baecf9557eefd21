"""Which failures are retried, and how long to wait: decided here and nowhere else.

Retried: 429, 502, 503, 504, timeouts and dropped connections. A request that may create a record
(POST: create, bound actions, a batch holding writes) is retried only when BC surely did not act
on it: the connection was never made, or BC answered 429 or 503 (refused before processing,
bc-api.md §8). PATCH and DELETE are retried on all of them: repeating them cannot duplicate a
record (a repeat after a lost answer may meet 409/404, which the caller sees).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from bcbridge.config import RetryPolicy

RETRY_STATUSES = frozenset({429, 502, 503, 504})
NOT_PROCESSED_STATUSES = frozenset({429, 503})
_NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def is_idempotent(method: str) -> bool:
    return method.upper() in ("GET", "HEAD", "OPTIONS", "PATCH", "PUT", "DELETE")


def should_retry_status(status: int, *, idempotent: bool) -> bool:
    if status not in RETRY_STATUSES:
        return False
    return idempotent or status in NOT_PROCESSED_STATUSES


def should_retry_exception(exc: Exception, *, idempotent: bool) -> bool:
    if isinstance(exc, _NEVER_SENT):
        return True
    return idempotent and isinstance(exc, httpx.TransportError)


def retry_after(value: str | None, *, cap: float) -> float | None:
    """Retry-After as seconds or as an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.replace(".", "", 1).isdigit():
        return min(float(value), cap)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return min(max((moment - datetime.now(UTC)).total_seconds(), 0.0), cap)


def backoff(policy: RetryPolicy, attempt: int) -> float:
    """Full jitter: a random wait up to base * 2^(attempt-1), capped."""
    ceiling = min(policy.backoff_max, policy.backoff_base * 2 ** (attempt - 1))
    return random.uniform(0, ceiling)
