"""Tasks: create, read, update (PUT/PATCH), status, assign, ETag/If-Match, permissions."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from tasktracker.auth.models import User
from tasktracker.extensions import db
from tasktracker.tasks.models import Reminder, Task
from tasktracker.tasks.services import writes as services
from tests.helpers import create_task, error_code, task_events, task_row

# --------------------------------------------------------------------------- create


def test_create_minimal_uses_defaults(client, people):
    r = client.post("/api/tasks", json={"title": "  Write spec  "}, headers=people.owner.headers)
    assert r.status_code == 201
    body = r.json
    assert r.headers["Location"] == f"/api/tasks/{body['id']}"
    assert r.headers["ETag"] == '"1"'
    assert body["title"] == "Write spec"
    assert body["description"] == ""
    assert body["status"] == "todo" and body["priority"] == "medium"
    assert body["due_at"] is None and body["assignee"] is None and body["team_id"] is None
    assert body["owner"] == {"id": people.owner.id, "username": "owner",
                             "full_name": people.owner.user["full_name"]}
    assert body["reminders"] == [] and body["version"] == 1
    assert body["completed_at"] is None and body["deleted_at"] is None
    assert body["created_at"].endswith("Z") and body["updated_at"] == body["created_at"]
    assert body["labels"] == [] and body["checklist"] == []  # v1.1
    assert body["recurrence"] is None and body["recurrence_of"] is None
    assert set(body) == {"id", "title", "description", "status", "priority", "due_at", "owner",
                         "assignee", "team_id", "reminders", "labels", "checklist", "recurrence",
                         "recurrence_of", "created_at", "updated_at", "completed_at", "deleted_at",
                         "version"}
    r = client.get(r.headers["Location"], headers=people.owner.headers)
    assert r.status_code == 200 and r.json == body and r.headers["ETag"] == '"1"'


def test_create_full_converts_offsets_to_utc(client, people):
    body = create_task(client, people.owner, title="Ship", description="v1", priority="urgent",
                       due_at="2026-12-01T09:00:00+01:00", assignee_id=people.assignee.id,
                       reminders=["2026-11-30T12:00:00-05:00", "2026-11-29T08:00:00Z",
                                  "2026-11-29T09:00:00+01:00"])
    assert body["due_at"] == "2026-12-01T08:00:00Z"
    # sorted, and the two equal instants merged into one reminder
    assert [r["remind_at"] for r in body["reminders"]] == ["2026-11-29T08:00:00Z", "2026-11-30T17:00:00Z"]
    assert all(r["sent_at"] is None and isinstance(r["id"], int) for r in body["reminders"])
    assert body["assignee"]["id"] == people.assignee.id and body["priority"] == "urgent"
    # the assignee of a personal task sees it
    r = client.get(f"/api/tasks/{body['id']}", headers=people.assignee.headers)
    assert r.status_code == 200 and r.json["due_at"] == "2026-12-01T08:00:00Z"


def test_create_done_sets_completed_at(client, alice):
    body = create_task(client, alice, status="done")
    assert body["status"] == "done" and body["completed_at"].endswith("Z")


def test_create_writes_task_created_event(client, people):
    body = create_task(client, people.owner, title="Evented")
    [event] = task_events(body["id"])
    assert event.type == "task.created" and event.actor_id == people.owner.id
    assert event.task_id == body["id"] and event.team_id is None
    assert event.payload == {"task": body}


@pytest.mark.parametrize("payload, field", [
    ({}, "title"),
    ({"title": ""}, "title"),
    ({"title": "   "}, "title"),
    ({"title": "x" * 201}, "title"),
    ({"title": None}, "title"),
    ({"title": 5}, "title"),
    ({"title": "t", "due_at": "2026-12-01T09:00:00"}, "due_at"),
    ({"title": "t", "due_at": "tomorrow"}, "due_at"),
    ({"title": "t", "due_at": "0001-01-01T00:00:00+01:00"}, "due_at"),
    ({"title": "t", "status": "blocked"}, "status"),
    ({"title": "t", "priority": "critical"}, "priority"),
    ({"title": "t", "owner_id": 1}, "owner_id"),
    ({"title": "t", "assignee_id": "2"}, "assignee_id"),
    ({"title": "t", "assignee_id": 0}, "assignee_id"),
    ({"title": "t", "team_id": 10**20}, "team_id"),
    ({"title": "t", "reminders": ["2026-12-01T09:00:00"]}, "reminders"),
    ({"title": "t", "reminders": "2026-12-01T09:00:00Z"}, "reminders"),
    ({"title": "t", "reminders": ["2026-12-01T09:00:00Z"] * 21}, "reminders"),
])
def test_create_validation_errors_are_422(client, alice, payload, field):
    r = client.post("/api/tasks", json=payload, headers=alice.headers)
    assert r.status_code == 422, r.json
    assert error_code(r) == "validation_error" and field in r.json["error"]["details"]
    assert db.session.scalar(sa.select(sa.func.count(Task.id))) == 0


def test_create_body_errors(client, alice):
    r = client.post("/api/tasks", data="{not json", content_type="application/json",
                    headers=alice.headers)
    assert r.status_code == 400 and error_code(r) == "malformed_json"
    r = client.post("/api/tasks", json=["title"], headers=alice.headers)
    assert r.status_code == 400
    r = client.post("/api/tasks", data="title=x", content_type="text/plain",
                    headers=alice.headers)
    assert r.status_code == 415


def test_create_assignee_must_exist_and_be_active(client, people):
    r = client.post("/api/tasks", json={"title": "t", "assignee_id": 99999}, headers=people.owner.headers)
    assert r.status_code == 422 and "assignee_id" in r.json["error"]["details"]
    db.session.get(User, people.other.id).active = False
    db.session.commit()
    r = client.post("/api/tasks", json={"title": "t", "assignee_id": people.other.id},
                    headers=people.owner.headers)
    assert r.status_code == 422 and "assignee_id" in r.json["error"]["details"]


def test_create_in_team_needs_membership(client, team_setup, people):
    t = team_setup
    body = create_task(client, t.member, team_id=t.team.id, assignee_id=t.team_admin.id)
    assert body["team_id"] == t.team.id and body["assignee"]["id"] == t.team_admin.id
    [event] = task_events(body["id"])
    assert event.team_id == t.team.id
    # a non-member gets 422 on team_id; an unknown team looks the same
    for team_id in (t.team.id, 999999):
        r = client.post("/api/tasks", json={"title": "t", "team_id": team_id}, headers=t.outsider.headers)
        assert r.status_code == 422 and list(r.json["error"]["details"]) == ["team_id"]
    # the assignee of a team task must be a member
    r = client.post("/api/tasks", json={"title": "t", "team_id": t.team.id, "assignee_id": t.outsider.id},
                    headers=t.member.headers)
    assert r.status_code == 422 and list(r.json["error"]["details"]) == ["assignee_id"]
    # site admins may file tasks into any existing team
    assert create_task(client, people.admin, team_id=t.team.id)["team_id"] == t.team.id


@pytest.mark.parametrize("method, path", [
    ("get", "/api/tasks"), ("post", "/api/tasks"), ("get", "/api/tasks/search?q=a"),
    ("get", "/api/tasks/1"), ("put", "/api/tasks/1"), ("patch", "/api/tasks/1"),
    ("delete", "/api/tasks/1"), ("patch", "/api/tasks/1/status"), ("patch", "/api/tasks/1/assign"),
    ("patch", "/api/tasks/1/restore"), ("get", "/api/tasks/1/activity"),
])
def test_anonymous_gets_401(client, method, path):
    r = getattr(client, method)(path, json={"title": "x"} if method in ("post", "put", "patch") else None)
    assert r.status_code == 401 and set(r.json) == {"error"}
    r = getattr(client, method)(path, headers={"Authorization": "Bearer not.a.token"})
    assert r.status_code == 401


# --------------------------------------------------------------------------- visibility and rights


def test_visibility(client, people, team_setup):
    t = team_setup
    personal = create_task(client, people.owner, assignee_id=people.assignee.id)
    team_task = create_task(client, t.team_owner, team_id=t.team.id)
    expected = [
        (people.owner, {personal["id"]}), (people.assignee, {personal["id"]}), (people.other, set()),
        (people.admin, {personal["id"], team_task["id"]}), (t.member, {team_task["id"]}),
        (t.team_admin, {team_task["id"]}), (t.outsider, set()),
    ]
    for session, ids in expected:
        r = client.get("/api/tasks", headers=session.headers)
        assert {item["id"] for item in r.json["items"]} == ids, session.user["username"]
        for task in (personal, team_task):
            r = client.get(f"/api/tasks/{task['id']}", headers=session.headers)
            assert r.status_code == (200 if task["id"] in ids else 404)
    r = client.get("/api/tasks/999999", headers=people.owner.headers)
    assert r.status_code == 404 and error_code(r) == "task_not_found"
    r = client.get(f"/api/tasks/{10**12}", headers=people.admin.headers)
    assert r.status_code == 404


def test_who_may_edit(client, people, team_setup):
    t = team_setup
    personal = create_task(client, people.owner, assignee_id=people.assignee.id)
    team_task = create_task(client, t.team_owner, team_id=t.team.id)
    cases = [
        (personal, people.owner, 200), (personal, people.assignee, 200), (personal, people.admin, 200),
        (personal, people.other, 404), (team_task, t.team_owner, 200), (team_task, t.team_admin, 200),
        (team_task, t.member, 403), (team_task, t.outsider, 404),
    ]
    for n, (task, session, status) in enumerate(cases):
        r = client.patch(f"/api/tasks/{task['id']}", json={"description": f"edit {n}"},
                         headers=session.headers)
        assert r.status_code == status, (n, r.json)
        if status == 403:
            assert error_code(r) == "forbidden"
        r2 = client.patch(f"/api/tasks/{task['id']}/status", json={"status": "in_progress"},
                          headers=session.headers)
        if status != 200:
            assert r2.status_code == status
    assert task_row(team_task["id"]).description == "edit 5"


def test_team_and_assignee_changes_need_manage_rights(client, people, team_setup):
    t = team_setup
    personal = create_task(client, people.owner, assignee_id=people.assignee.id)
    url = f"/api/tasks/{personal['id']}"
    # the assignee may edit but not re-assign or move the task
    r = client.patch(url, json={"assignee_id": people.other.id}, headers=people.assignee.headers)
    assert r.status_code == 403
    r = client.patch(url, json={"assignee_id": None}, headers=people.assignee.headers)
    assert r.status_code == 403
    r = client.patch(f"{url}/assign", json={"assignee_id": None}, headers=people.assignee.headers)
    assert r.status_code == 403
    # sending the current values is no change and is allowed
    r = client.patch(url, json={"assignee_id": people.assignee.id, "team_id": None, "title": "Mine"},
                     headers=people.assignee.headers)
    assert r.status_code == 200 and r.json["title"] == "Mine"
    # a team admin may re-assign a team task; a plain member may not even edit it
    team_task = create_task(client, t.member, team_id=t.team.id, assignee_id=t.member.id)
    r = client.patch(f"/api/tasks/{team_task['id']}", json={"assignee_id": t.team_admin.id},
                     headers=t.member.headers)  # member is owner of this task: may manage
    assert r.status_code == 200 and r.json["assignee"]["id"] == t.team_admin.id
    r = client.patch(f"/api/tasks/{team_task['id']}/assign", json={"assignee_id": t.team_owner.id},
                     headers=t.team_admin.headers)
    assert r.status_code == 200 and r.json["assignee"]["id"] == t.team_owner.id


def test_moving_between_personal_and_team(client, people, team_setup):
    t = team_setup
    task = create_task(client, t.member, assignee_id=people.other.id)
    url = f"/api/tasks/{task['id']}"
    # into a team the caller belongs to, but the assignee is no member: 422 on assignee_id
    r = client.patch(url, json={"team_id": t.team.id}, headers=t.member.headers)
    assert r.status_code == 422 and list(r.json["error"]["details"]) == ["assignee_id"]
    r = client.patch(url, json={"team_id": t.team.id, "assignee_id": t.team_owner.id},
                     headers=t.member.headers)
    assert r.status_code == 200 and r.json["team_id"] == t.team.id
    # the outsider owns a task and may not move it into a team they are not in
    own = create_task(client, t.outsider)
    r = client.patch(f"/api/tasks/{own['id']}", json={"team_id": t.team.id}, headers=t.outsider.headers)
    assert r.status_code == 422 and list(r.json["error"]["details"]) == ["team_id"]
    # back to personal
    r = client.patch(url, json={"team_id": None}, headers=t.member.headers)
    assert r.status_code == 200 and r.json["team_id"] is None
    types = [e.type for e in task_events(task["id"])]
    assert types == ["task.created", "task.updated", "task.assigned", "task.updated"]
    moved = task_events(task["id"])[1]
    assert moved.payload["changes"] == {"team_id": [None, t.team.id]} and moved.team_id == t.team.id


# --------------------------------------------------------------------------- PUT / PATCH


def test_put_replaces_and_resets_omitted_fields(client, people):
    task = create_task(client, people.owner, description="d", priority="high", status="in_progress",
                       due_at="2026-12-01T09:00:00Z", assignee_id=people.assignee.id,
                       reminders=["2026-11-30T09:00:00Z"])
    url = f"/api/tasks/{task['id']}"
    r = client.put(url, json={"title": "Only title"}, headers=people.owner.headers)
    assert r.status_code == 200, r.json
    body = r.json
    assert body["title"] == "Only title" and body["description"] == "" and body["priority"] == "medium"
    assert body["due_at"] is None and body["assignee"] is None and body["reminders"] == []
    assert body["status"] == "todo" and body["version"] == 2 and r.headers["ETag"] == '"2"'
    assert body["updated_at"] > task["updated_at"]
    assert db.session.scalar(sa.select(sa.func.count(Reminder.id))) == 0
    # title is required; unknown fields are refused
    r = client.put(url, json={"description": "x"}, headers=people.owner.headers)
    assert r.status_code == 422 and "title" in r.json["error"]["details"]
    r = client.put(url, json={"title": "x", "version": 3}, headers=people.owner.headers)
    assert r.status_code == 422 and "version" in r.json["error"]["details"]
    # a done task cannot be PUT back to todo (omitted status = todo)
    client.patch(f"{url}/status", json={"status": "done"}, headers=people.owner.headers)
    r = client.put(url, json={"title": "x"}, headers=people.owner.headers)
    assert r.status_code == 409 and error_code(r) == "invalid_transition"
    r = client.put(url, json={"title": "x", "status": "done"}, headers=people.owner.headers)
    assert r.status_code == 200 and r.json["status"] == "done"


def test_patch_changes_only_given_fields_and_records_changes(client, people):
    task = create_task(client, people.owner, description="d", priority="low", due_at="2026-12-01T09:00:00Z")
    url = f"/api/tasks/{task['id']}"
    r = client.patch(url, json={"priority": "high", "due_at": "2026-12-02T10:00:00+02:00"},
                     headers=people.owner.headers)
    assert r.status_code == 200
    assert r.json["priority"] == "high" and r.json["due_at"] == "2026-12-02T08:00:00Z"
    assert r.json["description"] == "d" and r.json["version"] == 2
    event = task_events(task["id"])[-1]
    assert event.type == "task.updated"
    assert event.payload["changes"] == {"priority": ["low", "high"],
                                        "due_at": ["2026-12-01T09:00:00Z", "2026-12-02T08:00:00Z"]}
    assert event.payload["task"] == r.json
    # clearing due_at
    r = client.patch(url, json={"due_at": None}, headers=people.owner.headers)
    assert r.status_code == 200 and r.json["due_at"] is None
    # naive time, bad enum, null title
    for bad, field in (({"due_at": "2026-12-02T10:00:00"}, "due_at"), ({"priority": "meh"}, "priority"),
                       ({"title": None}, "title"), ({"status": "doing"}, "status")):
        r = client.patch(url, json=bad, headers=people.owner.headers)
        assert r.status_code == 422 and field in r.json["error"]["details"]


def test_patch_without_changes_writes_nothing(client, alice):
    task = create_task(client, alice, title="Same", priority="high")
    url = f"/api/tasks/{task['id']}"
    for body in ({}, {"title": "Same", "priority": "high"}, {"reminders": []}):
        r = client.patch(url, json=body, headers=alice.headers)
        assert r.status_code == 200 and r.json == task and r.headers["ETag"] == '"1"'
    assert [e.type for e in task_events(task["id"])] == ["task.created"]


def test_patch_status_follows_transition_rules(client, alice):
    task = create_task(client, alice)
    url = f"/api/tasks/{task['id']}"
    r = client.patch(url, json={"status": "done", "title": "Finished"}, headers=alice.headers)
    assert r.status_code == 200 and r.json["completed_at"] is not None
    assert [e.type for e in task_events(task["id"])][1:] == ["task.updated", "task.status_changed"]
    r = client.patch(url, json={"status": "todo", "title": "Nope"}, headers=alice.headers)
    assert r.status_code == 409 and error_code(r) == "invalid_transition"
    assert task_row(task["id"]).title == "Finished"  # nothing changed
    r = client.patch(url, json={"status": "done"}, headers=alice.headers)  # same: no change
    assert r.status_code == 200 and r.json["version"] == 2
    r = client.patch(url, json={"status": "in_progress"}, headers=alice.headers)
    assert r.status_code == 200 and r.json["completed_at"] is None


def test_patch_reminders_replace_only_unsent_ones(client, alice):
    task = create_task(client, alice, reminders=["2026-11-01T09:00:00Z", "2026-11-30T09:00:00Z"])
    sent = db.session.scalar(sa.select(Reminder).where(Reminder.task_id == task["id"])
                             .order_by(Reminder.remind_at))
    sent.sent_at = sent.remind_at
    db.session.commit()
    r = client.patch(f"/api/tasks/{task['id']}", json={"reminders": ["2026-11-29T09:00:00+01:00"]},
                     headers=alice.headers)
    assert r.status_code == 200
    assert [(x["remind_at"], x["sent_at"] is not None) for x in r.json["reminders"]] == [
        ("2026-11-01T09:00:00Z", True), ("2026-11-29T08:00:00Z", False)]
    event = task_events(task["id"])[-1]
    assert event.payload["changes"] == {"reminders": [["2026-11-30T09:00:00Z"], ["2026-11-29T08:00:00Z"]]}
    assert db.session.scalar(sa.select(sa.func.count(Reminder.id))) == 2


# --------------------------------------------------------------------------- ETag / If-Match


def test_if_match(client, people):
    task = create_task(client, people.owner, title="v1")
    url = f"/api/tasks/{task['id']}"
    h = people.owner.headers
    r = client.patch(url, json={"title": "v2"}, headers={**h, "If-Match": '"1"'})
    assert r.status_code == 200 and r.headers["ETag"] == '"2"'
    for stale in ('"1"', '"abc"', "2", 'W/"2"', ""):
        for method, path, body in (("patch", url, {"title": "lost"}), ("put", url, {"title": "lost"}),
                                   ("patch", f"{url}/status", {"status": "done"}),
                                   ("patch", f"{url}/assign", {"assignee_id": people.other.id})):
            r = getattr(client, method)(path, json=body, headers={**h, "If-Match": stale})
            assert r.status_code == 412, (stale, path)
            assert error_code(r) == "precondition_failed"
        r = client.delete(url, headers={**h, "If-Match": stale})
        assert r.status_code == 412
    row = task_row(task["id"])
    assert (row.title, row.version, row.status, row.assignee_id, row.deleted_at) == ("v2", 2, "todo", None, None)
    assert len(task_events(task["id"])) == 2
    r = client.patch(url, json={"title": "v3"}, headers={**h, "If-Match": '"7", "2"'})
    assert r.status_code == 200 and r.json["version"] == 3
    r = client.patch(url, json={"title": "v4"}, headers={**h, "If-Match": "*"})
    assert r.status_code == 200 and r.headers["ETag"] == '"4"'


@pytest.mark.parametrize("if_match, status, code", [
    (None, 409, "concurrent_update"), ('"1"', 412, "precondition_failed")])
def test_concurrent_writer_is_detected(client, people, monkeypatch, if_match, status, code):
    """Another writer commits between our read and our UPDATE (StaleDataError)."""
    task = create_task(client, people.owner, title="original")
    real = services.get_visible_task

    def read_then_someone_else_writes(*args, **kwargs):
        found = real(*args, **kwargs)
        with db.engine.begin() as conn:
            conn.execute(sa.update(Task).where(Task.id == found.id)
                         .values(version=Task.version + 1, title="theirs"))
        return found

    monkeypatch.setattr(services, "get_visible_task", read_then_someone_else_writes)
    headers = {**people.owner.headers, **({"If-Match": if_match} if if_match else {})}
    r = client.patch(f"/api/tasks/{task['id']}", json={"title": "mine"}, headers=headers)
    assert r.status_code == status and error_code(r) == code
    monkeypatch.undo()
    row = task_row(task["id"])
    assert (row.title, row.version) == ("theirs", 2)
    assert [e.type for e in task_events(task["id"])] == ["task.created"]


# --------------------------------------------------------------------------- status endpoint

ALLOWED = {("todo", "in_progress"), ("in_progress", "done"), ("in_progress", "todo"),
           ("done", "in_progress"), ("todo", "done")}
STATUSES = ("todo", "in_progress", "done")


@pytest.mark.parametrize("old", STATUSES)
@pytest.mark.parametrize("new", STATUSES)
def test_status_transitions(client, alice, old, new):
    task = create_task(client, alice, status=old)
    r = client.patch(f"/api/tasks/{task['id']}/status", json={"status": new}, headers=alice.headers)
    if (old, new) in ALLOWED:
        assert r.status_code == 200, r.json
        assert r.json["status"] == new and r.json["version"] == 2 and r.headers["ETag"] == '"2"'
        assert (r.json["completed_at"] is not None) == (new == "done")
        event = task_events(task["id"])[-1]
        assert event.type == "task.status_changed"
        assert event.payload["changes"] == {"status": [old, new]} and event.payload["task"] == r.json
    else:
        assert r.status_code == 409 and error_code(r) == "invalid_transition"
        row = task_row(task["id"])
        assert (row.status, row.version) == (old, 1)
        assert len(task_events(task["id"])) == 1


def test_status_endpoint_rights_and_validation(client, people, team_setup):
    t = team_setup
    task = create_task(client, people.owner, assignee_id=people.assignee.id)
    url = f"/api/tasks/{task['id']}/status"
    r = client.patch(url, json={"status": "in_progress"}, headers=people.assignee.headers)
    assert r.status_code == 200 and task_events(task["id"])[-1].actor_id == people.assignee.id
    r = client.patch(url, json={"status": "in_progress"}, headers=people.other.headers)
    assert r.status_code == 404
    for bad in ({}, {"status": "finished"}, {"status": "done", "extra": 1}, {"status": None}):
        r = client.patch(url, json=bad, headers=people.owner.headers)
        assert r.status_code == 422
    team_task = create_task(client, t.team_owner, team_id=t.team.id)
    r = client.patch(f"/api/tasks/{team_task['id']}/status", json={"status": "done"},
                     headers=t.member.headers)
    assert r.status_code == 403
    done = client.patch(url, json={"status": "done"}, headers=people.owner.headers).json
    r = client.patch(url, json={"status": "in_progress"}, headers=people.owner.headers)
    assert done["completed_at"] is not None and r.json["completed_at"] is None


# --------------------------------------------------------------------------- assign endpoint


def test_assign_and_unassign(client, people, team_setup):
    t = team_setup
    task = create_task(client, people.owner)
    url = f"/api/tasks/{task['id']}/assign"
    r = client.patch(url, json={"assignee_id": people.other.id}, headers=people.owner.headers)
    assert r.status_code == 200 and r.json["assignee"]["id"] == people.other.id
    assert r.headers["ETag"] == '"2"'
    event = task_events(task["id"])[-1]
    assert event.type == "task.assigned" and event.payload["changes"] == {"assignee_id": [None, people.other.id]}
    # assigning the same user again changes nothing
    r = client.patch(url, json={"assignee_id": people.other.id}, headers=people.owner.headers)
    assert r.status_code == 200 and r.json["version"] == 2 and len(task_events(task["id"])) == 2
    # the assignee sees but may not re-assign
    r = client.patch(url, json={"assignee_id": None}, headers=people.other.headers)
    assert r.status_code == 403
    r = client.patch(url, json={"assignee_id": None}, headers=people.owner.headers)
    assert r.status_code == 200 and r.json["assignee"] is None
    assert task_events(task["id"])[-1].payload["changes"] == {"assignee_id": [people.other.id, None]}
    for bad in ({}, {"assignee_id": "x"}, {"assignee_id": 424242}):
        r = client.patch(url, json=bad, headers=people.owner.headers)
        assert r.status_code == 422 and "assignee_id" in r.json["error"]["details"]
    r = client.patch(url, json={"assignee_id": people.other.id}, headers=people.assignee.headers)
    assert r.status_code == 404
    # team task: the assignee must be a member
    team_task = create_task(client, t.team_owner, team_id=t.team.id)
    turl = f"/api/tasks/{team_task['id']}/assign"
    r = client.patch(turl, json={"assignee_id": t.outsider.id}, headers=t.team_owner.headers)
    assert r.status_code == 422 and list(r.json["error"]["details"]) == ["assignee_id"]
    r = client.patch(turl, json={"assignee_id": t.member.id}, headers=t.member.headers)
    assert r.status_code == 403
    r = client.patch(turl, json={"assignee_id": t.member.id}, headers=people.admin.headers)
    assert r.status_code == 200 and r.json["assignee"]["id"] == t.member.id
    # now the member is the assignee: may edit, still may not re-assign
    r = client.patch(f"/api/tasks/{team_task['id']}", json={"title": "mine now"}, headers=t.member.headers)
    assert r.status_code == 200
    r = client.patch(turl, json={"assignee_id": None}, headers=t.member.headers)
    assert r.status_code == 403

