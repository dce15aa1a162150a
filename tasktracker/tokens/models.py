"""The personal access token row (api-contract.md v1.1, "Personal access tokens")."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from tasktracker.core.types import CreatedAt, IntPK, Timestamp
from tasktracker.extensions import db


class PersonalAccessToken(db.Model):
    """A long-lived bearer credential of one user.

    Only ``token_hash`` identifies the token: the SHA-256 (hex) of the whole token
    string. A fast hash is the right one here (unlike passwords): the token is 256
    random bits, so there is nothing to guess and nothing for a slow hash to slow
    down; a leaked table gives no usable token, and a lookup by hash costs one
    indexed read per request (argon2 would cost ~50 ms on every API call).
    ``token_prefix`` (``tt_pat_`` + 4 chars) is kept only to let a person recognise
    their token in a list. ``scopes`` is ``["read"]`` or ``["read", "write"]``.
    ``revoked_at`` set = deleted by its owner (the row stays for the audit trail).
    """

    __tablename__ = "personal_access_tokens"
    __table_args__ = (sa.Index("ix_pat_user_created", "user_id", "created_at"),)

    id: Mapped[IntPK]
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(sa.String(100))
    scopes: Mapped[list] = mapped_column(sa.JSON)
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    token_prefix: Mapped[str] = mapped_column(sa.String(16))
    created_at: Mapped[CreatedAt]
    expires_at: Mapped[Timestamp]
    last_used_at: Mapped[Timestamp | None]
    revoked_at: Mapped[Timestamp | None]
