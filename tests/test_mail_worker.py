"""Integration: mail sent by real ``celery worker`` / ``celery beat`` processes
(``celery_worker.py``) on a real RabbitMQ, to a real SMTP server (aiosmtpd in the test
process), on the PostgreSQL test database: the production path of the contract's v1.1
"Email" section (the fan-out writes the rows, the beat's ``scan_mail`` starts
``deliver_mail`` tasks, the workers claim and send after commit).

Harness as tests/test_worker_integration.py: a queue per test, processes stopped by pid.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from datetime import timedelta

import pytest
import sqlalchemy as sa

from tasktracker.core.types import utcnow
from tasktracker.extensions import db
from tasktracker.mail import outbox
from tasktracker.mail.models import OutgoingEmail
from tests.factories import UserFactory
from tests.helpers import api_task
from tests.mail_support import SMTPServer, add_notification, link_token, parts
from tests.procs import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def smtp_server():
    server = SMTPServer().start()
    yield server
    server.stop()


def _mail_env(smtp_server, **extra) -> dict:
    return {"MAIL_SERVER": "127.0.0.1", "MAIL_PORT": str(smtp_server.port), "MAIL_BATCH_SECONDS": "1",
            "MAIL_DEFAULT_SENDER": "TaskTracker <no-reply@tasktracker.test>",
            "PUBLIC_BASE_URL": "https://tasks.example.com", **extra}


def _statuses() -> Counter:
    db.session.rollback()
    return Counter(str(s) for s in db.session.scalars(sa.select(OutgoingEmail.status)))


def test_assignment_and_password_reset_are_mailed_by_the_workers(app, client, auth, publisher, processes,
                                                                 smtp_server, monkeypatch):
    for key, value in _mail_env(smtp_server).items():
        monkeypatch.setitem(app.config, key, value)
    env = _mail_env(smtp_server)
    processes.worker(**env)
    processes.env.update(env)
    processes.beat()
    alice, bob = auth.user("alice"), auth.user("bob")
    api_task(client, alice, title="Mailed by a worker", assignee_id=bob.id)
    assert wait_for(lambda: len(smtp_server.handler.received) >= 1, timeout=30), processes.logs()
    [message] = smtp_server.handler.messages
    assert message["To"].addresses[0].addr_spec == "bob@example.com"
    assert "Mailed by a worker" in parts(message)[0]
    # the reset request is answered at once; the worker looks the address up and sends
    assert client.post("/api/auth/password-reset", json={"email": "alice@example.com"}).status_code == 202
    assert client.post("/api/auth/password-reset", json={"email": "nobody@example.com"}).status_code == 202
    assert wait_for(lambda: len(smtp_server.handler.received) >= 2, timeout=30), processes.logs()
    token = link_token(parts(smtp_server.handler.messages[1])[0], "/reset-password")
    assert client.post("/api/auth/password-reset/confirm",
                       json={"token": token, "password": "brand-new-pass-1"}).status_code == 204
    time.sleep(2.5)  # more beat scans: nothing is sent again
    assert len(smtp_server.handler.received) == 2
    assert _statuses() == Counter({"sent": 2})


def test_two_workers_one_sigkilled_mid_burst_every_message_arrives_once(app, publisher, processes, smtp_server):
    """120 due reminder mails, two worker processes (each ``deliver_mail`` claims with
    SKIP LOCKED), one SIGKILLed while sending: its claims come back after the lease and
    every message arrives; at most the one in flight at the kill (SMTP said 250, the
    mark never committed) arrives twice, with the same Message-ID."""
    now = utcnow()
    users = [UserFactory(username=f"u{i}", email=f"u{i}@example.com") for i in range(120)]
    notes = [add_notification(u, "deadline_reminder", f"Reminder {i}", created_at=now - timedelta(minutes=2))
             for i, u in enumerate(users)]
    outbox.enqueue_for_notifications(notes, now)
    db.session.commit()
    smtp_server.handler.delay = 0.01
    env = _mail_env(smtp_server, MAIL_CLAIM_LEASE_SECONDS="3", MAIL_SEND_CONCURRENCY="4")
    victim = processes.worker("w1", **env)
    processes.worker("w2", **env)
    processes.env.update(env)
    processes.beat()
    assert wait_for(lambda: len(smtp_server.handler.received) >= 30, timeout=60), processes.logs()
    victim.stop(signal.SIGKILL)
    assert wait_for(lambda: _statuses().get("sent", 0) == 120, timeout=90), (_statuses(), processes.logs())
    ids = [m["Message-ID"] for m in smtp_server.handler.messages]
    assert len(set(ids)) == 120
    assert len(ids) - len(set(ids)) <= 1, Counter(ids).most_common(3)
