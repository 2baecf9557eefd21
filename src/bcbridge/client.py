"""`BusinessCentralClient`: authenticated, throttled, retried HTTP to BC, with paging and batch.

Every request goes through `request`: a token (renewed once on a 401), a slot from the
principal's limiter, one attempt, one log line, and one decision about retrying (`_retry`).
"""

from __future__ import annotations

import ssl
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import httpx
import orjson

from bcbridge import _json, _redact, _retry
from bcbridge._limits import limiter_for
from bcbridge._logging import RequestLog
from bcbridge.auth import MsalTokenSource, Token, Tokens, TokenSource
from bcbridge.config import ClientSettings
from bcbridge.errors import (
    Attempt,
    BCAPIError,
    ConfigError,
    NextLinkLoop,
    TransportError,
    api_error_for,
)
from bcbridge.odata import is_guid

if TYPE_CHECKING:
    from bcbridge.budget import Budget

__all__ = [
    "BatchOperation",
    "BatchResult",
    "BusinessCentralClient",
    "Company",
    "GrantResult",
    "Page",
]

MAX_BATCH = 100
_AUTH_HINTS = {
    401: "Entra issued a token but BC refused it: register the app on BC's "
    "'Microsoft Entra Applications' page with State = Enabled.",
    403: "BC refused the operation: assign the app permission sets that allow it.",
}


@dataclass(frozen=True)
class Company:
    """A company of the environment, as `companies()` lists it."""

    id: str
    name: str
    display_name: str


@dataclass
class Page:
    """One page of a collection: its records, the `@odata.nextLink` to the next (None on the
    last), the URL it came from and its number counted from 1."""

    records: list[dict[str, Any]]
    next_link: str | None
    url: str
    number: int


@dataclass
class BatchOperation:
    """One operation of a `$batch`; `url` is relative to the API root."""

    method: str
    url: str
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    id: str | None = None


@dataclass
class BatchResult:
    """The answer to one `BatchOperation`, matched by `id`. `error` is the typed error BC's
    answer maps to (None when it succeeded); `ok` says whether it did."""

    id: str
    status: int
    headers: dict[str, str]
    body: Any
    error: BCAPIError | None = None

    @property
    def ok(self) -> bool:
        """BC answered 2xx and no error was mapped."""
        return self.error is None and 200 <= self.status < 300


@dataclass
class GrantResult:
    """What `grant()` proves: a token (redacted), its expiry (epoch seconds), its claims and the
    companies the app can see."""

    token: str  # redacted: first and last 6 characters
    expires_at: float
    claims: dict[str, Any]
    companies: list[Company]


def _ssl_context(settings: ClientSettings) -> ssl.SSLContext:
    if settings.ca_bundle is not None:
        return ssl.create_default_context(cafile=str(settings.ca_bundle))
    return ssl.create_default_context()


@asynccontextmanager
async def task_group() -> AsyncIterator[anyio.abc.TaskGroup]:
    """A task group that raises the first failure as itself, not wrapped in an ExceptionGroup,
    so callers can catch `TransportError` or `Throttled` as they would from one request."""
    try:
        async with anyio.create_task_group() as group:
            yield group
    except BaseExceptionGroup as failures:
        first: BaseException = failures
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None


class BusinessCentralClient:
    """The async HTTP client for BC API v2.0: tokens, BC's limits, retries, paging and `$batch`.

    Use it as an async context manager (``async with BusinessCentralClient(settings) as bc``),
    or call `aclose()`. `auth`: where bearer tokens come from (default: MSAL with the settings'
    credentials); `transport`: how requests reach BC (default: HTTPS; e.g.
    ``httpx.ASGITransport(app)``); `budget`: BC's limits shared with other processes
    (`bcbridge.budget.shared_budget`; default: this process's limiter). Errors are the typed
    `bcbridge.errors` (`Throttled`, `NotFound`, ...), raised after the retries the settings
    allow.
    """

    def __init__(
        self,
        settings: ClientSettings,
        *,
        auth: TokenSource | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        budget: Budget | None = None,
    ):
        self.settings = settings
        self.budget = budget
        self.api_root = settings.api_root
        self.auth: TokenSource = auth if auth is not None else MsalTokenSource(settings)
        self.tokens = Tokens(self.auth)
        self.log = RequestLog(settings)
        self._http = httpx.AsyncClient(
            verify=_ssl_context(settings),
            timeout=httpx.Timeout(settings.timeout, connect=settings.connect_timeout),
            limits=httpx.Limits(max_connections=settings.max_concurrency * 2),
            transport=transport,
            trust_env=False,
        )
        self._companies: list[Company] | None = None

    async def __aenter__(self) -> BusinessCentralClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections; the client cannot be used after."""
        await self._http.aclose()

    def url(self, path_or_url: str) -> str:
        """An absolute URL: a path is taken relative to the API root, a URL is kept as it is."""
        if path_or_url.startswith(("https://", "http://")):
            return path_or_url
        return f"{self.api_root}/{path_or_url.lstrip('/')}"

    # --- one request ---------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path_or_url: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        """Send one API request; retries, throttling and token renewal happen here.

        `json` is sent as JSON; `content` (when `json` is None) as raw bytes, with the
        Content-Type the caller gives in `headers`.
        Raises a `BCAPIError` subclass for an HTTP error, `TransportError` when no answer came.
        """
        method = method.upper()
        url = self.url(path_or_url)
        safe = _retry.is_idempotent(method) if idempotent is None else idempotent
        policy = self.settings.retry
        attempts: list[Attempt] = []
        refused: Token | None = None  # the token BC just answered 401 to
        # Decimals go out as JSON numbers with their exact digits ($batch bodies pass here too)
        is_json = json is not None
        if is_json:
            content = _json.dumps(json)
        while True:
            number = len(attempts) + 1
            token = await self.tokens.token(stale=refused)
            request_headers = {
                "Authorization": f"Bearer {token.value}",
                "Accept": "application/json",
            }
            if is_json:
                request_headers["Content-Type"] = "application/json"
            request_headers.update(headers or {})
            started = time.monotonic()
            try:
                gate = self.budget or limiter_for(self.settings)
                async with gate.slot():
                    response = await self._http.request(
                        method, url, params=params, content=content, headers=request_headers
                    )
            except httpx.TransportError as exc:
                duration = time.monotonic() - started
                attempts.append(Attempt(number, None, type(exc).__name__, duration))
                self.log.record(
                    method=method,
                    url=url,
                    status=None,
                    error=type(exc).__name__,
                    duration_ms=round(duration * 1000),
                    attempt=number,
                )
                if number < policy.max_attempts and _retry.should_retry_exception(
                    exc, idempotent=safe
                ):
                    await anyio.sleep(_retry.backoff(policy, number))
                    continue
                raise TransportError(
                    type(exc).__name__, method=method, url=_redact.url(url), attempts=attempts
                ) from None
            duration = time.monotonic() - started
            correlation_id = response.headers.get("request-id")
            attempts.append(Attempt(number, response.status_code, None, duration))
            self.log.record(
                method=method,
                url=url,
                status=response.status_code,
                duration_ms=round(duration * 1000),
                attempt=number,
                correlation_id=correlation_id,
            )
            if response.status_code == 401 and refused is None:
                refused = token  # BC refused the token: renew once, then repeat the request
                continue
            refused = None
            if response.status_code < 400:
                return response
            wait = _retry.retry_after(
                response.headers.get("Retry-After"), cap=policy.retry_after_max
            )
            if response.status_code == 429 and self.budget is not None:
                await self.budget.throttled(wait if wait is not None else policy.backoff_base)
            if number < policy.max_attempts and _retry.should_retry_status(
                response.status_code, idempotent=safe
            ):
                await anyio.sleep(wait if wait is not None else _retry.backoff(policy, number))
                continue
            raise self._error(response, method, url, attempts, wait)

    def _error(
        self,
        response: httpx.Response,
        method: str,
        url: str,
        attempts: list[Attempt],
        wait: float | None,
    ) -> BCAPIError:
        code, message = _error_fields(response)
        if response.status_code in _AUTH_HINTS:
            message = f"{message}\nHint: {_AUTH_HINTS[response.status_code]}"
        return api_error_for(
            response.status_code,
            code,
            _redact.text(message),
            method=method,
            url=_redact.url(url),
            correlation_id=response.headers.get("request-id"),
            attempts=attempts,
            retry_after=wait,
        )

    async def get_json(
        self, path_or_url: str, params: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """GET one resource and return its JSON body."""
        response = await self.request("GET", path_or_url, params=params)
        body: dict[str, Any] = orjson.loads(response.content)
        return body

    # --- streams (attachment content, pictures, PDF documents) ---------------------------------

    async def download_stream(self, path_or_url: str) -> tuple[bytes, str]:
        """GET a stream property (``.../attachments({id})/attachmentContent``,
        ``.../items({id})/picture/pictureContent``, ``.../pdfDocument/pdfDocumentContent``):
        its bytes and content type; ``(b"", "")`` when the stream is empty (204)."""
        response = await self.request("GET", path_or_url, headers={"Accept": "*/*"})
        if response.status_code == 204:
            return b"", ""
        return response.content, response.headers.get("content-type", "")

    async def upload_stream(
        self,
        path_or_url: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        etag: str = "*",
    ) -> None:
        """PATCH a stream property with `data`. BC wants the record's ETag in If-Match (``*``
        overwrites whatever is there) and a Content-Type; the record's ETag changes."""
        await self.request(
            "PATCH",
            path_or_url,
            content=data,
            headers={"Content-Type": content_type, "If-Match": etag},
        )

    # --- paging ----------------------------------------------------------------------------------

    async def iter_pages(
        self,
        path_or_url: str,
        *,
        params: Mapping[str, Any] | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[Page]:
        """Follow `@odata.nextLink` verbatim until BC stops sending one.

        The page size is asked for with ``Prefer: odata.maxpagesize``. A link seen twice means
        the server is looping, and raises rather than reading forever. A token renewal in the
        middle retries the current link, so no page is skipped or read twice.
        """
        headers = {"Prefer": f"odata.maxpagesize={page_size}"} if page_size else {}
        url: str | None = self.url(path_or_url)
        query: Mapping[str, Any] | None = params
        seen: set[int] = set()
        number = 0
        while url:
            fingerprint = hash(url)
            if fingerprint in seen:
                raise NextLinkLoop(
                    f"BC returned the same @odata.nextLink twice: {_redact.url(url)}"
                )
            seen.add(fingerprint)
            response = await self.request("GET", url, params=query, headers=headers)
            body = orjson.loads(response.content)
            number += 1
            next_link = body.get("@odata.nextLink")
            records = body.get("value", [body])
            yield Page(records, next_link, url, number)
            url, query = next_link, None

    async def iter_records(
        self,
        path_or_url: str,
        *,
        params: Mapping[str, Any] | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """The records of every page of `iter_pages`, one at a time (one page in memory)."""
        async for page in self.iter_pages(path_or_url, params=params, page_size=page_size):
            for record in page.records:
                yield record

    # --- $batch -----------------------------------------------------------------------------------

    async def batch(
        self,
        operations: Sequence[BatchOperation],
        *,
        continue_on_error: bool = True,
        isolation: bool = False,
    ) -> list[BatchResult]:
        """Run operations through `$batch`, 100 at a time, chunks concurrently within the limits.

        Returns one result per operation, in input order. Operations BC throttled (429) inside a
        chunk are sent again on their own; the rest are never repeated. With
        `continue_on_error=False`, operations after a failure in their chunk come back with
        status 0 and an error saying they were not run.
        """
        numbered = [
            BatchOperation(op.method.upper(), op.url, op.body, dict(op.headers), op.id or str(i))
            for i, op in enumerate(operations)
        ]
        results: dict[str, BatchResult] = {}
        chunks = [numbered[i : i + MAX_BATCH] for i in range(0, len(numbered), MAX_BATCH)]

        async def run(chunk: list[BatchOperation]) -> None:
            await self._run_chunk(chunk, results, continue_on_error, isolation)

        async with task_group() as group:
            for chunk in chunks:
                group.start_soon(run, chunk)
        return [results[str(op.id)] for op in numbered]

    async def _run_chunk(
        self,
        chunk: list[BatchOperation],
        results: dict[str, BatchResult],
        continue_on_error: bool,
        isolation: bool,
    ) -> None:
        pending = chunk
        policy = self.settings.retry
        for attempt in range(1, policy.max_attempts + 1):
            answers = await self._send_batch(pending, continue_on_error, isolation)
            throttled: list[BatchOperation] = []
            wait = 0.0
            for op in pending:
                answer = answers.get(str(op.id))
                if answer is None:
                    results[str(op.id)] = BatchResult(
                        str(op.id),
                        0,
                        {},
                        None,
                        api_error_for(
                            0,
                            "NotRun",
                            "not run: an earlier operation in its batch failed",
                            method=op.method,
                            url=op.url,
                        ),
                    )
                elif answer.status == 429 and attempt < policy.max_attempts:
                    throttled.append(op)
                    wait = max(
                        wait,
                        _retry.retry_after(
                            answer.headers.get("Retry-After") or answer.headers.get("retry-after"),
                            cap=policy.retry_after_max,
                        )
                        or 0.0,
                    )
                else:
                    results[str(op.id)] = answer
            if not throttled:
                return
            await anyio.sleep(wait or _retry.backoff(policy, attempt))
            pending = throttled

    async def _send_batch(
        self, operations: list[BatchOperation], continue_on_error: bool, isolation: bool
    ) -> dict[str, BatchResult]:
        headers = {"Prefer": "odata.continue-on-error"} if continue_on_error else {}
        if isolation:
            headers["Isolation"] = "snapshot"
        body = {
            "requests": [
                {
                    "id": str(op.id),
                    "method": op.method,
                    "url": op.url,
                    "headers": {"Content-Type": "application/json", **op.headers},
                    **({"body": op.body} if op.body is not None else {}),
                }
                for op in operations
            ]
        }
        idempotent = all(_retry.is_idempotent(op.method) for op in operations)
        response = await self.request(
            "POST", "$batch", json=body, headers=headers, idempotent=idempotent
        )
        answers: dict[str, BatchResult] = {}
        for item in orjson.loads(response.content).get("responses", []):
            op_id = str(item.get("id"))
            status = int(item.get("status", 0))
            item_headers = {str(k): str(v) for k, v in (item.get("headers") or {}).items()}
            error = None
            if status >= 400:
                error_body = (item.get("body") or {}).get("error") or {}
                error = api_error_for(
                    status,
                    str(error_body.get("code", "")),
                    _redact.text(str(error_body.get("message", ""))),
                    method=next((op.method for op in operations if str(op.id) == op_id), ""),
                    url=next((op.url for op in operations if str(op.id) == op_id), ""),
                    correlation_id=item_headers.get("request-id"),
                )
            answers[op_id] = BatchResult(op_id, status, item_headers, item.get("body"), error)
        return answers

    # --- companies and access ---------------------------------------------------------------

    async def companies(self, *, refresh: bool = False) -> list[Company]:
        """The environment's companies, read once and kept (`refresh=True` reads them again)."""
        if self._companies is None or refresh:
            self._companies = [
                Company(
                    str(row["id"]), str(row["name"]), str(row.get("displayName") or row["name"])
                )
                async for row in self.iter_records("companies")
            ]
        return self._companies

    async def resolve_company(self, name_or_id: str) -> Company:
        """A company named by GUID or by name; names with ``&``, ``'``, ``,`` resolve exactly.
        The companies are read again before a name that matches none is refused (a client
        kept open for long, a worker's, would not see a company made since)."""
        matches = _matching_companies(await self.companies(), name_or_id)
        if len(matches) != 1:
            matches = _matching_companies(await self.companies(refresh=True), name_or_id)
        if len(matches) == 1:
            return matches[0]
        names = "; ".join(f"{c.name} ({c.id})" for c in await self.companies()) or "none"
        problem = "matches several companies" if matches else "matches no company"
        raise ConfigError(f"{name_or_id!r} {problem}; the companies are: {names}", field="company")

    async def grant(self) -> GrantResult:
        """Obtain a token and prove it by listing the companies it reaches."""
        token: Token = await self.tokens.token()
        companies = await self.companies(refresh=True)
        return GrantResult(_redact.token(token.value), token.expires_at, token.claims, companies)


def _error_fields(response: httpx.Response) -> tuple[str, str]:
    try:
        error = orjson.loads(response.content).get("error") or {}
        return str(error.get("code", "")), str(error.get("message", ""))
    except (orjson.JSONDecodeError, AttributeError):
        return "", response.reason_phrase or f"HTTP {response.status_code}"


def _matching_companies(companies: list[Company], name_or_id: str) -> list[Company]:
    """The companies `name_or_id` names: by GUID, else by name or display name (exactly, then
    ignoring case)."""
    wanted = name_or_id.strip()
    if is_guid(wanted):
        return [c for c in companies if c.id.lower() == wanted.lower()]
    matches = [c for c in companies if wanted in (c.name, c.display_name)]
    if not matches:
        folded = wanted.casefold()
        matches = [c for c in companies if folded in (c.name.casefold(), c.display_name.casefold())]
    return matches
