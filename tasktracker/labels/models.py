"""Labels: team labels (``team_id`` set) and personal labels (``user_id`` set).

A label belongs to exactly one scope (CHECK ``ck_labels_one_scope``). Names are
unique per scope case-insensitively: the partial unique indexes on
``(team_id, lower(name))`` and ``(user_id, lower(name))`` settle concurrent
creates and renames (api-contract.md v1.1, "Labels": ``409``).
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from tasktracker.core.types import UTCDateTime, utcnow
from tasktracker.extensions import db

DEFAULT_COLOR = "#6b7280"


class Label(db.Model):
    """A label ``{id, name, color, team_id}``; ``color`` is ``#rrggbb`` (lower case)."""

    __tablename__ = "labels"
    __table_args__ = (
        sa.CheckConstraint("(team_id IS NULL) <> (user_id IS NULL)", name="ck_labels_one_scope"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(50))
    color: Mapped[str] = mapped_column(sa.String(7), default=DEFAULT_COLOR)
    team_id: Mapped[int | None] = mapped_column(sa.ForeignKey("teams.id", ondelete="CASCADE"))
    user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


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
