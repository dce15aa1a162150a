"""One-click unsubscribe tokens (RFC 8058; contract v1.1 ``POST /api/email/unsubscribe?token=``).

A token is ``itsdangerous.URLSafeSerializer(SECRET_KEY, salt=SALT)`` over
``{"u": user_id, "s": [scope, ...]}`` (scopes: notification types, ``digest``, ``*``,
see :mod:`tasktracker.mail.settings`). It is signed (HMAC-SHA1 over the salted key,
itsdangerous' default), not encrypted: it names the user id and the types, nothing
secret. It does not expire: an unsubscribe link in an old message keeps working, as
RFC 8058 expects (the receiver may POST long after delivery).
"""

from __future__ import annotations

from collections.abc import Iterable

from itsdangerous import BadSignature, URLSafeSerializer

from tasktracker.core.errors import Unprocessable

SALT = "tasktracker.mail.unsubscribe"


class InvalidUnsubscribeToken(Unprocessable):
    """The token is malformed, tampered with or signed with another key (422
    ``invalid_unsubscribe_token``)."""

    code = "invalid_unsubscribe_token"
    message = "This unsubscribe link is not valid."


def _serializer(secret_key: str) -> URLSafeSerializer:
    if not secret_key:
        raise ValueError("SECRET_KEY is required to sign unsubscribe tokens")
    return URLSafeSerializer(secret_key, salt=SALT)


def make_token(secret_key: str, user_id: int, scopes: Iterable[str]) -> str:
    """A URL-safe signed token for unsubscribing ``user_id`` from ``scopes`` (sorted,
    deduplicated)."""
    return _serializer(secret_key).dumps({"u": int(user_id), "s": sorted(set(scopes))})


def read_token(secret_key: str, token: str) -> tuple[int, list[str]]:
    """``(user_id, scopes)`` of a token made by :func:`make_token` with the same key.
    Raises :class:`InvalidUnsubscribeToken` for anything else (a changed character,
    another key or salt, a payload of the wrong shape)."""
    try:
        payload = _serializer(secret_key).loads(token or "")
    except BadSignature:
        raise InvalidUnsubscribeToken() from None
    if (not isinstance(payload, dict) or not isinstance(payload.get("u"), int)
            or isinstance(payload.get("u"), bool) or not isinstance(payload.get("s"), list)
            or not all(isinstance(s, str) for s in payload["s"])):
        raise InvalidUnsubscribeToken()
    return payload["u"], payload["s"]


def unsubscribe(secret_key: str, token: str) -> tuple[int, dict]:
    """What ``POST /api/email/unsubscribe?token=`` does: verify ``token`` and turn its
    scopes off for its user (:func:`tasktracker.mail.settings.turn_off`). Returns
    ``(user_id, new settings)``. Raises :class:`InvalidUnsubscribeToken`. A token of a
    user who no longer exists is invalid too. The caller commits."""
    from tasktracker.auth.models import User
    from tasktracker.extensions import db
    from tasktracker.mail.settings import turn_off

    user_id, scopes = read_token(secret_key, token)
    if db.session.get(User, user_id) is None:
        raise InvalidUnsubscribeToken()
    return user_id, turn_off(user_id, scopes)
