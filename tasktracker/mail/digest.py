"""The daily digest (contract v1.1 "Email"): at ``digest_hour`` in the user's
``timezone``, the unread notifications since the last digest and the tasks due that
local day or overdue; none when there is nothing; never two for one local day.

A user is *due* when the digest is on (``daily``), the account is active, the local
wall-clock hour now is ``>= digest_hour`` and no digest decision was taken for
today's local date (``NotificationSettings.last_digest_on``). On a day when
``digest_hour`` does not exist (spring forward, e.g. 02:00 in Europe/Berlin on the
last Sunday of March) the digest goes at the first instant after it (03:00); when it
exists twice (fall back) it goes at the first. A day with nothing to tell is
recorded too, so no digest arrives later that day. The outbox row's
``dedupe_key`` ``digest:<user>:<local date>`` is unique, so two beats at once write
one row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone

import sqlalchemy as sa

from tasktracker.core.types import utcnow
from tasktracker.extensions import db
from tasktracker.mail.models import DigestFrequency, EmailKind, EmailStatus, NotificationSettings
from tasktracker.mail.render import user_zone

#: At most this many notifications and tasks in one digest.
DIGEST_LIMIT = 100
#: Without an earlier digest, notifications of the last this long count.
FIRST_DIGEST_WINDOW = timedelta(hours=24)


@dataclass
class DigestPlan:
    """A digest due now for ``user_id``: its ``local_date`` (in the user's zone) and the
    ids of the unread notifications and the due/overdue tasks it lists."""

    user_id: int
    to_address: str
    local_date: date
    notification_ids: list[int] = field(default_factory=list)
    task_ids: list[int] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.notification_ids and not self.task_ids

    @property
    def dedupe_key(self) -> str:
        return f"digest:{self.user_id}:{self.local_date.isoformat()}"


def local_day_bounds(local_date: date, zone) -> tuple[datetime, datetime]:
    """``[start, end)`` of ``local_date`` in ``zone`` as aware UTC datetimes (23 or 25
    hours long on DST change days)."""
    start = datetime.combine(local_date, time(0), tzinfo=zone).astimezone(timezone.utc)
    end = datetime.combine(local_date + timedelta(days=1), time(0), tzinfo=zone).astimezone(timezone.utc)
    return start, end


def plan_digests(now: datetime | None = None) -> list[DigestPlan]:
    """Every user due a digest decision at ``now`` (aware), with its content; plans
    may be empty (nothing to tell). Two queries per due user."""
    from tasktracker.auth.models import User
    from tasktracker.notifications.models import Notification
    from tasktracker.tasks.models import Task

    now = now or utcnow()
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    rows = db.session.execute(
        sa.select(NotificationSettings, User.email, User.timezone)
        .join(User, User.id == NotificationSettings.user_id)
        .where(NotificationSettings.digest == DigestFrequency.DAILY.value, User.active.is_(True))
        .order_by(NotificationSettings.user_id)).all()
    plans = []
    for settings, address, tz_name in rows:
        zone = user_zone(tz_name)
        local = now.astimezone(zone)
        if local.hour < settings.digest_hour or settings.last_digest_on == local.date():
            continue
        plan = DigestPlan(settings.user_id, address, local.date())
        since = settings.last_digest_at or (now - FIRST_DIGEST_WINDOW)
        plan.notification_ids = list(db.session.scalars(
            sa.select(Notification.id).where(
                Notification.user_id == settings.user_id, Notification.read_at.is_(None),
                Notification.created_at > since, Notification.created_at <= now)
            .order_by(Notification.created_at, Notification.id).limit(DIGEST_LIMIT)))
        _, end = local_day_bounds(local.date(), zone)
        plan.task_ids = list(db.session.scalars(
            sa.select(Task.id).where(
                sa.or_(Task.assignee_id == settings.user_id, Task.owner_id == settings.user_id),
                Task.deleted_at.is_(None), Task.status != "done", Task.due_at.is_not(None),
                Task.due_at < end)
            .order_by(Task.due_at, Task.id).limit(DIGEST_LIMIT)))
        plans.append(plan)
    return plans


def digest_due_users(now: datetime | None = None) -> list[DigestPlan]:
    """The digests to send at ``now``: :func:`plan_digests` without the empty ones."""
    return [p for p in plan_digests(now) if not p.empty]


def enqueue_digests(now: datetime | None = None) -> list[int]:
    """Write the outbox row of every digest due at ``now`` and record the day's
    decision for every due user (``last_digest_on``; ``last_digest_at = now`` when a
    digest was written). Returns the new rows' ids. The caller commits (one
    transaction: the rows and the decisions together). For the beat/embedded scan,
    e.g. every ``SCAN_INTERVAL_SECONDS``; then :func:`tasktracker.mail.outbox.deliver_now`
    on the ids after the commit, or leave them to ``deliver_due``."""
    from tasktracker.mail.outbox import _insert_once

    now = now or utcnow()
    written = []
    for plan in plan_digests(now):
        email_id = None
        if not plan.empty:
            email_id = _insert_once({
                "user_id": plan.user_id, "to_address": plan.to_address, "kind": EmailKind.DIGEST.value,
                "dedupe_key": plan.dedupe_key, "status": EmailStatus.PENDING.value, "attempts": 0,
                "next_attempt_at": now, "created_at": now,
                "context": {"local_date": plan.local_date.isoformat(),
                            "notification_ids": plan.notification_ids, "task_ids": plan.task_ids}})
        values = {"last_digest_on": plan.local_date}
        if email_id is not None:
            values["last_digest_at"] = now
            written.append(email_id)
        db.session.execute(sa.update(NotificationSettings)
                           .where(NotificationSettings.user_id == plan.user_id).values(**values))
    return written
