"""Checklist items of a task, ordered by ``position`` (then ``id``)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from tasktracker.core.types import UTCDateTime, utcnow
from tasktracker.extensions import db

MAX_ITEMS = 200


class ChecklistItem(db.Model):
    """``{id, text, done, position}``: ``position`` counts from 0 in the task's list.

    Positions are kept dense (0..n-1) by the services, which change a checklist only
    while holding the task's row lock, so concurrent inserts never share a position.
    """

    __tablename__ = "checklist_items"
    __table_args__ = (sa.Index("ix_checklist_items_task_position", "task_id", "position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(sa.ForeignKey("tasks.id", ondelete="CASCADE"))
    text: Mapped[str] = mapped_column(sa.String(500))
    done: Mapped[bool] = mapped_column(default=False)
    position: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
