"""Races between team operations, settled by the database (on SQLite and PostgreSQL).

Each race is tested twice: once with a forced interleaving (one request paused
at the dangerous point while the other runs), which is deterministic, and once
with real concurrent threads over several rounds. Whatever the interleaving,
no request answers 500 and the invariant holds afterwards.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa

from tasktracker.auth.models import User
from tasktracker.auth.tokens import issue_tokens
from tasktracker.core.types import utcnow
from tasktracker.extensions import db
from tasktracker.tasks.models import Task
from tasktracker.teams.models import Invitation, Team, TeamMember
from tests.factories import TaskFactory, TeamFactory, UserFactory, add_member
from tests.helpers import run_together

ROUNDS = 12


def headers(user: User) -> dict:
    tokens = issue_tokens(user)
    db.session.commit()
    return {"Authorization": f"Bearer {tokens['access_token']}"}


def in_thread(app, call):
    """Start ``call(client)`` in a thread; returns (thread, result list)."""
    result: list = []

    def worker():
        with app.test_client() as client:
            result.append(call(client))

    thread = threading.Thread(target=worker)
    thread.start()
    return thread, result


def is_member(team_id: int, user_id: int) -> bool:
    db.session.expire_all()
    return db.session.get(TeamMember, (team_id, user_id)) is not None


def assignee_of(task_id: int) -> int | None:
    db.session.expire_all()
    return db.session.scalar(sa.select(Task.assignee_id).where(Task.id == task_id))


# --------------------------------------------------------------------------- assign vs remove


def assign_world():
    """A team (owner + member ``m``) and an unassigned team task; returns ids and headers."""
    team = TeamFactory()
    member = UserFactory()
    add_member(team, member)
    task = TaskFactory(owner=team.owner, team_id=team.id)
    return team.id, member.id, task.id, headers(team.owner)


def _assign(task_id, user_id, h):
    return lambda client: client.patch(f"/api/tasks/{task_id}/assign", json={"assignee_id": user_id}, headers=h)


def _remove(team_id, user_id, h):
    return lambda client: client.delete(f"/api/teams/{team_id}/members/{user_id}", headers=h)


ASSIGNING_REQUESTS = {
    "assign": lambda team_id, task_id, user_id: ("PATCH", f"/api/tasks/{task_id}/assign",
                                                 {"assignee_id": user_id}),
    "patch": lambda team_id, task_id, user_id: ("PATCH", f"/api/tasks/{task_id}", {"assignee_id": user_id}),
    "create": lambda team_id, task_id, user_id: ("POST", "/api/tasks",
                                                 {"title": "new", "team_id": team_id, "assignee_id": user_id}),
}


@pytest.mark.parametrize("kind", list(ASSIGNING_REQUESTS))
def test_assign_checked_then_member_removed_before_the_write(app, client, monkeypatch, kind):
    """The assignment saw the membership; the removal then runs completely before the
    assignment writes. The assignment must fail (422), not assign a non-member."""
    from tasktracker.tasks.services import writes as task_services

    team_id, member_id, task_id, owner_h = assign_world()
    method, url, body = ASSIGNING_REQUESTS[kind](team_id, task_id, member_id)
    real_check = task_services._check_assignee

    def check_then_removed(assignee, team):
        real_check(assignee, team)
        thread, result = in_thread(app, _remove(team_id, member_id, owner_h))
        thread.join(30)
        assert result and result[0].status_code == 204, result

    monkeypatch.setattr(task_services, "_check_assignee", check_then_removed)
    r = client.open(url, method=method, json=body, headers=owner_h)
    assert r.status_code == 422, (r.status_code, r.json)
    assert "assignee_id" in r.json["error"]["details"]
    assert not is_member(team_id, member_id)
    db.session.expire_all()
    assert db.session.scalars(sa.select(Task.id)).all() == [task_id]  # nothing created
    assert assignee_of(task_id) is None


def test_member_removal_paused_while_assigned(app, client, monkeypatch):
    """The removal has looked for the member's tasks; an assignment to that member
    arrives before the removal commits. The member must not stay assignee."""
    from tasktracker.teams import services as team_services

    team_id, member_id, task_id, owner_h = assign_world()
    real_commit = team_services._commit_task_changes
    assigned: list = []

    def assignment_meanwhile():
        thread, result = in_thread(app, _assign(task_id, member_id, owner_h))
        thread.join(0.5)  # it may finish (no protection) or wait for us (the database settles it)
        assigned.append((thread, result))
        real_commit()

    monkeypatch.setattr(team_services, "_commit_task_changes", assignment_meanwhile)
    r = _remove(team_id, member_id, owner_h)(client)
    assert r.status_code == 204, r.json
    thread, result = assigned[0]
    thread.join(30)
    assert result and result[0].status_code in (200, 409, 422), result
    assert not is_member(team_id, member_id)
    assert assignee_of(task_id) is None, "a non-member is the assignee of a team task"


def test_assign_vs_remove_member_concurrently(app):
    """Real threads, several rounds: the task never ends assigned to a non-member."""
    bad = []
    for round_ in range(ROUNDS):
        team_id, member_id, task_id, owner_h = assign_world()
        assign, remove = run_together(app, _assign(task_id, member_id, owner_h),
                                      _remove(team_id, member_id, owner_h))
        assert not isinstance(assign, Exception) and not isinstance(remove, Exception), (assign, remove)
        assert remove.status_code == 204, remove.json
        assert assign.status_code in (200, 409, 422), (assign.status_code, assign.json)
        if assignee_of(task_id) == member_id and not is_member(team_id, member_id):
            bad.append(round_)
    assert not bad, f"rounds {bad} of {ROUNDS} left a non-member assignee"


# --------------------------------------------------------------------------- duplicate invitations


def invitation_world():
    team = TeamFactory()
    return team.id, headers(team.owner)


def pending_invitations(team_id: int) -> list[Invitation]:
    db.session.expire_all()
    return list(db.session.scalars(sa.select(Invitation).where(
        Invitation.team_id == team_id, Invitation.status == "pending")))


def test_invitation_whose_pending_twin_is_not_seen_is_409(client, monkeypatch):
    """The check for a pending invitation misses a concurrent twin (not yet
    visible): the database's unique index refuses the second one, answered as
    the sequential path answers it (409 ``already_invited``)."""
    from tasktracker.teams import services as team_services

    team_id, owner_h = invitation_world()
    url = f"/api/teams/{team_id}/invitations"
    assert client.post(url, json={"email": "dup@example.com"}, headers=owner_h).status_code == 201
    monkeypatch.setattr(team_services, "_now_pending", lambda: sa.false())  # the twin is invisible
    r = client.post(url, json={"email": "DUP@example.com"}, headers=owner_h)
    assert r.status_code == 409, (r.status_code, r.json)
    assert r.json["error"]["code"] == "already_invited"
    assert len(pending_invitations(team_id)) == 1


def test_concurrent_invitations_of_one_address_create_one(app):
    for _ in range(3):
        team_id, owner_h = invitation_world()
        url = f"/api/teams/{team_id}/invitations"
        emails = ["same@example.com", "Same@Example.com", "SAME@EXAMPLE.COM"]
        calls = [(lambda e: lambda c: c.post(url, json={"email": e}, headers=owner_h))(emails[i % 3])
                 for i in range(15)]
        results = run_together(app, *calls)
        assert not [r for r in results if isinstance(r, Exception)], results
        statuses = sorted(r.status_code for r in results)
        assert statuses == [201] + [409] * 14, statuses
        assert {r.json["error"]["code"] for r in results if r.status_code == 409} == {"already_invited"}
        assert len(pending_invitations(team_id)) == 1


def test_accept_vs_revoke_concurrently(app):
    """Exactly one of them wins; the other is refused in the contract's shape."""
    for _ in range(ROUNDS):
        team_id, inv_id, invitee_id, owner_h, invitee_h = pending_invitation_world()
        accept, revoke = run_together(
            app, lambda c: c.post(f"/api/invitations/{inv_id}/accept", headers=invitee_h),
            lambda c: c.delete(f"/api/teams/{team_id}/invitations/{inv_id}", headers=owner_h))
        assert sorted([accept.status_code, revoke.status_code]) in ([200, 409], [204, 409]), (
            accept.status_code, accept.json, revoke.status_code)
        loser = accept if accept.status_code == 409 else revoke
        assert loser.json["error"]["code"] == "invitation_not_pending"
        db.session.expire_all()
        status = db.session.get(Invitation, inv_id).status
        assert status == ("accepted" if accept.status_code == 200 else "revoked")
        assert is_member(team_id, invitee_id) == (status == "accepted")


# --------------------------------------------------------------------------- accept vs team delete


def pending_invitation_world():
    team = TeamFactory()
    invitee = UserFactory()
    invitation = Invitation(team_id=team.id, email=invitee.email, role="member", status="pending",
                            invited_by_id=team.owner_id, expires_at=utcnow() + timedelta(days=1))
    db.session.add(invitation)
    db.session.commit()
    return team.id, invitation.id, invitee.id, headers(team.owner), headers(invitee)


def test_accept_vs_team_delete_concurrently(app):
    """Never a 500: the accept is 200 (then the delete removes the new membership
    too), or 404/409 in the contract's shape; the team is gone either way."""
    seen = []
    for _ in range(ROUNDS):
        team_id, inv_id, invitee_id, owner_h, invitee_h = pending_invitation_world()
        accept, delete = run_together(
            app, lambda c: c.post(f"/api/invitations/{inv_id}/accept", headers=invitee_h),
            lambda c: c.delete(f"/api/teams/{team_id}", headers=owner_h))
        assert not isinstance(accept, Exception) and not isinstance(delete, Exception), (accept, delete)
        seen.append((accept.status_code, delete.status_code))
        assert delete.status_code == 204, (delete.status_code, delete.get_data(as_text=True))
        assert accept.status_code in (200, 404, 409), (accept.status_code, accept.get_data(as_text=True))
        if accept.status_code != 200:
            assert set(accept.json["error"]) == {"code", "message", "details"}
        db.session.expire_all()
        assert db.session.get(Team, team_id) is None
        assert not is_member(team_id, invitee_id)


def _delete_team_now(app, team_id, owner_h):
    thread, result = in_thread(app, lambda c: c.delete(f"/api/teams/{team_id}", headers=owner_h))
    thread.join(30)
    assert result and result[0].status_code == 204, result


@pytest.mark.parametrize("action", ["accept", "decline"])
def test_team_deleted_between_answer_commit_and_response(app, client, monkeypatch, action):
    """The answer committed; the team (and the invitation with it) is deleted before
    the response is rendered. The answer stands: 200 with what was committed."""
    from tasktracker.teams import services as team_services

    team_id, inv_id, invitee_id, owner_h, invitee_h = pending_invitation_world()
    real = getattr(team_services, f"{action}_invitation")

    def answer_then_team_deleted(user, invitation_id):
        invitation = real(user, invitation_id)
        _delete_team_now(app, team_id, owner_h)
        return invitation

    monkeypatch.setattr(team_services, f"{action}_invitation", answer_then_team_deleted)
    r = client.post(f"/api/invitations/{inv_id}/{action}", headers=invitee_h)
    assert r.status_code == 200, (r.status_code, r.get_data(as_text=True))
    assert r.json["id"] == inv_id and r.json["status"] == {"accept": "accepted", "decline": "declined"}[action]
    assert r.json["team"]["id"] == team_id
    db.session.expire_all()
    assert db.session.get(Team, team_id) is None and not is_member(team_id, invitee_id)


@pytest.mark.parametrize("action", ["accept", "decline"])
def test_team_deleted_between_reading_the_invitation_and_answering(app, client, monkeypatch, action):
    """The invitation was read, then the team was deleted: 404 (it is gone), not 500."""
    from tasktracker.teams import services as team_services

    team_id, inv_id, invitee_id, owner_h, invitee_h = pending_invitation_world()
    real = team_services._my_invitation

    def read_then_team_deleted(user, invitation_id):
        invitation = real(user, invitation_id)
        _delete_team_now(app, team_id, owner_h)
        return invitation

    monkeypatch.setattr(team_services, "_my_invitation", read_then_team_deleted)
    r = client.post(f"/api/invitations/{inv_id}/{action}", headers=invitee_h)
    assert r.status_code == 404, (r.status_code, r.get_data(as_text=True))
    assert r.json["error"]["code"] == "invitation_not_found"
    assert not is_member(team_id, invitee_id)


def test_team_deleted_between_invitation_commit_and_response(app, client, monkeypatch):
    from tasktracker.teams import services as team_services

    team = TeamFactory()
    team_id, owner_h = team.id, headers(team.owner)
    real = team_services.create_invitation

    def invite_then_team_deleted(*args, **kwargs):
        invitation = real(*args, **kwargs)
        _delete_team_now(app, team_id, owner_h)
        return invitation

    monkeypatch.setattr(team_services, "create_invitation", invite_then_team_deleted)
    r = client.post(f"/api/teams/{team_id}/invitations", json={"email": "x@example.com"}, headers=owner_h)
    assert r.status_code == 201, (r.status_code, r.get_data(as_text=True))
    assert r.json["email"] == "x@example.com" and r.json["team"]["id"] == team_id


def test_row_deleted_before_the_response_is_rendered_is_404_not_500(app, client, monkeypatch):
    """The safety net for such races elsewhere: PATCH /api/teams/<id> committed, then the
    team is deleted before its response is rendered (the row cannot be reloaded)."""
    from tasktracker.teams import services as team_services

    team = TeamFactory()
    team_id, owner_h = team.id, headers(team.owner)
    real = team_services.with_member_counts
    calls = []

    def counts_after_team_deleted(teams):
        calls.append(1)
        if len(calls) == 2:  # the second call is update_team's, after its commit
            _delete_team_now(app, team_id, owner_h)
        return real(teams)

    monkeypatch.setattr(team_services, "with_member_counts", counts_after_team_deleted)
    r = client.patch(f"/api/teams/{team_id}", json={"name": "Renamed"}, headers=owner_h)
    assert r.status_code == 404, (r.status_code, r.get_data(as_text=True))
    assert set(r.json["error"]) == {"code", "message", "details"} and r.json["error"]["code"] == "not_found"
