"""Integration: webhook deliveries sent by real ``celery worker`` processes over a real
RabbitMQ, after the REST write committed (api-contract.md v1.1, "Webhooks"), to a real
receiver on 127.0.0.1; and a worker SIGKILLed mid-attempt: the repeat carries the same
delivery id and there is never a second delivery row. PostgreSQL (production's
database); each test has its own Celery queue. Processes are stopped by pid."""

from __future__ import annotations

import json
import signal
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from tasktracker.core.types import utcnow
from tasktracker.extensions import db
from tasktracker.webhooks.models import DeliveryStatus, WebhookDelivery
from tests.procs import wait_for
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.integration


@pytest.fixture
def stack(processes):
    """The test's Celery processes, allowed to deliver to the receiver on 127.0.0.1."""
    processes.env["WEBHOOK_ALLOW_PRIVATE_TARGETS"] = "true"
    return processes


@pytest.fixture
def publisher(publisher, app, monkeypatch):
    monkeypatch.setitem(app.config, "WEBHOOK_ALLOW_PRIVATE_TARGETS", True)


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


def rows() -> list[WebhookDelivery]:
    db.session.rollback()  # a fresh snapshot: the worker writes from another process
    return list(db.session.scalars(sa.select(WebhookDelivery).order_by(WebhookDelivery.id)))


def setup_hook(client, team_setup, receiver) -> dict:
    s = team_setup
    hook = client.post(f"/api/teams/{s.team.id}/webhooks", json={"url": receiver.url("/hook")},
                       headers=s.team_owner.headers)
    assert hook.status_code == 201, hook.json
    receiver.secrets["/hook"] = hook.json["secret"]
    return hook.json


def test_a_rest_write_is_delivered_by_the_worker_after_commit(client, team_setup, publisher, stack, receiver):
    stack.worker()
    setup_hook(client, team_setup, receiver)
    s = team_setup
    task = client.post("/api/tasks", json={"title": "Via RabbitMQ", "team_id": s.team.id},
                       headers=s.member.headers).json
    client.patch(f"/api/tasks/{task['id']}", json={"title": "Via RabbitMQ v2"}, headers=s.member.headers)
    assert wait_for(lambda: len(receiver.succeeded()) == 2, timeout=20), stack.logs()
    got = [json.loads(r.body) for r in receiver.succeeded()]
    assert all(r.verified for r in receiver.received)
    assert sorted(b["event"] for b in got) == ["task.created", "task.updated"]
    assert {b["data"]["id"] for b in got} == {task["id"]}
    assert wait_for(lambda: all(r.status == DeliveryStatus.SUCCEEDED for r in rows()), timeout=10)
    assert len(rows()) == 2


def test_a_worker_killed_mid_attempt_is_repeated_with_the_same_delivery_id(
        client, team_setup, publisher, stack, receiver):
    setup_hook(client, team_setup, receiver)
    receiver.delay = 8.0  # the attempt hangs in the receiver
    first = stack.worker("w1")
    s = team_setup
    client.post("/api/tasks", json={"title": "Crash me", "team_id": s.team.id}, headers=s.member.headers)
    # the worker claimed it (attempt counted, lease taken) and is waiting for the answer
    assert wait_for(lambda: [(r.attempts, r.claimed_until is not None) for r in rows()] == [(1, True)],
                    timeout=20), stack.logs()
    time.sleep(0.5)
    first.stop(signal.SIGKILL)
    [row] = rows()
    assert row.status == DeliveryStatus.PENDING and row.delivered_at is None
    did = row.id
    # its lease runs out (60 s; moved here instead of waited for), a new worker and the
    # beat's scan pick the row up again
    db.session.execute(sa.update(WebhookDelivery).where(WebhookDelivery.id == did)
                       .values(claimed_until=utcnow() - timedelta(seconds=1)))
    db.session.commit()
    receiver.delay = 0.0
    stack.worker("w2")
    stack.beat()
    assert wait_for(lambda: [r.status for r in rows()] == [DeliveryStatus.SUCCEEDED], timeout=30), stack.logs()
    [row] = rows()
    assert row.id == did and row.attempts == 2
    ids = [int(r.headers["X-TaskTracker-Delivery"]) for r in receiver.received]
    assert set(ids) == {did} and len(ids) >= 1
    bodies = {r.body for r in receiver.received}
    assert len(bodies) == 1 and all(r.verified for r in receiver.received)  # the same bytes each time
