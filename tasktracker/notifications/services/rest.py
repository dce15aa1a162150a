"""Notifications, REST-facing: the caller's list, unread count, read marks
(api-contract.md, "Notifications")."""

from __future__ import annotations

import sqlalchemy as sa

from tasktracker.core.db import MAX_BIGINT_ID, valid_id
from tasktracker.core.errors import NotificationNotFound
from tasktracker.core.types import utcnow
from tasktracker.extensions import db
from tasktracker.notifications.models import Notification


def notifications_query(user_id: int, *, unread: bool = False) -> sa.Select:
    """The user's notifications, newest first (``created_at``, then ``id``, descending);
    only unread ones when ``unread``."""
    query = sa.select(Notification).where(Notification.user_id == user_id)
    if unread:
        query = query.where(Notification.read_at.is_(None))
    return query.order_by(Notification.created_at.desc(), Notification.id.desc())


def unread_count(user_id: int) -> int:
    """How many of the user's notifications are unread."""
    return db.session.scalar(
        sa.select(sa.func.count()).select_from(Notification)
        .where(Notification.user_id == user_id, Notification.read_at.is_(None))
    ) or 0


def get_own_notification(user_id: int, notification_id: int) -> Notification:
    """The notification if it belongs to ``user_id``; anyone else's (or a missing
    one) raises :class:`NotFound` (404 ``notification_not_found``)."""
    notification = None
    if valid_id(notification_id, bound=MAX_BIGINT_ID):
        notification = db.session.get(Notification, notification_id)
    if notification is None or notification.user_id != user_id:
        raise NotificationNotFound()
    return notification


def set_read(user_id: int, notification_id: int, read: bool) -> Notification:
    """Mark one of the caller's notifications read (``read_at`` = now, kept if it was
    already read) or unread (``read_at`` = null). 404 for anyone else's."""
    notification = get_own_notification(user_id, notification_id)
    if read and notification.read_at is None:
        notification.read_at = utcnow()
    elif not read:
        notification.read_at = None
    db.session.commit()
    return notification


def read_all(user_id: int) -> int:
    """Mark every unread notification of the user read; returns how many changed."""
    result = db.session.execute(
        sa.update(Notification.__table__)
        .where(Notification.__table__.c.user_id == user_id, Notification.__table__.c.read_at.is_(None))
        .values(read_at=utcnow())
    )
    db.session.commit()
    return result.rowcount
