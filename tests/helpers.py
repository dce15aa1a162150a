"""Assertions shared by the API tests: the contract's error shape, leak checks, cases."""

from __future__ import annotations

import re
import threading
from contextlib import contextmanager

USER_KEYS = {"id", "username", "email", "full_name", "role", "timezone", "active", "created_at"}
#: A string tests put into exceptions; it must never reach a response body.
SECRET = "s3cr3t-detail-/etc/passwd"
_LEAK_MARKERS = ("Traceback", 'File "', "site-packages", SECRET, "<html", "<!doctype")


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def assert_no_leak(response) -> None:
    """No stack trace, file path, HTML error page or :data:`SECRET` in the body."""
    text = response.get_data(as_text=True)
    for marker in _LEAK_MARKERS:
        assert marker.lower() not in text.lower(), (marker, text[:500])


def assert_error(response, status: int, code: str | None = None) -> dict:
    """The contract's error shape (api-contract.md "Errors"), JSON, with ``status``
    (and ``code`` when given), leaking nothing. Returns the ``error`` object."""
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    assert response.mimetype == "application/json", response.mimetype
    body = response.get_json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "details"}, error
    assert re.fullmatch(r"[a-z][a-z0-9_]*", error["code"]), error
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], dict)
    if code is not None:
        assert error["code"] == code, error
    assert_no_leak(response)
    return error


@contextmanager
def case(label):
    """Name the failing case of a loop in the assertion message."""
    try:
        yield
    except AssertionError as exc:
        raise AssertionError(f"[{label}] {exc}") from exc


def run_together(app, *calls, timeout: float = 60):
    """Run each ``call(client)`` in its own thread, released together; returns their
    responses (or the exception a thread raised) in order."""
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def worker(i, call):
        try:
            with app.test_client() as client:
                barrier.wait(timeout=30)
                results[i] = call(client)
        except Exception as exc:  # pragma: no cover - reported by the caller
            results[i] = exc

    threads = [threading.Thread(target=worker, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads), "a request hung"
    return results
