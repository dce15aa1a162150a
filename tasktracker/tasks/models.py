"""Tasks, their reminders and the idempotency keys of task creation."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from tasktracker.core.types import (
    CreatedAt, IntPK, Timestamp, UTCDateTime, enum_values, str_enum, utcnow,
)
from tasktracker.extensions import db

if TYPE_CHECKING:
    from tasktracker.auth.models import User


class TaskStatus(StrEnum):
    """Where a task stands (``Task.status``)."""

    TODO = "todo"
    IN_PROGRESS = "in_progress"
    DONE = "done"


class TaskPriority(StrEnum):
    """How urgent a task is (``Task.priority``)."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    URGENT = "urgent"


#: The statuses and priorities as plain strings (validators, OpenAPI enums).
STATUSES = enum_values(TaskStatus)
PRIORITIES = enum_values(TaskPriority)


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

    id: Mapped[IntPK]
    title: Mapped[str] = mapped_column(sa.String(200))
    description: Mapped[str] = mapped_column(sa.Text, default="")
    status: Mapped[TaskStatus] = mapped_column(str_enum(TaskStatus, 16), default=TaskStatus.TODO)
    priority: Mapped[TaskPriority] = mapped_column(str_enum(TaskPriority, 16),
                                                   default=TaskPriority.MEDIUM)
    due_at: Mapped[Timestamp | None]
    owner_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"))
    assignee_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    team_id: Mapped[int | None] = mapped_column(sa.ForeignKey("teams.id", ondelete="SET NULL"))
    created_at: Mapped[CreatedAt]
    # the services set it themselves (no ``onupdate``), so not ``UpdatedAt``
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    completed_at: Mapped[Timestamp | None]
    deleted_at: Mapped[Timestamp | None] = mapped_column(index=True)
    overdue_notified_at: Mapped[Timestamp | None]
    version: Mapped[int] = mapped_column(default=1)

    owner: Mapped[User] = relationship(foreign_keys=[owner_id], lazy="joined")
    assignee: Mapped[User | None] = relationship(foreign_keys=[assignee_id], lazy="joined")
    reminders: Mapped[list[Reminder]] = relationship(
        back_populates="task", lazy="selectin", cascade="all, delete-orphan",
        order_by="Reminder.remind_at", passive_deletes=True)

    __mapper_args__ = {"version_id_col": version}


class Reminder(db.Model):
    """A deadline reminder of a task; ``sent_at`` is set once, by the claim that sends it."""

    __tablename__ = "reminders"
    __table_args__ = (sa.Index("ix_reminders_due", "sent_at", "remind_at"),)

    id: Mapped[IntPK]
    task_id: Mapped[int] = mapped_column(sa.ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    remind_at: Mapped[Timestamp]
    sent_at: Mapped[Timestamp | None]
    created_at: Mapped[CreatedAt]

    task: Mapped[Task] = relationship(back_populates="reminders")


class IdempotencyKey(db.Model):
    """The first result of a ``POST /api/tasks`` sent with an ``Idempotency-Key``.

    Unique per (user, key); ``request_hash`` is the SHA-256 of the canonical JSON
    body, so the same key with another body is refused. Kept 24 hours.
    """

    __tablename__ = "idempotency_keys"
    __table_args__ = (sa.UniqueConstraint("user_id", "key"),)

    id: Mapped[IntPK]
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(sa.String(255))
    request_hash: Mapped[str] = mapped_column(sa.String(64))
    task_id: Mapped[int | None] = mapped_column(sa.ForeignKey("tasks.id", ondelete="CASCADE"))
    created_at: Mapped[CreatedAt] = mapped_column(index=True)
