"""File attachments of tasks (metadata; the bytes live in ``UPLOAD_DIR``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from tasktracker.core.types import CreatedAt, IntPK
from tasktracker.extensions import db

if TYPE_CHECKING:
    from tasktracker.auth.models import User


class Attachment(db.Model):
    """An uploaded file. ``stored_name`` is random (never derived from the client's
    ``filename``, which is display metadata only)."""

    __tablename__ = "attachments"

    id: Mapped[IntPK]
    task_id: Mapped[int] = mapped_column(sa.ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    uploaded_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    filename: Mapped[str] = mapped_column(sa.String(255))
    stored_name: Mapped[str] = mapped_column(sa.String(64), unique=True)
    content_type: Mapped[str] = mapped_column(sa.String(255))
    size: Mapped[int] = mapped_column(sa.BigInteger)
    sha256: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[CreatedAt]

    uploaded_by: Mapped[User | None] = relationship(lazy="joined")
