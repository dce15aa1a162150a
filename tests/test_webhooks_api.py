"""Webhooks end to end through the REST API (api-contract.md v1.1, "Webhooks"): the
team-role rule (members and outsiders get 404), create/read/update/delete, 422s,
deliveries written in the change's transaction and sent after its commit (inline
jobs) to a real receiver on 127.0.0.1 that verifies signature and timestamp, event
filters, team scoping, ping, rotate-secret, redeliver, an outage then recovery with
nothing lost or doubled, and auto-disable with the owner's ``webhook_disabled``
notification. SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import sqlalchemy as sa

from tasktracker.core.types import utcnow
from tasktracker.events.services import record_event
from tasktracker.extensions import db
from tasktracker.webhooks import delivery, signing
from tasktracker.webhooks.models import DeliveryStatus, Webhook, WebhookDelivery
from tests.factories import TeamFactory
from tests.helpers import assert_error, notifications_for, orm_user
from tests.webhook_receiver import Receiver


@pytest.fixture
def private_ok(app):
    app.config["WEBHOOK_ALLOW_PRIVATE_TARGETS"] = True
    yield
    app.config["WEBHOOK_ALLOW_PRIVATE_TARGETS"] = False


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


def create_hook(client, who, team_id, receiver, path="/hook", **body):
    response = client.post(f"/api/teams/{team_id}/webhooks", json={"url": receiver.url(path), **body},
                           headers=who.headers)
    assert response.status_code == 201, response.json
    receiver.secrets[path] = response.json["secret"]
    return response.json


def team_task(client, who, team_id, title="Write docs"):
    response = client.post("/api/tasks", json={"title": title, "team_id": team_id}, headers=who.headers)
    assert response.status_code == 201, response.json
    return response.json


def deliveries(webhook_id: int) -> list[WebhookDelivery]:
    db.session.expire_all()
    return list(db.session.scalars(sa.select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id)
                                   .order_by(WebhookDelivery.id)))


# ---------------------------------------------------------------------- who may

def test_owner_and_admin_manage_members_and_outsiders_get_404(client, team_setup, receiver, private_ok):
    s = team_setup
    hook = create_hook(client, s.team_owner, s.team.id, receiver)
    assert set(hook) == {"id", "team_id", "url", "events", "active", "created_at", "consecutive_failures",
                         "disabled_reason", "secret"}
    assert hook["events"] == ["*"] and hook["active"] is True and len(hook["secret"]) >= 32
    listed = client.get(f"/api/teams/{s.team.id}/webhooks", headers=s.team_admin.headers)
    assert listed.status_code == 200 and [h["id"] for h in listed.json] == [hook["id"]]
    assert "secret" not in listed.json[0]
    got = client.get(f"/api/webhooks/{hook['id']}", headers=s.team_admin.headers)
    assert got.status_code == 200 and "secret" not in got.json

    hid = hook["id"]
    for who in (s.member, s.outsider):
        assert_error(client.get(f"/api/teams/{s.team.id}/webhooks", headers=who.headers), 404)
        assert_error(client.post(f"/api/teams/{s.team.id}/webhooks", json={"url": receiver.url("/x")},
                                 headers=who.headers), 404)
        for method, path in (("get", f"/api/webhooks/{hid}"), ("patch", f"/api/webhooks/{hid}"),
                             ("delete", f"/api/webhooks/{hid}"), ("post", f"/api/webhooks/{hid}/rotate-secret"),
                             ("post", f"/api/webhooks/{hid}/ping"), ("get", f"/api/webhooks/{hid}/deliveries")):
            kwargs = {"json": {"active": False}} if method == "patch" else {}
            assert_error(getattr(client, method)(path, headers=who.headers, **kwargs), 404)
    assert_error(client.get("/api/teams/999999/webhooks", headers=s.team_owner.headers), 404)
    assert_error(client.get("/api/webhooks/999999", headers=s.team_owner.headers), 404)
    assert db.session.get(Webhook, hid).active is True  # nobody else changed it


def test_update_and_delete(client, team_setup, receiver, private_ok):
    s = team_setup
    hook = create_hook(client, s.team_owner, s.team.id, receiver)
    changed = client.patch(f"/api/webhooks/{hook['id']}", headers=s.team_admin.headers,
                           json={"events": ["task.created", "comment.created"], "active": False})
    assert changed.status_code == 200
    assert changed.json["events"] == ["comment.created", "task.created"] and changed.json["active"] is False
    assert client.delete(f"/api/webhooks/{hook['id']}", headers=s.team_owner.headers).status_code == 204
    assert_error(client.get(f"/api/webhooks/{hook['id']}", headers=s.team_owner.headers), 404)


def test_bad_input_is_422(client, team_setup, receiver, app):
    s = team_setup
    url = f"/api/teams/{s.team.id}/webhooks"
    h = s.team_owner.headers
    # loopback refused while WEBHOOK_ALLOW_PRIVATE_TARGETS is off (the default)
    body = assert_error(client.post(url, json={"url": receiver.url("/hook")}, headers=h), 422)
    assert "url" in body["details"]
    for bad in ({"url": "ftp://example.com/x"}, {"url": "http://user:pw@example.com/"}, {"url": ""},
                {"url": "http://10.0.0.1/"}, {"url": "http://[::1]/"}, {"url": "http://169.254.169.254/"},
                {"url": "https://example.com/h", "events": ["task.exploded"]},
                {"url": "https://example.com/h", "events": []}, {"url": 5}, {}):
        response = client.post(url, json=bad, headers=h)
        assert_error(response, 422)
    app.config["WEBHOOK_ALLOW_PRIVATE_TARGETS"] = True
    try:
        hook = create_hook(client, s.team_owner, s.team.id, receiver)
    finally:
        app.config["WEBHOOK_ALLOW_PRIVATE_TARGETS"] = False
    assert_error(client.patch(f"/api/webhooks/{hook['id']}", json={"url": "http://127.0.0.1:9/"}, headers=h), 422)
    assert_error(client.patch(f"/api/webhooks/{hook['id']}", json={"events": ["nope"]}, headers=h), 422)
    assert_error(client.post(url, data="{", content_type="application/json", headers=h), 400)


# ---------------------------------------------------------------------- deliveries

def test_a_team_task_is_delivered_after_commit_signed_with_the_api_data(client, team_setup, receiver, private_ok):
    s = team_setup
    hook = create_hook(client, s.team_owner, s.team.id, receiver)
    task = team_task(client, s.member, s.team.id)

    [got] = receiver.received
    assert got.verified and got.answered == 200
    body = json.loads(got.body)
    assert body["event"] == "task.created" and body["team_id"] == s.team.id and body["actor_id"] == s.member.id
    assert body["data"]["id"] == task["id"] and body["data"]["title"] == task["title"]
    assert body["id"] == int(got.headers["X-TaskTracker-Delivery"])
    [row] = deliveries(hook["id"])
    assert row.status == DeliveryStatus.SUCCEEDED and row.attempts == 1 and row.body == got.body
    page = client.get(f"/api/webhooks/{hook['id']}/deliveries", headers=s.team_owner.headers).json
    assert page["total"] == 1 and page["items"][0]["status"] == "succeeded"
    assert set(page["items"][0]) == {"id", "event", "status", "attempts", "response_status", "error",
                                     "duration_ms", "created_at", "next_attempt_at", "delivered_at"}
    # an update, a status change and a comment each give one delivery
    client.patch(f"/api/tasks/{task['id']}", json={"title": "Write more docs"}, headers=s.member.headers)
    client.post(f"/api/tasks/{task['id']}/comments", json={"body": "On it"}, headers=s.member.headers)
    events = [json.loads(r.body)["event"] for r in receiver.succeeded()]
    assert events == ["task.created", "task.updated", "comment.created"]
    assert len(set(receiver.delivery_ids())) == 3


def test_rolled_back_change_writes_no_delivery(client, team_setup, receiver, private_ok):
    s = team_setup
    hook = create_hook(client, s.team_owner, s.team.id, receiver)
    record_event("task.created", actor_id=s.team_owner.id, team_id=s.team.id, payload={"task": {"id": 1}})
    db.session.flush()
    db.session.rollback()
    assert deliveries(hook["id"]) == [] and receiver.received == []


def test_event_filters_and_team_scoping(client, team_setup, receiver, private_ok, auth):
    s = team_setup
    only_comments = create_hook(client, s.team_owner, s.team.id, receiver, "/comments", events=["comment.created"])
    everything = create_hook(client, s.team_owner, s.team.id, receiver, "/all")
    other_owner = auth.user("other_owner")
    other_team = TeamFactory(owner=orm_user(other_owner), name="Other")
    elsewhere = create_hook(client, other_owner, other_team.id, receiver, "/other")

    task = team_task(client, s.team_owner, s.team.id)
    client.post("/api/tasks", json={"title": "personal"}, headers=s.team_owner.headers)  # no team: no webhook
    client.post(f"/api/tasks/{task['id']}/comments", json={"body": "hi"}, headers=s.team_owner.headers)

    assert [json.loads(r.body)["event"] for r in receiver.succeeded("/comments")] == ["comment.created"]
    assert [json.loads(r.body)["event"] for r in receiver.succeeded("/all")] == ["task.created", "comment.created"]
    assert receiver.succeeded("/other") == [] and deliveries(elsewhere["id"]) == []
    assert len(deliveries(only_comments["id"])) == 1 and len(deliveries(everything["id"])) == 2


def test_member_events_are_delivered(client, team_setup, receiver, private_ok):
    s = team_setup
    create_hook(client, s.team_owner, s.team.id, receiver, events=["member.left"])
    assert client.delete(f"/api/teams/{s.team.id}/members/{s.member.id}",
                         headers=s.team_owner.headers).status_code == 204
    [got] = receiver.succeeded()
    body = json.loads(got.body)
    assert body["event"] == "member.left" and body["data"]["user_id"] == s.member.id


def test_ping_rotate_secret_and_redeliver(client, team_setup, receiver, private_ok):
    s = team_setup
    hook = create_hook(client, s.team_owner, s.team.id, receiver)
    ping = client.post(f"/api/webhooks/{hook['id']}/ping", headers=s.team_admin.headers)
    assert ping.status_code == 202
    [got] = receiver.succeeded()
    assert got.headers["X-TaskTracker-Event"] == "ping" and int(got.headers["X-TaskTracker-Delivery"]) == ping.json["delivery_id"]
    assert json.loads(got.body)["data"]["id"] == hook["id"]

    old = hook["secret"]
    rotated = client.post(f"/api/webhooks/{hook['id']}/rotate-secret", headers=s.team_owner.headers)
    assert rotated.status_code == 200 and rotated.json["secret"] != old
    receiver.secrets["/hook"] = rotated.json["secret"]
    team_task(client, s.team_owner, s.team.id)
    last = receiver.received[-1]
    assert last.verified
    assert not signing.verify(old, last.headers["X-TaskTracker-Timestamp"], last.body,
                              last.headers["X-TaskTracker-Signature"])

    did = int(last.headers["X-TaskTracker-Delivery"])
    again = client.post(f"/api/webhook-deliveries/{did}/redeliver", headers=s.team_owner.headers)
    assert again.status_code == 202 and again.json["delivery_id"] == did
    assert receiver.received[-1].body == last.body and receiver.received[-1].verified
    assert receiver.delivery_ids().count(did) == 2
    assert len(deliveries(hook["id"])) == 2  # the ping and the task: a redelivery adds no row
    assert db.session.get(WebhookDelivery, did).attempts == 2
    for who in (s.member, s.outsider):
        assert_error(client.post(f"/api/webhook-deliveries/{did}/redeliver", headers=who.headers), 404)
    assert_error(client.post("/api/webhook-deliveries/999999/redeliver", headers=s.team_owner.headers), 404)


def test_receiver_down_then_up_everything_arrives_once(client, team_setup, receiver, private_ok):
    s = team_setup
    hook = create_hook(client, s.team_owner, s.team.id, receiver)
    receiver.stop()
    ids = [team_task(client, s.team_owner, s.team.id, f"t{i}")["id"] for i in range(5)]
    rows = deliveries(hook["id"])
    assert len(rows) == 5 and all(r.status == DeliveryStatus.PENDING and r.attempts == 1 for r in rows)
    assert all(r.error and r.error.startswith("connection error") for r in rows)
    receiver.start()  # same port
    # the scan, a minute later (past the 30 s +-10 % backoff): each sent once
    with delivery.make_client() as http:
        later = utcnow() + timedelta(minutes=1)
        outcomes = delivery.run_due(clock=lambda: later, client=http, allow_private=True)
        assert len(outcomes) == 5
        assert delivery.run_due(clock=lambda: later + timedelta(hours=1), client=http, allow_private=True) == []
    got = sorted(json.loads(r.body)["data"]["id"] for r in receiver.succeeded())
    assert got == sorted(ids) and len(set(receiver.delivery_ids())) == 5
    assert all(r.status == DeliveryStatus.SUCCEEDED for r in deliveries(hook["id"]))


def test_auto_disable_notifies_the_team_owner(client, team_setup, receiver, private_ok):
    s = team_setup
    hook = create_hook(client, s.team_owner, s.team.id, receiver)
    receiver.status = 500
    team_task(client, s.team_admin, s.team.id)
    webhook = db.session.get(Webhook, hook["id"])
    assert webhook.consecutive_failures == 1 and webhook.active
    # the failure run started 25 h ago: the next failed attempt disables the webhook
    webhook.first_failure_at = utcnow() - timedelta(hours=25)
    db.session.commit()
    team_task(client, s.team_admin, s.team.id, "second")
    db.session.expire_all()
    webhook = db.session.get(Webhook, hook["id"])
    assert webhook.active is False and webhook.disabled_reason
    [note] = notifications_for(s.team_owner.id, "webhook_disabled")
    assert note.data["webhook_id"] == hook["id"] and note.data["url"] == hook["url"]
    assert notifications_for(s.team_admin.id, "webhook_disabled") == []
    shown = client.get(f"/api/webhooks/{hook['id']}", headers=s.team_owner.headers).json
    assert shown["active"] is False and shown["disabled_reason"] == webhook.disabled_reason
    # while inactive, new events wait as nothing (no delivery for an inactive webhook), pings still go
    receiver.status = 200
    before = len(receiver.received)
    team_task(client, s.team_admin, s.team.id, "third")
    assert len(receiver.received) == before
    assert client.post(f"/api/webhooks/{hook['id']}/ping", headers=s.team_owner.headers).status_code == 202
    assert receiver.received[-1].headers["X-TaskTracker-Event"] == "ping"
    # re-enabling clears the reason
    on = client.patch(f"/api/webhooks/{hook['id']}", json={"active": True}, headers=s.team_owner.headers).json
    assert on["active"] is True and on["disabled_reason"] is None and on["consecutive_failures"] == 0


def test_embedded_mode_sends_from_the_in_process_worker(client, team_setup, receiver, private_ok, app, monkeypatch):
    """Embedded (thread) mode: the hand-off goes to the in-process job thread after the
    commit, and the embedded scans send retries (run_all_scans -> run_due_deliveries)."""
    from tasktracker import jobs
    from tasktracker.jobs.scans import run_all_scans

    monkeypatch.setitem(app.config, "JOBS_INLINE", False)
    assert jobs.jobs_mode(app) == "thread"
    s = team_setup
    hook = create_hook(client, s.team_owner, s.team.id, receiver)
    team_task(client, s.team_owner, s.team.id)
    assert jobs.wait_idle(10)
    assert [json.loads(r.body)["event"] for r in receiver.succeeded()] == ["task.created"]
    # a failed first attempt is retried by the embedded scans once due
    receiver.fail_next = 1
    team_task(client, s.team_owner, s.team.id, "retry me")
    assert jobs.wait_idle(10)
    pending = [r for r in deliveries(hook["id"]) if r.status == DeliveryStatus.PENDING]
    assert len(pending) == 1 and pending[0].attempts == 1
    db.session.execute(sa.update(WebhookDelivery).where(WebhookDelivery.id == pending[0].id)
                       .values(next_attempt_at=utcnow() - timedelta(seconds=1)))
    db.session.commit()
    assert run_all_scans(app)["webhook_deliveries"] == 1
    assert all(r.status == DeliveryStatus.SUCCEEDED for r in deliveries(hook["id"]))
