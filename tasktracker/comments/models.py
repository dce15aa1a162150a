"""Comments on tasks."""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from tasktracker.core.types import CreatedAt, IntPK, UpdatedAt
from tasktracker.extensions import db

if TYPE_CHECKING:
    from tasktracker.auth.models import User


class Comment(db.Model):
    """A comment (1..10000 chars) by ``author`` on a task; removed with the task."""

    __tablename__ = "comments"
    __table_args__ = (sa.Index("ix_comments_task_created", "task_id", "created_at"),)

    id: Mapped[IntPK]
    task_id: Mapped[int] = mapped_column(sa.ForeignKey("tasks.id", ondelete="CASCADE"))
    author_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    body: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[CreatedAt]
    updated_at: Mapped[UpdatedAt]

    author: Mapped[User | None] = relationship(lazy="joined")
    #: The users ``@mentioned`` in the body who could see the task (api-contract.md v1.1).
    mentions: Mapped[list[User]] = relationship(secondary="comment_mentions", lazy="selectin",
                                                order_by="User.id", passive_deletes=True)


class CommentMention(db.Model):
    """``user_id`` is mentioned (``@username``) in ``comment_id``'s current body and
    could see the task when it was written (api-contract.md v1.1, "Watchers and
    mentions"). The primary key makes each mention notify once: an edit inserts
    only the new mentions (and deletes those no longer in the body)."""

    __tablename__ = "comment_mentions"

    comment_id: Mapped[int] = mapped_column(sa.ForeignKey("comments.id", ondelete="CASCADE"),
                                            primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"),
                                         primary_key=True)
