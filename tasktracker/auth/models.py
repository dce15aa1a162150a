"""Accounts: users and their login sessions (the token blocklist)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from tasktracker.core.types import UTCDateTime, utcnow
from tasktracker.extensions import db

ROLES = ("admin", "member")


class User(db.Model):
    """A person with an account. ``role`` is ``admin`` or ``member``.

    Emails are stored lower-cased; ``password_hash`` is an argon2 hash and is
    never serialised. Usernames and emails are unique case-insensitively: the
    unique indexes on ``lower(username)`` and ``lower(email)`` settle concurrent
    registrations and renames (``foo`` and ``FOO`` cannot both exist); they also
    serve the case-insensitive lookups (login, uniqueness checks).
    """

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(sa.String(32))
    email: Mapped[str] = mapped_column(sa.String(254))
    password_hash: Mapped[str] = mapped_column(sa.String(255))
    full_name: Mapped[str] = mapped_column(sa.String(120), default="")
    role: Mapped[str] = mapped_column(sa.String(16), default="member")
    timezone: Mapped[str] = mapped_column(sa.String(64), default="UTC")
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def __repr__(self) -> str:
        return f"<User {self.id} {self.username}>"


sa.Index("uq_users_username_lower", sa.func.lower(User.username), unique=True)
sa.Index("uq_users_email_lower", sa.func.lower(User.email), unique=True)


class AuthSession(db.Model):
    """One login: the access and refresh tokens it issues carry its id as ``sid``.

    This table is the token blocklist: logout sets ``revoked_at`` and both the
    access and the refresh token of the session then answer 401; a password
    change revokes every other session of the user. Works across processes
    because it lives in the database.
    """

    __tablename__ = "auth_sessions"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
