"""Single-use account tokens: password reset (1 h) and email verification
(contract v1.1 "Email").

A raw token is ``secrets.token_urlsafe(32)`` (256 random bits); the database keeps
its SHA-256 hex digest only (:class:`tasktracker.mail.models.UserToken`), so a
leaked table cannot be replayed. Consuming is one conditional UPDATE:
``UPDATE user_tokens SET used_at = now WHERE token_hash = :h AND purpose = :p AND
used_at IS NULL AND expires_at > now RETURNING ...``: of two concurrent uses exactly
one gets the row. The caller commits.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from tasktracker.core.errors import Unprocessable
from tasktracker.extensions import db
from tasktracker.mail.models import TokenPurpose, UserToken

PASSWORD_RESET_TTL = timedelta(hours=1)
VERIFICATION_TTL = timedelta(hours=48)


class InvalidToken(Unprocessable):
    """A used, expired, unknown or someone else's token (422). ``code`` is
    ``invalid_reset_token`` for password resets (the contract's code) and
    ``invalid_verification_token`` for email verification."""


_CODES = {TokenPurpose.PASSWORD_RESET: ("invalid_reset_token", "This password reset link is invalid or has expired."),
          TokenPurpose.VERIFY_EMAIL: ("invalid_verification_token",
                                      "This verification link is invalid or has expired.")}


def hash_token(raw: str) -> str:
    """The SHA-256 hex digest stored for ``raw``."""
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def create_token(user_id: int, email: str, purpose: TokenPurpose | str, now: datetime,
                 ttl: timedelta) -> str:
    """Store a new token of ``purpose`` for ``user_id``, issued for address ``email``,
    valid from ``now`` (aware UTC) for ``ttl``. Returns the raw token (put it in the
    email; it is not stored). The caller commits."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    raw = secrets.token_urlsafe(32)
    db.session.add(UserToken(user_id=user_id, purpose=TokenPurpose(purpose), token_hash=hash_token(raw),
                             email=email.lower(), created_at=now, expires_at=now + ttl))
    db.session.flush()
    return raw


@dataclass(frozen=True)
class ConsumedToken:
    """What a consumed token was for: its user and the address it was issued to."""

    user_id: int
    email: str


def consume_token(raw: str, purpose: TokenPurpose | str, now: datetime, *,
                  user_id: int | None = None) -> ConsumedToken:
    """Use ``raw`` once for ``purpose`` at ``now``.

    Valid only if it is of that purpose, unused, ``expires_at > now``, belongs to
    ``user_id`` when one is given (an authenticated caller verifying *their*
    address), and, for ``verify_email``, was issued for the user's current address
    (changing the email makes older verification links void). Consuming a password
    reset token also voids every other unused reset token of the user.

    Raises :class:`InvalidToken` with the purpose's code otherwise; the same error for
    every cause, so the answer tells nothing about which. The caller commits.
    """
    from tasktracker.auth.models import User

    purpose = TokenPurpose(purpose)
    code, message = _CODES[purpose]
    if not isinstance(raw, str) or not raw or len(raw) > 200:
        raise InvalidToken(message, code=code)
    table = UserToken.__table__
    conditions = [table.c.token_hash == hash_token(raw), table.c.purpose == purpose.value,
                  table.c.used_at.is_(None), table.c.expires_at > now]
    if user_id is not None:
        conditions.append(table.c.user_id == user_id)
    if purpose is TokenPurpose.VERIFY_EMAIL:
        current = sa.select(sa.func.lower(User.email)).where(User.id == table.c.user_id).scalar_subquery()
        conditions.append(table.c.email == current)
    row = db.session.execute(
        sa.update(table).where(*conditions).values(used_at=now)
        .returning(table.c.user_id, table.c.email)).first()
    if row is None:
        raise InvalidToken(message, code=code)
    if purpose is TokenPurpose.PASSWORD_RESET:
        db.session.execute(sa.update(table).where(
            table.c.user_id == row.user_id, table.c.purpose == purpose.value,
            table.c.used_at.is_(None)).values(used_at=now))
    return ConsumedToken(user_id=row.user_id, email=row.email)


def purge_expired(now: datetime, *, keep: timedelta = timedelta(days=7)) -> int:
    """Delete tokens that expired more than ``keep`` before ``now``; returns how many.
    The caller commits (a beat job, e.g. next to the idempotency-key purge)."""
    return db.session.execute(sa.delete(UserToken).where(UserToken.expires_at < now - keep)).rowcount
