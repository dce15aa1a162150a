"""Teams, their memberships and invitations."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from tasktracker.core.types import CreatedAt, IntPK, Timestamp, UpdatedAt, enum_values, str_enum
from tasktracker.extensions import db

if TYPE_CHECKING:
    from tasktracker.auth.models import User


class TeamRole(StrEnum):
    """A member's role in a team (``TeamMember.role``, ``Invitation.role``)."""

    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"


class InvitationStatus(StrEnum):
    """Where an invitation stands (``Invitation.status``).

    ``expired`` is stored when a pending invitation past ``expires_at`` makes way
    for a new one to the same address (the API shows any pending invitation past
    ``expires_at`` as ``expired`` anyway).
    """

    PENDING = "pending"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    REVOKED = "revoked"
    EXPIRED = "expired"


#: The team roles and invitation statuses as plain strings (validators, OpenAPI enums).
TEAM_ROLES = enum_values(TeamRole)
INVITATION_STATUSES = enum_values(InvitationStatus)


class Team(db.Model):
    """A team; its creator is its ``owner`` (also a :class:`TeamMember` with role owner)."""

    __tablename__ = "teams"

    id: Mapped[IntPK]
    name: Mapped[str] = mapped_column(sa.String(100))
    description: Mapped[str] = mapped_column(sa.Text, default="")
    owner_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), index=True)
    created_at: Mapped[CreatedAt]
    updated_at: Mapped[UpdatedAt]

    owner: Mapped[User] = relationship(lazy="joined")


class TeamMember(db.Model):
    """Membership of a user in a team with a :class:`TeamRole` (``owner | admin | member``)."""

    __tablename__ = "team_members"

    team_id: Mapped[int] = mapped_column(sa.ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True)
    role: Mapped[TeamRole] = mapped_column(str_enum(TeamRole, 16), default=TeamRole.MEMBER)
    joined_at: Mapped[CreatedAt]

    user: Mapped[User] = relationship(lazy="joined")


class Invitation(db.Model):
    """An invitation of an email address into a team; expires after ``INVITATION_TTL``.

    At most one ``pending`` invitation per team and address (case-insensitive):
    the partial unique index ``uq_invitations_pending_team_email`` settles
    concurrent invitations (tasktracker.teams.services.create_invitation).
    """

    __tablename__ = "invitations"

    id: Mapped[IntPK]
    team_id: Mapped[int] = mapped_column(sa.ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(sa.String(254), index=True)
    role: Mapped[TeamRole] = mapped_column(str_enum(TeamRole, 16), default=TeamRole.MEMBER)
    status: Mapped[InvitationStatus] = mapped_column(str_enum(InvitationStatus, 16),
                                                     default=InvitationStatus.PENDING)
    invited_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[CreatedAt]
    expires_at: Mapped[Timestamp]
    responded_at: Mapped[Timestamp | None]

    team: Mapped[Team] = relationship(lazy="joined")


_PENDING = Invitation.status == InvitationStatus.PENDING
sa.Index("uq_invitations_pending_team_email", Invitation.team_id, sa.func.lower(Invitation.email),
         unique=True, postgresql_where=_PENDING, sqlite_where=_PENDING)
