"""Scans: due reminders and overdue tasks claimed exactly once (also concurrently, and
with PostgreSQL's SKIP LOCKED for real), and the outbox redispatch after its delay."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta

import pytest
import sqlalchemy as sa

from tasktracker.auth.models import User
from tasktracker.core.types import utcnow
from tasktracker.events.models import Event
from tasktracker.extensions import db
from tasktracker.events import services as outbox
from tasktracker.jobs import scans
from tasktracker.notifications.models import Notification
from tasktracker.tasks.models import Reminder, Task
from tasktracker.tasks.services import reminders
from tests.factories import TaskFactory, UserFactory
from tests.helpers import (
    add_event, all_notifications, api_task, events_of, notifications_for, raised, run_together,
)


def make_task(owner: User, assignee: User | None = None, *, reminders_ago=(), reminders_ahead=(),
              **fields) -> Task:
    """A task with reminders ``reminders_ago`` seconds in the past / ``reminders_ahead`` in the future."""
    task = TaskFactory(owner=owner, assignee=assignee, **fields)
    now = utcnow()
    for s in reminders_ago:
        db.session.add(Reminder(task_id=task.id, remind_at=now - timedelta(seconds=s)))
    for s in reminders_ahead:
        db.session.add(Reminder(task_id=task.id, remind_at=now + timedelta(seconds=s)))
    db.session.commit()
    return task


def reminders_of(task: Task) -> list[Reminder]:
    db.session.expire_all()
    return list(db.session.scalars(sa.select(Reminder).where(Reminder.task_id == task.id).order_by(Reminder.id)))


def count(model) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


# --------------------------------------------------------------------------- reminders


def test_due_reminders_notify_assignee_and_owner_once(app):
    alice, bob = UserFactory(), UserFactory()
    task = make_task(alice, bob, reminders_ago=(120, 60), reminders_ahead=(3600,),
                     due_at=utcnow() + timedelta(days=1))

    assert reminders.dispatch_due_reminders() == {"sent": 2, "skipped": 0}
    events = events_of("reminder.due")
    due_ids = [r.id for r in reminders_of(task)[:2]]
    assert sorted(e.payload["reminder_id"] for e in events) == sorted(due_ids)
    assert all(e.task_id == task.id and e.actor_id is None and e.dispatched_at for e in events)
    assert events[0].payload["task"]["id"] == task.id and events[0].payload["remind_at"].endswith("Z")
    sent = [r.sent_at is not None for r in reminders_of(task)]
    assert sent == [True, True, False]
    for user in (alice, bob):
        notes = notifications_for(user.id, "deadline_reminder")
        assert len(notes) == 2 and {n.data["reminder_id"] for n in notes} == set(due_ids)
        assert all(n.actor_id is None and n.task_id == task.id and "Reminder" in n.message for n in notes)

    assert reminders.dispatch_due_reminders() == {"sent": 0, "skipped": 0}  # a second beat: nothing new
    assert len(all_notifications()) == 4

    later = utcnow() + timedelta(seconds=3601)
    assert reminders.dispatch_due_reminders(later) == {"sent": 1, "skipped": 0}
    assert len(all_notifications()) == 6


def test_reminder_without_assignee_goes_to_the_owner_only(app):
    alice = UserFactory()
    make_task(alice, None, reminders_ago=(5,))
    make_task(alice, alice, reminders_ago=(5,))  # owner == assignee: once
    assert reminders.dispatch_due_reminders()["sent"] == 2
    assert [n.type for n in all_notifications()] == ["deadline_reminder", "deadline_reminder"]
    assert {n.user_id for n in all_notifications()} == {alice.id}


def test_reminders_of_done_or_deleted_tasks_are_claimed_without_notification(app):
    alice, bob = UserFactory(), UserFactory()
    done = make_task(alice, bob, reminders_ago=(5,), status="done", completed_at=utcnow())
    trashed = make_task(alice, bob, reminders_ago=(5,), deleted_at=utcnow())
    assert reminders.dispatch_due_reminders() == {"sent": 0, "skipped": 2}
    assert all(r.sent_at is not None for r in reminders_of(done) + reminders_of(trashed))
    assert events_of("reminder.due") == [] and all_notifications() == []


def test_reminders_processed_in_batches_until_none_due(app):
    alice = UserFactory()
    make_task(alice, None, reminders_ago=range(1, 26))
    assert reminders.dispatch_due_reminders(batch=10) == {"sent": 25, "skipped": 0}
    assert len(events_of("reminder.due")) == 25 and count(Notification) == 25


def test_concurrent_dispatch_claims_each_reminder_once(app):
    users = [UserFactory() for _ in range(4)]
    for i in range(6):
        make_task(users[i % 4], users[(i + 1) % 4], reminders_ago=range(1, 21))
    assert count(Reminder) == 120
    results = run_together(app, *[lambda: reminders.dispatch_due_reminders(batch=15)] * 2, context="app")
    errors = raised(results)
    assert not errors, errors
    assert sum(r["sent"] for r in results) == 120
    ids = Counter(e.payload["reminder_id"] for e in events_of("reminder.due"))
    assert len(ids) == 120 and set(ids.values()) == {1}
    assert count(Notification) == 240
    per_pair = Counter((n.user_id, n.data["reminder_id"]) for n in all_notifications())
    assert set(per_pair.values()) == {1}


def test_postgresql_skip_locked_lets_a_second_scan_take_other_rows(app):
    if db.engine.dialect.name != "postgresql":
        pytest.skip("FOR UPDATE SKIP LOCKED is PostgreSQL-only (SQLite serialises writers)")
    alice = UserFactory()
    task = make_task(alice, None, reminders_ago=range(1, 11))
    ids = [r.id for r in reminders_of(task)]
    locked = ids[:4]
    result: dict = {}

    with db.engine.connect() as other:  # another transaction holding row locks
        other.execute(sa.select(Reminder.id).where(Reminder.id.in_(locked)).with_for_update())

        def run():
            with app.app_context():
                result.update(reminders.dispatch_due_reminders())

        t = threading.Thread(target=run)
        t.start()
        t.join(15)
        assert not t.is_alive(), "the scan blocked on locked rows instead of skipping them"
        assert result == {"sent": 6, "skipped": 0}
        sent = {r.id for r in reminders_of(task) if r.sent_at is not None}
        assert sent == set(ids) - set(locked)
        other.rollback()

    assert reminders.dispatch_due_reminders() == {"sent": 4, "skipped": 0}
    assert Counter(e.payload["reminder_id"] for e in events_of("reminder.due")) == Counter(ids)


# --------------------------------------------------------------------------- overdue


def test_overdue_tasks_notified_once(app):
    alice, bob = UserFactory(), UserFactory()
    past = utcnow() - timedelta(minutes=5)
    overdue = make_task(alice, bob, due_at=past)
    make_task(alice, bob, due_at=past, status="done", completed_at=utcnow())
    make_task(alice, bob, due_at=past, deleted_at=utcnow())
    make_task(alice, bob, due_at=utcnow() + timedelta(hours=1))
    make_task(alice, bob)  # no due date
    version = overdue.version

    assert reminders.dispatch_overdue() == 1
    [event] = events_of("task.overdue")
    assert event.task_id == overdue.id and event.payload["task"]["id"] == overdue.id
    assert sorted((n.user_id, n.type) for n in all_notifications()) == sorted(
        [(alice.id, "task_overdue"), (bob.id, "task_overdue")])
    db.session.expire_all()
    row = db.session.get(Task, overdue.id)
    assert row.overdue_notified_at is not None and row.version == version  # internal flag only

    assert reminders.dispatch_overdue() == 0
    assert reminders.dispatch_overdue(utcnow() + timedelta(hours=2)) == 1  # the later task now
    assert len(events_of("task.overdue")) == 2

    # re-armed (due date moved later, flag cleared by the tasks service) -> once more
    row.due_at = utcnow() - timedelta(seconds=1)
    row.overdue_notified_at = None
    db.session.commit()
    assert reminders.dispatch_overdue() == 1 and len(events_of("task.overdue")) == 3


def test_concurrent_overdue_scans_flag_each_task_once(app):
    alice = UserFactory()
    for _ in range(40):
        make_task(alice, None, due_at=utcnow() - timedelta(minutes=1))
    results = run_together(app, *[lambda: reminders.dispatch_overdue(batch=7)] * 2, context="app")
    assert not raised(results), results
    assert sum(results) == 40
    assert Counter(e.task_id for e in events_of("task.overdue")).most_common(1)[0][1] == 1
    assert len(events_of("task.overdue")) == 40 and count(Notification) == 40


# --------------------------------------------------------------------------- outbox


def test_outbox_redispatch_waits_for_the_delay(app, client, auth, held_fanout, monkeypatch):
    alice, bob = auth.user("alice"), auth.user("bob")
    api_task(client, alice, assignee_id=bob.id)
    [event] = events_of("task.created")
    assert event.dispatched_at is None and held_fanout == [event.seq]

    assert outbox.redispatch_outbox(event.created_at + timedelta(seconds=5), older_than=30) == 0
    assert events_of("task.created")[0].dispatched_at is None and all_notifications() == []

    assert outbox.redispatch_outbox(event.created_at + timedelta(seconds=31), older_than=30) == 1
    assert [n.type for n in notifications_for(bob.id)] == ["task_assigned"]
    assert events_of("task.created")[0].dispatched_at is not None

    assert outbox.redispatch_outbox(utcnow() + timedelta(hours=1), older_than=30) == 0
    assert len(all_notifications()) == 1

    monkeypatch.setitem(app.config, "OUTBOX_REDISPATCH_AFTER_SECONDS", 3600.0)  # the default delay
    api_task(client, alice, assignee_id=bob.id)
    assert outbox.redispatch_outbox() == 0
    assert outbox.redispatch_outbox(utcnow() + timedelta(seconds=3601)) == 1


def test_outbox_redispatch_in_batches_oldest_first(app):
    alice = UserFactory()
    task = TaskFactory(owner=alice)
    seqs = [add_event("task.overdue", task_id=task.id, age_seconds=120,
                      payload={"task": {"id": task.id, "title": "t", "owner": {"id": alice.id}}}).seq
            for _ in range(25)]
    recent = add_event("task.overdue", task_id=task.id, payload={"task": {"id": task.id}})
    assert outbox.redispatch_outbox(batch=10, older_than=60) == 25
    notes = notifications_for(alice.id)
    assert [n.event_seq for n in notes] == seqs  # in seq order
    db.session.expire_all()
    assert db.session.get(Event, recent.seq).dispatched_at is None  # too recent


def test_run_all_scans_counts(app, client, auth, held_fanout):
    alice, bob = auth.user("alice"), auth.user("bob")
    api_task(client, alice, assignee_id=bob.id)  # held: undispatched
    old = events_of("task.created")[0]
    db.session.execute(sa.update(Event).values(created_at=utcnow() - timedelta(hours=1)))
    db.session.commit()
    owner = db.session.get(User, alice.id)
    make_task(owner, None, reminders_ago=(1,))
    make_task(owner, None, due_at=utcnow() - timedelta(seconds=1))

    counts = scans.run_all_scans(app)
    mail = counts.pop("mail")  # the mail pass (issue 14)
    assert counts == {"reminders": 1, "overdue": 1, "redispatched": 1, "purged_keys": 0, "webhook_deliveries": 0}
    assert mail["digests"] == 0 and mail["mail_failed"] == 0
    # the two new events were held too (fast path disabled) and are recent: the next pass
    # only redispatches them once they are old enough
    counts = scans.run_all_scans(app)
    counts.pop("mail")
    assert counts == {"reminders": 0, "overdue": 0, "redispatched": 0, "purged_keys": 0, "webhook_deliveries": 0}
    later = utcnow() + timedelta(seconds=app.config["OUTBOX_REDISPATCH_AFTER_SECONDS"] + 1)
    assert scans.run_all_scans(app, now=later)["redispatched"] == 2
    assert old.seq in {n.event_seq for n in all_notifications()}
    assert sorted(n.type for n in notifications_for(alice.id)) == ["deadline_reminder", "task_overdue"]


def test_cli_reminders_dispatch_runs_one_pass(runner):
    alice = UserFactory()
    make_task(alice, None, reminders_ago=(1,))
    result = runner.invoke(args=["reminders", "dispatch"])
    assert result.exit_code == 0, result.output
    assert [n.type for n in notifications_for(alice.id)] == ["deadline_reminder"]


def test_moving_the_deadline_later_rearms_the_overdue_notice(client, auth):
    alice = auth.user("alice")
    past = (utcnow() - timedelta(minutes=5)).isoformat()
    task = client.post("/api/tasks", json={"title": "t", "due_at": past}, headers=alice.headers).json
    assert reminders.dispatch_overdue() == 1
    later = (utcnow() + timedelta(minutes=1)).isoformat()
    r = client.patch(f"/api/tasks/{task['id']}", json={"due_at": later}, headers=alice.headers)
    assert r.status_code == 200
    db.session.expire_all()
    assert db.session.get(Task, task["id"]).overdue_notified_at is None
    assert reminders.dispatch_overdue() == 0  # not due yet
    assert reminders.dispatch_overdue(utcnow() + timedelta(minutes=2)) == 1  # overdue again: told again
