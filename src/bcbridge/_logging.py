"""Opt-in request logging: one JSON line per HTTP attempt (and per token), with secrets masked.

A client logs when its settings say `log_requests`, or while `log_every_request` is in force
(the CLI's `-v` / `--log-file`): then every client logs, whatever its settings.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TextIO

import orjson

from bcbridge import _redact
from bcbridge.config import ClientSettings

LOGGER_NAME = "bcbridge.http"
_every_request: list[logging.Handler] = []  # log_every_request(): the handlers in force


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the time (a progress display or a test swaps it)."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass  # StreamHandler.__init__ sets it; the live sys.stderr always wins


def log_every_request(to: Path | None) -> Callable[[], None]:
    """Log every client's requests, to the file `to` (appended) or to stderr, until the
    returned function is called."""
    handler: logging.Handler = logging.FileHandler(to, encoding="utf-8") if to else _Stderr()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger(LOGGER_NAME)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    _every_request.append(handler)

    def stop() -> None:
        logger.removeHandler(handler)
        handler.close()
        if handler in _every_request:
            _every_request.remove(handler)

    return stop


class RequestLog:
    def __init__(self, settings: ClientSettings):
        self.enabled = settings.log_requests or bool(_every_request)
        self.logger = logging.getLogger(LOGGER_NAME)
        if settings.log_requests and not self.logger.handlers:
            handler: logging.Handler = (
                logging.FileHandler(settings.log_file)
                if settings.log_file
                else logging.StreamHandler(sys.stderr)
            )
            handler.setFormatter(logging.Formatter("%(message)s"))
            self.logger.addHandler(handler)
            self.logger.setLevel(logging.INFO)
            self.logger.propagate = False

    def record(self, **fields: Any) -> None:
        trail = _trail.get()
        if not self.enabled and trail is None:
            return
        if "url" in fields:
            fields["url"] = _redact.url(str(fields["url"]))
        line = _redact.text(orjson.dumps({"event": "http", **fields}).decode())
        if trail is not None and len(trail) < TRAIL_LINES:
            trail.append(line)
        if self.enabled:
            self.logger.info(line)


# The request-log lines of the work under way (a flow's delivery of a chunk), whether or not the
# client logs them: the flow runner keeps them with the attempts of the tasks they served.
_trail: ContextVar[list[str] | None] = ContextVar("bcbridge_request_trail", default=None)
TRAIL_LINES = 50  # a chunk's requests kept at most (a storm of retries is cut there)


@contextmanager
def request_trail() -> Iterator[list[str]]:
    """The request-log lines (masked JSON, as logged) of the requests sent inside the block,
    in this task and the tasks it starts."""
    lines: list[str] = []
    token = _trail.set(lines)
    try:
        yield lines
    finally:
        _trail.reset(token)
