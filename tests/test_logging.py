"""Structured logs (production): one JSON object per line carrying the request id,
which is echoed as ``X-Request-ID`` (generated when the client sends none)."""

import json
import logging

from tasktracker.core.logging import JsonFormatter


def test_request_id_is_generated_and_echoed(client):
    r = client.get("/health")
    generated = r.headers["X-Request-ID"]
    assert len(generated) == 32
    assert client.get("/health", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"] == "abc-123"
    assert client.get("/health").headers["X-Request-ID"] != generated
    forged = client.get("/health", headers={"X-Request-ID": "x" * 500}).headers["X-Request-ID"]
    assert len(forged) == 32  # too long or odd ids are replaced, not logged


def test_json_formatter_writes_request_context(app):
    record = logging.LogRecord("tasktracker.test", logging.WARNING, __file__, 1, "hello %s", ("world",), None)
    with app.test_request_context("/api/tasks", method="POST"):
        from flask import g

        g.request_id = "rid-1"
        line = JsonFormatter().format(record)
    entry = json.loads(line)
    assert entry["message"] == "hello world" and entry["level"] == "WARNING"
    assert (entry["request_id"], entry["method"], entry["path"]) == ("rid-1", "POST", "/api/tasks")
    assert entry["ts"][:2] == "20" and "\n" not in line
