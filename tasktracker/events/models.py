"""The events table: activity log, outbox, fan-out source and replay cursor (DESIGN.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from tasktracker.core.types import CreatedAt, Timestamp
from tasktracker.extensions import db

if TYPE_CHECKING:
    from tasktracker.auth.models import User

BigIntId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class Event(db.Model):
    """One change, written in the same transaction as the change itself.

    ``seq`` is a monotonically increasing id (the replay cursor). ``task_id`` and
    ``team_id`` are plain columns, not foreign keys, so the history outlives the
    rows. ``dispatched_at`` is NULL until the fan-out has run (the outbox).
    ``payload`` holds ``{"changes": {field: [old, new]}, ...}`` and whatever the
    fan-out needs (e.g. the task as the API returns it).
    """

    __tablename__ = "events"
    __table_args__ = (
        sa.Index("ix_events_task_seq", "task_id", "seq"),
        sa.Index("ix_events_undispatched", "dispatched_at", "seq"),
    )

    seq: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    type: Mapped[str] = mapped_column(sa.String(40))
    actor_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    task_id: Mapped[int | None] = mapped_column(sa.Integer)
    team_id: Mapped[int | None] = mapped_column(sa.Integer)
    payload: Mapped[dict] = mapped_column(sa.JSON, default=dict)
    created_at: Mapped[CreatedAt]
    dispatched_at: Mapped[Timestamp | None]

    actor: Mapped[User | None] = relationship(lazy="joined")
