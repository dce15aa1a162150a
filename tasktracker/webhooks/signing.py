"""The body and signature of a webhook delivery (api-contract.md v1.1, "Webhooks").

``X-TaskTracker-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>``
where ``timestamp`` is ``X-TaskTracker-Timestamp`` (Unix seconds of the attempt) and
the raw body is the exact bytes POSTed. The body is serialised once, when the
delivery row is written (:func:`body_bytes`), stored as bytes and sent as stored, so
what is signed is what is sent (and a receiver verifies the bytes it read, never a
re-serialisation). Including the timestamp in the MAC lets a receiver refuse replays
older than a tolerance (the Stripe / Standard Webhooks scheme).

A receiver needs only the standard library::

    import hashlib, hmac, time

    def verify(secret: str, headers, body: bytes, tolerance: int = 300) -> bool:
        ts = headers["X-TaskTracker-Timestamp"]
        mac = hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256)
        ok = hmac.compare_digest("sha256=" + mac.hexdigest(), headers["X-TaskTracker-Signature"])
        return ok and abs(time.time() - int(ts)) <= tolerance
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timezone
from typing import Any

import orjson

from tasktracker.core.fields import iso_utc

#: How far (seconds) a receiver's clock and the timestamp may differ by default.
DEFAULT_TOLERANCE_SECONDS = 300
SIGNATURE_PREFIX = "sha256="


def new_secret() -> str:
    """A fresh signing secret: 32 random bytes, URL-safe base64 (43 chars), prefixed
    ``whsec_`` so it is recognisable in a leak scanner."""
    return "whsec_" + secrets.token_urlsafe(32)


def delivery_body(*, delivery_id: int, event: str, created_at: datetime, team_id: int | None,
                  actor_id: int | None, seq: int | None, data: Any) -> dict[str, Any]:
    """The contract's body: ``{id, event, created_at, team_id, actor_id, seq, data}``.

    ``created_at`` is the event's time (UTC, ``Z``); ``data`` the resource as the REST
    API returns it (already JSON-ready: times as ``Z`` strings)."""
    return {"id": delivery_id, "event": event, "created_at": iso_utc(created_at),
            "team_id": team_id, "actor_id": actor_id, "seq": seq, "data": data}


def body_bytes(body: dict[str, Any]) -> bytes:
    """The exact bytes sent: compact UTF-8 JSON (orjson), keys in insertion order.

    Raises ``TypeError`` for a value JSON cannot carry. Done once per delivery: the
    bytes are stored and every attempt sends (and signs) those same bytes."""
    return orjson.dumps(body)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """``"sha256=<hex>"``: HMAC-SHA256 keyed with ``secret`` (UTF-8) over
    ``b"<timestamp>." + body``; ``timestamp`` is Unix seconds (int)."""
    message = str(int(timestamp)).encode("ascii") + b"." + body
    return SIGNATURE_PREFIX + hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def verify(secret: str, timestamp: str | int, body: bytes, signature: str, *,
           now: datetime | None = None, tolerance: int = DEFAULT_TOLERANCE_SECONDS) -> bool:
    """Whether ``signature`` (the ``X-TaskTracker-Signature`` header) is the MAC of
    ``body`` (the raw bytes received) at ``timestamp`` (the ``X-TaskTracker-Timestamp``
    header), and the timestamp is within ``tolerance`` seconds of ``now`` (default: the
    current UTC time).

    Constant-time comparison (``hmac.compare_digest``). Never raises on malformed
    input: a non-integer timestamp or a non-ASCII signature is simply ``False``.
    """
    try:
        ts = int(timestamp)
    except (TypeError, ValueError):
        return False
    current = (now or datetime.now(timezone.utc)).timestamp()
    if abs(current - ts) > tolerance:
        return False
    expected = sign(secret, ts, body)
    try:
        return hmac.compare_digest(expected.encode("ascii"), signature.encode("ascii"))
    except (AttributeError, UnicodeEncodeError):
        return False
