"""The calendar feed token (api-contract.md v1.1, "Calendar feed")."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from tasktracker.core.types import CreatedAt, IntPK
from tasktracker.extensions import db


class CalendarFeedToken(db.Model):
    """The secret in a user's feed URL (``/api/calendar/<token>.ics``), one per user.

    Stored as the SHA-256 hex of the token (256 random bits: a fast hash suffices, as
    for personal access tokens). Rotating replaces the hash in place, so the old URL
    stops matching with that commit; deleting removes the row."""

    __tablename__ = "calendar_feed_tokens"

    id: Mapped[IntPK]
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"), unique=True)
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    created_at: Mapped[CreatedAt]
