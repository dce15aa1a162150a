"""The daily digest: at ``digest_hour`` in each user's time zone (DST days included),
never two for one local day, none when there is nothing; content and rendering
through a real SMTP server. The clock is passed explicitly, or frozen with
time-machine where the code reads the current time itself."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
import time_machine

from tasktracker.extensions import db
from tasktracker.mail import outbox, settings
from tasktracker.mail.digest import digest_due_users, enqueue_digests, local_day_bounds, plan_digests
from tasktracker.mail.models import EmailKind, NotificationSettings, OutgoingEmail
from tasktracker.mail.render import user_zone
from tests.factories import TaskFactory, UserFactory
from tests.mail_support import add_notification, link_token, mail_config, parts

UTC = timezone.utc


def _daily(user, hour: int, last_on: date | None = None):
    settings.update_settings(user.id, {"digest": "daily", "digest_hour": hour})
    if last_on is not None:
        db.session.execute(sa.update(NotificationSettings).where(NotificationSettings.user_id == user.id)
                           .values(last_digest_on=last_on))
    db.session.commit()


def _with_task_due(user, due_at):
    return TaskFactory(owner=user, due_at=due_at, title=f"Task of {user.username}")


def _scan(start: datetime, hours: float, step_minutes: int = 15) -> list[tuple[int, str, datetime]]:
    """Run enqueue_digests every ``step_minutes`` from ``start`` for ``hours``; returns
    ``(user_id, dedupe_key, when)`` of each digest written."""
    written = []
    now = start
    while now < start + timedelta(hours=hours):
        for email_id in enqueue_digests(now):
            row = db.session.get(OutgoingEmail, email_id)
            written.append((row.user_id, row.dedupe_key, now))
        db.session.commit()
        now += timedelta(minutes=step_minutes)
    return written


def test_digest_hour_in_each_users_timezone(app):
    tokyo = UserFactory(username="tokyo", timezone="Asia/Tokyo")
    paris = UserFactory(username="paris", timezone="Europe/Paris")
    york = UserFactory(username="york", timezone="America/New_York")
    for user in (tokyo, paris, york):
        _with_task_due(user, datetime(2026, 12, 20, tzinfo=UTC) - timedelta(days=30))  # overdue: always content
        _daily(user, 8, last_on=date(2026, 11, 30))
    written = _scan(datetime(2026, 11, 30, 12, 0, tzinfo=UTC), hours=48)
    assert written == [
        (tokyo.id, f"digest:{tokyo.id}:2026-12-01", datetime(2026, 11, 30, 23, 0, tzinfo=UTC)),  # 08:00 JST
        (paris.id, f"digest:{paris.id}:2026-12-01", datetime(2026, 12, 1, 7, 0, tzinfo=UTC)),    # 08:00 CET
        (york.id, f"digest:{york.id}:2026-12-01", datetime(2026, 12, 1, 13, 0, tzinfo=UTC)),     # 08:00 EST
        (tokyo.id, f"digest:{tokyo.id}:2026-12-02", datetime(2026, 12, 1, 23, 0, tzinfo=UTC)),
        (paris.id, f"digest:{paris.id}:2026-12-02", datetime(2026, 12, 2, 7, 0, tzinfo=UTC)),
    ]


def test_dst_days_spring_forward_and_fall_back(app):
    berlin = UserFactory(username="berlin", timezone="Europe/Berlin")
    york = UserFactory(username="york", timezone="America/New_York")
    _with_task_due(berlin, datetime(2026, 1, 1, tzinfo=UTC))
    _with_task_due(york, datetime(2026, 1, 1, tzinfo=UTC))
    # Berlin, 29 March 2026: 02:00 CET jumps to 03:00 CEST, so 02:xx never happens
    _daily(berlin, 2, last_on=date(2026, 3, 28))
    written = _scan(datetime(2026, 3, 28, 20, 0, tzinfo=UTC), hours=12)
    assert written == [(berlin.id, f"digest:{berlin.id}:2026-03-29", datetime(2026, 3, 29, 1, 0, tzinfo=UTC))]
    assert datetime(2026, 3, 29, 1, 0, tzinfo=UTC).astimezone(user_zone("Europe/Berlin")).hour == 3
    # New York, 1 November 2026: 01:00-01:59 happens twice (EDT, then EST); one digest, at the first
    _daily(york, 1, last_on=date(2026, 10, 31))
    written = [w for w in _scan(datetime(2026, 11, 1, 0, 0, tzinfo=UTC), hours=12) if w[0] == york.id]
    assert written == [(york.id, f"digest:{york.id}:2026-11-01", datetime(2026, 11, 1, 5, 0, tzinfo=UTC))]
    start, end = local_day_bounds(date(2026, 11, 1), user_zone("America/New_York"))
    assert end - start == timedelta(hours=25)


def test_none_when_nothing_and_not_later_that_day(app):
    user = UserFactory(timezone="UTC")
    _daily(user, 8, last_on=date(2026, 11, 30))
    assert _scan(datetime(2026, 12, 1, 7, 0, tzinfo=UTC), hours=2) == []
    assert db.session.get(NotificationSettings, user.id).last_digest_on == date(2026, 12, 1)
    # something arrives at noon: no digest that day; the next day's carries it
    n = add_notification(user, "comment_added", "carol commented", created_at=datetime(2026, 12, 1, 12, tzinfo=UTC))
    assert _scan(datetime(2026, 12, 1, 12, 0, tzinfo=UTC), hours=19) == []
    written = _scan(datetime(2026, 12, 2, 7, 0, tzinfo=UTC), hours=2)
    assert [key for _, key, _ in written] == [f"digest:{user.id}:2026-12-02"]
    row = db.session.scalars(sa.select(OutgoingEmail)).one()
    assert row.kind == EmailKind.DIGEST and row.context["notification_ids"] == [n.id]


def test_content_unread_since_last_digest_and_tasks_due_today_or_overdue(app):
    user = UserFactory(timezone="America/Los_Angeles")  # PST, UTC-8
    other = UserFactory()
    now = datetime(2026, 12, 1, 17, 0, tzinfo=UTC)  # 09:00 local on 1 Dec
    _daily(user, 9, last_on=date(2026, 11, 30))
    db.session.execute(sa.update(NotificationSettings).where(NotificationSettings.user_id == user.id)
                       .values(last_digest_at=datetime(2026, 11, 30, 17, 0, tzinfo=UTC)))
    db.session.commit()
    old = add_notification(user, "task_updated", "old", created_at=datetime(2026, 11, 30, 16, tzinfo=UTC))
    new = add_notification(user, "task_updated", "new", created_at=datetime(2026, 12, 1, 3, tzinfo=UTC))
    add_notification(user, "task_updated", "read", created_at=datetime(2026, 12, 1, 4, tzinfo=UTC), read=True)
    overdue = _with_task_due(user, datetime(2026, 11, 20, tzinfo=UTC))
    today_late = TaskFactory(owner=other, assignee=user, due_at=datetime(2026, 12, 2, 7, 59, tzinfo=UTC))  # 23:59 local
    TaskFactory(owner=user, due_at=datetime(2026, 12, 2, 8, 0, tzinfo=UTC))  # 00:00 local on 2 Dec: tomorrow
    TaskFactory(owner=user, due_at=datetime(2026, 11, 1, tzinfo=UTC), status="done")
    TaskFactory(owner=user, due_at=datetime(2026, 11, 1, tzinfo=UTC), deleted_at=now)
    TaskFactory(owner=other, due_at=datetime(2026, 11, 1, tzinfo=UTC))  # not theirs
    [plan] = digest_due_users(now)
    assert plan.local_date == date(2026, 12, 1)
    assert plan.notification_ids == [new.id] and old.id not in plan.notification_ids
    assert plan.task_ids == [overdue.id, today_late.id]
    # before the hour: nothing due
    assert plan_digests(now - timedelta(minutes=1)) == []


def test_digest_rendered_and_sent_in_recipients_timezone(app, smtp):
    user = UserFactory(username="kiwi", full_name="Kiri", timezone="Pacific/Auckland")  # NZDT, UTC+13
    now = datetime(2026, 12, 1, 20, 0, tzinfo=UTC)  # 09:00 on 2 Dec in Auckland
    _daily(user, 9, last_on=date(2026, 12, 1))
    task = _with_task_due(user, datetime(2026, 12, 2, 4, 0, tzinfo=UTC))  # 17:00 NZDT today
    add_notification(user, "task_assigned", 'bob assigned you "Task of kiwi"', task=task,
                     created_at=datetime(2026, 12, 1, 19, 30, tzinfo=UTC))
    ids = enqueue_digests(now)
    db.session.commit()
    assert outbox.deliver_now(ids, now, config=mail_config(app, smtp.port)).sent == 1
    [message] = smtp.wait_for(1)
    assert message["Subject"] == "Your TaskTracker digest for Wednesday 2 December 2026: 1 due, 1 unread"
    text, html = parts(message)
    assert '"Task of kiwi": due Wed 2 Dec 2026, 17:00 NZDT' in text
    assert "Wed 2 Dec 2026, 08:30 NZDT" in text  # the notification's time, local
    assert "Pacific/Auckland" in text and "Wed 2 Dec 2026, 17:00 NZDT" in html
    token = link_token(str(message["List-Unsubscribe"]).strip("<>"), "/api/email/unsubscribe")
    from tasktracker.mail.unsubscribe import unsubscribe

    assert unsubscribe(app.config["SECRET_KEY"], token)[1]["digest"] == "off"
    db.session.commit()
    assert plan_digests(now + timedelta(days=1)) == []


def test_two_scans_at_once_write_one_digest(app):
    user = UserFactory(timezone="UTC")
    _with_task_due(user, datetime(2026, 1, 1, tzinfo=UTC))
    _daily(user, 8, last_on=date(2026, 11, 30))
    now = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    first = enqueue_digests(now)
    # a second beat that read the settings before the first committed: the unique key holds
    db.session.execute(sa.update(NotificationSettings).values(last_digest_on=date(2026, 11, 30)))
    second = enqueue_digests(now)
    db.session.commit()
    assert len(first) == 1 and second == []
    assert db.session.scalar(sa.select(sa.func.count()).select_from(OutgoingEmail)) == 1


@pytest.mark.parametrize("frozen, due", [
    (datetime(2026, 7, 1, 5, 59, tzinfo=UTC), False),  # 07:59 CEST
    (datetime(2026, 7, 1, 6, 0, tzinfo=UTC), True),    # 08:00 CEST
    (datetime(2026, 12, 1, 6, 30, tzinfo=UTC), False),  # 07:30 CET: winter offset is +1
    (datetime(2026, 12, 1, 7, 0, tzinfo=UTC), True),
])
def test_default_clock_with_time_machine(app, frozen, due):
    user = UserFactory(timezone="Europe/Paris")
    _with_task_due(user, datetime(2026, 1, 1, tzinfo=UTC))
    _daily(user, 8, last_on=frozen.date() - timedelta(days=1))
    with time_machine.travel(frozen, tick=False):
        ids = enqueue_digests()  # reads the clock itself (utcnow)
        db.session.commit()
    assert bool(ids) is due
    if due:
        assert db.session.get(NotificationSettings, user.id).last_digest_at == frozen
