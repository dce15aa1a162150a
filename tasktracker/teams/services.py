"""Team rules: teams, memberships and invitations (api-contract.md, "Teams"; issue 3).

Who may do what (``site admin`` = a user whose account role is ``admin``; a
site admin has the team owner's powers in every team):

| action                              | allowed                                             |
|-------------------------------------|-----------------------------------------------------|
| read team, list members             | members, site admins                                |
| edit team                           | owner, admin, site admins                           |
| delete team                         | owner, site admins                                  |
| change a role                       | owner, site admins; a team admin may only step down |
|                                     | (admin -> member for themselves)                    |
| remove a member                     | owner, site admins; a team admin removes members    |
|                                     | (not other admins); anyone but the owner may leave  |
| invite (role member / admin)        | owner, admin, site admins / owner, site admins      |
| list the team's invitations         | owner, admin, site admins                           |
| revoke an invitation                | owner, admin, site admins                           |
| accept / decline an invitation      | the user whose email it is addressed to             |

Someone who may not see a team gets 404 (``team_not_found``); a member who may
not do something gets 403. The owner's role never changes and the owner can
neither leave nor be removed (409 ``owner_role_locked`` / ``owner_cannot_leave``).

Every change records its event (``tasktracker.events`` catalog) in the same
transaction and commits.
"""

from __future__ import annotations

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.orm.exc import StaleDataError

from tasktracker.auth.models import User
from tasktracker.core.db import commit_keeping_loaded, refused_as, valid_id
from tasktracker.core.errors import (
    ConcurrentUpdate, Conflict, Forbidden, InvitationNotFound, MemberNotFound, OwnerRequired,
    TeamNotFound,
)
from tasktracker.core.types import utcnow
from tasktracker.events.services import diff, record_event
from tasktracker.extensions import db
from tasktracker.tasks.models import Task
from tasktracker.tasks.services import record_task_event
from tasktracker.teams.models import Invitation, Team, TeamMember
from tasktracker.teams.schemas import invitation_schema, team_schema

SITE_ADMIN = "site_admin"
MANAGERS = ("owner", "admin", SITE_ADMIN)
OWNERS = ("owner", SITE_ADMIN)
_ROLE_RANK = sa.case({"owner": 0, "admin": 1}, value=TeamMember.role, else_=2)


# --------------------------------------------------------------------------- access

def _membership(user_id: int, team_id: int) -> TeamMember | None:
    return db.session.get(TeamMember, (team_id, user_id))


def get_team_for(user: User, team_id: int) -> tuple[Team, str]:
    """The team and the caller's effective role in it.

    The role is ``owner | admin | member``, or ``site_admin`` for a site admin
    who is not the team's owner. Raises :class:`NotFound` (404
    ``team_not_found``) if the team does not exist or the caller may not see it.
    """
    team = db.session.get(Team, team_id) if valid_id(team_id) else None
    member = _membership(user.id, team_id) if team is not None else None
    if team is None or (member is None and not user.is_admin):
        raise TeamNotFound()
    if member is not None and member.role == "owner":
        return team, "owner"
    if user.is_admin:
        return team, SITE_ADMIN
    return team, member.role


def _require(role: str, allowed: tuple[str, ...], message: str,
             error: type[Forbidden] = Forbidden) -> None:
    if role not in allowed:
        raise error(message)


def _get_member(team_id: int, user_id: int) -> TeamMember:
    member = _membership(user_id, team_id) if valid_id(user_id) else None
    if member is None:
        raise MemberNotFound()
    return member


# --------------------------------------------------------------------------- teams

def with_member_counts(teams: list[Team]) -> list[Team]:
    """Attach ``member_count`` to each team (one query for the whole list)."""
    ids = [t.id for t in teams]
    counts = dict(db.session.execute(
        sa.select(TeamMember.team_id, sa.func.count()).where(TeamMember.team_id.in_(ids))
        .group_by(TeamMember.team_id)).all()) if ids else {}
    for team in teams:
        team.member_count = counts.get(team.id, 0)
    return teams


def _team_payload(team: Team) -> dict:
    with_member_counts([team])
    return team_schema.dump(team)


def create_team(user: User, name: str, description: str = "") -> Team:
    """Create a team owned by ``user`` (also its ``owner`` member); event ``team.created``."""
    team = Team(name=name, description=description, owner_id=user.id, owner=user)
    db.session.add(team)
    db.session.flush()
    db.session.add(TeamMember(team_id=team.id, user_id=user.id, role="owner"))
    db.session.flush()
    record_event("team.created", actor_id=user.id, team_id=team.id, payload={"team": _team_payload(team)})
    db.session.commit()
    return with_member_counts([team])[0]


def my_teams_query(user: User) -> sa.Select:
    """The teams ``user`` belongs to (any role), oldest first. Site admins get
    their own teams too, not every team."""
    return (sa.select(Team).join(TeamMember, TeamMember.team_id == Team.id)
            .where(TeamMember.user_id == user.id).order_by(Team.id))


def members_query(team_id: int) -> sa.Select:
    """Members of a team: owner, admins, members; each group by join time."""
    return (sa.select(TeamMember).where(TeamMember.team_id == team_id)
            .order_by(_ROLE_RANK, TeamMember.joined_at, TeamMember.user_id))


def team_detail(user: User, team_id: int) -> Team:
    """The team with ``member_count`` and ``member_list`` attached (members only; 404 else)."""
    team, _ = get_team_for(user, team_id)
    team.member_list = db.session.scalars(members_query(team_id)).all()
    team.member_count = len(team.member_list)
    return team


def update_team(user: User, team_id: int, data: dict) -> Team:
    """Change ``name``/``description`` (owner, admin, site admin; a member gets 403).

    Records ``team.updated {team, changes}`` when something changed.
    """
    team, role = get_team_for(user, team_id)
    _require(role, MANAGERS, "Only the team's owner or admins may edit it.")
    old = {"name": team.name, "description": team.description}
    for field in ("name", "description"):
        if field in data:
            setattr(team, field, data[field])
    changes = diff(old, {k: data[k] for k in old if k in data})
    if changes:
        db.session.flush()
        record_event("team.updated", actor_id=user.id, team_id=team.id,
                     payload={"team": _team_payload(team), "changes": changes})
    db.session.commit()
    return with_member_counts([team])[0]


def _commit_task_changes() -> None:
    """Flush task changes; a concurrent task edit (version mismatch) is a 409."""
    with refused_as(lambda: ConcurrentUpdate("A task changed at the same time; retry."), on=StaleDataError):
        db.session.flush()


def delete_team(user: User, team_id: int) -> None:
    """Delete a team (owner or site admin; team admins and members get 403).

    Its tasks (trashed ones too) become their owners' personal tasks
    (``team_id = NULL``; assignees stay), each recording ``task.updated
    {task, changes: {team_id: [old, null]}}`` with the old ``team_id`` on the
    event so the team's listeners learn of it. Memberships and invitations go
    with the team. Records ``team.deleted {team, member_ids}`` (the fan-out
    moves those users' live connections out of ``team:<id>``).
    """
    team, role = get_team_for(user, team_id)
    _require(role, OWNERS, "Only the team's owner may delete it.", OwnerRequired)
    member_ids = list(db.session.scalars(
        sa.select(TeamMember.user_id).where(TeamMember.team_id == team.id).order_by(TeamMember.user_id)))
    payload = {"team": _team_payload(team), "member_ids": member_ids}
    tasks = db.session.scalars(sa.select(Task).where(Task.team_id == team.id).order_by(Task.id)).all()
    now = utcnow()
    for task in tasks:
        task.team_id = None
        task.updated_at = now
    _commit_task_changes()
    for task in tasks:
        record_task_event("task.updated", task, actor_id=user.id, team_id=team.id,
                          changes={"team_id": [team.id, None]})
    record_event("team.deleted", actor_id=user.id, team_id=team.id, payload=payload)
    db.session.execute(sa.delete(Invitation).where(Invitation.team_id == team.id))
    db.session.execute(sa.delete(TeamMember).where(TeamMember.team_id == team.id))
    db.session.delete(team)
    db.session.commit()


# --------------------------------------------------------------------------- members

def list_members(user: User, team_id: int) -> sa.Select:
    """The member query of a team the caller may see (404 otherwise)."""
    get_team_for(user, team_id)
    return members_query(team_id)


def change_role(user: User, team_id: int, member_user_id: int, new_role: str) -> TeamMember:
    """Set a member's role to ``admin`` or ``member``.

    - caller a plain member: 403; target not a member: 404 ``member_not_found``;
    - target is the owner: 409 ``owner_role_locked`` (ownership never moves);
    - only the owner (or a site admin) promotes or demotes admins; a team admin
      may only step down themselves (403 ``owner_required`` otherwise);
    - the same role again is a no-op (200, no event).

    Records ``member.role_changed {user_id, role, changes: {role: [old, new]}}``.
    """
    team, role = get_team_for(user, team_id)
    _require(role, MANAGERS, "Only the team's owner or admins may change roles.")
    member = _get_member(team_id, member_user_id)
    if member.role == "owner":
        raise Conflict("The owner's role cannot be changed.", code="owner_role_locked")
    if member.role == new_role:
        return member
    if role == "admin" and not (member.user_id == user.id and new_role == "member"):
        raise OwnerRequired("Only the team owner may promote or demote admins.")
    old = member.role
    member.role = new_role
    record_event("member.role_changed", actor_id=user.id, team_id=team.id,
                 payload={"user_id": member.user_id, "role": new_role, "changes": {"role": [old, new_role]}})
    db.session.commit()
    return member


def remove_member(user: User, team_id: int, member_user_id: int) -> None:
    """Remove a member (owner, site admin; team admins remove plain members) or leave (self).

    - caller removing someone else as a plain member: 403; a team admin removing
      another admin: 403 ``owner_required``; target not a member: 404;
    - the owner can neither leave nor be removed: 409 ``owner_cannot_leave``.

    The member's tasks in this team are unassigned at once (``assignee_id =
    NULL``, each with ``task.assigned {task, changes: {assignee_id: [id, null]}}``)
    and, as access is checked against the memberships on every request, the
    member loses access to the team and its tasks immediately. Records
    ``member.removed {user_id, role}``.

    The membership row is deleted first and the tasks are looked up after, in
    the same transaction, so a concurrent assignment to this member is settled
    by the database: one that read the membership first (``FOR KEY SHARE`` on
    PostgreSQL, the write lock on SQLite; see
    ``tasks.services._confirm_assignee_membership``) commits before our DELETE
    goes through and its task is found and unassigned here; a later one finds
    the membership gone (422). A concurrent removal of the same member: 404.
    """
    team, role = get_team_for(user, team_id)
    member = _get_member(team_id, member_user_id)
    leaving = member.user_id == user.id
    if not leaving:
        _require(role, MANAGERS, "Only the team's owner or admins may remove members.")
    if member.role == "owner":
        raise Conflict("The team owner cannot leave or be removed.", code="owner_cannot_leave")
    if not leaving and role == "admin" and member.role == "admin":
        raise OwnerRequired("Only the team owner may remove an admin.")
    member_id, member_role = member.user_id, member.role
    deleted = db.session.execute(
        sa.delete(TeamMember).where(TeamMember.team_id == team.id, TeamMember.user_id == member_id)
        .execution_options(synchronize_session=False)).rowcount
    if deleted != 1:  # removed meanwhile by someone else
        db.session.rollback()
        raise MemberNotFound()
    db.session.expunge(member)
    tasks = db.session.scalars(sa.select(Task).where(
        Task.team_id == team.id, Task.assignee_id == member_id).order_by(Task.id)
        .execution_options(populate_existing=True)).all()
    now = utcnow()
    for task in tasks:
        task.assignee_id = None
        task.assignee = None
        task.updated_at = now
    _commit_task_changes()
    for task in tasks:
        record_task_event("task.assigned", task, actor_id=user.id, team_id=team.id,
                          changes={"assignee_id": [member_id, None]})
    record_event("member.removed", actor_id=user.id, team_id=team.id,
                 payload={"user_id": member_id, "role": member_role})
    db.session.commit()


# --------------------------------------------------------------------------- invitations

def _now_pending():
    return sa.and_(Invitation.status == "pending", Invitation.expires_at > utcnow())


def _invitation_payload(invitation: Invitation) -> dict:
    return invitation_schema.dump(invitation)


def _find_user_by_email(email: str) -> User | None:
    return db.session.scalar(sa.select(User).where(sa.func.lower(User.email) == email.lower()))


def _already_invited() -> Conflict:
    return Conflict("A pending invitation for that email already exists.", code="already_invited")


def _invitation_insert_failed(team_id: int, email: str) -> Exception:
    """What a refused invitation INSERT (rolled back) means, read again after the
    rollback: a concurrent twin is pending (409 ``already_invited``, as the
    sequential check answers), the team was deleted meanwhile (404), or some
    other concurrent change (409 ``concurrent_update``)."""
    if db.session.scalar(sa.select(Invitation.id).where(
            Invitation.team_id == team_id, sa.func.lower(Invitation.email) == email,
            Invitation.status == "pending")) is not None:
        return _already_invited()
    if db.session.get(Team, team_id) is None:
        return TeamNotFound()
    return ConcurrentUpdate("A concurrent change prevented the invitation; retry.")


def create_invitation(user: User, team_id: int, email: str, role: str = "member") -> Invitation:
    """Invite ``email`` into the team with ``role`` (owner/admin/site admin; member 403).

    - inviting as ``admin`` needs the owner (or a site admin): 403 ``owner_required``;
    - the address belongs to a member: 409 ``already_member``;
    - a pending, unexpired invitation for that address and team: 409 ``already_invited``,
      also when it is created concurrently: the partial unique index (one
      ``pending`` invitation per team and ``lower(email)``) refuses the second
      insert and :func:`_invitation_insert_failed` answers as the sequential check.

    A pending invitation to the address that has expired is marked ``expired``
    first (it would hold the index). The email is stored lower-cased;
    ``expires_at`` = now + ``INVITATION_TTL``. Records ``invitation.created
    {invitation, invitee_user_id}`` (the id of the registered user with that
    email, or null); the notification fan-out turns it into the invitee's
    ``team_invitation`` notification.
    """
    team, actor_role = get_team_for(user, team_id)
    _require(actor_role, MANAGERS, "Only the team's owner or admins may invite.")
    if role == "admin" and actor_role not in OWNERS:
        raise OwnerRequired("Only the team owner may invite admins.")
    email = email.strip().lower()
    invitee = _find_user_by_email(email)
    if invitee is not None and _membership(invitee.id, team.id) is not None:
        raise Conflict("That user is already a member of the team.", code="already_member")
    pending = db.session.scalar(sa.select(Invitation.id).where(
        Invitation.team_id == team.id, sa.func.lower(Invitation.email) == email, _now_pending()))
    if pending is not None:
        raise _already_invited()
    now = utcnow()
    db.session.execute(
        sa.update(Invitation).where(Invitation.team_id == team.id, sa.func.lower(Invitation.email) == email,
                                    Invitation.status == "pending", Invitation.expires_at <= now)
        .values(status="expired").execution_options(synchronize_session=False))
    invitation = Invitation(team_id=team.id, team=team, email=email, role=role, status="pending",
                            invited_by_id=user.id, created_at=now,
                            expires_at=now + current_app.config["INVITATION_TTL"])
    db.session.add(invitation)
    with refused_as(lambda: _invitation_insert_failed(team.id, email)):
        db.session.flush()
    record_event("invitation.created", actor_id=user.id, team_id=team.id,
                 payload={"invitation": _invitation_payload(invitation),
                          "invitee_user_id": invitee.id if invitee else None})
    return _commit_invitation(invitation)


def team_invitations_query(user: User, team_id: int) -> sa.Select:
    """Pending, unexpired invitations of a team, oldest first (owner/admin/site admin; member 403)."""
    team, role = get_team_for(user, team_id)
    _require(role, MANAGERS, "Only the team's owner or admins may see its invitations.")
    return (sa.select(Invitation).where(Invitation.team_id == team.id, _now_pending())
            .order_by(Invitation.created_at, Invitation.id))


def revoke_invitation(user: User, team_id: int, invitation_id: int) -> None:
    """Revoke a pending invitation of the team (owner, admin, site admin; a member 403).

    - the caller may not see the team: 404 ``team_not_found``;
    - no such invitation in this team, or already revoked: 404 ``invitation_not_found``;
    - already accepted, declined or expired (stored): 409 ``invitation_not_pending``.

    A pending invitation past ``expires_at`` may still be revoked. The change is a
    conditional UPDATE (``WHERE status = 'pending'``), so a concurrent accept,
    decline or revoke and this one cannot both win. Sets ``status = revoked`` and
    ``responded_at``; the invitee can no longer answer it (409), and the address
    may be invited again. Records ``invitation.revoked {invitation}``.
    """
    team, role = get_team_for(user, team_id)
    _require(role, MANAGERS, "Only the team's owner or admins may revoke invitations.")
    invitation = db.session.get(Invitation, invitation_id) if valid_id(invitation_id) else None
    if invitation is None or invitation.team_id != team.id or invitation.status == "revoked":
        raise InvitationNotFound()
    claimed = db.session.execute(
        sa.update(Invitation).where(Invitation.id == invitation.id, Invitation.status == "pending")
        .values(status="revoked", responded_at=utcnow()).execution_options(synchronize_session=False)
    ).rowcount
    if claimed != 1:
        db.session.rollback()
        current = db.session.scalar(sa.select(Invitation.status).where(Invitation.id == invitation_id))
        if current in (None, "revoked"):
            raise InvitationNotFound()
        raise Conflict(f"The invitation is already {current}.", code="invitation_not_pending")
    db.session.refresh(invitation)
    record_event("invitation.revoked", actor_id=user.id, team_id=team.id,
                 payload={"invitation": _invitation_payload(invitation)})
    db.session.commit()


def my_invitations_query(user: User) -> sa.Select:
    """Pending, unexpired invitations addressed to the caller's email (case-insensitive),
    newest first. An invitation sent before the user registered is found too."""
    return (sa.select(Invitation).where(sa.func.lower(Invitation.email) == user.email.lower(), _now_pending())
            .order_by(Invitation.created_at.desc(), Invitation.id.desc()))


def _my_invitation(user: User, invitation_id: int) -> Invitation:
    """The invitation if it is addressed to the caller, else 404 (even for site admins)."""
    invitation = db.session.get(Invitation, invitation_id) if valid_id(invitation_id) else None
    if invitation is None or invitation.email.lower() != user.email.lower():
        raise InvitationNotFound()
    return invitation


def _respond(user: User, invitation_id: int, status: str) -> Invitation:
    """Check the invitation can be answered, then claim it with a conditional UPDATE
    (``WHERE status = 'pending'``) so two concurrent answers cannot both win. If the
    claim fails, the invitation is read again: gone (its team was deleted
    meanwhile) is a 404 ``invitation_not_found``, otherwise 409 ``invitation_not_pending``."""
    invitation = _my_invitation(user, invitation_id)
    if invitation.status == "expired" or (invitation.status == "pending" and invitation.expires_at <= utcnow()):
        raise Conflict("The invitation has expired.", code="invitation_expired")
    if invitation.status != "pending":
        raise Conflict(f"The invitation is already {invitation.status}.", code="invitation_not_pending")
    if status == "accepted" and _membership(user.id, invitation.team_id) is not None:
        raise Conflict("You are already a member of this team.", code="already_member")
    if (status == "accepted" and current_app.config.get("INVITATIONS_REQUIRE_VERIFIED_EMAIL")
            and not user.email_verified):
        # contract v1.1 "Email": checked after the addressee check (others still get 404)
        raise Conflict("Verify your email address before accepting an invitation.", code="email_unverified")
    claimed = db.session.execute(
        sa.update(Invitation).where(Invitation.id == invitation.id, Invitation.status == "pending")
        .values(status=status, responded_at=utcnow()).execution_options(synchronize_session=False)
    ).rowcount
    if claimed != 1:
        db.session.rollback()
        if db.session.scalar(sa.select(Invitation.id).where(Invitation.id == invitation_id)) is None:
            raise InvitationNotFound()
        raise Conflict("The invitation was answered meanwhile.", code="invitation_not_pending")
    db.session.refresh(invitation)
    return invitation


def _commit_invitation(invitation: Invitation) -> Invitation:
    """Commit, keeping the invitation (and its team) as written: the response renders
    them, and a concurrent team delete waiting for this transaction removes the rows
    right after the commit; reloading them then would fail (it answered 500)."""
    invitation.team  # noqa: B018 - loaded now, rendered after the commit
    commit_keeping_loaded()
    return invitation


def accept_invitation(user: User, invitation_id: int) -> Invitation:
    """Accept an invitation addressed to the caller: they become a member with the
    invited role. Returns the invitation (status ``accepted``).

    404 ``invitation_not_found`` for anyone else, or once the team is deleted
    (also concurrently: never a 500; an accept that committed first answers 200
    and the team delete then removes the new membership with the team); 409
    ``invitation_not_pending`` (already accepted/declined/revoked),
    ``invitation_expired``, ``already_member``, and ``email_unverified`` when
    ``INVITATIONS_REQUIRE_VERIFIED_EMAIL`` is on and the caller's address is not
    verified (contract v1.1 "Email").
    Records ``invitation.accepted {invitation, user_id}`` and ``member.added
    {user_id, role}``.
    """
    invitation = _respond(user, invitation_id, "accepted")
    team_id = invitation.team_id
    db.session.add(TeamMember(team_id=team_id, user_id=user.id, role=invitation.role,
                              joined_at=utcnow()))
    with refused_as(lambda: _accept_refused(team_id)):
        db.session.flush()
    record_event("invitation.accepted", actor_id=user.id, team_id=invitation.team_id,
                 payload={"invitation": _invitation_payload(invitation), "user_id": user.id})
    record_event("member.added", actor_id=user.id, team_id=invitation.team_id,
                 payload={"user_id": user.id, "role": invitation.role})
    return _commit_invitation(invitation)


def _accept_refused(team_id: int) -> Exception:
    """What a refused membership INSERT (rolled back) means: the team was deleted
    meanwhile (foreign key: 404 ``invitation_not_found``) or a concurrent accept made
    the caller a member first (409 ``already_member``)."""
    if db.session.get(Team, team_id) is None:
        return InvitationNotFound()
    return Conflict("You are already a member of this team.", code="already_member")


def decline_invitation(user: User, invitation_id: int) -> Invitation:
    """Decline an invitation addressed to the caller (same 404/409 rules as accept,
    minus ``already_member``). Records ``invitation.declined {invitation, user_id}``."""
    invitation = _respond(user, invitation_id, "declined")
    record_event("invitation.declined", actor_id=user.id, team_id=invitation.team_id,
                 payload={"invitation": _invitation_payload(invitation), "user_id": user.id})
    return _commit_invitation(invitation)
