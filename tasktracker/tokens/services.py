"""Personal access token rules (api-contract.md v1.1, "Personal access tokens";
RFC 6750 bearer tokens).

- Format: ``tt_pat_`` + 43 URL-safe base64 chars (32 random bytes from
  :mod:`secrets`, 256 bits). The prefix lets the auth layer tell a PAT from a JWT
  without parsing, and secret scanners recognise a leaked one.
- Storage: only ``sha256(token)`` (hex). :func:`authenticate` looks the row up by
  that hash and compares it again with ``hmac.compare_digest``: what could leak
  through timing is the hash of the guess, which says nothing about a valid token.
- Refusal at once, in every process: the lookup is cached in the hot cache's
  ``SESSIONS`` namespace (key ``("pat", hash)``), the namespace that every commit
  changing a user row (deactivation) or revoking a session drops in every process
  (``tasktracker.auth.tokens``' flush hook, broadcast on Redis); :func:`delete_token`
  drops it the same way. Expiry is checked against ``now`` on every call.
- ``last_used_at``: :func:`touch_last_used` writes at most once a minute per token
  (a conditional UPDATE, and an in-process memo that skips even that).
- Scopes: :func:`scope_allows` (``read``: GET/HEAD/OPTIONS only), and
  :func:`pat_forbidden_route` (what no PAT may do at all); both answer 403
  ``insufficient_scope`` (RFC 6750 §3.1) via :class:`InsufficientScope`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from tasktracker.auth.models import User
from tasktracker.core.errors import Forbidden, NotFound, Unprocessable
from tasktracker.core.hotcache import SESSIONS, USERS, defer_invalidation, hot_state
from tasktracker.core.types import utcnow
from tasktracker.extensions import db
from tasktracker.tokens.models import PersonalAccessToken

PREFIX = "tt_pat_"
TOKEN_BYTES = 32
TOKEN_LENGTH = len(PREFIX) + 43
DEFAULT_LIFETIME = timedelta(days=90)
MAX_LIFETIME = timedelta(days=365)
TOUCH_INTERVAL = timedelta(seconds=60)
TOUCH_RETRY = timedelta(seconds=5)
NAME_MAX = 100
READ, WRITE = "read", "write"
#: The scope sets a token may have (contract: ``["read"]`` or ``["read", "write"]``).
ALLOWED_SCOPES = ({READ}, {READ, WRITE})
#: Methods a ``read`` token may use.
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

_USER_COLUMNS = tuple(attr.key for attr in sa.inspect(User).column_attrs if attr.key != "last_seen_at")
_touched: dict[int, datetime] = {}
_touched_lock = threading.Lock()


class InsufficientScope(Forbidden):
    """403 ``insufficient_scope`` with the RFC 6750 §3 challenge
    (``WWW-Authenticate: Bearer error="insufficient_scope", scope="..."``)."""

    code, message = "insufficient_scope", "This token's scope does not allow this request."

    def __init__(self, message: str | None = None, *, scope: str = WRITE):
        super().__init__(message, headers={
            "WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'})


@dataclass(frozen=True)
class TokenIdentity:
    """What an authenticated PAT grants: its id, owner and scopes (plain values,
    cacheable across requests)."""

    token_id: int
    user_id: int
    scopes: tuple[str, ...]
    expires_at: datetime


def hash_token(raw: str) -> str:
    """SHA-256 hex of the whole token string (UTF-8)."""
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def generate() -> tuple[str, str]:
    """A fresh token and its hash: ``("tt_pat_<43 URL-safe chars>", sha256 hex)``."""
    raw = PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
    return raw, hash_token(raw)


def looks_like_pat(raw: str | None) -> bool:
    """Whether a bearer credential is meant as a PAT (the auth layer's switch)."""
    return isinstance(raw, str) and raw.startswith(PREFIX)


def _normalise_scopes(scopes) -> list[str]:
    if not isinstance(scopes, (list, tuple)) or not all(isinstance(s, str) for s in scopes) \
            or set(scopes) not in ALLOWED_SCOPES:
        raise Unprocessable(details={"scopes": ['Must be ["read"] or ["read", "write"].']})
    return sorted(set(scopes))


def create_token(user_id: int, name: str, scopes, expires_at: datetime | None = None, *,
                 now: datetime | None = None) -> tuple[PersonalAccessToken, str]:
    """Create a token for ``user_id``; commits. Returns ``(row, raw_token)``: the raw
    token goes into the 201 once and is never stored.

    422 (``details`` per field): ``name`` blank or over 100 chars; ``scopes`` not
    ``["read"]`` / ``["read", "write"]``; ``expires_at`` naive, not in the future or
    more than 1 year ahead. Default expiry: 90 days from ``now``."""
    now = now or utcnow()
    errors: dict[str, list[str]] = {}
    if not isinstance(name, str) or not name.strip() or len(name.strip()) > NAME_MAX:
        errors["name"] = [f"Must be 1 to {NAME_MAX} characters."]
    try:
        scopes = _normalise_scopes(scopes)
    except Unprocessable as exc:
        errors.update(exc.details)
    if expires_at is None:
        expires_at = now + DEFAULT_LIFETIME
    elif not isinstance(expires_at, datetime) or expires_at.tzinfo is None:
        errors["expires_at"] = ["Must be a time with an offset."]
    elif expires_at <= now:
        errors["expires_at"] = ["Must be in the future."]
    elif expires_at > now + MAX_LIFETIME:
        errors["expires_at"] = ["Must be at most 1 year from now."]
    if errors:
        raise Unprocessable(details=errors)
    raw, digest = generate()
    row = PersonalAccessToken(user_id=user_id, name=name.strip(), scopes=scopes, token_hash=digest,
                              token_prefix=raw[:len(PREFIX) + 4], created_at=now, expires_at=expires_at)
    db.session.add(row)
    db.session.commit()
    return row, raw


def _load(digest: str) -> dict | None:
    row = db.session.execute(
        sa.select(PersonalAccessToken.id, PersonalAccessToken.token_hash, PersonalAccessToken.scopes,
                  PersonalAccessToken.expires_at, PersonalAccessToken.revoked_at, User)
        .join(User, User.id == PersonalAccessToken.user_id)
        .where(PersonalAccessToken.token_hash == digest)).first()
    if row is None or row.revoked_at is not None:
        return None
    return {"token": {"token_id": row.id, "user_id": row.User.id, "scopes": tuple(row.scopes),
                      "expires_at": row.expires_at},
            "hash": row.token_hash,
            "user": {key: getattr(row.User, key) for key in _USER_COLUMNS}}


def authenticate(raw: str | None, *, now: datetime | None = None) -> tuple[TokenIdentity, User] | None:
    """The identity and user of a valid PAT, or None (then: 401).

    None when ``raw`` is not a well-formed ``tt_pat_`` token, unknown, deleted,
    expired at ``now``, or its user is inactive. In the common case no database
    round trip (hot cache, see the module doc); a miss costs one indexed query."""
    if not looks_like_pat(raw) or len(raw) != TOKEN_LENGTH:
        return None
    digest = hash_token(raw)
    found = hot_state().lookup(SESSIONS, ("pat", digest), lambda: _load(digest))
    if found is None or not hmac.compare_digest(found["hash"], digest):
        return None
    identity = TokenIdentity(**found["token"])
    if identity.expires_at <= (now or utcnow()) or not found["user"]["active"]:
        return None
    return identity, User.attached(found["user"])


def touch_last_used(token_id: int, *, now: datetime | None = None) -> bool:
    """Set ``last_used_at = now`` unless it was set less than 60 s before ``now``.

    Returns whether this call wrote. In its own short transaction (not the
    request's session), so a request that rolls back still counts as a use. An
    in-process memo skips the statement entirely within the minute (after a
    write that another process beat, for 5 s); the conditional
    ``UPDATE ... WHERE last_used_at IS NULL OR last_used_at <= now - 60 s`` keeps it
    to one write a minute across processes."""
    now = now or utcnow()
    with _touched_lock:
        last = _touched.get(token_id)
        if last is not None and now - last < TOUCH_INTERVAL:
            return False
        _touched[token_id] = now
    t = PersonalAccessToken.__table__
    with db.engine.begin() as conn:
        result = conn.execute(sa.update(t).where(
            t.c.id == token_id,
            sa.or_(t.c.last_used_at.is_(None), t.c.last_used_at <= now - TOUCH_INTERVAL))
            .values(last_used_at=now))
    wrote = result.rowcount == 1
    if not wrote:
        # another process wrote within the minute (when exactly is unknown): look
        # again in TOUCH_RETRY rather than on every request
        with _touched_lock:
            _touched[token_id] = now - TOUCH_INTERVAL + TOUCH_RETRY
    return wrote


def scope_allows(scopes, method: str) -> bool:
    """Whether a token with ``scopes`` may make a request with HTTP ``method``:
    ``write`` allows every method, ``read`` only GET, HEAD and OPTIONS."""
    return WRITE in scopes or method.upper() in READ_METHODS


def require_scope(scopes, method: str) -> None:
    """:class:`InsufficientScope` (403) unless :func:`scope_allows`."""
    if not scope_allows(scopes, method):
        raise InsufficientScope("A read-only token cannot change anything.", scope=WRITE)


#: (method, path) pairs no PAT may use whatever its scopes (contract: create or delete
#: tokens, change the profile or password, log out); a trailing ``/*`` matches a subtree.
PAT_FORBIDDEN = (
    ("POST", "/api/auth/tokens"), ("DELETE", "/api/auth/tokens/*"),
    ("PATCH", "/api/auth/profile"), ("PUT", "/api/auth/profile"),
    ("PATCH", "/api/auth/profile/*"), ("PUT", "/api/auth/profile/*"),
    ("POST", "/api/auth/logout"), ("POST", "/api/auth/refresh"),
    ("POST", "/api/auth/calendar-feed"), ("DELETE", "/api/auth/calendar-feed"),
)


def pat_forbidden_route(method: str, path: str) -> bool:
    """Whether ``method path`` is one no PAT may call (then 403 ``insufficient_scope``)."""
    method, path = method.upper(), path.rstrip("/") or "/"
    for m, pattern in PAT_FORBIDDEN:
        if m != method:
            continue
        if pattern.endswith("/*"):
            if path.startswith(pattern[:-1]):
                return True
        elif path == pattern:
            return True
    return False


def list_tokens(user_id: int) -> list[PersonalAccessToken]:
    """The user's tokens that were not deleted (expired ones included), newest first."""
    return list(db.session.scalars(
        sa.select(PersonalAccessToken)
        .where(PersonalAccessToken.user_id == user_id, PersonalAccessToken.revoked_at.is_(None))
        .order_by(PersonalAccessToken.created_at.desc(), PersonalAccessToken.id.desc())))


def delete_token(user_id: int, token_id: int, *, now: datetime | None = None) -> None:
    """Revoke the user's token (404 if not theirs or already deleted); commits. After
    the commit the cached lookups are dropped in every process and the user's live
    sockets re-checked (``USERS``), so the token is refused at once."""
    t = PersonalAccessToken
    changed = db.session.execute(
        sa.update(t).where(t.id == token_id, t.user_id == user_id, t.revoked_at.is_(None))
        .values(revoked_at=now or utcnow()).execution_options(synchronize_session=False))
    if changed.rowcount != 1:
        db.session.rollback()
        raise NotFound("Token not found.", code="token_not_found")
    defer_invalidation(db.session, SESSIONS)
    defer_invalidation(db.session, USERS, [user_id])
    db.session.commit()
    with _touched_lock:
        _touched.pop(token_id, None)
