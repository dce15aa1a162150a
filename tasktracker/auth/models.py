"""Accounts: users and their login sessions (the token blocklist)."""

from __future__ import annotations

from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from tasktracker.core.types import CreatedAt, IntPK, Timestamp, UpdatedAt, enum_values, str_enum
from tasktracker.extensions import db


class SiteRole(StrEnum):
    """A user's role on the whole site (``User.role``)."""

    ADMIN = "admin"
    MEMBER = "member"


#: The site roles as plain strings (validators, OpenAPI enums).
ROLES = enum_values(SiteRole)


class User(db.Model):
    """A person with an account. ``role`` is a :class:`SiteRole` (``admin`` or ``member``).

    Emails are stored lower-cased; ``password_hash`` is an argon2 hash and is
    never serialised. Usernames and emails are unique case-insensitively: the
    unique indexes on ``lower(username)`` and ``lower(email)`` settle concurrent
    registrations and renames (``foo`` and ``FOO`` cannot both exist); they also
    serve the case-insensitive lookups (login, uniqueness checks).
    """

    __tablename__ = "users"

    id: Mapped[IntPK]
    username: Mapped[str] = mapped_column(sa.String(32))
    email: Mapped[str] = mapped_column(sa.String(254))
    password_hash: Mapped[str] = mapped_column(sa.String(255))
    full_name: Mapped[str] = mapped_column(sa.String(120), default="")
    role: Mapped[SiteRole] = mapped_column(str_enum(SiteRole, 16), default=SiteRole.MEMBER)
    timezone: Mapped[str] = mapped_column(sa.String(64), default="UTC")
    active: Mapped[bool] = mapped_column(default=True)
    #: contract v1.1 "Email": true once the user confirmed ``email`` through
    #: ``POST /api/auth/verify-email``; changing ``email`` sets it back to false.
    email_verified: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    created_at: Mapped[CreatedAt]
    updated_at: Mapped[UpdatedAt]
    last_seen_at: Mapped[Timestamp | None]

    @classmethod
    def attached(cls, columns: dict) -> "User":
        """A persistent user in the current DB session built from cached column values
        (the hot cache's ``USERS`` entries), without a query: the session's own instance
        if it holds one, else a new one attached as loaded (SQLAlchemy's
        ``make_transient_to_detached``, then ``add``)."""
        existing = db.session.identity_map.get(db.session.identity_key(cls, columns["id"]))
        if existing is not None:
            return existing
        user = cls(**columns)
        sa.orm.make_transient_to_detached(user)
        db.session.add(user)
        return user

    @property
    def is_admin(self) -> bool:
        return self.role == SiteRole.ADMIN

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
    created_at: Mapped[CreatedAt]
    expires_at: Mapped[Timestamp]
    revoked_at: Mapped[Timestamp | None]
