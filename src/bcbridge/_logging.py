"""Opt-in request logging: one JSON line per HTTP attempt, with secrets masked."""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson

from bcbridge import _redact
from bcbridge.config import ClientSettings

LOGGER_NAME = "bcbridge.http"


class RequestLog:
    def __init__(self, settings: ClientSettings):
        self.enabled = settings.log_requests
        self.logger = logging.getLogger(LOGGER_NAME)
        if self.enabled and not self.logger.handlers:
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
        if not self.enabled:
            return
        if "url" in fields:
            fields["url"] = _redact.url(str(fields["url"]))
        line = _redact.text(orjson.dumps({"event": "http", **fields}).decode())
        self.logger.info(line)
