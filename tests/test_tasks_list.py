"""Tasks: list filters, sorting, pagination, search ranking, query count, OpenAPI."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from tasktracker.auth.models import User
from tasktracker.core.hotcache import hot_state
from tasktracker.core.types import utcnow
from tasktracker.extensions import db
from tasktracker.tasks.models import Reminder, Task
from tasktracker.tasks.schemas import task_schema
from tests.factories import add_member
from tests.helpers import create_task, error_code, orm_user


def listing(client, session, query: str = "") -> list[str]:
    r = client.get(f"/api/tasks?{query}", headers=session.headers)
    assert r.status_code == 200, r.json
    return [t["title"] for t in r.json["items"]]


def add_tasks(owner_id: int, *specs: dict) -> list[Task]:
    """Insert tasks directly (fast), created one second apart in the given order
    (a spec may name another ``owner_id``)."""
    base = utcnow() - timedelta(hours=1)
    tasks = []
    for n, spec in enumerate(specs):
        spec = dict(spec)
        created = base + timedelta(seconds=n)
        tasks.append(Task(created_at=created, updated_at=created,
                          **{"description": "", "owner_id": owner_id, **spec}))
    db.session.add_all(tasks)
    db.session.commit()
    return tasks


# --------------------------------------------------------------------------- filters


def test_filters(client, people, team_setup):
    t = team_setup
    me = people.owner
    now = utcnow()
    add_tasks(me.id,
              {"title": "A", "status": "todo", "priority": "low", "due_at": now - timedelta(days=1)},
              {"title": "B", "status": "in_progress", "priority": "high", "due_at": now + timedelta(days=1),
               "assignee_id": me.id},
              {"title": "C", "status": "done", "priority": "high", "due_at": now - timedelta(days=2),
               "assignee_id": people.assignee.id},
              {"title": "D", "status": "todo", "priority": "urgent"},
              {"title": "T", "status": "todo", "priority": "low", "team_id": t.team.id,
               "assignee_id": me.id, "owner_id": t.team_owner.id})
    # the owner sees A-D and T (as its assignee)
    assert listing(client, me) == ["T", "D", "C", "B", "A"]
    assert listing(client, me, "status=todo") == ["T", "D", "A"]
    assert listing(client, me, "status=todo&status=done") == ["T", "D", "C", "A"]
    assert listing(client, me, "priority=high") == ["C", "B"]
    assert listing(client, me, "assignee_id=me") == ["T", "B"]
    assert listing(client, me, f"assignee_id={people.assignee.id}") == ["C"]
    assert listing(client, me, "owner_id=me") == ["D", "C", "B", "A"]
    assert listing(client, me, f"owner_id={t.team_owner.id}") == ["T"]
    assert listing(client, me, f"team_id={t.team.id}") == ["T"]
    assert listing(client, me, "overdue=true") == ["A"]
    assert listing(client, me, "overdue=false") == ["T", "D", "C", "B"]
    before = (now + timedelta(hours=1)).astimezone().isoformat()
    assert listing(client, me, "due_before=" + before.replace("+", "%2B")) == ["C", "A"]
    after = (now - timedelta(days=1, hours=1)).isoformat().replace("+00:00", "Z")
    assert listing(client, me, f"due_after={after}") == ["B", "A"]
    assert listing(client, me, f"due_after={after}&due_before={before.replace('+', '%2B')}") == ["A"]
    assert listing(client, me, f"status=todo&priority=low&team_id={t.team.id}&assignee_id=me") == ["T"]
    # the assignee only sees C; the admin sees everything
    assert listing(client, people.assignee) == ["C"]
    assert listing(client, people.admin, f"team_id={t.team.id}") == ["T"]
    assert listing(client, t.outsider) == []


def test_due_at_with_offset_is_returned_in_utc(client, alice):
    task = create_task(client, alice, due_at="2026-12-01T09:00:00+01:00")
    assert task["due_at"] == "2026-12-01T08:00:00Z"
    item = client.get("/api/tasks", headers=alice.headers).json["items"][0]
    assert item["due_at"] == "2026-12-01T08:00:00Z"
    # the filter compares instants, whatever the offset
    assert listing(client, alice, "due_after=2026-12-01T03:00:00-05:00") == ["Task"]
    assert listing(client, alice, "due_after=2026-12-01T03:00:01-05:00") == []
    assert listing(client, alice, "due_before=2026-12-01T09:00:01%2B01:00") == ["Task"]


def test_q_searches_title_and_description_case_insensitively(client, people):
    me = people.owner
    add_tasks(me.id, {"title": "Buy MILK"}, {"title": "Shop", "description": "get milk and bread"},
              {"title": "Other"}, {"title": "100% done"}, {"title": "snake_case"}, {"title": "snakeXcase"})
    add_tasks(people.other.id, {"title": "milk of others"})
    assert listing(client, me, "q=milk") == ["Shop", "Buy MILK"]
    assert listing(client, me, "q=Milk&status=todo") == ["Shop", "Buy MILK"]
    assert listing(client, me, "q=%25") == ["100% done"]  # LIKE wildcards are literal
    assert listing(client, me, "q=e_c") == ["snake_case"]
    assert listing(client, me, "q=nothing") == []


@pytest.mark.parametrize("query, field", [
    ("status=blocked", "status"), ("status=todo&status=nope", "status"), ("priority=critical", "priority"),
    ("assignee_id=abc", "assignee_id"), ("assignee_id=-1", "assignee_id"), ("owner_id=you", "owner_id"),
    ("team_id=x", "team_id"), ("team_id=99999999999", "team_id"),
    ("due_before=2026-12-01T09:00:00", "due_before"), ("due_after=soon", "due_after"),
    ("overdue=maybe", "overdue"), ("deleted=all", "deleted"), ("q=", "q"), ("q=%20%20", "q"),
    ("colour=red", "colour"), ("per_page=101", "per_page"), ("per_page=0", "per_page"), ("page=0", "page"),
    ("sort=size", "sort"), ("sort=-", "sort"), ("sort=title,-title", "sort"), ("sort=", "sort"),
    ("sort=created_at,,title", "sort"),
])
def test_list_rejects_unknown_filters_and_values(client, alice, query, field):
    r = client.get(f"/api/tasks?{query}", headers=alice.headers)
    assert r.status_code == 422, r.json
    assert error_code(r) == "validation_error" and field in r.json["error"]["details"]


# --------------------------------------------------------------------------- sorting


def test_sorting(client, alice):
    now = utcnow()
    add_tasks(alice.id,
              {"title": "banana", "priority": "low", "status": "done", "due_at": now + timedelta(days=3)},
              {"title": "Apple", "priority": "urgent", "status": "todo"},
              {"title": "cherry", "priority": "medium", "status": "in_progress", "due_at": now + timedelta(days=1)},
              {"title": "apple", "priority": "high", "status": "todo", "due_at": now + timedelta(days=2)})
    assert listing(client, alice) == ["apple", "cherry", "Apple", "banana"]  # -created_at
    assert listing(client, alice, "sort=created_at") == ["banana", "Apple", "cherry", "apple"]
    assert listing(client, alice, "sort=priority") == ["banana", "cherry", "apple", "Apple"]
    assert listing(client, alice, "sort=-priority") == ["Apple", "apple", "cherry", "banana"]
    assert listing(client, alice, "sort=status") == ["Apple", "apple", "cherry", "banana"]  # id asc
    assert listing(client, alice, "sort=-status") == ["banana", "cherry", "apple", "Apple"]  # id desc
    assert listing(client, alice, "sort=-status,title") == ["banana", "cherry", "Apple", "apple"]
    assert listing(client, alice, "sort=title") == ["Apple", "apple", "banana", "cherry"]
    assert listing(client, alice, "sort=-title") == ["cherry", "banana", "apple", "Apple"]
    # tasks without a due date come last in both directions
    assert listing(client, alice, "sort=due_at") == ["cherry", "apple", "banana", "Apple"]
    assert listing(client, alice, "sort=-due_at") == ["banana", "apple", "cherry", "Apple"]
    assert listing(client, alice, "sort=status,-priority") == ["Apple", "apple", "cherry", "banana"]
    assert listing(client, alice, "sort=%20-priority%20,%20title") == ["Apple", "apple", "cherry", "banana"]


def test_updated_at_sort_and_id_tiebreak(client, alice):
    same = utcnow() - timedelta(minutes=5)
    tasks = [Task(owner_id=alice.id, title=f"t{n}", description="", created_at=same, updated_at=same)
             for n in range(5)]
    db.session.add_all(tasks)
    db.session.commit()
    ids = [t.id for t in tasks]
    r = client.get("/api/tasks?per_page=2", headers=alice.headers).json
    assert [t["id"] for t in r["items"]] == sorted(ids, reverse=True)[:2]
    r = client.get("/api/tasks?sort=created_at&per_page=2&page=2", headers=alice.headers).json
    assert [t["id"] for t in r["items"]] == sorted(ids)[2:4]
    client.patch(f"/api/tasks/{ids[2]}", json={"title": "touched"}, headers=alice.headers)
    assert listing(client, alice, "sort=-updated_at")[0] == "touched"
    assert listing(client, alice, "sort=updated_at")[-1] == "touched"


def test_pagination_envelope(client, alice):
    add_tasks(alice.id, *({"title": f"p{n}"} for n in range(7)))
    r = client.get("/api/tasks?per_page=3&page=3&sort=title", headers=alice.headers).json
    assert (r["page"], r["per_page"], r["total"], r["pages"]) == (3, 3, 7, 3)
    assert [t["title"] for t in r["items"]] == ["p6"]
    r = client.get("/api/tasks?page=9", headers=alice.headers).json
    assert r["items"] == [] and r["total"] == 7 and r["pages"] == 1


# --------------------------------------------------------------------------- search


def test_search_ranks_by_relevance(client, people):
    me = people.owner
    add_tasks(me.id,
              {"title": "Notes", "description": "write the report"},     # description only
              {"title": "Quarterly report draft"},                        # title contains
              {"title": "report"},                                        # exact (case-insensitive)
              {"title": "Report for Q3"},                                 # prefix
              {"title": "Unrelated"},
              {"title": "Report card", "status": "done"})                 # prefix, done
    add_tasks(people.other.id, {"title": "report"})                       # not visible
    r = client.get("/api/tasks/search?q=REPORT", headers=me.headers)
    assert r.status_code == 200
    assert [t["title"] for t in r.json["items"]] == [
        "report", "Report card", "Report for Q3", "Quarterly report draft", "Notes"]
    assert r.json["total"] == 5
    # same result set as the list's q filter, and the filters apply
    assert sorted(listing(client, me, "q=report")) == sorted(t["title"] for t in r.json["items"])
    r = client.get("/api/tasks/search?q=report&status=todo&per_page=2", headers=me.headers)
    assert [t["title"] for t in r.json["items"]] == ["report", "Report for Q3"]
    assert r.json["total"] == 4 and r.json["pages"] == 2
    r = client.get("/api/tasks/search?q=report", headers=people.admin.headers)
    assert r.json["total"] == 6


@pytest.mark.parametrize("query", ["", "q=", "q=%20", "q=x&sort=title", "q=x&status=nope", "q=x&per_page=500"])
def test_search_validation(client, alice, query):
    r = client.get(f"/api/tasks/search?{query}", headers=alice.headers)
    assert r.status_code == 422 and error_code(r) == "validation_error"


def test_search_in_trash(client, alice):
    task = create_task(client, alice, title="old report")
    client.delete(f"/api/tasks/{task['id']}", headers=alice.headers)
    assert client.get("/api/tasks/search?q=report", headers=alice.headers).json["total"] == 0
    r = client.get("/api/tasks/search?q=report&deleted=only", headers=alice.headers)
    assert [t["id"] for t in r.json["items"]] == [task["id"]]


# --------------------------------------------------------------------------- query count


def _statements(client, url, headers, *, warm: bool = False) -> tuple[int, dict]:
    statements = []

    def count(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    db.session.remove()  # a fresh session, as in a real request: nothing cached
    if not warm:  # nor in the hot cache (login session, data version)
        hot_state(client.application).cache.clear()
    event.listen(db.engine, "before_cursor_execute", count)
    try:
        r = client.get(url, headers=headers)
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    assert r.status_code == 200
    return len(statements), r.json


def test_list_uses_a_bounded_number_of_queries(client, people):
    owner = db.session.get(User, people.owner.id)
    other_ids = [people.assignee.id, people.other.id, people.admin.id]
    tasks = [Task(owner_id=owner.id, title=f"t{n}", description="", assignee_id=other_ids[n % 3])
             for n in range(120)]
    db.session.add_all(tasks)
    db.session.flush()
    db.session.add_all(Reminder(task_id=t.id, remind_at=utcnow() + timedelta(days=k + 1))
                       for t in tasks for k in range(2))
    db.session.commit()
    small, body_small = _statements(client, "/api/tasks?per_page=5", people.owner.headers)
    large, body_large = _statements(client, "/api/tasks?per_page=100", people.owner.headers)
    assert len(body_small["items"]) == 5 and len(body_large["items"]) == 100
    assert all(len(t["reminders"]) == 2 and t["assignee"] is not None for t in body_large["items"])
    assert large == small
    # auth (session joined with its user) + data version (ETag) + count
    # + page (owner/assignee joined) + reminders
    assert large == 5, large
    # the common case: session and data version from the hot cache, no round trip for them
    warm, body_warm = _statements(client, "/api/tasks?per_page=100", people.owner.headers, warm=True)
    assert body_warm == body_large
    assert warm == 3, warm
    search, body = _statements(client, "/api/tasks/search?q=t&per_page=100", people.owner.headers)
    assert len(body["items"]) == 100 and search == large


def test_list_items_are_the_task_bodies(client, people, team_setup):
    """The list endpoints build items from plain rows (services.page_items): each
    must equal the task's own body (TaskSchema), whatever fields are set."""
    me, t = people.owner, team_setup
    add_member(t.team, orm_user(me))
    orm_user(people.assignee).full_name = "Ada Assignee"
    db.session.commit()
    later = utcnow() + timedelta(days=3)
    plain = create_task(client, me, title="plain")
    full = create_task(client, me, title="full", description="with everything",
                       priority="urgent", due_at="2030-01-02T03:04:05.678901+02:00",
                       assignee_id=people.assignee.id,
                       reminders=[(later + timedelta(hours=1)).isoformat(), later.isoformat()])
    team = create_task(client, t.team_owner, title="team", team_id=t.team.id, assignee_id=me.id)
    done = create_task(client, me, title="done")
    assert client.patch(f"/api/tasks/{done['id']}/status", json={"status": "done"},
                        headers=me.headers).status_code == 200
    db.session.execute(sa.update(Reminder).where(Reminder.task_id == full["id"])
                       .where(Reminder.remind_at == later).values(sent_at=utcnow()))
    db.session.commit()
    ids = [done["id"], team["id"], full["id"], plain["id"]]
    bodies = [client.get(f"/api/tasks/{i}", headers=me.headers).json for i in ids]
    assert bodies[2]["reminders"][0]["sent_at"] is not None and bodies[2]["assignee"]["full_name"]
    listed = client.get("/api/tasks?per_page=100", headers=me.headers).json["items"]
    assert listed == bodies
    found = client.get("/api/tasks/search?q=e&per_page=100", headers=me.headers).json["items"]
    assert sorted(found, key=lambda b: b["id"]) == sorted(
        [b for b in bodies if "e" in b["title"] + b["description"]], key=lambda b: b["id"])
    # the trash lists deleted tasks the same way (deleted_at set)
    assert client.delete(f"/api/tasks/{full['id']}", headers=me.headers).status_code == 204
    trashed = client.get("/api/tasks?deleted=only", headers=me.headers).json["items"]
    db.session.expire_all()
    assert trashed == [task_schema.dump(db.session.get(Task, full["id"]))]
    assert trashed[0]["deleted_at"].endswith("Z")


# --------------------------------------------------------------------------- OpenAPI


def test_openapi_describes_task_endpoints(client):
    spec = client.get("/api/openapi.json").json
    paths = spec["paths"]
    expected = {
        "/api/tasks": {"get", "post"}, "/api/tasks/search": {"get"},
        "/api/tasks/{task_id}": {"get", "put", "patch", "delete"},
        "/api/tasks/{task_id}/status": {"patch"}, "/api/tasks/{task_id}/assign": {"patch"},
        "/api/tasks/{task_id}/restore": {"patch"}, "/api/tasks/{task_id}/activity": {"get"},
    }
    for path, methods in expected.items():
        assert methods <= set(paths[path]), path
        for method in methods:
            op = paths[path][method]
            assert {"200", "201", "204"} & set(op["responses"]) and "401" in op["responses"]
            assert op["tags"] == ["tasks"]
            if "{task_id}" in path:
                assert "404" in op["responses"]
                assert {"in": "path", "name": "task_id", "required": True,
                        "schema": {"type": "integer"}} in op["parameters"]
    post = paths["/api/tasks"]["post"]
    assert {"201", "400", "401", "409", "415", "422"} <= set(post["responses"])
    assert {"Location", "ETag"} <= set(post["responses"]["201"]["headers"])
    assert any(p["in"] == "header" and p["name"] == "Idempotency-Key" for p in post["parameters"])
    list_params = {p["name"] for p in paths["/api/tasks"]["get"]["parameters"]}
    assert {"status", "priority", "assignee_id", "owner_id", "team_id", "due_before", "due_after",
            "overdue", "q", "deleted", "sort", "page", "per_page"} <= list_params
    for method in ("put", "patch"):
        op = paths["/api/tasks/{task_id}"][method]
        assert {"200", "403", "404", "409", "412", "422"} <= set(op["responses"])
        assert any(p["in"] == "header" and p["name"] == "If-Match" for p in op["parameters"])
        assert "ETag" in op["responses"]["200"]["headers"]
    assert "permanent" in {p["name"] for p in paths["/api/tasks/{task_id}"]["delete"]["parameters"]}
    schemas = spec["components"]["schemas"]
    assert set(schemas["Task"]["properties"]) == {
        "id", "title", "description", "status", "priority", "due_at", "owner", "assignee", "team_id",
        "reminders", "created_at", "updated_at", "completed_at", "deleted_at", "version"}
    assert schemas["TaskCreate"]["required"] == ["title"]
    assert {"TaskPage", "TaskActivityPage", "TaskPatch", "TaskReplace", "TaskStatus",
            "TaskAssign"} <= set(schemas)
