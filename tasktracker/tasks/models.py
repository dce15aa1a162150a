"""Tasks and what belongs to them: reminders, labels, checklist items, watchers, and
the idempotency keys of task creation."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, lazyload, mapped_column, relationship

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
        sa.Index("uq_tasks_recurrence_of", "recurrence_of", unique=True),
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
    # recurrence (tasktracker.tasks.recurrence): the RRULE, "due" | "completion", this
    # task's occurrence number in its series, the finished task it follows (unique:
    # one next occurrence per task, settled by the database), and when this task's
    # own next occurrence was created (the claim, set once)
    recurrence_rule: Mapped[str | None] = mapped_column(sa.String(500))
    recurrence_from: Mapped[str | None] = mapped_column(sa.String(16))
    recurrence_index: Mapped[int] = mapped_column(default=1, server_default="1")
    recurrence_of: Mapped[int | None] = mapped_column(
        sa.ForeignKey("tasks.id", ondelete="SET NULL"))
    next_occurrence_created_at: Mapped[Timestamp | None]

    owner: Mapped[User] = relationship(foreign_keys=[owner_id], lazy="joined")
    assignee: Mapped[User | None] = relationship(foreign_keys=[assignee_id], lazy="joined")
    reminders: Mapped[list[Reminder]] = relationship(
        back_populates="task", lazy="selectin", cascade="all, delete-orphan",
        order_by="Reminder.remind_at", passive_deletes=True)
    labels: Mapped[list[Label]] = relationship(
        secondary="task_labels", lazy="selectin", passive_deletes=True,
        order_by=lambda: [sa.func.lower(Label.name), Label.id])
    checklist: Mapped[list[ChecklistItem]] = relationship(
        lazy="selectin", cascade="all, delete-orphan", passive_deletes=True,
        order_by=lambda: [ChecklistItem.position, ChecklistItem.id])

    __mapper_args__ = {"version_id_col": version}

    @property
    def recurrence(self) -> dict | None:
        """``{rule, from}`` (api-contract.md v1.1), or None for a one-off task."""
        if self.recurrence_rule is None:
            return None
        return {"rule": self.recurrence_rule, "from": self.recurrence_from}


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


LABEL_DEFAULT_COLOR = "#6b7280"


class Label(db.Model):
    """A label ``{id, name, color, team_id}``; ``color`` is ``#rrggbb`` (lower case).

    A label belongs to a team (``team_id``) or to the user who made it
    (``user_id``), never both (CHECK ``ck_labels_one_scope``). Names are unique per
    scope case-insensitively: the partial unique indexes on ``(team_id,
    lower(name))`` and ``(user_id, lower(name))`` settle concurrent creates and
    renames (api-contract.md v1.1, "Labels": 409).
    """

    __tablename__ = "labels"
    __table_args__ = (
        sa.CheckConstraint("(team_id IS NULL) <> (user_id IS NULL)", name="one_scope"),
    )

    id: Mapped[IntPK]
    name: Mapped[str] = mapped_column(sa.String(50))
    color: Mapped[str] = mapped_column(sa.String(7), default=LABEL_DEFAULT_COLOR)
    team_id: Mapped[int | None] = mapped_column(sa.ForeignKey("teams.id", ondelete="CASCADE"))
    user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[CreatedAt]


_TEAM_SCOPE = Label.team_id.is_not(None)
_PERSONAL_SCOPE = Label.team_id.is_(None)
sa.Index("uq_labels_team_name_lower", Label.team_id, sa.func.lower(Label.name), unique=True,
         postgresql_where=_TEAM_SCOPE, sqlite_where=_TEAM_SCOPE)
sa.Index("uq_labels_user_name_lower", Label.user_id, sa.func.lower(Label.name), unique=True,
         postgresql_where=_PERSONAL_SCOPE, sqlite_where=_PERSONAL_SCOPE)


class TaskLabel(db.Model):
    """A label on a task. The primary key (task, label) makes a label appear once per
    task; ``ix_task_labels_label`` serves ``GET /api/tasks?label_id=`` (tasks of a
    label) and the removal of a deleted label from its tasks."""

    __tablename__ = "task_labels"
    __table_args__ = (sa.Index("ix_task_labels_label", "label_id", "task_id"),)

    task_id: Mapped[int] = mapped_column(sa.ForeignKey("tasks.id", ondelete="CASCADE"),
                                         primary_key=True)
    label_id: Mapped[int] = mapped_column(sa.ForeignKey("labels.id", ondelete="CASCADE"),
                                          primary_key=True)


CHECKLIST_MAX_ITEMS = 200


class ChecklistItem(db.Model):
    """``{id, text, done, position}``: ``position`` counts from 0 in the task's list.

    Positions are kept dense (0..n-1) by the services, which change a checklist only
    while holding the task's row lock, so concurrent inserts never share a position.
    """

    __tablename__ = "checklist_items"
    __table_args__ = (sa.Index("ix_checklist_items_task_position", "task_id", "position"),)

    id: Mapped[IntPK]
    task_id: Mapped[int] = mapped_column(sa.ForeignKey("tasks.id", ondelete="CASCADE"))
    text: Mapped[str] = mapped_column(sa.String(500))
    done: Mapped[bool] = mapped_column(default=False)
    position: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[CreatedAt]


class TaskWatcher(db.Model):
    """``user_id`` watches ``task_id`` (once: the primary key). ``ix_task_watchers_user``
    serves ``GET /api/tasks?watching=true``."""

    __tablename__ = "task_watchers"
    __table_args__ = (sa.Index("ix_task_watchers_user", "user_id", "task_id"),)

    task_id: Mapped[int] = mapped_column(sa.ForeignKey("tasks.id", ondelete="CASCADE"),
                                         primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"),
                                         primary_key=True)
    created_at: Mapped[CreatedAt]


#: Loader options for a task read for its columns and people only (who may see it, who
#: hears of it): its collections (reminders, labels, checklist, ``lazy="selectin"``) load
#: when first touched instead of by three SELECTs up front.
WITHOUT_COLLECTIONS = (lazyload(Task.reminders), lazyload(Task.labels), lazyload(Task.checklist))
