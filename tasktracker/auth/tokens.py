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
from tasktracker.core.hotcache import SESSIONS, USERS, defer_invalidation, hot_state
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
# ``last_seen_at`` is left out: it changes by bulk UPDATE on every socket connect
# (no invalidation), so it is loaded from the database if read.
_USER_COLUMNS = tuple(attr.key for attr in sa.inspect(User).column_attrs if attr.key != "last_seen_at")


def _load_session(sid: str) -> dict | None:
    """The column values of the user of live session ``sid``; None if unknown or revoked."""
    row = db.session.execute(_SESSION_USER, {"sid": sid}).first()
    if row is None or row.revoked_at is not None:
        return None
    return {key: getattr(row.User, key) for key in _USER_COLUMNS}


def session_user(sid: str | None, user_id: object = None) -> User | None:
    """The user of a live login session (the blocklist check), or None.

    None when ``sid`` is unknown or revoked, or when ``user_id`` (a token's
    ``sub``) names another user: a token's ``sid`` and ``sub`` must belong
    together. Whether the user is active is the caller's check.

    The answer comes from the hot cache (:mod:`tasktracker.core.hotcache`) in the
    common case, without a database round trip; otherwise one round trip (the
    session row joined with its user). Any change to a session or a user drops
    the cached answers in every process after its commit (:func:`revoke_sessions`,
    the flush hook of :func:`register_invalidation`), and no answer is older than
    ``HOT_CACHE_TTL_SECONDS``.
    """
    if not sid or not isinstance(sid, str):
        return None
    columns = hot_state().lookup(SESSIONS, sid, lambda: _load_session(sid))
    if columns is None:
        return None
    if user_id is not None and str(columns["id"]) != str(user_id):
        return None
    return User.attached(columns)


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
    defer_invalidation(db.session, SESSIONS)
    defer_invalidation(db.session, USERS, [user_id])  # their live sockets are re-checked
    return db.session.execute(stmt.values(revoked_at=utcnow())).rowcount


def _invalidate_changed_users(session, _flush_context, _instances) -> None:
    """``before_flush``: a user or session row changed or deleted in this flush drops the
    cached sessions everywhere once the transaction commits."""
    for obj in (*session.dirty, *session.deleted):
        if isinstance(obj, (User, AuthSession)) and (obj in session.deleted
                                                     or session.is_modified(obj)):
            defer_invalidation(session, SESSIONS)
            defer_invalidation(session, USERS, [obj.id if isinstance(obj, User) else obj.user_id])


def register_invalidation() -> None:
    """Install the flush hook of :func:`_invalidate_changed_users` (idempotent)."""
    from sqlalchemy import event as sa_event
    from sqlalchemy.orm import Session

    if not sa_event.contains(Session, "before_flush", _invalidate_changed_users):
        sa_event.listen(Session, "before_flush", _invalidate_changed_users)


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
    return user_from_claims(claims)


def user_from_claims(claims: dict) -> User | None:
    """The active user of verified access-token ``claims`` whose session is live, else
    None (a refresh token's claims, a revoked session, an inactive user)."""
    if claims.get("type") != "access" or not isinstance(claims.get("exp"), (int, float)):
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
