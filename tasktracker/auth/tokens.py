"""JWT access/refresh tokens bound to a login session (RFC 6750 bearer tokens).

Every token carries ``sub`` (the user id as a string) and ``sid`` (the
:class:`AuthSession` id). A token is refused (401) when its signature, ``alg``
or expiry is wrong, when its session is revoked (logout, password change) and
when its user is deactivated.
"""

from __future__ import annotations

import uuid
import sqlalchemy as sa
from flask import current_app, g, request
from flask_jwt_extended import JWTManager, create_access_token, create_refresh_token, decode_token

from tasktracker.auth.models import AuthSession, User
from tasktracker.core.errors import error_response
from tasktracker.core.types import utcnow
from tasktracker.extensions import db


def issue_tokens(user: User) -> dict:
    """Open a session for ``user`` and return ``{access_token, refresh_token, token_type, expires_in}``.

    The session is added to the current DB session; the caller commits.
    ``expires_in`` is the access token's lifetime in seconds.
    """
    session = AuthSession(id=uuid.uuid4().hex, user_id=user.id,
                          expires_at=utcnow() + current_app.config["JWT_REFRESH_TOKEN_EXPIRES"])
    db.session.add(session)
    claims = {"sid": session.id}
    return {
        "access_token": create_access_token(identity=str(user.id), additional_claims=claims),
        "refresh_token": create_refresh_token(identity=str(user.id), additional_claims=claims),
        "token_type": "Bearer",
        "expires_in": access_expires_in(),
    }


def access_expires_in() -> int:
    """Lifetime of an access token, in seconds."""
    return int(current_app.config["JWT_ACCESS_TOKEN_EXPIRES"].total_seconds())


# built once: SQLAlchemy then finds its compiled form without rebuilding the statement
_SESSION_USER = (sa.select(AuthSession.revoked_at, User)
                 .join(User, User.id == AuthSession.user_id)
                 .where(AuthSession.id == sa.bindparam("sid")))


def session_user(sid: str | None, user_id: object = None) -> User | None:
    """The user of a live login session (the blocklist check), or None.

    None when ``sid`` is unknown or revoked, or when ``user_id`` (a token's
    ``sub``) names another user: a token's ``sid`` and ``sub`` must belong
    together. One round trip: the session row joined with its user. Whether the
    user is active is the caller's check.
    """
    if not sid or not isinstance(sid, str):
        return None
    row = db.session.execute(_SESSION_USER, {"sid": sid}).first()
    if row is None or row.revoked_at is not None:
        return None
    if user_id is not None and str(row.User.id) != str(user_id):
        return None
    return row.User


def revoke_sessions(user_id: int, *, only: str | None = None, keep: str | None = None) -> int:
    """Revoke one session (``only``) or all of a user's sessions but ``keep``.

    Returns the number of sessions revoked. The caller commits.
    """
    stmt = sa.update(AuthSession).where(AuthSession.user_id == user_id,
                                        AuthSession.revoked_at.is_(None))
    if only is not None:
        stmt = stmt.where(AuthSession.id == only)
    if keep is not None:
        stmt = stmt.where(AuthSession.id != keep)
    return db.session.execute(stmt.values(revoked_at=utcnow())).rowcount


def user_from_access_token(token: str) -> User | None:
    """Validate an access token outside a request (Socket.IO connect).

    ``decode_token`` checks signature and expiry only; this also checks the
    token type, the blocklist and that the user is active. Returns the user or
    None for any invalid token.
    """
    try:
        claims = decode_token(token)
    except Exception:  # noqa: BLE001 - any decoding failure means "invalid token"
        return None
    if claims.get("type") != "access":
        return None
    user = session_user(claims.get("sid"), claims.get("sub"))
    return user if user is not None and user.active else None


def _active_user(sub: object) -> User | None:
    """The active user whose id is the token's ``sub`` (a decimal string), else None."""
    if not isinstance(sub, str) or not sub.isdecimal() or len(sub) > 10:
        return None
    user = db.session.get(User, int(sub))
    return user if user is not None and user.active else None


def normalize_bearer_scheme() -> None:
    """``before_request``: spell the ``Authorization`` scheme ``Bearer`` whatever its
    case. RFC 7235 §2.1 makes the auth-scheme case-insensitive (``bearer``,
    ``BEARER``: RFC 6750 bearer tokens all the same); Flask-JWT-Extended compares it
    case-sensitively. Other schemes and the credentials are left as they are."""
    header = request.environ.get("HTTP_AUTHORIZATION")
    if header:
        scheme, sep, rest = header.strip().partition(" ")
        if sep and scheme != "Bearer" and scheme.lower() == "bearer":
            request.environ["HTTP_AUTHORIZATION"] = "Bearer " + rest


def _unauthorized(message: str, code: str = "invalid_token"):
    return error_response(401, code, message, headers={"WWW-Authenticate": f'Bearer error="{code}"'})


def register_jwt_callbacks(jwt: JWTManager) -> None:
    """Wire Flask-JWT-Extended so every token failure is a 401 in the contract's shape."""

    # Flask-JWT-Extended checks the blocklist first, then loads the user: the
    # blocklist query loads the user too and hands it over in ``g`` (one round
    # trip per authenticated request; the session's identity map holds objects
    # only weakly, so the reference must be kept).
    @jwt.token_in_blocklist_loader
    def _in_blocklist(_header, payload):
        g.token_user = session_user(payload.get("sid"), payload.get("sub"))
        return g.token_user is None

    @jwt.user_lookup_loader
    def _load_user(_header, payload):
        user = g.pop("token_user", None)
        if user is None:
            return _active_user(payload.get("sub"))
        return user if user.active else None

    jwt.unauthorized_loader(lambda reason: _unauthorized("Missing or malformed Authorization header.", "missing_token"))
    jwt.invalid_token_loader(lambda reason: _unauthorized("Invalid token."))
    jwt.expired_token_loader(lambda h, p: _unauthorized("Token has expired.", "token_expired"))
    jwt.revoked_token_loader(lambda h, p: _unauthorized("Token has been revoked.", "token_revoked"))
    jwt.user_lookup_error_loader(lambda h, p: _unauthorized("User is inactive or unknown.", "user_inactive"))
    jwt.needs_fresh_token_loader(lambda h, p: _unauthorized("Fresh token required."))
    jwt.token_verification_failed_loader(lambda h, p: _unauthorized("Invalid token."))
