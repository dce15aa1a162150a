"""Teams and memberships: /api/teams, /api/teams/<id>, /api/teams/<id>/members[/<user_id>]."""

from __future__ import annotations

import sqlalchemy as sa

from tasktracker.auth.models import User
from tasktracker.extensions import db
from tasktracker.teams.models import Invitation, Team, TeamMember
from tests.factories import TaskFactory, add_member
from tests.helpers import events_of, role_of


# --------------------------------------------------------------------------- helpers

def create_team(client, session, name="Core", **extra) -> dict:
    response = client.post("/api/teams", json={"name": name, **extra}, headers=session.headers)
    assert response.status_code == 201, response.json
    return response.json


def join(team_id: int, session, role: str = "member") -> None:
    add_member(db.session.get(Team, team_id), db.session.get(User, session.id), role)


def user(session) -> User:
    return db.session.get(User, session.id)


def fresh(obj):
    db.session.expire_all()
    return db.session.get(type(obj), obj.id)


def error_code(response) -> str:
    return response.json["error"]["code"]


def team_world(client, auth):
    """A team with an owner, an admin and a member; returns (team_id, owner, admin, member)."""
    owner, admin, member = auth.user("owner"), auth.user("admin"), auth.user("member")
    team = create_team(client, owner)
    join(team["id"], admin, "admin")
    join(team["id"], member, "member")
    return team["id"], owner, admin, member


# --------------------------------------------------------------------------- create

def test_create_team_makes_caller_owner_and_records_event(client, auth):
    alice = auth.user("alice")
    response = client.post("/api/teams", json={"name": "  Platform  ", "description": "Infra"},
                           headers=alice.headers)
    assert response.status_code == 201
    body = response.json
    assert body["name"] == "Platform"  # trimmed
    assert body["description"] == "Infra"
    assert body["owner"] == {"id": alice.id, "username": "alice", "full_name": ""}
    assert body["member_count"] == 1
    assert body["created_at"].endswith("Z")
    assert set(body) == {"id", "name", "description", "owner", "member_count", "created_at"}
    assert response.headers["Location"] == f"/api/teams/{body['id']}"
    assert role_of(body["id"], alice.id) == "owner"
    [event] = events_of("team.created")
    assert event.team_id == body["id"] and event.actor_id == alice.id and event.task_id is None
    assert event.payload == {"team": body}


def test_create_team_validation(client, auth):
    alice = auth.user("alice")
    cases = [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": 5}, "name"),
        ({"name": "ok", "description": "d" * 2001}, "description"),
        ({"name": "ok", "owner_id": 3}, "owner_id"),
    ]
    for body, field in cases:
        response = client.post("/api/teams", json=body, headers=alice.headers)
        assert response.status_code == 422, body
        assert field in response.json["error"]["details"], body
    assert client.post("/api/teams", json={"name": "x" * 100}, headers=alice.headers).status_code == 201
    assert client.post("/api/teams", data="name=x", headers=alice.headers).status_code == 415
    bad_json = client.post("/api/teams", data="{", content_type="application/json", headers=alice.headers)
    assert bad_json.status_code == 400
    assert client.post("/api/teams", json={"name": "x"}).status_code == 401
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Team)) == 1


# --------------------------------------------------------------------------- list / read

def test_list_teams_only_mine_paginated_with_counts(client, auth):
    alice, bob = auth.user("alice"), auth.user("bob")
    t1 = create_team(client, alice, "A")
    t2 = create_team(client, alice, "B")
    t3 = create_team(client, bob, "Bob's")
    join(t3["id"], alice)
    create_team(client, bob, "Bob only")
    join(t1["id"], bob, "admin")

    page1 = client.get("/api/teams?per_page=2", headers=alice.headers)
    assert page1.status_code == 200
    assert page1.json["total"] == 3 and page1.json["pages"] == 2 and page1.json["page"] == 1
    assert [t["id"] for t in page1.json["items"]] == [t1["id"], t2["id"]]
    assert [t["member_count"] for t in page1.json["items"]] == [2, 1]
    page2 = client.get("/api/teams?per_page=2&page=2", headers=alice.headers).json
    assert [t["id"] for t in page2["items"]] == [t3["id"]]
    assert page2["items"][0]["owner"]["username"] == "bob"

    assert client.get("/api/teams?per_page=101", headers=alice.headers).status_code == 422
    assert client.get("/api/teams?page=0", headers=alice.headers).status_code == 422
    assert client.get("/api/teams").status_code == 401


def test_site_admin_lists_only_own_teams(client, auth):
    alice, root = auth.user("alice"), auth.user("root", admin=True)
    create_team(client, alice)
    assert client.get("/api/teams", headers=root.headers).json["total"] == 0


def test_get_team_members_only_with_member_list(client, auth):
    team_id, owner, admin, member = team_world(client, auth)
    outsider, root = auth.user("outsider"), auth.user("root", admin=True)
    response = client.get(f"/api/teams/{team_id}", headers=member.headers)
    assert response.status_code == 200
    body = response.json
    assert body["member_count"] == 3
    assert [(m["user"]["username"], m["role"]) for m in body["members"]] == [
        ("owner", "owner"), ("admin", "admin"), ("member", "member")]
    assert all(m["joined_at"].endswith("Z") for m in body["members"])
    assert "email" not in body["members"][0]["user"]

    assert client.get(f"/api/teams/{team_id}", headers=root.headers).status_code == 200
    hidden = client.get(f"/api/teams/{team_id}", headers=outsider.headers)
    assert hidden.status_code == 404 and error_code(hidden) == "team_not_found"
    assert client.get("/api/teams/999999", headers=owner.headers).status_code == 404
    assert client.get("/api/teams/99999999999", headers=owner.headers).status_code == 404
    assert client.get(f"/api/teams/{team_id}").status_code == 401


# --------------------------------------------------------------------------- update

def test_update_team_permissions_and_event(client, auth):
    team_id, owner, admin, member = team_world(client, auth)
    outsider, root = auth.user("outsider"), auth.user("root", admin=True)

    response = client.patch(f"/api/teams/{team_id}", json={"name": "Renamed"}, headers=admin.headers)
    assert response.status_code == 200
    assert response.json["name"] == "Renamed" and response.json["member_count"] == 3
    [event] = events_of("team.updated")
    assert event.actor_id == admin.id and event.team_id == team_id
    assert event.payload["changes"] == {"name": ["Core", "Renamed"]}
    assert event.payload["team"]["name"] == "Renamed"

    assert client.patch(f"/api/teams/{team_id}", json={"description": "by owner"},
                        headers=owner.headers).json["description"] == "by owner"
    assert client.patch(f"/api/teams/{team_id}", json={"description": "by root"},
                        headers=root.headers).status_code == 200
    denied = client.patch(f"/api/teams/{team_id}", json={"name": "Nope"}, headers=member.headers)
    assert denied.status_code == 403 and "error" in denied.json
    assert client.patch(f"/api/teams/{team_id}", json={"name": "Nope"},
                        headers=outsider.headers).status_code == 404
    assert client.patch(f"/api/teams/{team_id}", json={"name": ""}, headers=owner.headers).status_code == 422
    assert client.patch(f"/api/teams/{team_id}", json={"description": None},
                        headers=owner.headers).status_code == 422
    assert client.patch(f"/api/teams/{team_id}", data="x", headers=owner.headers).status_code == 415
    assert db.session.get(Team, team_id).name == "Renamed"
    assert len(events_of("team.updated")) == 3

    # no change, no event
    assert client.patch(f"/api/teams/{team_id}", json={"name": "Renamed"}, headers=owner.headers).status_code == 200
    assert client.patch(f"/api/teams/{team_id}", json={}, headers=owner.headers).status_code == 200
    assert len(events_of("team.updated")) == 3


# --------------------------------------------------------------------------- delete

def test_delete_team_only_owner(client, auth):
    team_id, owner, admin, member = team_world(client, auth)
    outsider = auth.user("outsider")
    for session, status in ((admin, 403), (member, 403), (outsider, 404)):
        response = client.delete(f"/api/teams/{team_id}", headers=session.headers)
        assert response.status_code == status
    assert client.delete(f"/api/teams/{team_id}").status_code == 401
    assert db.session.get(Team, team_id) is not None
    assert client.delete(f"/api/teams/{team_id}", headers=owner.headers).status_code == 204
    assert client.get(f"/api/teams/{team_id}", headers=owner.headers).status_code == 404
    assert client.delete(f"/api/teams/{team_id}", headers=owner.headers).status_code == 404


def test_site_admin_deletes_any_team(client, auth):
    team_id, owner, admin, member = team_world(client, auth)
    root = auth.user("root", admin=True)
    assert client.delete(f"/api/teams/{team_id}", headers=root.headers).status_code == 204
    assert db.session.get(Team, team_id) is None


def test_delete_team_turns_tasks_personal(client, auth):
    team_id, owner, admin, member = team_world(client, auth)
    other = auth.user("other")
    other_team = create_team(client, other, "Other")
    # a member's task assigned to the admin, a trashed one, and a task of another team
    task = TaskFactory(owner=user(member), assignee=user(admin), team_id=team_id)
    trashed = TaskFactory(owner=user(owner), team_id=team_id)
    trashed.deleted_at = trashed.created_at
    db.session.commit()
    elsewhere = TaskFactory(owner=user(other), team_id=other_team["id"])
    version = task.version
    client.post(f"/api/teams/{team_id}/invitations", json={"email": "x@example.com"}, headers=owner.headers)

    # before: the team owner sees the member's task through the team
    assert client.get(f"/api/tasks/{task.id}/comments", headers=owner.headers).status_code == 200

    assert client.delete(f"/api/teams/{team_id}", headers=owner.headers).status_code == 204

    task, trashed, elsewhere = fresh(task), fresh(trashed), fresh(elsewhere)
    assert task.team_id is None and task.owner_id == member.id and task.assignee_id == admin.id
    assert task.version == version + 1
    assert trashed.team_id is None and trashed.deleted_at is not None
    assert elsewhere.team_id == other_team["id"]
    # personal now: the owner of the former team no longer sees the member's task; owner and assignee do
    assert client.get(f"/api/tasks/{task.id}/comments", headers=owner.headers).status_code == 404
    assert client.get(f"/api/tasks/{task.id}/comments", headers=member.headers).status_code == 200
    assert client.get(f"/api/tasks/{task.id}/comments", headers=admin.headers).status_code == 200
    # memberships and invitations went with the team
    assert db.session.scalar(sa.select(sa.func.count()).select_from(TeamMember)
                             .where(TeamMember.team_id == team_id)) == 0
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Invitation)
                             .where(Invitation.team_id == team_id)) == 0
    assert client.get("/api/teams", headers=member.headers).json["total"] == 0

    task_events = events_of("task.updated")
    assert sorted(e.task_id for e in task_events) == sorted([task.id, trashed.id])
    for e in task_events:
        assert e.team_id == team_id and e.actor_id == owner.id
        assert e.payload["changes"] == {"team_id": [team_id, None]}
        assert e.payload["task"]["team_id"] is None and e.payload["task"]["id"] == e.task_id
    [deleted] = events_of("team.deleted")
    assert deleted.team_id == team_id and deleted.payload["team"]["id"] == team_id
    assert deleted.payload["team"]["member_count"] == 3


# --------------------------------------------------------------------------- members

def test_list_members_paginated_and_ordered(client, auth):
    team_id, owner, admin, member = team_world(client, auth)
    extra = auth.user("extra")
    join(team_id, extra, "admin")
    outsider, root = auth.user("outsider"), auth.user("root", admin=True)
    response = client.get(f"/api/teams/{team_id}/members?per_page=3", headers=member.headers)
    assert response.status_code == 200
    assert response.json["total"] == 4 and response.json["pages"] == 2
    assert [(m["user"]["username"], m["role"]) for m in response.json["items"]] == [
        ("owner", "owner"), ("admin", "admin"), ("extra", "admin")]
    page2 = client.get(f"/api/teams/{team_id}/members?per_page=3&page=2", headers=member.headers).json
    assert [m["user"]["username"] for m in page2["items"]] == ["member"]
    assert set(page2["items"][0]) == {"user", "role", "joined_at"}
    assert client.get(f"/api/teams/{team_id}/members", headers=root.headers).status_code == 200
    assert client.get(f"/api/teams/{team_id}/members", headers=outsider.headers).status_code == 404
    assert client.get(f"/api/teams/{team_id}/members").status_code == 401
    assert client.get(f"/api/teams/{team_id}/members?per_page=abc", headers=owner.headers).status_code == 422


def test_owner_changes_roles_with_event(client, auth):
    team_id, owner, admin, member = team_world(client, auth)
    url = f"/api/teams/{team_id}/members/{member.id}"
    response = client.patch(url, json={"role": "admin"}, headers=owner.headers)
    assert response.status_code == 200
    assert response.json["role"] == "admin" and response.json["user"]["id"] == member.id
    assert role_of(team_id, member.id) == "admin"
    [event] = events_of("member.role_changed")
    assert event.team_id == team_id and event.actor_id == owner.id
    assert event.payload == {"user_id": member.id, "role": "admin", "changes": {"role": ["member", "admin"]}}
    # demote again; same role is a no-op without an event
    assert client.patch(url, json={"role": "member"}, headers=owner.headers).json["role"] == "member"
    assert client.patch(url, json={"role": "member"}, headers=owner.headers).status_code == 200
    assert len(events_of("member.role_changed")) == 2


def test_role_change_rules(client, auth):
    team_id, owner, admin, member = team_world(client, auth)
    other_admin, outsider, root = auth.user("admin2"), auth.user("outsider"), auth.user("root", admin=True)
    join(team_id, other_admin, "admin")
    members = f"/api/teams/{team_id}/members"

    # only the owner promotes/demotes admins
    denied = client.patch(f"{members}/{member.id}", json={"role": "admin"}, headers=admin.headers)
    assert denied.status_code == 403 and error_code(denied) == "owner_required"
    assert client.patch(f"{members}/{other_admin.id}", json={"role": "member"},
                        headers=admin.headers).status_code == 403
    assert client.patch(f"{members}/{admin.id}", json={"role": "member"},
                        headers=member.headers).status_code == 403
    assert client.patch(f"{members}/{member.id}", json={"role": "admin"},
                        headers=member.headers).status_code == 403
    # the owner's role is locked; owner cannot be given
    locked = client.patch(f"{members}/{owner.id}", json={"role": "member"}, headers=owner.headers)
    assert locked.status_code == 409 and error_code(locked) == "owner_role_locked"
    assert client.patch(f"{members}/{owner.id}", json={"role": "admin"}, headers=root.headers).status_code == 409
    assert client.patch(f"{members}/{member.id}", json={"role": "owner"}, headers=owner.headers).status_code == 422
    assert client.patch(f"{members}/{member.id}", json={"role": "boss"}, headers=owner.headers).status_code == 422
    assert client.patch(f"{members}/{member.id}", json={}, headers=owner.headers).status_code == 422
    # not members
    missing = client.patch(f"{members}/{outsider.id}", json={"role": "admin"}, headers=owner.headers)
    assert missing.status_code == 404 and error_code(missing) == "member_not_found"
    assert client.patch(f"{members}/99999999999", json={"role": "admin"}, headers=owner.headers).status_code == 404
    assert client.patch(f"{members}/{member.id}", json={"role": "admin"},
                        headers=outsider.headers).status_code == 404
    assert client.patch(f"{members}/{member.id}", json={"role": "admin"}).status_code == 401
    assert role_of(team_id, member.id) == "member" and role_of(team_id, other_admin.id) == "admin"

    # a team admin may step down; a site admin has the owner's powers
    assert client.patch(f"{members}/{admin.id}", json={"role": "member"}, headers=admin.headers).status_code == 200
    assert role_of(team_id, admin.id) == "member"
    assert client.patch(f"{members}/{member.id}", json={"role": "admin"}, headers=root.headers).status_code == 200
    assert role_of(team_id, member.id) == "admin"


def test_remove_member_unassigns_team_tasks_and_ends_access(client, auth):
    team_id, owner, admin, member = team_world(client, auth)
    other = auth.user("other")
    other_team = create_team(client, other, "Other")
    join(other_team["id"], member)
    team_task = TaskFactory(owner=user(owner), assignee=user(member), team_id=team_id)
    own_team_task = TaskFactory(owner=user(member), team_id=team_id)
    personal = TaskFactory(owner=user(owner), assignee=user(member))
    other_team_task = TaskFactory(owner=user(other), assignee=user(member), team_id=other_team["id"])
    version = team_task.version

    assert client.get(f"/api/teams/{team_id}", headers=member.headers).status_code == 200
    assert client.get(f"/api/tasks/{team_task.id}/comments", headers=member.headers).status_code == 200

    assert client.delete(f"/api/teams/{team_id}/members/{member.id}", headers=owner.headers).status_code == 204

    assert role_of(team_id, member.id) is None
    team_task = fresh(team_task)
    assert team_task.assignee_id is None and team_task.version == version + 1
    assert fresh(personal).assignee_id == member.id
    assert fresh(other_team_task).assignee_id == member.id
    assert fresh(own_team_task).team_id == team_id  # tasks they own stay in the team
    # access ends at once, with the same token
    assert client.get(f"/api/teams/{team_id}", headers=member.headers).status_code == 404
    assert client.get(f"/api/teams/{team_id}/members", headers=member.headers).status_code == 404
    assert client.get(f"/api/tasks/{team_task.id}/comments", headers=member.headers).status_code == 404
    assert client.get(f"/api/tasks/{personal.id}/comments", headers=member.headers).status_code == 200
    assert client.get(f"/api/teams/{team_id}", headers=owner.headers).json["member_count"] == 2

    [assigned] = events_of("task.assigned")
    assert assigned.task_id == team_task.id and assigned.team_id == team_id and assigned.actor_id == owner.id
    assert assigned.payload["changes"] == {"assignee_id": [member.id, None]}
    assert assigned.payload["task"]["assignee"] is None
    [removed] = events_of("member.removed")
    assert removed.team_id == team_id and removed.payload == {"user_id": member.id, "role": "member"}


def test_member_leaves(client, auth):
    team_id, owner, admin, member = team_world(client, auth)
    assert client.delete(f"/api/teams/{team_id}/members/{member.id}", headers=member.headers).status_code == 204
    assert role_of(team_id, member.id) is None
    [removed] = events_of("member.removed")
    assert removed.actor_id == member.id
    assert client.delete(f"/api/teams/{team_id}/members/{admin.id}", headers=admin.headers).status_code == 204
    assert client.get("/api/teams", headers=admin.headers).json["total"] == 0


def test_remove_member_rules(client, auth):
    team_id, owner, admin, member = team_world(client, auth)
    member2, admin2 = auth.user("member2"), auth.user("admin2")
    outsider, root = auth.user("outsider"), auth.user("root", admin=True)
    join(team_id, member2)
    join(team_id, admin2, "admin")
    url = f"/api/teams/{team_id}/members/" + "{}"

    for session in (owner, admin, root):
        response = client.delete(url.format(owner.id), headers=session.headers)
        assert response.status_code == 409 and error_code(response) == "owner_cannot_leave"
    assert client.delete(url.format(owner.id), headers=member.headers).status_code == 403
    assert client.delete(url.format(member2.id), headers=member.headers).status_code == 403
    denied = client.delete(url.format(admin2.id), headers=admin.headers)
    assert denied.status_code == 403 and error_code(denied) == "owner_required"
    assert client.delete(url.format(member.id), headers=outsider.headers).status_code == 404
    assert client.delete(url.format(outsider.id), headers=owner.headers).status_code == 404
    assert client.delete(url.format(member.id)).status_code == 401
    assert {role_of(team_id, s.id) for s in (member, member2, admin2)} == {"member", "admin"}

    assert client.delete(url.format(member2.id), headers=admin.headers).status_code == 204
    assert client.delete(url.format(admin2.id), headers=owner.headers).status_code == 204
    assert client.delete(url.format(member.id), headers=root.headers).status_code == 204
    assert client.delete(url.format(member.id), headers=owner.headers).status_code == 404
    assert client.get(f"/api/teams/{team_id}", headers=owner.headers).json["member_count"] == 2
    assert len(events_of("member.removed")) == 3
