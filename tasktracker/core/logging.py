"""Logging: plain text in development, one JSON object per line in production,
each carrying the request id (``X-Request-ID``, generated when absent)."""

from __future__ import annotations

import json
import re
import logging
import sys
import uuid

from flask import Flask, g, has_request_context, request


_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
#: A calendar feed URL carries its credential (api-contract.md v1.1): never logged.
_FEED_TOKEN = re.compile(r"(/api/calendar/)[^/?\s]+(\.ics)")


def redact_path(text: str) -> str:
    """``text`` with calendar-feed tokens replaced by ``[redacted]``
    (``/api/calendar/<token>.ics`` -> ``/api/calendar/[redacted].ics``)."""
    return _FEED_TOKEN.sub(r"\1[redacted]\2", text) if "/api/calendar/" in text else text


class JsonFormatter(logging.Formatter):
    """Formats a record as ``{"ts", "level", "logger", "message", "request_id"?, "exc"?}``."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if has_request_context():
            entry["request_id"] = getattr(g, "request_id", None)
            entry["method"] = request.method
            entry["path"] = redact_path(request.path)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(app: Flask) -> None:
    """Install the formatter and the request-id hooks on ``app``."""
    if app.config.get("LOG_JSON"):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        root = logging.getLogger()
        root.handlers[:] = [handler]
        root.setLevel(logging.INFO)

    @app.before_request
    def _request_id():
        given = request.headers.get("X-Request-ID", "")
        # a client's id is kept only if it is short and plain (1..128 of [A-Za-z0-9._-])
        g.request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex

    @app.after_request
    def _echo_request_id(response):
        if hasattr(g, "request_id"):
            response.headers["X-Request-ID"] = g.request_id
        return response
