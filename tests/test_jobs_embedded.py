"""jobs modes without a broker: the in-process worker and scheduler threads (embedded
mode), and the Celery hand-off failing fast and safely when the broker is unreachable."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from flask import Flask

from tasktracker import jobs, realtime
from tasktracker.config import celery_settings
from tasktracker.core.types import utcnow
from tasktracker.extensions import db
from tasktracker.jobs.embedded import get_runner
from tasktracker.jobs.setup import celery_init_app, init_jobs
from tasktracker.tasks.models import Reminder
from tests.factories import TaskFactory, UserFactory
from tests.procs import wait_for
from tests.helpers import api_task, events_of, notifications_for

DEAD_BROKER = "amqp://guest:guest@127.0.0.1:1//"


@pytest.fixture
def thread_mode(app, monkeypatch):
    """Embedded mode with threads (instead of the tests' inline fan-out); stopped afterwards."""
    monkeypatch.setitem(app.config, "JOBS_INLINE", False)
    assert jobs.jobs_mode(app) == "thread"
    yield get_runner(app)
    get_runner(app).stop()


def test_thread_mode_fans_out_on_the_background_thread(client, auth, thread_mode, monkeypatch):
    threads: list[str] = []
    monkeypatch.setattr(realtime, "emit", lambda e, d, r: threads.append(threading.current_thread().name))
    alice, bob = auth.user("alice"), auth.user("bob")
    api_task(client, alice, assignee_id=bob.id)
    assert jobs.wait_idle(10)
    assert [n.type for n in notifications_for(bob.id)] == ["task_assigned"]
    assert threads and set(threads) == {"tasktracker-jobs"}
    assert events_of("task.created")[0].dispatched_at is not None


def test_thread_mode_worker_survives_a_failing_job(app, client, auth, thread_mode):
    def broken():
        raise RuntimeError("boom")

    thread_mode.submit(broken)
    alice, bob = auth.user("alice"), auth.user("bob")
    api_task(client, alice, assignee_id=bob.id)
    assert jobs.wait_idle(10)
    assert len(notifications_for(bob.id)) == 1


def test_scheduler_thread_runs_the_scans(app, thread_mode):
    alice = UserFactory()
    task = TaskFactory(owner=alice)
    db.session.add(Reminder(task_id=task.id, remind_at=utcnow() + timedelta(seconds=0.3)))
    db.session.commit()
    thread_mode.start_scheduler(0.2, first_delay=0)
    got = wait_for(lambda: notifications_for(alice.id, "deadline_reminder"), timeout=10)
    assert len(got) == 1 and got[0].created_at >= utcnow() - timedelta(seconds=10)
    time.sleep(0.45)  # two more scans: still one
    assert len(notifications_for(alice.id)) == 1
    thread_mode.stop()
    assert not any(t.name == "tasktracker-scheduler" for t in threading.enumerate())


def _bare_app(**config) -> Flask:
    """A minimal Flask app with the jobs settings (not create_app: no second Socket.IO
    binding, no database needed; the scheduler is stopped before its first scan)."""
    bare = Flask("jobs-probe")
    bare.config.update({"CELERY_BROKER_URL": "", "JOBS_INLINE": False, "SCHEDULER_ENABLED": True,
                        "SCAN_INTERVAL_SECONDS": 3600.0, "CELERY_TASK_QUEUE": "tt-unused",
                        "BROKER_PUBLISH_TIMEOUT_SECONDS": 1.0, **config})
    bare.config["CELERY"] = celery_settings(bare.config["CELERY_BROKER_URL"])
    return bare


def scheduler_threads() -> int:
    return sum(t.name == "tasktracker-scheduler" for t in threading.enumerate())


def test_scheduler_starts_with_the_first_request_in_embedded_mode_only(app):
    default_celery = app.extensions["celery"]
    before = scheduler_threads()
    embedded, production = _bare_app(), _bare_app(CELERY_BROKER_URL=DEAD_BROKER)
    try:
        init_jobs(embedded)
        init_jobs(production)
        assert scheduler_threads() == before  # nothing at app creation (CLI commands stay quiet)
        assert embedded.test_client().get("/").status_code == 404
        assert get_runner(embedded).scheduler_running and scheduler_threads() == before + 1
        embedded.test_client().get("/")
        assert scheduler_threads() == before + 1  # once
        assert production.test_client().get("/").status_code == 404
        assert scheduler_threads() == before + 1  # production: the Celery beat does the scans
        assert not get_runner(production).scheduler_running
    finally:
        get_runner(embedded).stop()
        default_celery.set_default()
    assert scheduler_threads() == before


@pytest.fixture
def dead_broker(app, monkeypatch):
    """Production mode pointed at a closed port (a broker that is down)."""
    old = app.extensions["celery"]
    monkeypatch.setitem(app.extensions, "celery", old)
    monkeypatch.setitem(app.extensions, jobs._BROKER_DOWN_UNTIL, 0.0)
    monkeypatch.setitem(app.config, "CELERY_BROKER_URL", DEAD_BROKER)
    monkeypatch.setitem(app.config, "CELERY", celery_settings(DEAD_BROKER))
    monkeypatch.setitem(app.config, "BROKER_PUBLISH_TIMEOUT_SECONDS", 0.3)
    celery_init_app(app)
    assert jobs.jobs_mode(app) == "celery"
    yield
    old.set_default()


def test_dead_broker_never_fails_or_hangs_the_api(client, auth, dead_broker):
    alice, bob = auth.user("alice"), auth.user("bob")
    started = time.monotonic()
    task = api_task(client, alice, assignee_id=bob.id)
    assert time.monotonic() - started < 3.0
    started = time.monotonic()
    r = client.patch(f"/api/tasks/{task['id']}", json={"title": "x"}, headers=bob.headers)
    assert r.status_code == 200
    assert time.monotonic() - started < 0.5  # broker marked down: no second wait
    assert [e.dispatched_at for e in events_of("task.created") + events_of("task.updated")] == [None, None]
    assert notifications_for(bob.id) == []


def test_check_broker_and_ready(client, dead_broker, app, monkeypatch):
    with app.test_request_context():
        assert jobs.check_broker() == "OperationalError"
    r = client.get("/ready")
    assert r.status_code == 503 and "broker" in r.json["error"]["details"]["failed"]
    monkeypatch.setitem(app.config, "CELERY_BROKER_URL", "")
    with app.test_request_context():
        assert jobs.check_broker() is None  # embedded mode: no broker to check


@pytest.mark.parametrize(("pool", "broker", "warned"), [
    ("solo", "amqp://guest:guest@127.0.0.1:5672//", True),
    ("threads", "amqp://guest:guest@127.0.0.1:5672//", False),
    ("prefork", "amqp://guest:guest@127.0.0.1:5672//", False),
    ("solo", "redis://127.0.0.1:6379/0", False),
])
def test_a_solo_pool_worker_on_amqp_with_late_acks_is_warned(pool, broker, warned, caplog):
    """``celery worker --pool=solo`` on RabbitMQ can sit idle 10 s per task (kombu's hub
    polls before sending the ack the solo pool queued: celery#7718): the worker says so."""
    from types import SimpleNamespace

    from celery import Celery
    from celery.concurrency import get_implementation

    from tasktracker.jobs.setup import warn_if_solo_pool

    worker = SimpleNamespace(pool_cls=get_implementation(pool),
                             app=Celery(broker=broker, set_as_current=False,
                                        config_source={"task_acks_late": True}))
    with caplog.at_level("WARNING", logger="tasktracker.jobs.setup"):
        assert warn_if_solo_pool(worker) is warned
    assert ("celery#7718" in caplog.text) is warned
