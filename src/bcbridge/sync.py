"""A small synchronous facade over `BusinessCentralClient`, for scripts and notebooks.

It runs the async client on a private event loop in a background thread (anyio's blocking
portal); iterators are consumed page by page, so memory stays flat here too.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

import httpx
from anyio.from_thread import BlockingPortal, start_blocking_portal

from bcbridge.auth import TokenSource
from bcbridge.client import (
    BatchOperation,
    BatchResult,
    BusinessCentralClient,
    Company,
    GrantResult,
    Page,
)
from bcbridge.config import ClientSettings

__all__ = ["Client"]


class Client:
    """A blocking `BusinessCentralClient`, for scripts and notebooks (``bcbridge.Client``).

    It runs the async client on an event loop of its own, in a background thread; use it as a
    context manager or call `close()`. Iterators fetch one page at a time. `auth` and
    `transport` are those of `BusinessCentralClient` (the transport is an async one).
    """

    def __init__(
        self,
        settings: ClientSettings,
        *,
        auth: TokenSource | None = None,
        transport: httpx.AsyncBaseTransport | None = None,  # async: the inner client's
    ):
        portal_cm = start_blocking_portal()
        self._portal: BlockingPortal = portal_cm.__enter__()
        try:
            self._client = self._portal.call(self._make, settings, auth, transport)
        except BaseException:
            portal_cm.__exit__(None, None, None)
            raise
        # A Client never closed is closed when collected, or at interpreter exit while its portal
        # thread still runs: left to module teardown, the portal's context manager would wait
        # forever on a loop that no longer runs, and the process would never exit.
        self._closer = weakref.finalize(self, _shut, portal_cm, self._portal, self._client)

    @staticmethod
    async def _make(
        settings: ClientSettings,
        auth: TokenSource | None,
        transport: httpx.AsyncBaseTransport | None,
    ) -> BusinessCentralClient:
        return BusinessCentralClient(settings, auth=auth, transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the client and its thread."""
        self._closer()

    def request(self, method: str, path_or_url: str, **kwargs: Any) -> httpx.Response:
        """Send one API request (see `BusinessCentralClient.request`)."""
        return self._portal.call(lambda: self._client.request(method, path_or_url, **kwargs))

    def get_json(self, path_or_url: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """GET one resource and return its JSON body."""
        return self._portal.call(self._client.get_json, path_or_url, params)

    def iter_pages(self, path_or_url: str, **kwargs: Any) -> Iterator[Page]:
        """The pages of a collection, following `@odata.nextLink`."""
        pages = self._client.iter_pages(path_or_url, **kwargs)
        while True:
            try:
                yield self._portal.call(pages.__anext__)
            except StopAsyncIteration:
                return

    def iter_records(self, path_or_url: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """The records of every page, one at a time."""
        for page in self.iter_pages(path_or_url, **kwargs):
            yield from page.records

    def batch(self, operations: Sequence[BatchOperation], **kwargs: Any) -> list[BatchResult]:
        """Run operations through `$batch`; one result per operation, in order."""
        return self._portal.call(lambda: self._client.batch(operations, **kwargs))

    def download_stream(self, path_or_url: str) -> tuple[bytes, str]:
        """`BusinessCentralClient.download_stream`: a stream property's bytes and content type."""
        return self._portal.call(self._client.download_stream, path_or_url)

    def upload_stream(
        self,
        path_or_url: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        etag: str = "*",
    ) -> None:
        """`BusinessCentralClient.upload_stream`: PATCH a stream property with If-Match."""
        self._portal.call(
            lambda: self._client.upload_stream(
                path_or_url, data, content_type=content_type, etag=etag
            )
        )

    def companies(self) -> list[Company]:
        """The environment's companies."""
        return self._portal.call(self._client.companies)

    def resolve_company(self, name_or_id: str) -> Company:
        """A company named by GUID or by name."""
        return self._portal.call(self._client.resolve_company, name_or_id)

    def grant(self) -> GrantResult:
        """Obtain a token and prove it by listing the companies it reaches."""
        return self._portal.call(self._client.grant)


def _shut(
    portal_cm: AbstractContextManager[BlockingPortal],
    portal: BlockingPortal,
    client: BusinessCentralClient,
) -> None:
    try:
        portal.call(client.aclose)
    finally:
        portal_cm.__exit__(None, None, None)
