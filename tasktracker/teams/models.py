"""Teams, their memberships and invitations."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from tasktracker.core.types import UTCDateTime, utcnow
from tasktracker.extensions import db

TEAM_ROLES = ("owner", "admin", "member")
#: ``expired`` is stored when a pending invitation past ``expires_at`` makes way
#: for a new one to the same address (the API shows any pending invitation past
#: ``expires_at`` as ``expired`` anyway).
INVITATION_STATUSES = ("pending", "accepted", "declined", "revoked", "expired")


class Team(db.Model):
    """A team; its creator is its ``owner`` (also a :class:`TeamMember` with role owner)."""

    __tablename__ = "teams"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(100))
    description: Mapped[str] = mapped_column(sa.Text, default="")
    owner_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    owner = relationship("User", lazy="joined")


class TeamMember(db.Model):
    """Membership of a user in a team with a role ``owner | admin | member``."""

    __tablename__ = "team_members"

    team_id: Mapped[int] = mapped_column(sa.ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True)
    role: Mapped[str] = mapped_column(sa.String(16), default="member")
    joined_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    user = relationship("User", lazy="joined")


class Invitation(db.Model):
    """An invitation of an email address into a team; expires after ``INVITATION_TTL``.

    At most one ``pending`` invitation per team and address (case-insensitive):
    the partial unique index ``uq_invitations_pending_team_email`` settles
    concurrent invitations (tasktracker.teams.services.create_invitation).
    """

    __tablename__ = "invitations"

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(sa.ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(sa.String(254), index=True)
    role: Mapped[str] = mapped_column(sa.String(16), default="member")
    status: Mapped[str] = mapped_column(sa.String(16), default="pending")
    invited_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    responded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    team = relationship("Team", lazy="joined")


_PENDING = Invitation.status == "pending"
sa.Index("uq_invitations_pending_team_email", Invitation.team_id, sa.func.lower(Invitation.email),
         unique=True, postgresql_where=_PENDING, sqlite_where=_PENDING)
