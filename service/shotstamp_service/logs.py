"""Structured logs: one JSON object a line, carrying the id of the request being served.

The error middleware sets `REQUEST_ID` for each request (from the client's
`X-Request-Id` or a fresh one), so every line logged while serving it — the
access line, the upload's outcome, a store failure — carries the same id, and
the id is echoed in the response for the client to quote.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

__all__ = ["REQUEST_ID", "JsonFormatter", "RequestIdFilter", "configure_logging"]

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)

# Attributes every LogRecord has; anything else was passed with `extra=` and is logged.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "request_id",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "logger", "message", "request_id"?, ...extra, "exception"?}`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            entry["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class RequestIdFilter(logging.Filter):
    """Stamps each record with the request being served when it was logged.

    Filters run where the record is emitted, in the request's context, which
    a formatter (perhaps run later, elsewhere) cannot rely on.
    """

    def __init__(self, outside: str | None = None) -> None:
        super().__init__()
        self.outside = outside  # what records logged outside any request carry

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get() or self.outside
        return True


def configure_logging(fmt: str = "json", level: str = "INFO") -> None:
    """Send the service's logs to stderr, as JSON lines or as plain text."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.addFilter(RequestIdFilter())
        handler.setFormatter(JsonFormatter())
    else:
        handler.addFilter(RequestIdFilter(outside="-"))
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
