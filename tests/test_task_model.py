"""The v1.1 task model through the API (api-contract.md v1.1: "Labels", "Checklists",
"Recurring tasks", "Watchers and mentions"), on SQLite and PostgreSQL.

The recurrence arithmetic alone is tested in tests/test_recurrence_rules.py.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
import time_machine
from sqlalchemy import event as sa_event

from tasktracker.auth.models import User
from tasktracker.core.db import is_postgresql
from tasktracker.extensions import db
from tasktracker.tasks.models import ChecklistItem, Task, TaskLabel
from tests.helpers import assert_error, create_task, notifications_for, raised, run_together, task_events

UTC = timezone.utc


def label(client, session, name="bug", color=None, team_id=None, status=201) -> dict:
    url = f"/api/teams/{team_id}/labels" if team_id else "/api/labels"
    body = {"name": name} if color is None else {"name": name, "color": color}
    r = client.post(url, json=body, headers=session.headers)
    assert r.status_code == status, r.json
    return r.json


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def future(days: float = 3) -> datetime:
    return (datetime.now(UTC) + timedelta(days=days)).replace(microsecond=0)


# --------------------------------------------------------------------------- labels


def test_personal_and_team_labels_and_their_scopes(client, people, team_setup):
    t = team_setup
    mine = label(client, people.owner, "Bug", "#D73A4A")
    assert mine == {"id": mine["id"], "name": "Bug", "color": "#d73a4a", "team_id": None}
    team_label = label(client, t.member, "backend", team_id=t.team.id)  # any member creates
    assert team_label["team_id"] == t.team.id and team_label["color"] == "#6b7280"
    label(client, t.outsider, "x", team_id=t.team.id, status=404)
    listed = client.get(f"/api/teams/{t.team.id}/labels", headers=t.team_admin.headers).json
    assert [x["name"] for x in listed["items"]] == ["backend"]
    assert client.get(f"/api/teams/{t.team.id}/labels", headers=t.outsider.headers).status_code == 404
    assert [x["id"] for x in client.get("/api/labels", headers=people.owner.headers).json["items"]] \
        == [mine["id"]]
    assert client.get("/api/labels", headers=people.other.headers).json["items"] == []

    personal = create_task(client, people.owner, label_ids=[mine["id"]])
    assert personal["labels"] == [{"id": mine["id"], "name": "Bug", "color": "#d73a4a"}]
    # a team label on a personal task, a personal label on a team task, someone else's label
    assert_error(client.post("/api/tasks", json={"title": "x", "label_ids": [team_label["id"]]},
                             headers=people.owner.headers), 422)
    r = client.post("/api/tasks", json={"title": "x", "team_id": t.team.id, "label_ids": [mine["id"]]},
                    headers=t.team_owner.headers)
    assert_error(r, 422)
    assert "label_ids" in r.json["error"]["details"]
    assert_error(client.post("/api/tasks", json={"title": "x", "label_ids": [mine["id"]]},
                             headers=people.other.headers), 422)
    team_task = create_task(client, t.member, team_id=t.team.id, label_ids=[team_label["id"]] * 2)
    assert [x["id"] for x in team_task["labels"]] == [team_label["id"]]


def test_label_names_are_unique_per_scope_case_insensitively(client, people, team_setup):
    t = team_setup
    label(client, people.owner, "Urgent")
    r = client.post("/api/labels", json={"name": "uRGENT"}, headers=people.owner.headers)
    assert_error(r, 409, "label_name_taken")
    label(client, people.other, "urgent")  # another user's scope
    label(client, t.member, "urgent", team_id=t.team.id)  # a team's scope
    label(client, t.team_admin, "URGENT", team_id=t.team.id, status=409)
    second = label(client, people.owner, "later")
    r = client.patch(f"/api/labels/{second['id']}", json={"name": "URGENT "}, headers=people.owner.headers)
    assert_error(r, 409, "label_name_taken")


def test_concurrent_creates_of_one_name_leave_one_label(app, client, people):
    results = run_together(app, *[
        lambda c: c.post("/api/labels", json={"name": "Race"}, headers=people.owner.headers)
        for _ in range(6)])
    assert not raised(results), raised(results)
    assert sorted(r.status_code for r in results) == [201] + [409] * 5
    assert db.session.scalar(sa.select(sa.func.count()).select_from(sa.text("labels"))) == 1


def test_label_edit_and_delete_rights(client, people, team_setup):
    t = team_setup
    team_label = label(client, t.member, "ops", team_id=t.team.id)
    url = f"/api/labels/{team_label['id']}"
    assert_error(client.patch(url, json={"name": "x"}, headers=t.member.headers), 403)
    assert_error(client.patch(url, json={"name": "x"}, headers=t.outsider.headers), 404, "label_not_found")
    r = client.patch(url, json={"color": "#00FF00"}, headers=t.team_admin.headers)
    assert r.status_code == 200 and r.json["color"] == "#00ff00" and r.json["name"] == "ops"
    mine = label(client, people.owner, "mine")
    assert_error(client.delete(f"/api/labels/{mine['id']}", headers=people.other.headers), 404)
    assert client.patch(f"/api/labels/{mine['id']}", json={"name": "renamed"},
                        headers=people.admin.headers).status_code == 404  # personal: its user only
    assert client.delete(url, headers=t.team_owner.headers).status_code == 204


def test_rename_shows_on_tasks_and_lists_at_once(client, people):
    mine = label(client, people.owner, "old")
    task = create_task(client, people.owner, label_ids=[mine["id"]])
    first = client.get("/api/tasks", headers=people.owner.headers)
    client.patch(f"/api/labels/{mine['id']}", json={"name": "new"}, headers=people.owner.headers)
    r = client.get("/api/tasks", headers={**people.owner.headers, "If-None-Match": first.headers["ETag"]})
    assert r.status_code == 200 and r.json["items"][0]["labels"][0]["name"] == "new"
    assert client.get(f"/api/tasks/{task['id']}", headers=people.owner.headers).json["labels"][0]["name"] == "new"


def test_deleting_a_label_takes_it_off_tasks_with_activity(client, people):
    bug, ui = label(client, people.owner, "bug"), label(client, people.owner, "ui")
    task = create_task(client, people.owner, label_ids=[bug["id"], ui["id"]])
    untouched = create_task(client, people.owner, label_ids=[ui["id"]])
    assert client.delete(f"/api/labels/{bug['id']}", headers=people.owner.headers).status_code == 204
    after = client.get(f"/api/tasks/{task['id']}", headers=people.owner.headers)
    assert [x["id"] for x in after.json["labels"]] == [ui["id"]]
    assert after.json["version"] == task["version"] + 1 and after.headers["ETag"] == f'"{task["version"] + 1}"'
    updated = [e for e in task_events(task["id"]) if e.type == "task.updated"]
    assert updated[-1].payload["changes"] == {"labels": [sorted([bug["id"], ui["id"]]), [ui["id"]]]}
    activity = client.get(f"/api/tasks/{task['id']}/activity", headers=people.owner.headers).json
    assert activity["items"][0]["changes"] == {"labels": [sorted([bug["id"], ui["id"]]), [ui["id"]]]}
    assert client.get(f"/api/tasks/{untouched['id']}", headers=people.owner.headers).json["version"] == 1
    assert db.session.scalar(sa.select(sa.func.count()).select_from(TaskLabel)) == 2


def test_label_filter_is_repeatable_and_means_all(client, people):
    a, b = label(client, people.owner, "a"), label(client, people.owner, "b")
    both = create_task(client, people.owner, title="both", label_ids=[a["id"], b["id"]])
    only_a = create_task(client, people.owner, title="a", label_ids=[a["id"]])
    create_task(client, people.owner, title="none")
    get = lambda q: [t["id"] for t in client.get(f"/api/tasks?{q}", headers=people.owner.headers).json["items"]]  # noqa: E731
    assert get(f"label_id={a['id']}") == [only_a["id"], both["id"]]
    assert get(f"label_id={a['id']}&label_id={b['id']}") == [both["id"]]
    assert_error(client.get("/api/tasks?label_id=x", headers=people.owner.headers), 422)


def test_moving_a_task_to_a_team_drops_the_old_scopes_labels(client, people, team_setup):
    t = team_setup
    mine = label(client, t.member, "mine")
    ours = label(client, t.member, "ours", team_id=t.team.id)
    task = create_task(client, t.member, label_ids=[mine["id"]])
    r = client.patch(f"/api/tasks/{task['id']}", json={"team_id": t.team.id}, headers=t.member.headers)
    assert r.status_code == 200 and r.json["labels"] == []
    r = client.patch(f"/api/tasks/{task['id']}", json={"label_ids": [ours["id"]]}, headers=t.member.headers)
    assert [x["id"] for x in r.json["labels"]] == [ours["id"]]


# --------------------------------------------------------------------------- checklists


def test_checklist_items_keep_positions_and_bump_the_version(client, people):
    task = create_task(client, people.owner)
    url = f"/api/tasks/{task['id']}/checklist"
    first = client.post(url, json={"text": "one"}, headers=people.owner.headers)
    assert first.status_code == 201 and first.json == {"id": first.json["id"], "text": "one",
                                                       "done": False, "position": 0}
    assert first.headers["Location"].endswith(f"/api/checklist-items/{first.json['id']}")
    client.post(url, json={"text": "three"}, headers=people.owner.headers)
    client.post(url, json={"text": "two", "position": 1}, headers=people.owner.headers)
    client.post(url, json={"text": "zero", "position": 0}, headers=people.owner.headers)
    body = client.get(f"/api/tasks/{task['id']}", headers=people.owner.headers)
    assert [(i["text"], i["position"]) for i in body.json["checklist"]] == [
        ("zero", 0), ("one", 1), ("two", 2), ("three", 3)]
    assert body.json["version"] == 5
    # If-Match names the task's version: a stale one is refused
    item = f"/api/checklist-items/{first.json['id']}"
    assert_error(client.patch(item, json={"done": True}, headers={**people.owner.headers, "If-Match": '"4"'}), 412)
    r = client.patch(item, json={"done": True, "position": 99}, headers={**people.owner.headers, "If-Match": '"5"'})
    assert r.status_code == 200 and r.json["done"] is True and r.json["position"] == 3
    assert client.patch(f"/api/tasks/{task['id']}", json={"title": "x"},
                        headers={**people.owner.headers, "If-Match": '"5"'}).status_code == 412
    assert client.delete(f"/api/checklist-items/{body.json['checklist'][0]['id']}",
                         headers=people.owner.headers).status_code == 204
    after = client.get(f"/api/tasks/{task['id']}", headers=people.owner.headers).json
    assert [(i["text"], i["position"]) for i in after["checklist"]] == [("two", 0), ("three", 1), ("one", 2)]
    assert after["version"] == 7
    changes = [e.payload["changes"]["checklist"] for e in task_events(task["id"]) if e.type == "task.updated"]
    assert changes[0] == [None, {"id": first.json["id"], "text": "one", "done": False, "position": 0}]
    assert changes[-1][1] is None and changes[-1][0]["text"] == "zero"


def test_checklist_rights_and_bad_input(client, people):
    task = create_task(client, people.owner, assignee_id=people.assignee.id)
    url = f"/api/tasks/{task['id']}/checklist"
    assert client.post(url, json={"text": "by the assignee"}, headers=people.assignee.headers).status_code == 201
    assert_error(client.post(url, json={"text": "x"}, headers=people.other.headers), 404, "task_not_found")
    for bad in ({"text": ""}, {"text": "   "}, {"text": "x" * 501}, {"text": "x", "position": -1},
                {"text": "x", "done": True}, {}, {"text": 5}):
        assert_error(client.post(url, json=bad, headers=people.owner.headers), 422)
    item = client.get(f"/api/tasks/{task['id']}", headers=people.owner.headers).json["checklist"][0]
    assert_error(client.patch(f"/api/checklist-items/{item['id']}", json={"done": "yes"},
                              headers=people.owner.headers), 422)
    assert_error(client.patch(f"/api/checklist-items/{item['id']}", json={"text": "x"},
                              headers=people.other.headers), 404, "checklist_item_not_found")
    assert_error(client.delete("/api/checklist-items/999999", headers=people.owner.headers), 404)


def test_concurrent_checklist_inserts_get_distinct_positions(app, client, people):
    if not is_postgresql():
        pytest.skip("row locks: PostgreSQL (SQLite serialises writers: a late writer may get 503/409)")
    task = create_task(client, people.owner)
    url = f"/api/tasks/{task['id']}/checklist"
    results = run_together(app, *[
        (lambda n: lambda c: c.post(url, json={"text": f"item {n}"}, headers=people.owner.headers))(n)
        for n in range(10)])
    assert not raised(results) and [r.status_code for r in results] == [201] * 10
    positions = db.session.scalars(sa.select(ChecklistItem.position)
                                   .where(ChecklistItem.task_id == task["id"])).all()
    assert sorted(positions) == list(range(10))
    assert db.session.get(Task, task["id"]).version == 11


# --------------------------------------------------------------------------- recurrence


def test_recurrence_needs_a_valid_rule_and_a_due_date(client, people):
    due = iso(future())
    for body, field in (
            ({"recurrence": {"rule": "FREQ=WEEKLY", "from": "due"}}, "recurrence"),  # no due_at
            ({"due_at": due, "recurrence": {"rule": "FREQ=SECONDLY", "from": "due"}}, "recurrence"),
            ({"due_at": due, "recurrence": {"rule": "garbage", "from": "due"}}, "recurrence"),
            ({"due_at": due, "recurrence": {"rule": "FREQ=DAILY;UNTIL=20200101T000000Z", "from": "due"}},
             "recurrence"),
            ({"due_at": due, "recurrence": {"rule": "FREQ=DAILY", "from": "later"}}, "recurrence"),
            ({"due_at": due, "recurrence": {"rule": "FREQ=DAILY"}}, "recurrence"),
            ({"due_at": due, "recurrence": "FREQ=DAILY"}, "recurrence")):
        r = client.post("/api/tasks", json={"title": "r", **body}, headers=people.owner.headers)
        assert_error(r, 422)
        assert field in r.json["error"]["details"], r.json
    assert "FREQ=SECONDLY" in str(client.post("/api/tasks", json={
        "title": "r", "due_at": due, "recurrence": {"rule": "FREQ=SECONDLY", "from": "due"}},
        headers=people.owner.headers).json)
    task = create_task(client, people.owner, due_at=due,
                       recurrence={"rule": "freq=weekly;byday=mo", "from": "due"})
    assert task["recurrence"] == {"rule": "FREQ=WEEKLY;BYDAY=MO", "from": "due"}
    r = client.patch(f"/api/tasks/{task['id']}", json={"due_at": None}, headers=people.owner.headers)
    assert_error(r, 422)
    assert "due_at" in r.json["error"]["details"]
    assert client.patch(f"/api/tasks/{task['id']}", json={"due_at": None, "recurrence": None},
                        headers=people.owner.headers).status_code == 200


def _set_timezone(user_id: int, tz: str) -> None:
    db.session.get(User, user_id).timezone = tz
    db.session.commit()


def test_done_creates_the_next_occurrence_once_with_everything_copied(client, people):
    owner = people.owner
    bug = label(client, owner, "bug")
    due = future(2).replace(hour=9, minute=0, second=0)
    task = create_task(client, owner, title="standup", description="d", priority="high", due_at=iso(due),
                       assignee_id=people.assignee.id, label_ids=[bug["id"]],
                       reminders=[iso(due - timedelta(hours=1)), iso(due - timedelta(days=1))],
                       recurrence={"rule": "FREQ=DAILY", "from": "due"})
    client.post(f"/api/tasks/{task['id']}/checklist", json={"text": "prep"}, headers=owner.headers)
    done = client.patch(f"/api/tasks/{task['id']}/status", json={"status": "done"}, headers=owner.headers)
    assert done.status_code == 200
    nxt = db.session.scalars(sa.select(Task).where(Task.recurrence_of == task["id"])).all()
    assert len(nxt) == 1
    body = client.get(f"/api/tasks/{nxt[0].id}", headers=owner.headers).json
    assert body["due_at"] == iso(due + timedelta(days=1)) and body["status"] == "todo"
    assert (body["title"], body["description"], body["priority"]) == ("standup", "d", "high")
    assert body["assignee"]["id"] == people.assignee.id and body["recurrence_of"] == task["id"]
    assert [x["id"] for x in body["labels"]] == [bug["id"]]
    assert [(i["text"], i["done"]) for i in body["checklist"]] == [("prep", False)]
    assert body["recurrence"] == {"rule": "FREQ=DAILY", "from": "due"}
    # reminders keep their offsets to due_at
    assert sorted(r["remind_at"] for r in body["reminders"]) == sorted(
        [iso(due + timedelta(days=1) - timedelta(hours=1)), iso(due + timedelta(days=1) - timedelta(days=1))])
    # a normal task.created, and the assignee is notified
    assert [e.type for e in task_events(nxt[0].id)] == ["task.created"]
    assert [n.task_id for n in notifications_for(people.assignee.id, "task_assigned")][-1] == nxt[0].id
    # reopen and redo: still one next occurrence
    for status in ("in_progress", "done", "in_progress", "done"):
        assert client.patch(f"/api/tasks/{task['id']}/status", json={"status": status},
                            headers=owner.headers).status_code == 200
    assert db.session.scalar(sa.select(sa.func.count()).where(Task.recurrence_of == task["id"])) == 1


def test_weekly_0900_berlin_across_the_october_dst_change(client, auth):
    # on Thursday 2026-10-22 (CEST): a task due 09:00 local = 07:00Z, done that morning;
    # DST ends on Sunday 2026-10-25, so the next Thursday's 09:00 local is 08:00Z
    with time_machine.travel(datetime(2026, 10, 22, 6, 30, tzinfo=UTC), tick=True):
        owner = auth.user("berliner")
        _set_timezone(owner.id, "Europe/Berlin")
        task = create_task(client, owner, due_at="2026-10-22T07:00:00Z",
                           recurrence={"rule": "FREQ=WEEKLY;BYDAY=TH", "from": "due"})
        assert client.patch(f"/api/tasks/{task['id']}/status", json={"status": "done"},
                            headers=owner.headers).status_code == 200
        nxt = db.session.scalar(sa.select(Task).where(Task.recurrence_of == task["id"]))
        assert nxt.due_at == datetime(2026, 10, 29, 8, 0, tzinfo=UTC)


def test_occurrences_already_past_are_skipped(client, people):
    due = future(-10).replace(hour=9, minute=0, second=0)  # ten days late
    task = create_task(client, people.owner, due_at=iso(due),
                       recurrence={"rule": "FREQ=WEEKLY", "from": "due"})
    client.patch(f"/api/tasks/{task['id']}/status", json={"status": "done"}, headers=people.owner.headers)
    nxt = db.session.scalar(sa.select(Task).where(Task.recurrence_of == task["id"]))
    assert nxt.due_at == due + timedelta(days=14) and nxt.recurrence_index == 3


def test_from_completion_and_count_exhaustion(client, people):
    due = future(-10).replace(hour=12, minute=0, second=0)
    task = create_task(client, people.owner, due_at=iso(due),
                       recurrence={"rule": "FREQ=DAILY;INTERVAL=2;COUNT=2", "from": "completion"})
    client.patch(f"/api/tasks/{task['id']}", json={"status": "done"}, headers=people.owner.headers)
    second = db.session.scalar(sa.select(Task).where(Task.recurrence_of == task["id"]))
    completed = db.session.get(Task, task["id"]).completed_at
    assert second.due_at.date() == (completed + timedelta(days=2)).date() and second.due_at.hour == 12
    assert second.recurrence_index == 2
    client.patch(f"/api/tasks/{second.id}/status", json={"status": "done"}, headers=people.owner.headers)
    assert db.session.scalar(sa.select(sa.func.count()).where(Task.recurrence_of == second.id)) == 0


def test_twenty_clients_marking_done_at_once_create_one_occurrence(app, client, people):
    if not is_postgresql():
        pytest.skip("20 concurrent writers: PostgreSQL (SQLite serialises them)")
    task = create_task(client, people.owner, due_at=iso(future()),
                       recurrence={"rule": "FREQ=DAILY", "from": "due"})
    url = f"/api/tasks/{task['id']}/status"
    results = run_together(app, *[
        lambda c: c.patch(url, json={"status": "done"}, headers=people.owner.headers)] * 20)
    assert not raised(results), raised(results)
    codes = sorted(r.status_code for r in results)
    assert codes.count(200) == 1 and set(codes) <= {200, 409}, codes
    assert db.session.scalar(sa.select(sa.func.count()).where(Task.recurrence_of == task["id"])) == 1


# --------------------------------------------------------------------------- watchers and mentions


def test_watchers_get_notified_not_of_their_own_actions_and_not_after_losing_access(
        client, people, team_setup):
    t = team_setup
    task = create_task(client, t.team_owner, team_id=t.team.id)
    url = f"/api/tasks/{task['id']}"
    assert client.put(f"{url}/watchers/me", headers=t.member.headers).status_code == 204
    assert client.put(f"{url}/watchers/me", headers=t.member.headers).status_code == 204  # idempotent
    assert client.put(f"{url}/watchers/me", headers=t.outsider.headers).status_code == 404
    watchers = client.get(f"{url}/watchers", headers=t.team_admin.headers).json
    assert [w["username"] for w in watchers["items"]] == ["tmember"]
    watching = client.get("/api/tasks?watching=true", headers=t.member.headers).json
    assert [x["id"] for x in watching["items"]] == [task["id"]]

    client.patch(url, json={"title": "renamed"}, headers=t.team_owner.headers)
    assert [n.type for n in notifications_for(t.member.id)] == ["task_updated"]
    client.patch(url, json={"title": "by me"}, headers=t.member.headers)  # own action
    assert len(notifications_for(t.member.id)) == 1
    client.post(f"{url}/comments", json={"body": "hi"}, headers=t.team_owner.headers)
    assert [n.type for n in notifications_for(t.member.id)] == ["task_updated", "comment_added"]

    # removed from the team: no longer sees the task, gets nothing more
    assert client.delete(f"/api/teams/{t.team.id}/members/{t.member.id}",
                         headers=t.team_owner.headers).status_code == 204
    client.patch(url, json={"title": "after"}, headers=t.team_owner.headers)
    client.patch(f"{url}/status", json={"status": "done"}, headers=t.team_owner.headers)
    assert len(notifications_for(t.member.id)) == 2
    assert [w["username"] for w in client.get(f"{url}/watchers", headers=t.team_owner.headers)
            .json["items"]] == []
    assert client.delete(f"{url}/watchers/me", headers=t.team_admin.headers).status_code == 204


def test_mentions_notify_who_sees_the_task_once_and_leak_nothing(client, people, team_setup):
    t = team_setup
    task = create_task(client, t.team_owner, team_id=t.team.id)
    url = f"/api/tasks/{task['id']}/comments"
    r = client.post(url, json={"body": "ping @TMember and @outsider, mail tadmin@example.com"},
                    headers=t.team_owner.headers)
    assert r.status_code == 201
    assert r.json["mentions"] == [{"id": t.member.id, "username": "tmember"}]  # the outsider is not listed
    assert [n.type for n in notifications_for(t.member.id)] == ["mentioned"]
    assert notifications_for(t.outsider.id) == [] and notifications_for(t.team_admin.id) == []
    comment = f"/api/comments/{r.json['id']}"
    r = client.patch(comment, json={"body": "@tmember @tadmin again"}, headers=t.team_owner.headers)
    assert [m["username"] for m in r.json["mentions"]] == ["tadmin", "tmember"] or \
        sorted(m["username"] for m in r.json["mentions"]) == ["tadmin", "tmember"]
    assert [n.type for n in notifications_for(t.member.id)] == ["mentioned"]  # not again
    assert [n.type for n in notifications_for(t.team_admin.id)] == ["mentioned"]
    assert notifications_for(t.outsider.id) == []
    listed = client.get(url, headers=t.member.headers).json["items"][0]["mentions"]
    assert {m["username"] for m in listed} == {"tadmin", "tmember"}


def test_a_mentioned_watcher_gets_one_notification(client, team_setup):
    t = team_setup
    task = create_task(client, t.team_owner, team_id=t.team.id)
    client.put(f"/api/tasks/{task['id']}/watchers/me", headers=t.member.headers)
    client.post(f"/api/tasks/{task['id']}/comments", json={"body": "@tmember look"},
                headers=t.team_owner.headers)
    assert [n.type for n in notifications_for(t.member.id)] == ["mentioned"]


# --------------------------------------------------------------------------- list cost


def _count_statements(client, url: str, headers: dict) -> tuple[int, dict]:
    engine = db.engine
    seen: list[str] = []
    listener = lambda *args: seen.append(args[2])  # noqa: E731
    sa_event.listen(engine, "before_cursor_execute", listener)
    try:
        response = client.get(url, headers={**headers, "Cache-Control": "no-cache"})
    finally:
        sa_event.remove(engine, "before_cursor_execute", listener)
    assert response.status_code == 200
    return len([s for s in seen if s.lstrip().upper().startswith(("SELECT", "WITH"))]), response.json


def test_a_rich_list_uses_as_many_statements_as_a_plain_one(app, client, people, auth):
    """100 tasks with 5 labels and a 10-item checklist each: the same statement
    count as 100 plain tasks (no N+1: labels and checklist ride with the reminders)."""
    rich_user = people.owner
    labels = [label(client, rich_user, f"l{n}")["id"] for n in range(5)]
    rows = [Task(owner_id=rich_user.id, title=f"rich {n}", description="") for n in range(100)]
    plain_user = people.other
    rows += [Task(owner_id=plain_user.id, title=f"plain {n}", description="") for n in range(100)]
    db.session.add_all(rows)
    db.session.flush()
    db.session.add_all(TaskLabel(task_id=t.id, label_id=l) for t in rows[:100] for l in labels)
    db.session.add_all(ChecklistItem(task_id=t.id, text=f"item {k}", position=k)
                       for t in rows[:100] for k in range(10))
    db.session.commit()
    for session in (rich_user, plain_user):  # warm: login session and data version cached
        client.get("/api/tasks?per_page=1", headers=session.headers)
    rich, rich_body = _count_statements(client, "/api/tasks?per_page=100", rich_user.headers)
    plain, plain_body = _count_statements(client, "/api/tasks?per_page=100", plain_user.headers)
    assert len(rich_body["items"]) == len(plain_body["items"]) == 100
    assert all(len(t["labels"]) == 5 and len(t["checklist"]) == 10 for t in rich_body["items"])
    assert rich == plain, (rich, plain)
    small, _ = _count_statements(client, "/api/tasks?per_page=5", rich_user.headers)
    assert small == rich
    # the list item equals the task's own body
    one = rich_body["items"][0]
    assert client.get(f"/api/tasks/{one['id']}", headers=rich_user.headers).json == one
    assert [c["position"] for c in one["checklist"]] == list(range(10))
    assert [x["name"] for x in one["labels"]] == ["l0", "l1", "l2", "l3", "l4"]


# --------------------------------------------------------------------------- bad input


def test_bad_label_and_checklist_input_answers_in_the_error_shape(client, people, team_setup):
    for color in ("red", "#12345", "#1234567", "#GGGGGG", "123456", "", 5, None):
        assert_error(client.post("/api/labels", json={"name": "c", "color": color},
                                 headers=people.owner.headers), 422)
    for name in ("", "   ", "x" * 51, "a\x00b", 7):
        assert_error(client.post("/api/labels", json={"name": name}, headers=people.owner.headers), 422)
    r = client.post("/api/tasks", json={"title": "t", "label_ids": [987654]}, headers=people.owner.headers)
    assert_error(r, 422)
    assert "987654" in str(r.json["error"]["details"]["label_ids"])
    for label_ids in ("1", [True], ["1"], [0], [2**31], None):
        assert_error(client.post("/api/tasks", json={"title": "t", "label_ids": label_ids},
                                 headers=people.owner.headers), 422)
    # 10,000 labels on one task: refused whole (at most 50), nothing written
    mine = label(client, people.owner, "only")
    r = client.post("/api/tasks", json={"title": "t", "label_ids": [mine["id"]] + list(range(1, 10_000))},
                    headers=people.owner.headers)
    assert r.status_code in (413, 422) and set(r.json) == {"error"}
    assert client.get("/api/tasks", headers=people.owner.headers).json["total"] == 0
    # a checklist item of another (invisible) task, and of a task in the trash
    theirs = create_task(client, people.other)
    item = client.post(f"/api/tasks/{theirs['id']}/checklist", json={"text": "theirs"},
                       headers=people.other.headers).json
    for method in ("patch", "delete"):
        r = getattr(client, method)(f"/api/checklist-items/{item['id']}", json={"text": "mine"},
                                    headers=people.owner.headers)
        assert_error(r, 404, "checklist_item_not_found")
    client.delete(f"/api/tasks/{theirs['id']}", headers=people.other.headers)
    assert_error(client.patch(f"/api/checklist-items/{item['id']}", json={"done": True},
                              headers=people.other.headers), 404, "checklist_item_not_found")
    assert_error(client.patch(f"/api/checklist-items/{2**40}", json={"done": True},
                              headers=people.owner.headers), 404)
    assert_error(client.delete(f"/api/labels/{2**40}", headers=people.owner.headers), 404)
