"""Notifications: one row per (event, recipient), created by the fan-out."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from tasktracker.core.types import CreatedAt, IntPK, Timestamp, enum_values, str_enum
from tasktracker.events.models import BigIntId
from tasktracker.extensions import db

if TYPE_CHECKING:
    from tasktracker.auth.models import User


class NotificationType(StrEnum):
    """What a notification tells its recipient (``Notification.type``)."""

    TASK_ASSIGNED = "task_assigned"
    TASK_UPDATED = "task_updated"
    TASK_STATUS_CHANGED = "task_status_changed"
    TASK_DELETED = "task_deleted"
    COMMENT_ADDED = "comment_added"
    DEADLINE_REMINDER = "deadline_reminder"
    TASK_OVERDUE = "task_overdue"
    TEAM_INVITATION = "team_invitation"
    INVITATION_ACCEPTED = "invitation_accepted"
    MENTIONED = "mentioned"
    WEBHOOK_DISABLED = "webhook_disabled"


#: The notification types as plain strings (OpenAPI enums).
NOTIFICATION_TYPES = enum_values(NotificationType)


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

    id: Mapped[IntPK]
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"))
    event_seq: Mapped[int] = mapped_column(BigIntId, sa.ForeignKey("events.seq", ondelete="CASCADE"))
    type: Mapped[NotificationType] = mapped_column(str_enum(NotificationType, 40))
    message: Mapped[str] = mapped_column(sa.String(500))
    task_id: Mapped[int | None] = mapped_column(sa.ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    team_id: Mapped[int | None] = mapped_column(sa.ForeignKey("teams.id", ondelete="SET NULL"))
    actor_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    data: Mapped[dict] = mapped_column(sa.JSON, default=dict)
    read_at: Mapped[Timestamp | None]
    created_at: Mapped[CreatedAt]

    actor: Mapped[User | None] = relationship(foreign_keys=[actor_id], lazy="joined")
