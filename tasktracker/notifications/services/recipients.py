"""Who hears of an event: its notifications (one table, :data:`RULES`), its
Socket.IO emits and rooms, the task-room re-checks and the room-membership changes.

Recipients per event type (``notifications.type``):

============================  ======================  ====================================
event                         notification            recipients (minus the actor)
============================  ======================  ====================================
task.created (with assignee)  task_assigned           the assignee
task.assigned                 task_assigned           the new assignee
task.updated                  task_updated            owner, assignee, watchers
task.status_changed           task_status_changed     owner, assignee, watchers
task.deleted                  task_deleted            owner, assignee, watchers
comment.created               mentioned               the users it newly mentions
                              comment_added           owner, assignee, earlier commenters,
                                                      watchers (not those just mentioned)
comment.updated               mentioned               the users the edit newly mentions
reminder.due                  deadline_reminder       assignee, owner
task.overdue                  task_overdue            owner, assignee
invitation.created            team_invitation         the invitee, if registered
invitation.accepted           invitation_accepted     the inviter and the team's owner
webhook.disabled              webhook_disabled        the team's owner
============================  ======================  ====================================

Watchers, mentioned users and earlier commenters count only while they see
the task (checked here, at fan-out time: someone who lost access gets nothing).
One notification per (event, user): an event with two rules gives each user
the first that names them. Other event types create no notification.
Everything here reads the event's payload defensively (a field of the wrong
type counts as missing).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable

import sqlalchemy as sa

from tasktracker.auth.models import User
from tasktracker.comments.models import Comment
from tasktracker.events.models import Event
from tasktracker.extensions import db
from tasktracker.tasks.models import WITHOUT_COLLECTIONS, Task
from tasktracker.tasks.permissions import can_see, viewers_condition
from tasktracker.tasks.services.watchers import watchers_who_see
from tasktracker.teams.models import Invitation, Team

#: Dotted event type -> Socket.IO event name (api-contract.md, "Real time").
SOCKET_EVENTS = {
    "task.created": "task:created",
    "task.updated": "task:updated",
    "task.status_changed": "task:updated",
    "task.assigned": "task:assigned",
    "task.deleted": "task:deleted",
    "task.restored": "task:restored",
    "comment.created": "comment:created",
}

#: Task fields whose change can hide the task from someone (api-contract.md, "Tasks": who sees a task).
_ACCESS_FIELDS = frozenset({"owner_id", "assignee_id", "team_id"})


@dataclass
class Planned:
    """One notification to create: recipient, ``notifications.type``, message, ``data``."""

    user_id: int
    type: str
    message: str
    data: dict[str, Any]


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _ref_id(ref: Any) -> int | None:
    """The id of a UserRef dict (or None)."""
    value = _dict(ref).get("id")
    return value if isinstance(value, int) else None


def _task_people(task: dict) -> tuple[int | None, int | None]:
    """(owner_id, assignee_id) of a task payload."""
    return _ref_id(task.get("owner")), _ref_id(task.get("assignee"))


def _quote(text: Any) -> str:
    text = str(text or "")
    return f"“{text[:200]}”"


def _unique(ids, actor_id: int | None) -> list[int]:
    """Recipients in order, without duplicates, None, or the actor."""
    seen: list[int] = []
    for user_id in ids:
        if isinstance(user_id, int) and user_id != actor_id and user_id not in seen:
            seen.append(user_id)
    return seen


# --------------------------------------------------------------------------- notifications


class _Facts:
    """What the notification rules read from one event (each computed once)."""

    def __init__(self, event: Event):
        self.event = event
        self.payload = event.payload or {}
        self.task = _dict(self.payload.get("task"))
        self.owner_id, self.assignee_id = _task_people(self.task)
        self.changes = _dict(self.payload.get("changes"))

    @cached_property
    def actor(self) -> str:
        user = self.event.actor
        return "Someone" if user is None else user.full_name or user.username

    @property
    def title(self) -> str:
        title = self.task.get("title")
        if title is None and self.live_task is not None:  # events without the task (comment.updated)
            title = self.live_task.title
        return _quote(title)

    @property
    def due(self) -> Any:
        return self.task.get("due_at")

    @property
    def comment(self) -> dict:
        return _dict(self.payload.get("comment"))

    @property
    def excerpt(self) -> str:
        body = str(self.comment.get("body") or "")
        return body[:140] + ("…" if len(body) > 140 else "")

    @property
    def invitation(self) -> dict:
        return _dict(self.payload.get("invitation"))

    @property
    def team_name(self) -> Any:
        return _dict(self.invitation.get("team")).get("name")

    @property
    def owner_and_assignee(self) -> list:
        return [self.owner_id, self.assignee_id]

    @cached_property
    def live_task(self) -> Task | None:
        """The task row as it is now (None once purged): its columns and people, which is
        what the rules read (:data:`~tasktracker.tasks.models.WITHOUT_COLLECTIONS`)."""
        if self.event.task_id is None:
            return None
        return db.session.get(Task, self.event.task_id, options=WITHOUT_COLLECTIONS)

    @property
    def watchers(self) -> list[int]:
        """The task's watchers who see it now."""
        return watchers_who_see(self.live_task) if self.live_task is not None else []

    @property
    def people(self) -> list:
        """Owner, assignee and watchers: who hears of a change to the task."""
        return self.owner_and_assignee + self.watchers

    @property
    def new_mentions(self) -> list[int]:
        """The users the comment newly mentions who see the task now."""
        ids = [i for i in self.payload.get("new_mention_ids") or [] if isinstance(i, int)]
        if not ids or self.live_task is None:
            return []
        return list(db.session.scalars(sa.select(User.id).where(
            User.id.in_(ids), User.active.is_(True), viewers_condition(self.live_task))))


@dataclass(frozen=True)
class Rule:
    """How an event type notifies: ``recipients(facts)`` (before duplicates and the
    actor are dropped), ``message(facts)`` and the type's ``data(facts)`` (merged
    over ``{task_title}`` for task events)."""

    type: str
    recipients: Callable[[_Facts], list]
    message: Callable[[_Facts], str]
    data: Callable[[_Facts], dict] = lambda f: {}


def _mentioned(f: _Facts) -> str:
    return f"{f.actor} mentioned you on {f.title}: {f.excerpt}"


def _comment_data(f: _Facts) -> dict:
    return {"comment_id": f.comment.get("id"), "excerpt": f.excerpt}


def _earlier_commenters(task_id: int | None, comment_id: Any) -> list[int]:
    """Authors of the task's earlier comments who may still see the task."""
    if task_id is None:
        return []
    query = sa.select(Comment.author_id).where(Comment.task_id == task_id, Comment.author_id.is_not(None))
    if isinstance(comment_id, int):
        query = query.where(Comment.id < comment_id)
    author_ids = sorted(set(db.session.scalars(query.distinct())))
    if not author_ids:
        return []
    task = db.session.get(Task, task_id, options=WITHOUT_COLLECTIONS)
    users = db.session.scalars(sa.select(User).where(User.id.in_(author_ids))).all()
    return [u.id for u in users if task is not None and can_see(u, task)]


def _inviter_and_owner(invitation_id: Any, team_id: int | None) -> list[int]:
    recipients: list[int | None] = []
    if isinstance(invitation_id, int):
        recipients.append(db.session.scalar(
            sa.select(Invitation.invited_by_id).where(Invitation.id == invitation_id)))
    if team_id is not None:
        recipients.append(db.session.scalar(sa.select(Team.owner_id).where(Team.id == team_id)))
    return [r for r in recipients if r is not None]


def _changes(f: _Facts) -> dict:
    return {"changes": f.changes}


def _new_status(f: _Facts) -> Any:
    return (f.changes.get("status") or [None, f.task.get("status")])[-1]


#: Event type -> its notification rules, in order (the table of the module docstring).
RULES: dict[str, tuple[Rule, ...]] = {
    "task.created": (Rule(
        "task_assigned", lambda f: [f.assignee_id],
        lambda f: f"{f.actor} assigned you to {f.title}.",
        lambda f: {"changes": {"assignee_id": [None, f.assignee_id]}}),),
    "task.assigned": (Rule(
        "task_assigned", lambda f: [(f.changes.get("assignee_id") or [None, None])[-1]],
        lambda f: f"{f.actor} assigned you to {f.title}.", _changes),),
    "task.updated": (Rule(
        "task_updated", lambda f: f.people,
        lambda f: f"{f.actor} updated {f.title} ({', '.join(sorted(f.changes)) or 'details'}).", _changes),),
    "task.status_changed": (Rule(
        "task_status_changed", lambda f: f.people,
        lambda f: f"{f.actor} changed the status of {f.title} to {_new_status(f)}.", _changes),),
    "task.deleted": (Rule(
        "task_deleted", lambda f: f.people, lambda f: f"{f.actor} deleted {f.title}."),),
    "comment.created": (
        Rule("mentioned", lambda f: f.new_mentions, _mentioned, _comment_data),
        Rule("comment_added",
             lambda f: f.people + _earlier_commenters(f.event.task_id, f.comment.get("id")),
             lambda f: f"{f.actor} commented on {f.title}: {f.excerpt}", _comment_data)),
    "comment.updated": (Rule("mentioned", lambda f: f.new_mentions, _mentioned, _comment_data),),
    "reminder.due": (Rule(
        "deadline_reminder", lambda f: [f.assignee_id, f.owner_id],
        lambda f: f"Reminder: {f.title} is due {f.due}." if f.due else f"Reminder: {f.title}.",
        lambda f: {"reminder_id": f.payload.get("reminder_id"), "remind_at": f.payload.get("remind_at"),
                   "due_at": f.due}),),
    "task.overdue": (Rule(
        "task_overdue", lambda f: f.owner_and_assignee,
        lambda f: f"{f.title} is overdue (due {f.due}).", lambda f: {"due_at": f.due}),),
    "invitation.created": (Rule(
        "team_invitation", lambda f: [f.payload.get("invitee_user_id")],
        lambda f: (f"{f.actor} invited you to join the team {_quote(f.team_name)} "
                   f"as {f.invitation.get('role') or 'member'}."),
        lambda f: {"invitation_id": f.invitation.get("id"), "team_name": f.team_name,
                   "role": f.invitation.get("role")}),),
    "invitation.accepted": (Rule(
        "invitation_accepted", lambda f: _inviter_and_owner(f.invitation.get("id"), f.event.team_id),
        lambda f: f"{f.actor} accepted the invitation to join the team {_quote(f.team_name)}.",
        lambda f: {"invitation_id": f.invitation.get("id"), "user_id": f.payload.get("user_id"),
                   "team_name": f.team_name}),),
    "webhook.disabled": (Rule(
        "webhook_disabled", lambda f: [_team_owner(f.event.team_id)],
        lambda f: (f"A webhook of your team was disabled after 24 h of failed deliveries: "
                   f"{str(f.payload.get('url') or '')[:300]}"),
        lambda f: {"webhook_id": f.payload.get("webhook_id"), "url": f.payload.get("url"),
                   "failing_since": f.payload.get("failing_since"), "team_id": f.event.team_id}),),
}


def _team_owner(team_id: int | None) -> int | None:
    """The owner of team ``team_id`` (None without one)."""
    if team_id is None:
        return None
    return db.session.scalar(sa.select(Team.owner_id).where(Team.id == team_id))


def plan_notifications(event: Event) -> list[Planned]:
    """The notifications an event causes (before the existence checks), by :data:`RULES`:
    at most one per recipient, from the first of the event's rules that names them."""
    rules = RULES.get(event.type, ())
    facts = _Facts(event) if rules else None
    planned: list[Planned] = []
    for rule in rules:
        taken = {p.user_id for p in planned}
        recipients = [u for u in _unique(rule.recipients(facts), event.actor_id) if u not in taken]
        if not recipients:
            continue
        base = {"task_title": facts.task.get("title")} if facts.task else {}
        message, data = rule.message(facts), {**base, **rule.data(facts)}
        planned += [Planned(user_id, rule.type, message, data) for user_id in recipients]
    return planned


# --------------------------------------------------------------------------- Socket.IO


def plan_emits(event: Event) -> list[tuple[str, dict, list[str]]]:
    """The Socket.IO resource event of a task or comment event (none for others)."""
    name = SOCKET_EVENTS.get(event.type)
    payload = event.payload or {}
    task = payload.get("task") if isinstance(payload.get("task"), dict) else None
    if name is None or task is None:
        return []
    resource = payload.get("comment") if event.type == "comment.created" else task
    if not isinstance(resource, dict):
        return []
    owner_id, assignee_id = _task_people(task)
    task_id = task.get("id") if isinstance(task.get("id"), int) else event.task_id
    rooms = [f"task:{task_id}"]
    for team_id in (task.get("team_id"), event.team_id):  # a task leaving a team: old team too
        if isinstance(team_id, int) and f"team:{team_id}" not in rooms:
            rooms.append(f"team:{team_id}")
    users = [owner_id, assignee_id]
    old_assignee = _dict(payload.get("changes")).get("assignee_id")
    if isinstance(old_assignee, list) and old_assignee:
        users.append(old_assignee[0])  # the previous assignee learns they were unassigned
    rooms += [f"user:{u}" for u in _unique(users, None)]
    return [(name, {**resource, "actor_id": event.actor_id, "seq": event.seq}, rooms)]


def plan_rechecks(event: Event) -> list[int]:
    """``[task_id]`` when the event can hide its task from a subscriber: a soft delete,
    or a change of owner, assignee or team."""
    if event.task_id is None or not (event.type or "").startswith("task."):
        return []
    changes = (event.payload or {}).get("changes")
    if event.type == "task.deleted" or (isinstance(changes, dict) and _ACCESS_FIELDS & set(changes)):
        return [event.task_id]
    return []


def plan_memberships(event: Event) -> list[tuple[int, int, bool]]:
    """Room changes: ``(user_id, team_id, joined)`` for membership events."""
    payload = event.payload or {}
    team_id = event.team_id
    if team_id is None:
        return []
    user_id = payload.get("user_id")
    if event.type in ("member.added", "invitation.accepted") and isinstance(user_id, int):
        return [(user_id, team_id, True)]
    if event.type == "team.created" and event.actor_id is not None:
        return [(event.actor_id, team_id, True)]  # the creator is the owner
    if event.type == "member.removed" and isinstance(user_id, int):
        return [(user_id, team_id, False)]
    if event.type == "team.deleted":
        member_ids = payload.get("member_ids") or []
        return [(uid, team_id, False) for uid in member_ids if isinstance(uid, int)]
    return []
