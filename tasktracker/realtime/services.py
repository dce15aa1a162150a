"""Database side of the real-time layer: rooms of a user, ``last_seen_at``, replay of
missed notifications and the team presence list (api-contract.md, "Real time")."""

from __future__ import annotations

import logging

import sqlalchemy as sa

from tasktracker.auth.models import User
from tasktracker.core.errors import TeamNotFound
from tasktracker.core.types import utcnow
from tasktracker.extensions import db
from tasktracker.notifications.models import Notification
from tasktracker.notifications.schemas import notification_schema
from tasktracker.teams.models import Team, TeamMember

log = logging.getLogger(__name__)


def user_room(user_id: int) -> str:
    return f"user:{user_id}"


def team_room(team_id: int) -> str:
    return f"team:{team_id}"


def task_room(task_id: int) -> str:
    return f"task:{task_id}"


def team_ids_of(user_id: int) -> list[int]:
    """Ids of the teams ``user_id`` belongs to (any role), ascending."""
    return list(db.session.scalars(
        sa.select(TeamMember.team_id).where(TeamMember.user_id == user_id).order_by(TeamMember.team_id)
    ))


def touch_last_seen(user_id: int) -> None:
    """Set ``User.last_seen_at`` to now and commit (errors are logged, never raised)."""
    try:
        db.session.execute(sa.update(User).where(User.id == user_id).values(last_seen_at=utcnow()))
        db.session.commit()
    except Exception:  # noqa: BLE001 - presence bookkeeping must not break a connection
        db.session.rollback()
        log.exception("realtime: could not update last_seen_at of user %s", user_id)


def missed_notifications(user_id: int, last_seq: int, limit: int) -> list[Notification]:
    """The user's notifications with ``event_seq > last_seq``, oldest first, at most ``limit``."""
    return list(db.session.scalars(
        sa.select(Notification)
        .where(Notification.user_id == user_id, Notification.event_seq > last_seq)
        .order_by(Notification.event_seq, Notification.id)
        .limit(limit)
    ))


def notification_payload(notification: Notification) -> dict:
    """A ``notification:new`` payload: the notification as the REST API returns it
    (which carries ``seq``, its ``event_seq``: the replay cursor). The same shape
    as the live ``notification:new`` events sent by the fan-out."""
    return notification_schema.dump(notification)


def team_presence_query(viewer: User, team_id: int) -> sa.Select:
    """Members of a team the viewer may read (member or site admin), ordered by user id.

    Raises :class:`TeamNotFound` (404 ``team_not_found``) for a missing team and for a
    team the viewer is not in (never reveal that it exists).
    """
    if db.session.get(Team, team_id) is None:
        raise TeamNotFound()
    if not viewer.is_admin and db.session.scalar(
        sa.select(TeamMember.user_id).where(TeamMember.team_id == team_id, TeamMember.user_id == viewer.id)
    ) is None:
        raise TeamNotFound()
    return (sa.select(TeamMember).where(TeamMember.team_id == team_id)
            .order_by(TeamMember.user_id))


def presence_items(members: list[TeamMember], online: set[int]) -> list[dict]:
    """``[{user_id, online, last_seen_at}]`` for the given memberships."""
    return [{"user_id": m.user_id, "online": m.user_id in online, "last_seen_at": m.user.last_seen_at}
            for m in members]
