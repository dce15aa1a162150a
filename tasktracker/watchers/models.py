"""Who watches which task, and who is mentioned in which comment."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from tasktracker.core.types import UTCDateTime, utcnow
from tasktracker.extensions import db


class TaskWatcher(db.Model):
    """``user_id`` watches ``task_id`` (once: the primary key). ``ix_task_watchers_user``
    serves ``GET /api/tasks?watching=true``."""

    __tablename__ = "task_watchers"
    __table_args__ = (sa.Index("ix_task_watchers_user", "user_id", "task_id"),)

    task_id: Mapped[int] = mapped_column(sa.ForeignKey("tasks.id", ondelete="CASCADE"),
                                         primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"),
                                         primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

