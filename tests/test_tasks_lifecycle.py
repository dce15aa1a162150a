"""Tasks: Idempotency-Key, soft delete / restore / permanent delete, activity log."""

from __future__ import annotations

import os
import secrets
from datetime import timedelta

import pytest
import sqlalchemy as sa

from tasktracker.attachments.models import Attachment
from tasktracker.comments.models import Comment
from tasktracker.core.types import utcnow
from tasktracker.events.models import Event
from tasktracker.extensions import db
from tasktracker.notifications.models import Notification
from tasktracker.tasks.models import IdempotencyKey, Reminder, Task
from tasktracker.tasks.services import idempotency as services
from tests.helpers import create_task, error_code, raised, run_together, task_events, task_row


def count(model) -> int:
    db.session.expire_all()
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


# --------------------------------------------------------------------------- idempotency


def test_idempotency_key_replays_first_result(client, people):
    h = {**people.owner.headers, "Idempotency-Key": "create-1"}
    body = {"title": "Once", "priority": "high"}
    first = client.post("/api/tasks", json=body, headers=h)
    assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers
    again = client.post("/api/tasks", json={"priority": "high", "title": "Once"}, headers=h)
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json == first.json
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers["ETag"] == first.headers["ETag"]
    assert count(Task) == 1 and count(IdempotencyKey) == 1
    assert [e.type for e in task_events(first.json["id"])] == ["task.created"]
    # same key, another body: refused, nothing created
    r = client.post("/api/tasks", json={"title": "Twice"}, headers=h)
    assert r.status_code == 422 and error_code(r) == "idempotency_key_reused"
    # same key from another user: an independent request
    r = client.post("/api/tasks", json=body, headers={**people.other.headers, "Idempotency-Key": "create-1"})
    assert r.status_code == 201 and r.json["id"] != first.json["id"]
    assert r.json["owner"]["id"] == people.other.id
    # without a key, every POST creates
    create_task(client, people.owner, **body)
    create_task(client, people.owner, **body)
    assert count(Task) == 4


def test_idempotency_key_expires_after_24_hours(client, alice):
    h = {**alice.headers, "Idempotency-Key": "daily"}
    first = client.post("/api/tasks", json={"title": "a"}, headers=h)
    record = db.session.scalar(sa.select(IdempotencyKey))
    record.created_at = utcnow() - timedelta(hours=24, minutes=1)
    db.session.commit()
    second = client.post("/api/tasks", json={"title": "a"}, headers=h)
    assert second.status_code == 201 and second.json["id"] != first.json["id"]
    assert "Idempotent-Replayed" not in second.headers
    assert count(Task) == 2 and count(IdempotencyKey) == 1


def test_expired_idempotency_keys_are_purged_in_batches(app, client, alice):
    """The scan deletes keys older than IDEMPOTENCY_TTL (unused ones would stay forever
    otherwise), in batches; fresh keys keep replaying."""
    for key in ("old-1", "old-2", "old-3", "fresh"):
        r = client.post("/api/tasks", json={"title": key}, headers={**alice.headers, "Idempotency-Key": key})
        assert r.status_code == 201
    db.session.execute(sa.update(IdempotencyKey).where(IdempotencyKey.key.like("old-%"))
                       .values(created_at=utcnow() - app.config["IDEMPOTENCY_TTL"] - timedelta(seconds=1)))
    db.session.commit()

    assert services.purge_expired_idempotency_keys(batch=2) == 3
    assert db.session.scalars(sa.select(IdempotencyKey.key)).all() == ["fresh"]
    assert services.purge_expired_idempotency_keys() == 0
    r = client.post("/api/tasks", json={"title": "fresh"}, headers={**alice.headers, "Idempotency-Key": "fresh"})
    assert r.status_code == 201 and r.headers.get("Idempotent-Replayed") == "true"
    assert count(Task) == 4  # the purged keys' tasks stay: only the keys go


def test_idempotency_key_header_validation_and_failed_first_request(client, alice):
    for bad in ("", "x" * 256, "with space"):
        r = client.post("/api/tasks", json={"title": "a"}, headers={**alice.headers, "Idempotency-Key": bad})
        assert r.status_code == 422 and "Idempotency-Key" in r.json["error"]["details"]
    # a refused request stores nothing: the key still works afterwards
    h = {**alice.headers, "Idempotency-Key": "k"}
    r = client.post("/api/tasks", json={"title": "a", "team_id": 12345}, headers=h)
    assert r.status_code == 422 and count(IdempotencyKey) == 0
    r = client.post("/api/tasks", json={"title": "a"}, headers=h)
    assert r.status_code == 201 and count(IdempotencyKey) == 1


def test_idempotency_race_loser_replays_winner(client, alice, monkeypatch):
    """The unique (user_id, key) constraint settles a race: the request that loses
    the insert rolls back and answers the winner's task."""
    h = {**alice.headers, "Idempotency-Key": "race"}
    winner = client.post("/api/tasks", json={"title": "r"}, headers=h)
    real_find = services._find_key
    calls = []

    def not_yet_visible(user_id, key):  # the winner's row is not visible at our first look
        calls.append(key)
        return None if len(calls) == 1 else real_find(user_id, key)

    monkeypatch.setattr(services, "_find_key", not_yet_visible)
    loser = client.post("/api/tasks", json={"title": "r"}, headers=h)
    assert len(calls) == 2  # looked up again after the IntegrityError
    assert loser.status_code == 201 and loser.json["id"] == winner.json["id"]
    r = client.post("/api/tasks", json={"title": "other"}, headers=h)
    assert r.status_code == 422 and error_code(r) == "idempotency_key_reused"
    assert count(Task) == 1 and count(Event) == 1


def test_idempotency_under_real_concurrency(app, alice):
    """Parallel requests with one key create exactly one task."""
    def post(client):
        r = client.post("/api/tasks", json={"title": "parallel"},
                        headers={**alice.headers, "Idempotency-Key": "par"})
        return r.status_code, (r.json or {}).get("id")

    results = run_together(app, *[post] * 4, timeout=30)
    assert not raised(results), results
    assert len(results) == 4
    assert {status for status, _ in results} == {201}, results
    assert len({task_id for _, task_id in results}) == 1
    assert count(Task) == 1 and count(IdempotencyKey) == 1 and count(Event) == 1


# --------------------------------------------------------------------------- soft delete / restore


def test_soft_delete_and_restore(client, people):
    task = create_task(client, people.owner, assignee_id=people.assignee.id)
    url = f"/api/tasks/{task['id']}"
    assert client.delete(url, headers=people.assignee.headers).status_code == 403
    assert client.delete(url, headers=people.other.headers).status_code == 404
    r = client.delete(url, headers=people.owner.headers)
    assert r.status_code == 204 and r.data == b""
    row = task_row(task["id"])
    assert row.deleted_at is not None and row.version == 2
    event = task_events(task["id"])[-1]
    assert event.type == "task.deleted" and event.payload["task"]["deleted_at"] is not None
    for session in (people.owner, people.assignee):
        assert client.get(url, headers=session.headers).status_code == 404
        assert client.get("/api/tasks", headers=session.headers).json["total"] == 0
        assert client.get(f"{url}/activity", headers=session.headers).status_code == 404
        assert client.patch(url, json={"title": "x"}, headers=session.headers).status_code == 404
    assert client.delete(url, headers=people.owner.headers).status_code == 404
    # the trash: the owner's, not the assignee's; admins see every trashed task
    trash = client.get("/api/tasks?deleted=only", headers=people.owner.headers).json
    assert [t["id"] for t in trash["items"]] == [task["id"]]
    assert client.get("/api/tasks?deleted=only", headers=people.assignee.headers).json["total"] == 0
    assert client.get("/api/tasks?deleted=only", headers=people.admin.headers).json["total"] == 1
    # restore
    assert client.patch(f"{url}/restore", headers=people.assignee.headers).status_code == 404
    assert client.patch(f"{url}/restore", headers=people.other.headers).status_code == 404
    r = client.patch(f"{url}/restore", headers=people.owner.headers)
    assert r.status_code == 200 and r.json["deleted_at"] is None and r.json["version"] == 3
    assert r.headers["ETag"] == '"3"'
    assert task_events(task["id"])[-1].type == "task.restored"
    assert task_events(task["id"])[-1].payload["task"] == r.json
    assert client.get(url, headers=people.assignee.headers).status_code == 200
    r = client.patch(f"{url}/restore", headers=people.owner.headers)
    assert r.status_code == 409 and error_code(r) == "not_deleted"
    assert client.patch(f"{url}/restore", headers=people.assignee.headers).status_code == 403


def test_team_trash_belongs_to_team_managers(client, team_setup):
    t = team_setup
    task = create_task(client, t.member, team_id=t.team.id)
    r = client.delete(f"/api/tasks/{task['id']}", headers=t.team_admin.headers)
    assert r.status_code == 204
    for session, visible in ((t.member, True), (t.team_admin, True), (t.team_owner, True), (t.outsider, False)):
        trash = client.get("/api/tasks?deleted=only", headers=session.headers).json
        assert (trash["total"] == 1) == visible, session.user["username"]
    r = client.patch(f"/api/tasks/{task['id']}/restore", headers=t.team_owner.headers)
    assert r.status_code == 200
    other = create_task(client, t.team_owner, team_id=t.team.id)
    assert client.delete(f"/api/tasks/{other['id']}", headers=t.member.headers).status_code == 403


def test_permanent_delete_only_from_trash_and_cascades(app, client, people):
    task = create_task(client, people.owner, assignee_id=people.assignee.id,
                       reminders=["2026-11-30T09:00:00Z"])
    keep = create_task(client, people.owner, title="keep", reminders=["2026-11-30T09:00:00Z"],
                       headers={"Idempotency-Key": "keep"})
    create_task(client, people.owner, title="gone-key", headers={"Idempotency-Key": "gone"})
    gone_key_task = db.session.scalar(sa.select(IdempotencyKey.task_id).where(IdempotencyKey.key == "gone"))
    upload_dir = app.config["UPLOAD_DIR"]
    os.makedirs(upload_dir, exist_ok=True)
    names = [secrets.token_hex(16) for _ in range(3)]
    for name in names[:2]:  # the third file is already missing: ignored
        with open(os.path.join(upload_dir, name), "wb") as f:
            f.write(b"data")
    keep_name = secrets.token_hex(16)
    with open(os.path.join(upload_dir, keep_name), "wb") as f:
        f.write(b"keep")
    for task_id, name in [(task["id"], n) for n in names] + [(keep["id"], keep_name)]:
        db.session.add(Attachment(task_id=task_id, uploaded_by_id=people.owner.id, filename="a.txt",
                                  stored_name=name, content_type="text/plain", size=4, sha256="0" * 64))
    db.session.add_all([Comment(task_id=task["id"], author_id=people.owner.id, body="hi"),
                        Comment(task_id=keep["id"], author_id=people.owner.id, body="stay")])
    own_event = Event(type="reminder.due", task_id=task["id"], payload={})  # not fanned out
    db.session.add(own_event)
    db.session.flush()
    db.session.add(Notification(user_id=people.assignee.id, event_seq=own_event.seq,
                                type="deadline_reminder", message="m", task_id=task["id"]))
    db.session.commit()
    url = f"/api/tasks/{task['id']}"

    r = client.delete(f"{url}?permanent=true", headers=people.owner.headers)
    assert r.status_code == 409 and error_code(r) == "not_in_trash"
    assert client.delete(f"{url}?permanent=maybe", headers=people.owner.headers).status_code == 422
    assert client.delete(f"{url}?permanent=true", headers=people.assignee.headers).status_code == 403
    assert client.delete(url, headers=people.owner.headers).status_code == 204
    assert client.delete(f"{url}?permanent=true", headers=people.assignee.headers).status_code == 404
    assert client.delete(f"{url}?permanent=true", headers=people.other.headers).status_code == 404
    r = client.delete(f"{url}?permanent=true", headers=people.owner.headers)
    assert r.status_code == 204

    assert task_row(task["id"]) is None
    for model in (Comment, Attachment, Reminder):
        rows = db.session.scalars(sa.select(model)).all()
        assert {row.task_id for row in rows} == {keep["id"]}, model
    assert db.session.scalar(sa.select(sa.func.count(Notification.id))
                             .where(Notification.task_id == task["id"])) == 0
    assert not any(os.path.exists(os.path.join(upload_dir, n)) for n in names)
    assert os.path.exists(os.path.join(upload_dir, keep_name))
    assert db.session.get(Task, gone_key_task) is not None  # other tasks untouched
    purged = task_events(task["id"])[-1]
    assert purged.type == "task.purged" and purged.actor_id == people.owner.id
    assert purged.payload == {"task_id": task["id"], "title": "Task", "owner_id": people.owner.id,
                              "assignee_id": people.assignee.id}
    assert client.get("/api/tasks?deleted=only", headers=people.owner.headers).json["total"] == 0
    assert client.patch(f"{url}/restore", headers=people.owner.headers).status_code == 404
    assert client.delete(f"{url}?permanent=true", headers=people.owner.headers).status_code == 404


def test_purge_removes_idempotency_key_of_the_task(client, alice):
    task = create_task(client, alice, headers={"Idempotency-Key": "p"})
    client.delete(f"/api/tasks/{task['id']}", headers=alice.headers)
    assert client.delete(f"/api/tasks/{task['id']}?permanent=true", headers=alice.headers).status_code == 204
    assert count(IdempotencyKey) == 0
    again = create_task(client, alice, headers={"Idempotency-Key": "p"})
    assert again["id"] != task["id"]


# --------------------------------------------------------------------------- activity


def test_activity_log(client, people):
    task = create_task(client, people.owner, title="a")
    url = f"/api/tasks/{task['id']}"
    h = people.owner.headers
    client.patch(url, json={"title": "b", "description": "x"}, headers=h)
    client.patch(f"{url}/status", json={"status": "in_progress"}, headers=h)
    client.patch(f"{url}/assign", json={"assignee_id": people.assignee.id}, headers=h)
    client.patch(url, json={"description": "y"}, headers=people.assignee.headers)
    r = client.get(f"{url}/activity", headers=people.assignee.headers)
    assert r.status_code == 200
    page = r.json
    assert page["total"] == 5 and page["pages"] == 1
    items = page["items"]
    assert [i["type"] for i in items] == ["task.updated", "task.assigned", "task.status_changed",
                                          "task.updated", "task.created"]
    assert [i["id"] for i in items] == sorted((i["id"] for i in items), reverse=True)
    assert items[0]["actor"] == {"id": people.assignee.id, "username": "assignee",
                                 "full_name": people.assignee.user["full_name"]}
    assert items[0]["changes"] == {"description": ["x", "y"]}
    assert items[1]["changes"] == {"assignee_id": [None, people.assignee.id]}
    assert items[2]["changes"] == {"status": ["todo", "in_progress"]}
    assert items[3]["changes"] == {"title": ["a", "b"], "description": ["", "x"]}
    assert items[4]["changes"] == {} and items[4]["created_at"].endswith("Z")
    assert set(items[0]) == {"id", "type", "actor", "changes", "created_at"}
    r = client.get(f"{url}/activity?per_page=2&page=3", headers=h)
    assert r.json["pages"] == 3 and [i["type"] for i in r.json["items"]] == ["task.created"]
    assert client.get(f"{url}/activity", headers=people.other.headers).status_code == 404
    assert client.get(f"{url}/activity?per_page=101", headers=h).status_code == 422
    assert client.get("/api/tasks/999999/activity", headers=h).status_code == 404


def test_activity_actor_may_be_null(client, alice):
    task = create_task(client, alice)
    db.session.add(Event(type="reminder.due", actor_id=None, task_id=task["id"], payload={}))
    db.session.commit()
    items = client.get(f"/api/tasks/{task['id']}/activity", headers=alice.headers).json["items"]
    assert items[0]["type"] == "reminder.due" and items[0]["actor"] is None and items[0]["changes"] == {}


@pytest.mark.parametrize("bad", ["page=0", "per_page=0", "per_page=101", "page=x"])
def test_activity_pagination_validation(client, alice, bad):
    task = create_task(client, alice)
    assert client.get(f"/api/tasks/{task['id']}/activity?{bad}", headers=alice.headers).status_code == 422
