"""Notifications REST: list (newest first, paginated, unread filter, unread_count),
mark read/unread, read-all, and never another user's (api-contract.md, "Notifications")."""

from __future__ import annotations

from tasktracker.extensions import db
from tasktracker.notifications.models import Notification
from tests.helpers import add_notification, api_task, notifications_for

FIELDS = {"id", "type", "message", "task_id", "team_id", "actor", "actor_id", "data", "read_at", "created_at", "seq"}


def test_list_newest_first_paginated_with_unread_count(client, auth):
    alice, bob = auth.user("alice"), auth.user("bob")
    oldest = add_notification(bob.id, actor_id=alice.id, age_seconds=30, read=True)
    middle = add_notification(bob.id, actor_id=alice.id, age_seconds=20)
    newest = add_notification(bob.id, age_seconds=10)
    add_notification(alice.id)  # somebody else's

    r = client.get("/api/notifications?per_page=2", headers=bob.headers)
    assert r.status_code == 200
    body = r.json
    assert [n["id"] for n in body["items"]] == [newest.id, middle.id]
    assert (body["page"], body["per_page"], body["total"], body["pages"]) == (1, 2, 3, 2)
    assert body["unread_count"] == 2
    item = body["items"][1]
    assert set(item) == FIELDS
    assert item["seq"] == middle.event_seq and item["type"] == "task_updated"
    assert item["actor"] == {"id": alice.id, "username": "alice", "full_name": ""}
    assert item["read_at"] is None and item["created_at"].endswith("Z") and item["data"] == {"k": 1}
    assert body["items"][0]["actor"] is None  # a system notification

    r = client.get("/api/notifications?per_page=2&page=2", headers=bob.headers)
    assert [n["id"] for n in r.json["items"]] == [oldest.id]
    assert r.json["items"][0]["read_at"].endswith("Z") and r.json["unread_count"] == 2


def test_unread_filter(client, auth):
    bob = auth.user("bob")
    read = add_notification(bob.id, read=True, age_seconds=5)
    unread = add_notification(bob.id)

    r = client.get("/api/notifications?unread=true", headers=bob.headers)
    assert r.status_code == 200
    assert [n["id"] for n in r.json["items"]] == [unread.id]
    assert r.json["total"] == 1 and r.json["unread_count"] == 1

    r = client.get("/api/notifications?unread=false", headers=bob.headers)
    assert [n["id"] for n in r.json["items"]] == [unread.id, read.id]

    r = client.get("/api/notifications?unread=maybe", headers=bob.headers)
    assert r.status_code == 422 and "unread" in r.json["error"]["details"]
    r = client.get("/api/notifications?per_page=101", headers=bob.headers)
    assert r.status_code == 422


def test_mark_read_and_unread(client, auth):
    bob = auth.user("bob")
    n = add_notification(bob.id)

    r = client.patch(f"/api/notifications/{n.id}", json={"read": True}, headers=bob.headers)
    assert r.status_code == 200 and r.json["id"] == n.id
    first_read_at = r.json["read_at"]
    assert first_read_at.endswith("Z")
    assert client.get("/api/notifications", headers=bob.headers).json["unread_count"] == 0

    r = client.patch(f"/api/notifications/{n.id}", json={"read": True}, headers=bob.headers)
    assert r.status_code == 200 and r.json["read_at"] == first_read_at  # kept, not bumped

    r = client.patch(f"/api/notifications/{n.id}", json={"read": False}, headers=bob.headers)
    assert r.status_code == 200 and r.json["read_at"] is None
    assert client.get("/api/notifications", headers=bob.headers).json["unread_count"] == 1


def test_another_users_notification_is_404_and_untouched(client, auth):
    alice, bob = auth.user("alice"), auth.user("bob")
    n = add_notification(alice.id)

    r = client.patch(f"/api/notifications/{n.id}", json={"read": True}, headers=bob.headers)
    assert r.status_code == 404 and r.json["error"]["code"] == "notification_not_found"
    db.session.expire_all()
    assert db.session.get(Notification, n.id).read_at is None
    for missing in (n.id + 1000, 0, 2**70):
        r = client.patch(f"/api/notifications/{missing}", json={"read": True}, headers=bob.headers)
        assert r.status_code == 404


def test_patch_body_validation(client, auth):
    bob = auth.user("bob")
    n = add_notification(bob.id)
    url = f"/api/notifications/{n.id}"
    for body in ({}, {"read": "perhaps"}, {"read": True, "extra": 1}, {"read": None}):
        r = client.patch(url, json=body, headers=bob.headers)
        assert r.status_code == 422, body
    r = client.patch(url, data="read=true", headers={**bob.headers, "Content-Type": "text/plain"})
    assert r.status_code == 415
    r = client.patch(url, data="{not json", headers={**bob.headers, "Content-Type": "application/json"})
    assert r.status_code == 400
    r = client.patch(url, json=[True], headers=bob.headers)
    assert r.status_code == 400
    assert notifications_for(bob.id)[0].read_at is None


def test_read_all_marks_only_the_callers_unread(client, auth):
    alice, bob = auth.user("alice"), auth.user("bob")
    already = add_notification(bob.id, read=True)
    for _ in range(3):
        add_notification(bob.id)
    other = add_notification(alice.id)
    already_read_at = already.read_at

    r = client.post("/api/notifications/read-all", headers=bob.headers)
    assert r.status_code == 200 and r.json == {"updated": 3}
    assert all(n.read_at is not None for n in notifications_for(bob.id))
    assert notifications_for(bob.id)[0].read_at == already_read_at
    assert notifications_for(alice.id)[0].id == other.id and notifications_for(alice.id)[0].read_at is None

    r = client.post("/api/notifications/read-all", headers=bob.headers)
    assert r.status_code == 200 and r.json == {"updated": 0}
    assert client.get("/api/notifications", headers=bob.headers).json["unread_count"] == 0


def test_authentication_required(client, auth):
    bob = auth.user("bob")
    n = add_notification(bob.id)
    assert client.get("/api/notifications").status_code == 401
    assert client.patch(f"/api/notifications/{n.id}", json={"read": True}).status_code == 401
    assert client.post("/api/notifications/read-all").status_code == 401
    bad = {"Authorization": "Bearer not-a-token"}
    assert client.get("/api/notifications", headers=bad).status_code == 401


def test_rest_write_notifies_the_assignee_not_the_actor(client, auth):
    """End to end (in-process fan-out): assigning a new task to bob notifies bob only."""
    alice, bob = auth.user("alice"), auth.user("bob")
    task = api_task(client, alice, title="Write the report", assignee_id=bob.id)

    r = client.get("/api/notifications", headers=bob.headers)
    assert r.status_code == 200 and r.json["total"] == 1 and r.json["unread_count"] == 1
    n = r.json["items"][0]
    assert n["type"] == "task_assigned" and n["task_id"] == task["id"]
    assert n["actor"]["id"] == alice.id and "Write the report" in n["message"]
    assert client.get("/api/notifications", headers=alice.headers).json["total"] == 0

    r = client.patch(f"/api/notifications/{n['id']}", json={"read": True}, headers=alice.headers)
    assert r.status_code == 404
