"""Integration: a real RabbitMQ, real ``celery worker`` / ``celery beat`` processes
(``celery_worker.py``) and the PostgreSQL test database.

Each test uses its own Celery queue (``CELERY_TASK_QUEUE``), so parallel runs never
consume each other's messages; the queue is deleted afterwards. Subprocesses log to
files under the test's tmp_path and are always stopped by pid in the teardown. The
machine's RabbitMQ server is never stopped: "broker down" is a closed port.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections import Counter
from datetime import timedelta

import pytest
import sqlalchemy as sa

from tasktracker.core.types import utcnow
from tasktracker.events.models import Event
from tasktracker.extensions import db
from tasktracker.notifications.models import Notification
from tasktracker.tasks.models import Reminder, Task
from tests.conftest import RABBITMQ_URL
from tests.factories import UserFactory
from tests.procs import delete_queue, publish_to, wait_for
from tests.helpers import api_task, events_of, notifications_for

pytestmark = pytest.mark.integration

DEAD_BROKER = "amqp://guest:guest@127.0.0.1:1//"


def scalar(query):
    db.session.rollback()  # a fresh snapshot: the worker writes from another process
    return db.session.scalar(query)


def count_notifications(type_: str | None = None) -> int:
    query = sa.select(sa.func.count()).select_from(Notification)
    if type_:
        query = query.where(Notification.type == type_)
    return scalar(query)


# --------------------------------------------------------------------------- tests


def test_rest_write_is_fanned_out_by_the_worker(client, auth, publisher, processes):
    processes.worker()
    alice, bob = auth.user("alice"), auth.user("bob")
    task = api_task(client, alice, title="Via RabbitMQ", assignee_id=bob.id)
    r = client.patch(f"/api/tasks/{task['id']}", json={"title": "Via RabbitMQ v2"}, headers=bob.headers)
    assert r.status_code == 200

    assert wait_for(lambda: count_notifications() == 2, timeout=20), processes.logs()
    assert [n.type for n in notifications_for(bob.id)] == ["task_assigned"]
    assert [n.type for n in notifications_for(alice.id)] == ["task_updated"]
    assert scalar(sa.select(sa.func.count()).select_from(Event).where(Event.dispatched_at.is_(None))) == 0
    r = client.get("/api/notifications", headers=bob.headers)
    assert r.json["unread_count"] == 1 and r.json["items"][0]["task_id"] == task["id"]


def test_reminder_due_in_two_seconds_is_sent_once_by_the_beat(client, auth, publisher, processes):
    processes.worker()
    processes.beat()
    alice, bob = auth.user("alice"), auth.user("bob")
    remind_at = utcnow() + timedelta(seconds=2)
    task = api_task(client, alice, assignee_id=bob.id,
                    reminders=[remind_at.isoformat()], due_at=(remind_at + timedelta(hours=1)).isoformat())

    assert wait_for(lambda: count_notifications("deadline_reminder") == 2, timeout=20), processes.logs()
    notes = [n for n in notifications_for(alice.id) + notifications_for(bob.id) if n.type == "deadline_reminder"]
    assert sorted(n.user_id for n in notes) == sorted([alice.id, bob.id])
    assert all(n.task_id == task["id"] and n.created_at >= remind_at.replace(microsecond=0) for n in notes)
    time.sleep(3)  # three more beats
    assert count_notifications("deadline_reminder") == 2
    assert len(events_of("reminder.due")) == 1
    db.session.rollback()
    [reminder] = db.session.scalars(sa.select(Reminder).where(Reminder.task_id == task["id"])).all()
    assert reminder.sent_at is not None and reminder.sent_at >= remind_at


def test_worker_killed_mid_batch_then_restarted_sends_each_reminder_once(app, processes, postgres_only, rabbitmq):
    users = [UserFactory() for _ in range(10)]
    past = utcnow() - timedelta(minutes=1)
    tasks = [Task(title=f"t{i}", owner_id=users[i % 10].id, assignee_id=users[(i + 1) % 10].id)
             for i in range(50)]
    db.session.add_all(tasks)
    db.session.flush()
    db.session.add_all([Reminder(task_id=t.id, remind_at=past - timedelta(seconds=j))
                        for t in tasks for j in range(20)])
    db.session.commit()
    total = 1000 * 2  # assignee and owner differ on every task

    processes.beat()
    worker = processes.worker()
    in_flight = wait_for(lambda: count_notifications() > 0, timeout=45, interval=0.02)
    assert in_flight, processes.logs()
    worker.send(signal.SIGKILL)
    worker.popen.wait(10)
    at_kill = count_notifications()
    assert 0 < at_kill < total, f"the kill did not land mid-batch ({at_kill} of {total})"

    processes.worker()

    def settled():
        return (count_notifications() >= total
                and scalar(sa.select(sa.func.count()).select_from(Event)
                           .where(Event.dispatched_at.is_(None))) == 0
                and scalar(sa.select(sa.func.count()).select_from(Reminder)
                           .where(Reminder.sent_at.is_(None))) == 0)

    assert wait_for(settled, timeout=60, interval=0.5), processes.logs()
    time.sleep(2)  # more beats after the catch-up: nothing new
    events = events_of("reminder.due")
    assert len(events) == 1000
    assert Counter(e.payload["reminder_id"] for e in events).most_common(1)[0][1] == 1
    notes = list(db.session.scalars(sa.select(Notification)))
    assert len(notes) == total and {n.type for n in notes} == {"deadline_reminder"}
    per_recipient = Counter((n.user_id, n.data["reminder_id"]) for n in notes)
    assert len(per_recipient) == total and set(per_recipient.values()) == {1}


def test_broker_down_api_still_answers_and_the_outbox_delivers_later(app, client, auth, monkeypatch,
                                                                     processes, queue_name):
    old = app.extensions["celery"]
    publish_to(app, monkeypatch, DEAD_BROKER, queue_name)
    try:
        alice, bob = auth.user("alice"), auth.user("bob")
        started = time.monotonic()
        r = client.post("/api/tasks", json={"title": "Broker down", "assignee_id": bob.id},
                        headers=alice.headers)
        elapsed = time.monotonic() - started
        assert r.status_code == 201 and elapsed < 3.0, elapsed
        assert client.get("/ready").status_code == 503
    finally:
        old.set_default()
    [event] = events_of("task.created")
    assert event.dispatched_at is None and notifications_for(bob.id) == []

    processes.worker()  # the broker is back (the real one) with a worker and the beat
    processes.beat()
    assert wait_for(lambda: notifications_for(bob.id), timeout=20), processes.logs()
    time.sleep(3)
    assert [n.type for n in notifications_for(bob.id)] == ["task_assigned"]
    assert events_of("task.created")[0].dispatched_at is not None


def test_cleanup_removes_the_runs_queue_and_exchanges(rabbitmq):
    """Test runs leave no RabbitMQ objects behind: a Celery queue comes with a direct
    exchange of its name, a Socket.IO channel is a fanout exchange (issue: ~9 leftover
    ``tt-test-*`` exchanges per run)."""
    from kombu import Connection, Exchange, Queue

    name, channel_name = f"tt-test-{uuid.uuid4().hex[:8]}", f"tt-test-sio-{uuid.uuid4().hex[:8]}"
    with Connection(RABBITMQ_URL, connect_timeout=3) as conn:
        Queue(name, Exchange(name, "direct"), routing_key=name)(conn.default_channel).declare()
        Exchange(channel_name, "fanout")(conn.default_channel).declare()
    delete_queue(name, channel_name)
    with Connection(RABBITMQ_URL, connect_timeout=3) as conn:
        for declare in (lambda ch: ch.exchange_declare(name, "direct", passive=True),
                        lambda ch: ch.exchange_declare(channel_name, "fanout", passive=True),
                        lambda ch: ch.queue_declare(name, passive=True)):
            channel = conn.channel()
            with pytest.raises(Exception, match="NOT_FOUND|404"):
                declare(channel)
