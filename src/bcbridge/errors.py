"""One exception tree, split by what the caller should do.

```
BCBridgeError
├── ConfigError              fix the configuration (names the field and what was expected)
├── TransformError           a transformer step failed on one record (names step, record, field)
├── WriteError               an output (file, database) refused the records: disk full, no access
├── AuthError                fix credentials / app registration (carries the AADSTS code and a hint)
├── TransportError           network trouble; retriable (timeouts, dropped connections)
└── BCAPIError               Business Central answered with an error
    ├── RetriableAPIError    try again later (5xx, 408)
    │   └── Throttled        429: slow down (carries retry_after)
    └── FatalAPIError        do not retry the same request
        ├── NotFound             404
        ├── PreconditionFailed   409 Request_EntityChanged / 412: the ETag is stale
        ├── ValidationFailed     400-class errors about the payload or query
        └── Unauthorized         401/403 from BC after a valid token
```

Every API error carries the HTTP status, BC's error code and message, the correlation id,
the method and the URL (with secrets redacted by the code that raises it), and the attempts
that led to it when retries were involved.

Exit codes of the `bcbridge` command (`exit_code` is the one place that maps errors to them):

| code | meaning                                                                       |
|------|-------------------------------------------------------------------------------|
| 0    | done                                                                          |
| 1    | done, but some records failed (see `bcbridge tasks list --status failed`)     |
| 2    | usage or configuration: bad flags, project file, settings or input file       |
| 3    | Business Central, sign-in or network: `AuthError`, `TransportError`, `BCAPIError` |
| 4    | busy: the flow is already running elsewhere (`Busy`)                          |
| 70   | internal error: a bug in bcbridge (rerun with BCBRIDGE_DEBUG=1 and report it) |
| 130  | interrupted (Ctrl-C)                                                          |
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "EXIT_BC",
    "EXIT_BUSY",
    "EXIT_FAILED",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "Attempt",
    "AuthError",
    "BCAPIError",
    "BCBridgeError",
    "Busy",
    "ConfigError",
    "FatalAPIError",
    "NextLinkLoop",
    "NotFound",
    "PreconditionFailed",
    "RetriableAPIError",
    "Throttled",
    "TransformError",
    "TransportError",
    "Unauthorized",
    "ValidationFailed",
    "WriteError",
    "api_error_for",
    "exit_code",
]

EXIT_OK = 0
EXIT_FAILED = 1  # the command ran, some records failed
EXIT_USAGE = 2  # as click/typer for bad flags: fix the command, the config, the input or the output
EXIT_BC = 3
EXIT_BUSY = 4
EXIT_INTERNAL = 70  # EX_SOFTWARE in sysexits.h
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


class BCBridgeError(Exception):
    """Base of every error bcbridge raises on purpose."""


class ConfigError(BCBridgeError, ValueError):
    """Settings or input are wrong. `field` names where; the message says what was expected."""

    def __init__(self, message: str, *, field: str | None = None, source: str | None = None):
        self.field = field
        self.source = source
        where = ": ".join(part for part in (source, field) if part)
        super().__init__(f"{where}: {message}" if where else message)


class NextLinkLoop(BCBridgeError):
    """BC answered a page with an `@odata.nextLink` it had already given: reading on would
    never end. Exit code 2, as the plain `BCBridgeError` it replaced."""


class Busy(BCBridgeError):
    """Someone else holds what this command needs (a flow already running): try again later."""


class TransformError(BCBridgeError):
    """A transformer step failed on a record. Names the step, the record and the field."""

    def __init__(
        self,
        message: str,
        *,
        step: str,
        record: str | None = None,
        field: str | None = None,
    ):
        self.message = message
        self.step = step
        self.record = record
        self.field = field
        where = [f"step {step!r}"]
        if record is not None:
            where.append(f"record {record}")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(f"{', '.join(where)}: {message}")


class WriteError(BCBridgeError):
    """A writer could not make records durable (disk full, permission, database refused). Names
    the output, with any password masked; what was half-written has been cut back."""

    def __init__(self, message: str, *, target: str):
        self.target = target
        super().__init__(message)


class AuthError(BCBridgeError):
    """A token could not be obtained, or BC refused the app. `code` is the AADSTS code if any."""

    def __init__(self, message: str, *, code: str | None = None, hint: str | None = None):
        self.code = code
        self.hint = hint
        text = f"{code}: {message}" if code else message
        super().__init__(f"{text}\nHint: {hint}" if hint else text)


@dataclass(frozen=True)
class Attempt:
    """One try of a request: what came back (status or exception text) and how long it took."""

    number: int
    status: int | None
    error: str | None
    duration_s: float
    waited_s: float = 0.0

    def describe(self) -> str:
        outcome = f"HTTP {self.status}" if self.status is not None else (self.error or "no answer")
        return f"attempt {self.number}: {outcome} after {self.duration_s:.2f}s"


class TransportError(BCBridgeError):
    """The request did not get an HTTP answer (timeout, refused or dropped connection)."""

    def __init__(
        self,
        message: str,
        *,
        method: str = "",
        url: str = "",
        attempts: list[Attempt] | None = None,
    ):
        self.method = method
        self.url = url
        self.attempts = list(attempts or [])
        super().__init__(_with_attempts(f"{method} {url}: {message}".strip(": "), self.attempts))


class BCAPIError(BCBridgeError):
    """Business Central answered with an HTTP error. Use the subclasses to decide what to do."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        method: str = "",
        url: str = "",
        correlation_id: str | None = None,
        attempts: list[Attempt] | None = None,
    ):
        self.status = status
        self.code = code
        self.message = message
        self.method = method
        self.url = url
        self.correlation_id = correlation_id
        self.attempts = list(attempts or [])
        head = f"{method} {url} -> " if method else ""
        super().__init__(_with_attempts(f"{head}HTTP {status} {code}: {message}", self.attempts))


class RetriableAPIError(BCAPIError):
    """A server-side or transient error (408, 5xx): the same request may succeed later."""


class Throttled(RetriableAPIError):
    """HTTP 429: too many requests. `retry_after` is in seconds when BC said so."""

    def __init__(self, *args: object, retry_after: float | None = None, **kwargs: object):
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.retry_after = retry_after


class FatalAPIError(BCAPIError):
    """The request itself is wrong for BC; repeating it unchanged will fail again."""


class NotFound(FatalAPIError):
    """HTTP 404: the entity set, record or company does not exist."""


class PreconditionFailed(FatalAPIError):
    """The If-Match ETag is stale: BC answers 409 Request_EntityChanged; 412 is treated alike."""


class ValidationFailed(FatalAPIError):
    """A 400-class error about the payload or query (BC's BadRequest_* / Application_* codes)."""


class Unauthorized(FatalAPIError):
    """HTTP 401/403 from BC after a token was issued: app not enabled in BC, or no permission."""


def _with_attempts(text: str, attempts: list[Attempt]) -> str:
    if len(attempts) <= 1:
        return text
    return text + "\n" + "\n".join("  " + attempt.describe() for attempt in attempts)


def api_error_for(
    status: int,
    code: str,
    message: str,
    *,
    method: str = "",
    url: str = "",
    correlation_id: str | None = None,
    attempts: list[Attempt] | None = None,
    retry_after: float | None = None,
) -> BCAPIError:
    """Build the most specific BCAPIError for an HTTP status and BC error code."""
    common = {"method": method, "url": url, "correlation_id": correlation_id, "attempts": attempts}
    if status == 429:
        return Throttled(status, code, message, retry_after=retry_after, **common)
    kind: type[BCAPIError]
    if status == 408 or status >= 500:
        kind = RetriableAPIError
    elif status == 404:
        kind = NotFound
    elif status == 412 or (status == 409 and code == "Request_EntityChanged"):
        kind = PreconditionFailed
    elif status in (401, 403):
        kind = Unauthorized
    elif 400 <= status < 500:
        kind = ValidationFailed
    else:
        kind = BCAPIError
    return kind(status, code, message, **common)  # type: ignore[arg-type]


def exit_code(error: BaseException) -> int:
    """The documented exit code for an error that ends a command (see the table above)."""
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(error, Busy):
        return EXIT_BUSY
    if isinstance(error, AuthError | TransportError | BCAPIError):
        return EXIT_BC
    if isinstance(error, BCBridgeError):
        return EXIT_USAGE  # ConfigError, TransformError and plain BCBridgeError: fix the input
    return EXIT_INTERNAL
