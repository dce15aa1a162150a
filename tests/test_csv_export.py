"""``GET /api/tasks/export.csv`` (api-contract.md v1.1, "CSV export"): the header, the
list's filters, sort and visibility (an outsider's task never appears), labels by
name, usernames, UTC times, CSV-injection prefixing, streaming. SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io

import sqlalchemy as sa

from tasktracker.core.types import utcnow
from tasktracker.extensions import db
from tasktracker.tasks.models import Task
from tests.factories import TaskFactory, TeamFactory, add_member
from tests.helpers import assert_error, orm_user

HEADER = ["id", "title", "description", "status", "priority", "due_at", "owner", "assignee", "team_id",
          "labels", "created_at", "updated_at", "completed_at"]


def rows(response) -> list[dict]:
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/csv" and response.mimetype_params.get("charset") == "utf-8"
    assert response.headers["Content-Disposition"].startswith("attachment")
    reader = csv.reader(io.StringIO(response.get_data(as_text=True)))
    header = next(reader)
    assert header == HEADER
    return [dict(zip(header, r)) for r in reader]


def test_export_follows_the_list_visibility_filters_and_sort(client, auth):
    alice, bob, outsider = auth.user("alice"), auth.user("bob"), auth.user("outsider")
    team = TeamFactory(owner=orm_user(alice), name="Core")
    add_member(team, orm_user(bob))
    h = alice.headers
    label = client.post(f"/api/teams/{team.id}/labels", json={"name": "Backend", "color": "#112233"}, headers=h).json
    team_task = client.post("/api/tasks", json={"title": "Team work", "team_id": team.id, "priority": "high",
                                                "assignee_id": bob.id, "label_ids": [label["id"]],
                                                "due_at": "2031-01-01T10:00:00+01:00"}, headers=h).json
    mine = client.post("/api/tasks", json={"title": "Mine", "priority": "low"}, headers=h).json
    secret = client.post("/api/tasks", json={"title": "Outsider secret"}, headers=outsider.headers).json
    TaskFactory(owner=orm_user(outsider), title="Outsider private too")
    trashed = client.post("/api/tasks", json={"title": "Trashed"}, headers=h).json
    client.delete(f"/api/tasks/{trashed['id']}", headers=h)

    got = rows(client.get("/api/tasks/export.csv", headers=h))
    assert {r["id"] for r in got} == {str(team_task["id"]), str(mine["id"])}
    assert all("Outsider" not in r["title"] for r in got) and str(secret["id"]) not in {r["id"] for r in got}
    by_title = {r["title"]: r for r in got}
    t = by_title["Team work"]
    assert t["owner"] == "alice" and t["assignee"] == "bob" and t["team_id"] == str(team.id)
    assert t["labels"] == "Backend" and t["due_at"] == "2031-01-01T09:00:00Z" and t["status"] == "todo"
    assert t["created_at"].endswith("Z") and t["completed_at"] == ""
    # bob sees the team task only; the outsider sees only their own
    assert [r["title"] for r in rows(client.get("/api/tasks/export.csv", headers=bob.headers))] == ["Team work"]
    assert {r["title"] for r in rows(client.get("/api/tasks/export.csv", headers=outsider.headers))} == {
        "Outsider secret", "Outsider private too"}
    # filters and sort of the list
    assert [r["title"] for r in rows(client.get("/api/tasks/export.csv?priority=low", headers=h))] == ["Mine"]
    assert [r["title"] for r in rows(client.get(f"/api/tasks/export.csv?label_id={label['id']}", headers=h))] == ["Team work"]
    assert [r["title"] for r in rows(client.get("/api/tasks/export.csv?sort=title", headers=h))] == ["Mine", "Team work"]
    assert [r["title"] for r in rows(client.get("/api/tasks/export.csv?sort=-title", headers=h))] == ["Team work", "Mine"]
    assert [r["title"] for r in rows(client.get("/api/tasks/export.csv?deleted=only", headers=h))] == ["Trashed"]
    # pagination is ignored: everything comes
    assert len(rows(client.get("/api/tasks/export.csv?per_page=1&page=1", headers=h))) == 2


def test_injection_prefix_and_bad_input(client, auth):
    alice = auth.user("alice")
    for title in ("=HYPERLINK(\"http://x\")", "+1", "-2", "@SUM(A1)", "Tab", "plain, with \"quotes\"\nand a newline"):
        client.post("/api/tasks", json={"title": title}, headers=alice.headers)
    client.post("/api/tasks", json={"title": "desc", "description": "=cmd|' /C calc'!A0"}, headers=alice.headers)
    client.post("/api/tasks", json={"title": "tab", "description": "\tx"}, headers=alice.headers)
    got = rows(client.get("/api/tasks/export.csv?sort=created_at", headers=alice.headers))
    titles = [r["title"] for r in got]
    assert titles[:5] == ["'=HYPERLINK(\"http://x\")", "'+1", "'-2", "'@SUM(A1)", "Tab"]
    assert titles[5] == "plain, with \"quotes\"\nand a newline"
    assert got[6]["description"] == "'=cmd|' /C calc'!A0" and got[7]["description"] == "'\tx"
    for bad in ("status=nope", "sort=password", "due_before=2030-01-01T00:00:00", "bogus=1"):
        assert_error(client.get(f"/api/tasks/export.csv?{bad}", headers=alice.headers), 422)
    assert_error(client.get("/api/tasks/export.csv"), 401)


def test_export_is_streamed_in_chunks(client, auth):
    alice = auth.user("alice")
    owner = orm_user(alice)
    now = utcnow()  # one executemany, not 1,500 factory round trips
    db.session.execute(sa.insert(Task), [
        {"title": f"t{i}", "description": "x" * 100, "status": "todo", "priority": "medium",
         "owner_id": owner.id, "created_at": now, "updated_at": now, "version": 1}
        for i in range(1500)])
    db.session.commit()
    response = client.get("/api/tasks/export.csv", headers=alice.headers, buffered=False)
    assert response.is_streamed
    chunks = list(response.response)
    assert len(chunks) > 2  # ~64 KiB each, not one body
    text = b"".join(chunks).decode()
    assert text.count("\r\n") == 1501
