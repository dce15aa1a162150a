"""Notifications: one row per (event, recipient), created by the fan-out."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from tasktracker.core.types import UTCDateTime, utcnow
from tasktracker.extensions import db
from tasktracker.events.models import BigIntId

NOTIFICATION_TYPES = (
    "task_assigned", "task_updated", "task_status_changed", "task_deleted", "comment_added",
    "deadline_reminder", "task_overdue", "team_invitation", "invitation_accepted",
)


class Notification(db.Model):
    """A notification for ``user_id``. Unique per (``event_seq``, ``user_id``) so a
    redelivered fan-out job creates nothing twice; ``event_seq`` is also the
    replay cursor (``last_seq``) of Socket.IO clients."""

    __tablename__ = "notifications"
    __table_args__ = (
        sa.UniqueConstraint("event_seq", "user_id"),
        sa.Index("ix_notifications_user_created", "user_id", "created_at"),
        sa.Index("ix_notifications_user_seq", "user_id", "event_seq"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"))
    event_seq: Mapped[int] = mapped_column(BigIntId, sa.ForeignKey("events.seq", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(sa.String(40))
    message: Mapped[str] = mapped_column(sa.String(500))
    task_id: Mapped[int | None] = mapped_column(sa.ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    team_id: Mapped[int | None] = mapped_column(sa.ForeignKey("teams.id", ondelete="SET NULL"))
    actor_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    data: Mapped[dict] = mapped_column(sa.JSON, default=dict)
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    actor = relationship("User", foreign_keys=[actor_id], lazy="joined")
