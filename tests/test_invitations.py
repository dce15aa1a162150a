"""Invitations: /api/teams/<id>/invitations, /api/invitations, accept and decline."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from tasktracker.auth.models import User
from tasktracker.core.types import utcnow
from tasktracker.extensions import db
from tasktracker.teams.models import Invitation, Team
from tests.factories import add_member
from tests.helpers import events_of, role_of


def create_team(client, session, name="Core") -> int:
    response = client.post("/api/teams", json={"name": name}, headers=session.headers)
    assert response.status_code == 201, response.json
    return response.json["id"]


def join(team_id: int, session, role: str = "member") -> None:
    add_member(db.session.get(Team, team_id), db.session.get(User, session.id), role)


def invite(client, session, team_id: int, email: str, role: str | None = None):
    body = {"email": email} if role is None else {"email": email, "role": role}
    return client.post(f"/api/teams/{team_id}/invitations", json=body, headers=session.headers)


def expire(invitation_id: int) -> None:
    db.session.get(Invitation, invitation_id).expires_at = utcnow() - timedelta(seconds=1)
    db.session.commit()


def error_code(response) -> str:
    return response.json["error"]["code"]


def parse_time(value: str):
    from datetime import datetime

    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# --------------------------------------------------------------------------- create

def test_invite_registered_user(client, auth, app):
    owner, bob = auth.user("owner"), auth.user("bob")
    team_id = create_team(client, owner)
    before = utcnow()
    response = invite(client, owner, team_id, "  Bob@Example.COM ")
    assert response.status_code == 201
    body = response.json
    assert set(body) >= {"id", "team", "email", "role", "status", "expires_at"}
    assert body["team"] == {"id": team_id, "name": "Core"}
    assert body["email"] == "bob@example.com"
    assert body["role"] == "member" and body["status"] == "pending"
    ttl = app.config["INVITATION_TTL"]
    assert ttl == timedelta(days=7)
    assert before + ttl <= parse_time(body["expires_at"]) <= utcnow() + ttl
    [event] = events_of("invitation.created")
    assert event.team_id == team_id and event.actor_id == owner.id
    assert event.payload == {"invitation": body, "invitee_user_id": bob.id}


def test_invite_unregistered_email_has_no_invitee(client, auth):
    owner = auth.user("owner")
    team_id = create_team(client, owner)
    response = invite(client, owner, team_id, "nobody@example.com", role="admin")
    assert response.status_code == 201 and response.json["role"] == "admin"
    [event] = events_of("invitation.created")
    assert event.payload["invitee_user_id"] is None


def test_invite_permissions(client, auth):
    owner, admin, member = auth.user("owner"), auth.user("admin"), auth.user("member")
    outsider, root = auth.user("outsider"), auth.user("root", admin=True)
    team_id = create_team(client, owner)
    join(team_id, admin, "admin")
    join(team_id, member)

    assert invite(client, admin, team_id, "a@example.com").status_code == 201
    denied = invite(client, admin, team_id, "b@example.com", role="admin")
    assert denied.status_code == 403 and error_code(denied) == "owner_required"
    assert invite(client, member, team_id, "c@example.com").status_code == 403
    assert invite(client, outsider, team_id, "d@example.com").status_code == 404
    assert client.post(f"/api/teams/{team_id}/invitations", json={"email": "e@example.com"}).status_code == 401
    assert invite(client, root, team_id, "f@example.com", role="admin").status_code == 201
    assert invite(client, owner, 99999999999, "g@example.com").status_code == 404
    emails = set(db.session.scalars(sa.select(Invitation.email)))
    assert emails == {"a@example.com", "f@example.com"}


def test_invite_validation(client, auth):
    owner = auth.user("owner")
    team_id = create_team(client, owner)
    for body, field in (({}, "email"), ({"email": "not-an-email"}, "email"),
                        ({"email": "x@example.com", "role": "owner"}, "role"),
                        ({"email": "x@example.com", "role": "boss"}, "role"),
                        ({"email": "x" * 250 + "@example.com"}, "email")):
        response = client.post(f"/api/teams/{team_id}/invitations", json=body, headers=owner.headers)
        assert response.status_code == 422 and field in response.json["error"]["details"], body
    assert client.post(f"/api/teams/{team_id}/invitations", data="email=x",
                       headers=owner.headers).status_code == 415


def test_invite_conflicts(client, auth):
    owner, member = auth.user("owner"), auth.user("member")
    team_id = create_team(client, owner)
    join(team_id, member)

    already = invite(client, owner, team_id, "MEMBER@example.com")
    assert already.status_code == 409 and error_code(already) == "already_member"
    assert error_code(invite(client, owner, team_id, "owner@example.com")) == "already_member"

    first = invite(client, owner, team_id, "new@example.com")
    assert first.status_code == 201
    dup = invite(client, owner, team_id, "New@Example.com", role="admin")
    assert dup.status_code == 409 and error_code(dup) == "already_invited"
    # the same address may be invited to another team
    other_team = create_team(client, owner, "Other")
    assert invite(client, owner, other_team, "new@example.com").status_code == 201
    # once the pending one expired, a new invitation can be sent
    expire(first.json["id"])
    assert invite(client, owner, team_id, "new@example.com").status_code == 201
    assert len(events_of("invitation.created")) == 3


# --------------------------------------------------------------------------- lists

def test_team_invitations_lists_pending_only(client, auth):
    owner, admin, member = auth.user("owner"), auth.user("admin"), auth.user("member")
    outsider, root = auth.user("outsider"), auth.user("root", admin=True)
    carol, dave = auth.user("carol"), auth.user("dave")
    team_id = create_team(client, owner)
    join(team_id, admin, "admin")
    join(team_id, member)
    pending = [invite(client, owner, team_id, f"p{i}@example.com").json["id"] for i in range(3)]
    accepted = invite(client, owner, team_id, "carol@example.com").json["id"]
    declined = invite(client, owner, team_id, "dave@example.com").json["id"]
    expired = invite(client, owner, team_id, "old@example.com").json["id"]
    assert client.post(f"/api/invitations/{accepted}/accept", headers=carol.headers).status_code == 200
    assert client.post(f"/api/invitations/{declined}/decline", headers=dave.headers).status_code == 200
    expire(expired)

    url = f"/api/teams/{team_id}/invitations"
    response = client.get(url + "?per_page=2", headers=admin.headers)
    assert response.status_code == 200
    assert response.json["total"] == 3 and response.json["pages"] == 2
    assert [i["id"] for i in response.json["items"]] == pending[:2]
    assert all(i["status"] == "pending" for i in response.json["items"])
    assert client.get(url, headers=owner.headers).json["total"] == 3
    assert client.get(url, headers=root.headers).json["total"] == 3
    assert client.get(url, headers=member.headers).status_code == 403
    assert client.get(url, headers=outsider.headers).status_code == 404
    assert client.get(url).status_code == 401


def test_my_invitations_case_insensitive_and_private(client, auth):
    owner, carol, other = auth.user("owner"), auth.user("carol"), auth.user("other")
    team_a, team_b = create_team(client, owner, "A"), create_team(client, owner, "B")
    first = invite(client, owner, team_a, "CAROL@example.com").json["id"]
    second = invite(client, owner, team_b, "carol@EXAMPLE.com").json["id"]
    invite(client, owner, team_a, "other@example.com")

    response = client.get("/api/invitations", headers=carol.headers)
    assert response.status_code == 200
    assert [i["id"] for i in response.json["items"]] == [second, first]  # newest first
    assert {i["team"]["name"] for i in response.json["items"]} == {"A", "B"}
    assert client.get("/api/invitations", headers=other.headers).json["total"] == 1
    assert client.get("/api/invitations", headers=owner.headers).json["total"] == 0
    expire(first)
    assert [i["id"] for i in client.get("/api/invitations", headers=carol.headers).json["items"]] == [second]
    assert client.get("/api/invitations").status_code == 401


# --------------------------------------------------------------------------- revoke


def revoke(client, session, team_id: int, invitation_id: int):
    return client.delete(f"/api/teams/{team_id}/invitations/{invitation_id}",
                         headers=session.headers if session else {})


def test_revoke_pending_invitation(client, auth):
    owner, bob = auth.user("owner"), auth.user("bob")
    team_id = create_team(client, owner)
    inv = invite(client, owner, team_id, "bob@example.com").json

    response = revoke(client, owner, team_id, inv["id"])
    assert response.status_code == 204 and response.data == b""
    db.session.expire_all()
    row = db.session.get(Invitation, inv["id"])
    assert row.status == "revoked" and row.responded_at is not None
    [event] = events_of("invitation.revoked")
    assert event.team_id == team_id and event.actor_id == owner.id
    assert event.payload["invitation"]["id"] == inv["id"]
    assert event.payload["invitation"]["status"] == "revoked"
    # gone from both lists; the invitee can no longer answer it
    assert client.get(f"/api/teams/{team_id}/invitations", headers=owner.headers).json["total"] == 0
    assert client.get("/api/invitations", headers=bob.headers).json["total"] == 0
    for action in ("accept", "decline"):
        late = client.post(f"/api/invitations/{inv['id']}/{action}", headers=bob.headers)
        assert late.status_code == 409 and error_code(late) == "invitation_not_pending"
    assert role_of(team_id, bob.id) is None
    # revoked already: nothing left to revoke
    again = revoke(client, owner, team_id, inv["id"])
    assert again.status_code == 404 and error_code(again) == "invitation_not_found"
    # and the address may be invited again
    assert invite(client, owner, team_id, "bob@example.com").status_code == 201


def test_revoke_permissions(client, auth):
    owner, admin, member = auth.user("owner"), auth.user("admin"), auth.user("member")
    outsider, root, bob = auth.user("outsider"), auth.user("root", admin=True), auth.user("bob")
    team_id = create_team(client, owner)
    join(team_id, admin, "admin")
    join(team_id, member)
    inv_id = invite(client, owner, team_id, "bob@example.com", role="admin").json["id"]

    assert revoke(client, None, team_id, inv_id).status_code == 401
    response = revoke(client, member, team_id, inv_id)
    assert response.status_code == 403 and error_code(response) == "forbidden"
    for session in (outsider, bob):  # not in the team (the invitee neither): the team is not revealed
        response = revoke(client, session, team_id, inv_id)
        assert response.status_code == 404 and error_code(response) == "team_not_found"
    db.session.expire_all()
    assert db.session.get(Invitation, inv_id).status == "pending"
    assert events_of("invitation.revoked") == []
    # a team admin may revoke (even an admin invitation the owner sent); so may a site admin
    assert revoke(client, admin, team_id, inv_id).status_code == 204
    other = invite(client, owner, team_id, "other@example.com").json["id"]
    assert revoke(client, root, team_id, other).status_code == 204


def test_revoke_not_found_and_not_pending(client, auth):
    owner, bob, carol = auth.user("owner"), auth.user("bob"), auth.user("carol")
    team_id, other_team = create_team(client, owner), create_team(client, owner, "Other")
    elsewhere = invite(client, owner, other_team, "bob@example.com").json["id"]
    for inv_id in (elsewhere, 999999):  # another team's, missing
        response = revoke(client, owner, team_id, inv_id)
        assert response.status_code == 404 and error_code(response) == "invitation_not_found"
    assert revoke(client, owner, team_id, 99999999999).status_code == 404  # out of range (URL converter)
    accepted = invite(client, owner, team_id, "bob@example.com").json["id"]
    declined = invite(client, owner, team_id, "carol@example.com").json["id"]
    assert client.post(f"/api/invitations/{accepted}/accept", headers=bob.headers).status_code == 200
    assert client.post(f"/api/invitations/{declined}/decline", headers=carol.headers).status_code == 200
    for inv_id, status in ((accepted, "accepted"), (declined, "declined")):
        response = revoke(client, owner, team_id, inv_id)
        assert response.status_code == 409 and error_code(response) == "invitation_not_pending"
        db.session.expire_all()
        assert db.session.get(Invitation, inv_id).status == status
    # an expired pending invitation may still be revoked
    old = invite(client, owner, team_id, "old@example.com").json["id"]
    expire(old)
    assert revoke(client, owner, team_id, old).status_code == 204
    assert client.delete(f"/api/teams/999999/invitations/{old}", headers=owner.headers).status_code == 404


def test_reinvite_after_expiry_marks_the_old_invitation_expired(client, auth):
    """Only one pending invitation per team and address is stored (a unique index):
    the expired one is marked ``expired`` when the address is invited again, and
    still answers ``invitation_expired``."""
    owner, bob = auth.user("owner"), auth.user("bob")
    team_id = create_team(client, owner)
    old = invite(client, owner, team_id, "bob@example.com").json["id"]
    expire(old)
    new = invite(client, owner, team_id, "Bob@example.com")
    assert new.status_code == 201
    db.session.expire_all()
    assert db.session.get(Invitation, old).status == "expired"
    for action in ("accept", "decline"):
        response = client.post(f"/api/invitations/{old}/{action}", headers=bob.headers)
        assert response.status_code == 409 and error_code(response) == "invitation_expired"
    assert revoke(client, owner, team_id, old).status_code == 409
    assert client.post(f"/api/invitations/{new.json['id']}/accept", headers=bob.headers).status_code == 200


# --------------------------------------------------------------------------- accept / decline

def test_accept_makes_member_with_role_and_events(client, auth):
    owner, bob = auth.user("owner"), auth.user("bob")
    team_id = create_team(client, owner)
    inv = invite(client, owner, team_id, "bob@example.com", role="admin").json

    response = client.post(f"/api/invitations/{inv['id']}/accept", headers=bob.headers)
    assert response.status_code == 200
    assert response.json["id"] == inv["id"] and response.json["status"] == "accepted"
    assert role_of(team_id, bob.id) == "admin"
    assert client.get(f"/api/teams/{team_id}", headers=bob.headers).json["member_count"] == 2
    assert db.session.get(Invitation, inv["id"]).responded_at is not None
    [accepted] = events_of("invitation.accepted")
    assert accepted.team_id == team_id and accepted.actor_id == bob.id
    assert accepted.payload == {"invitation": response.json, "user_id": bob.id}
    [added] = events_of("member.added")
    assert added.payload == {"user_id": bob.id, "role": "admin"}

    again = client.post(f"/api/invitations/{inv['id']}/accept", headers=bob.headers)
    assert again.status_code == 409 and error_code(again) == "invitation_not_pending"
    assert client.post(f"/api/invitations/{inv['id']}/decline", headers=bob.headers).status_code == 409
    assert client.get("/api/invitations", headers=bob.headers).json["total"] == 0
    assert client.get(f"/api/teams/{team_id}/invitations", headers=owner.headers).json["total"] == 0


def test_email_that_registers_later_finds_and_accepts(client, auth):
    owner = auth.user("owner")
    team_id = create_team(client, owner)
    inv_id = invite(client, owner, team_id, "Late.Comer@Example.com").json["id"]
    assert events_of("invitation.created")[0].payload["invitee_user_id"] is None

    late = auth.register("latecomer")  # registers as latecomer@example.com
    assert late["email"] == "latecomer@example.com"
    # a different address: not theirs
    session = auth.login("latecomer")
    assert client.get("/api/invitations", headers=session.headers).json["total"] == 0

    auth.register("late.comer")  # late.comer@example.com matches case-insensitively
    session = auth.login("late.comer")
    mine = client.get("/api/invitations", headers=session.headers).json
    assert [i["id"] for i in mine["items"]] == [inv_id]
    assert client.post(f"/api/invitations/{inv_id}/accept", headers=session.headers).status_code == 200
    assert role_of(team_id, session.id) == "member"


def test_only_invitee_may_answer(client, auth):
    owner, bob, eve = auth.user("owner"), auth.user("bob"), auth.user("eve")
    root = auth.user("root", admin=True)
    team_id = create_team(client, owner)
    inv_id = invite(client, owner, team_id, "bob@example.com").json["id"]
    for session in (owner, eve, root):
        for action in ("accept", "decline"):
            response = client.post(f"/api/invitations/{inv_id}/{action}", headers=session.headers)
            assert response.status_code == 404 and error_code(response) == "invitation_not_found"
    assert client.post(f"/api/invitations/{inv_id}/accept").status_code == 401
    assert client.post("/api/invitations/999999/accept", headers=bob.headers).status_code == 404
    assert client.post("/api/invitations/99999999999/decline", headers=bob.headers).status_code == 404
    assert db.session.get(Invitation, inv_id).status == "pending"
    assert role_of(team_id, eve.id) is None


def test_decline(client, auth):
    owner, bob = auth.user("owner"), auth.user("bob")
    team_id = create_team(client, owner)
    inv_id = invite(client, owner, team_id, "bob@example.com").json["id"]
    response = client.post(f"/api/invitations/{inv_id}/decline", headers=bob.headers)
    assert response.status_code == 200 and response.json["status"] == "declined"
    assert role_of(team_id, bob.id) is None
    [declined] = events_of("invitation.declined")
    assert declined.payload == {"invitation": response.json, "user_id": bob.id}
    assert declined.team_id == team_id
    late = client.post(f"/api/invitations/{inv_id}/accept", headers=bob.headers)
    assert late.status_code == 409 and error_code(late) == "invitation_not_pending"
    assert role_of(team_id, bob.id) is None
    # declined: the owner may invite again
    assert invite(client, owner, team_id, "bob@example.com").status_code == 201


def test_expired_invitation_cannot_be_answered(client, auth):
    owner, bob = auth.user("owner"), auth.user("bob")
    team_id = create_team(client, owner)
    inv_id = invite(client, owner, team_id, "bob@example.com").json["id"]
    expire(inv_id)
    for action in ("accept", "decline"):
        response = client.post(f"/api/invitations/{inv_id}/{action}", headers=bob.headers)
        assert response.status_code == 409 and error_code(response) == "invitation_expired"
    assert role_of(team_id, bob.id) is None
    assert db.session.get(Invitation, inv_id).status == "pending"
    assert events_of("invitation.accepted") == [] and events_of("member.added") == []


def test_accept_when_already_member(client, auth):
    owner, bob = auth.user("owner"), auth.user("bob")
    team_id = create_team(client, owner)
    inv_id = invite(client, owner, team_id, "bob@example.com", role="admin").json["id"]
    join(team_id, bob)  # joined some other way meanwhile
    response = client.post(f"/api/invitations/{inv_id}/accept", headers=bob.headers)
    assert response.status_code == 409 and error_code(response) == "already_member"
    assert role_of(team_id, bob.id) == "member"
    assert client.post(f"/api/invitations/{inv_id}/decline", headers=bob.headers).status_code == 200


def test_invitations_of_deleted_team_disappear(client, auth):
    owner, bob = auth.user("owner"), auth.user("bob")
    team_id = create_team(client, owner)
    inv_id = invite(client, owner, team_id, "bob@example.com").json["id"]
    assert client.delete(f"/api/teams/{team_id}", headers=owner.headers).status_code == 204
    assert client.get("/api/invitations", headers=bob.headers).json["total"] == 0
    assert client.post(f"/api/invitations/{inv_id}/accept", headers=bob.headers).status_code == 404


def test_registered_invitee_is_notified_through_the_event(client, auth):
    """End to end with the notification fan-out: invitation.created -> team_invitation."""
    owner, bob = auth.user("owner"), auth.user("bob")
    team_id = create_team(client, owner)
    inv_id = invite(client, owner, team_id, "bob@example.com").json["id"]
    notes = client.get("/api/notifications", headers=bob.headers).json["items"]
    assert [n["type"] for n in notes] == ["team_invitation"]
    assert notes[0]["team_id"] == team_id and notes[0]["data"]["invitation_id"] == inv_id
    assert client.get("/api/notifications", headers=owner.headers).json["items"] == []
