"""Tasks, their reminders and the idempotency keys of task creation."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from tasktracker.core.types import UTCDateTime, utcnow
from tasktracker.extensions import db

STATUSES = ("todo", "in_progress", "done")
PRIORITIES = ("low", "medium", "high", "urgent")


class Task(db.Model):
    """A task. ``version`` grows on every change (optimistic locking: SQLAlchemy's
    ``version_id_col`` makes every UPDATE conditional on the version read, so a
    concurrent writer gets ``StaleDataError`` instead of a lost update).
    ``deleted_at`` set means soft-deleted (in its owner's trash)."""

    __tablename__ = "tasks"
    __table_args__ = (
        sa.Index("ix_tasks_owner_created", "owner_id", "created_at"),
        sa.Index("ix_tasks_assignee_created", "assignee_id", "created_at"),
        sa.Index("ix_tasks_team_created", "team_id", "created_at"),
        sa.Index("ix_tasks_due_open", "due_at", "status"),
        # never reuse the id of a purged task on SQLite (events keep task_id as history)
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(sa.String(200))
    description: Mapped[str] = mapped_column(sa.Text, default="")
    status: Mapped[str] = mapped_column(sa.String(16), default="todo")
    priority: Mapped[str] = mapped_column(sa.String(16), default="medium")
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    owner_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"))
    assignee_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    team_id: Mapped[int | None] = mapped_column(sa.ForeignKey("teams.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    overdue_notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    version: Mapped[int] = mapped_column(default=1)

    owner = relationship("User", foreign_keys=[owner_id], lazy="joined")
    assignee = relationship("User", foreign_keys=[assignee_id], lazy="joined")
    reminders = relationship("Reminder", back_populates="task", lazy="selectin",
                             cascade="all, delete-orphan", order_by="Reminder.remind_at",
                             passive_deletes=True)

    __mapper_args__ = {"version_id_col": version}


class Reminder(db.Model):
    """A deadline reminder of a task; ``sent_at`` is set once, by the claim that sends it."""

    __tablename__ = "reminders"
    __table_args__ = (sa.Index("ix_reminders_due", "sent_at", "remind_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(sa.ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    remind_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    task = relationship("Task", back_populates="reminders")


class IdempotencyKey(db.Model):
    """The first result of a ``POST /api/tasks`` sent with an ``Idempotency-Key``.

    Unique per (user, key); ``request_hash`` is the SHA-256 of the canonical JSON
    body, so the same key with another body is refused. Kept 24 hours.
    """

    __tablename__ = "idempotency_keys"
    __table_args__ = (sa.UniqueConstraint("user_id", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(sa.String(255))
    request_hash: Mapped[str] = mapped_column(sa.String(64))
    task_id: Mapped[int | None] = mapped_column(sa.ForeignKey("tasks.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
