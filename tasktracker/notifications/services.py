"""Notifications: the caller's list (REST) and the fan-out of events.

DESIGN.md "Events: one table, four uses" (3. Fan-out). :func:`fan_out` turns
one committed event into

(a) notification rows, one per (event, recipient): ``UNIQUE(event_seq,
    user_id)`` plus ``INSERT ... ON CONFLICT DO NOTHING`` means a redelivered
    job creates nothing twice. The actor is never notified of their own action.
(b) Socket.IO events through :func:`tasktracker.realtime.emit` *after* the
    commit (the resource as REST returns it plus ``actor_id`` and ``seq``, and
    ``notification:new`` to each recipient), and room changes through
    :func:`tasktracker.realtime.sync_membership` for membership events.

Events are claimed with a conditional ``UPDATE events SET dispatched_at=now
WHERE seq IN (...) AND dispatched_at IS NULL RETURNING seq`` in the same
transaction as the inserts (:func:`fan_out_many` does up to
:data:`FANOUT_CHUNK` events per transaction): of two workers on the same event
only one claims it (PostgreSQL: ``FOR UPDATE SKIP LOCKED``, the other skips the
row; SQLite: writers are serialised and the ``IS NULL`` re-check fails). A crash
before the commit leaves the events undispatched for the outbox scan; a crash
between the commit and the emits loses only the live push (clients catch up
with ``last_seq`` replay).

Recipients per event type (``notifications.type``):

============================  ======================  ====================================
event                         notification            recipients (minus the actor)
============================  ======================  ====================================
task.created (with assignee)  task_assigned           the assignee
task.assigned                 task_assigned           the new assignee
task.updated                  task_updated            owner, assignee
task.status_changed           task_status_changed     owner, assignee
task.deleted                  task_deleted            owner, assignee
comment.created               comment_added           owner, assignee, earlier commenters
                                                      who still see the task
reminder.due                  deadline_reminder       assignee, owner
task.overdue                  task_overdue            owner, assignee
invitation.created            team_invitation         the invitee, if registered
invitation.accepted           invitation_accepted     the inviter and the team's owner
============================  ======================  ====================================

Other event types create no notification (their events are still marked
dispatched). Task events whose task was purged before the fan-out ran create
nothing and emit nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from tasktracker.auth.models import User
from tasktracker.core.db import is_postgresql
from tasktracker.core.errors import NotFound
from tasktracker.core.types import utcnow
from tasktracker.events.models import Event
from tasktracker.extensions import db
from tasktracker.notifications.models import Notification

log = logging.getLogger(__name__)

MESSAGE_MAX = 500

# --------------------------------------------------------------------------- REST


def notifications_query(user_id: int, *, unread: bool = False) -> sa.Select:
    """The user's notifications, newest first (``created_at``, then ``id``, descending);
    only unread ones when ``unread``."""
    query = sa.select(Notification).where(Notification.user_id == user_id)
    if unread:
        query = query.where(Notification.read_at.is_(None))
    return query.order_by(Notification.created_at.desc(), Notification.id.desc())


def unread_count(user_id: int) -> int:
    """How many of the user's notifications are unread."""
    return db.session.scalar(
        sa.select(sa.func.count()).select_from(Notification)
        .where(Notification.user_id == user_id, Notification.read_at.is_(None))
    ) or 0


def get_own_notification(user_id: int, notification_id: int) -> Notification:
    """The notification if it belongs to ``user_id``; anyone else's (or a missing
    one) raises :class:`NotFound` (404 ``notification_not_found``)."""
    notification = None
    if 0 < notification_id < 2**63:
        notification = db.session.get(Notification, notification_id)
    if notification is None or notification.user_id != user_id:
        raise NotFound("Notification not found.", code="notification_not_found")
    return notification


def set_read(user_id: int, notification_id: int, read: bool) -> Notification:
    """Mark one of the caller's notifications read (``read_at`` = now, kept if it was
    already read) or unread (``read_at`` = null). 404 for anyone else's."""
    notification = get_own_notification(user_id, notification_id)
    if read and notification.read_at is None:
        notification.read_at = utcnow()
    elif not read:
        notification.read_at = None
    db.session.commit()
    return notification


def read_all(user_id: int) -> int:
    """Mark every unread notification of the user read; returns how many changed."""
    result = db.session.execute(
        sa.update(Notification.__table__)
        .where(Notification.__table__.c.user_id == user_id, Notification.__table__.c.read_at.is_(None))
        .values(read_at=utcnow())
    )
    db.session.commit()
    return result.rowcount


# --------------------------------------------------------------------------- fan-out

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


#: Events claimed and fanned out per transaction by :func:`fan_out_many`.
FANOUT_CHUNK = 100


@dataclass
class FanoutResult:
    """What the fan-out did for one event.

    ``claimed`` is False when the event was missing, already dispatched or (on
    PostgreSQL) being fanned out by another transaction right now; then nothing
    else happened. ``failed`` is True when a database error left it undispatched
    (the outbox scan retries it). ``notification_ids`` are the rows created;
    ``emits`` the ``(event, data, rooms)`` sent to Socket.IO after the commit;
    ``memberships`` the ``(user_id, team_id, joined)`` room changes requested;
    ``rechecks`` the task ids whose ``task:<id>`` room is re-checked before the emits
    (who sees the task changed: contract v1.1, "Real time").
    """

    seq: int
    claimed: bool = False
    failed: bool = False
    notification_ids: list[int] = field(default_factory=list)
    rechecks: list[int] = field(default_factory=list)
    emits: list[tuple[str, dict, list[str]]] = field(default_factory=list)
    memberships: list[tuple[int, int, bool]] = field(default_factory=list)


@dataclass
class _Planned:
    user_id: int
    type: str
    message: str
    data: dict[str, Any]


def fan_out(seq: int, *, now: datetime | None = None) -> FanoutResult:
    """Fan out the event ``seq`` exactly once (see the module docstring).

    Runs its own transaction on ``db.session`` (call it from a job's app
    context, not in the middle of a request's unit of work). Idempotent: a
    second call for the same ``seq`` (a redelivery, a second worker, the outbox
    scan) finds the event dispatched and does nothing. Database errors roll back
    and propagate; the event then stays undispatched for the outbox scan.
    Errors raised by the Socket.IO layer are logged, never raised.
    """
    return _fan_out_chunk([seq], now or utcnow())[0]


def fan_out_many(seqs, *, now: datetime | None = None) -> list[FanoutResult]:
    """Fan out many events: :data:`FANOUT_CHUNK` per transaction (one claim, one
    insert), in ``seq`` order. If a chunk fails, its events are retried one by
    one so that one bad event cannot hold back the others; an event that still
    fails is logged, left undispatched (``failed=True``) and never raises here."""
    now = now or utcnow()
    ordered = sorted({int(s) for s in seqs})
    results: list[FanoutResult] = []
    for i in range(0, len(ordered), FANOUT_CHUNK):
        chunk = ordered[i:i + FANOUT_CHUNK]
        try:
            results += _fan_out_chunk(chunk, now)
            continue
        except Exception:  # noqa: BLE001
            if len(chunk) == 1:
                log.exception("fan-out: event %s failed; left to the outbox scan", chunk[0])
                results.append(FanoutResult(seq=chunk[0], failed=True))
                continue
            log.warning("fan-out: batch %s..%s failed; retrying its events one by one",
                        chunk[0], chunk[-1], exc_info=True)
        for seq in chunk:
            try:
                results.append(fan_out(seq, now=now))
            except Exception:  # noqa: BLE001
                log.exception("fan-out: event %s failed; left to the outbox scan", seq)
                results.append(FanoutResult(seq=seq, failed=True))
    return results


def fan_out_job(seqs) -> int:
    """The fan-out job (Celery ``fanout_events``, the in-process runner): fan out
    ``seqs`` (:func:`fan_out_many`), then catch up with up to :data:`FANOUT_CHUNK`
    undispatched events *newer* than them, oldest first. Returns how many events
    this call claimed; never raises for a failing event (logged, left to the outbox).

    Why: each write enqueues one job for its own events, so under a burst of writes
    the queue holds one job per event and a worker doing one transaction (and one
    commit) per event falls behind; every event then waits for the whole queue ahead
    of it. Catching up takes the events written meanwhile a chunk per transaction,
    and the jobs queued behind find theirs claimed (one cheap claim of nothing).
    Claims are exclusive (:func:`_claim`), so nothing is sent twice. Older
    undispatched events are left to the outbox scan: an event that keeps failing
    is retried there, not by every job.
    """
    results = fan_out_many(seqs)
    if results:
        newer = list(db.session.scalars(
            sa.select(Event.seq).where(Event.dispatched_at.is_(None), Event.seq > max(r.seq for r in results))
            .order_by(Event.seq).limit(FANOUT_CHUNK)))
        db.session.rollback()  # end the read before the fan-out's own transactions
        if newer:
            results += fan_out_many(newer)
    return sum(r.claimed for r in results)


def _fan_out_chunk(seqs: list[int], now: datetime) -> list[FanoutResult]:
    """Claim the undispatched events among ``seqs`` and fan them out, in one
    transaction; then emit. Raises (after a rollback) on database errors."""
    results = {seq: FanoutResult(seq=seq) for seq in seqs}
    try:
        claimed = _claim(seqs, now)
        if not claimed:
            db.session.rollback()
            return list(results.values())
        events = list(db.session.scalars(
            sa.select(Event).where(Event.seq.in_(claimed)).order_by(Event.seq)
            .execution_options(populate_existing=True)))
        alive = _existing_ids("tasks", {e.task_id for e in events if e.task_id is not None})
        live = [e for e in events if e.task_id is None or e.task_id in alive]
        planned = {e.seq: _plan_notifications(e) for e in live}
        rows = _notification_rows(live, planned)
        by_event: dict[int, list[Notification]] = {}
        for notification in _load(_insert_notifications(rows)):
            by_event.setdefault(notification.event_seq, []).append(notification)
        for event in events:
            result = results[event.seq]
            result.claimed = True
            result.memberships = _plan_memberships(event)
            result.rechecks = _plan_rechecks(event)
            if event.task_id is not None and event.task_id not in alive:
                continue  # the task was purged meanwhile: nothing to tell anyone
            mine = by_event.get(event.seq, [])
            result.notification_ids = [n.id for n in mine]
            result.emits = _plan_emits(event) + [
                ("notification:new", _dump_notification(n), [f"user:{n.user_id}"]) for n in mine]
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    for seq in seqs:
        result = results[seq]
        for user_id, team_id, joined in result.memberships:
            _realtime("sync_membership", user_id, team_id, joined)
        for task_id in result.rechecks:
            _realtime("recheck_task_room", task_id)
        for name, data, rooms in result.emits:
            _realtime("emit", name, data, rooms)
    return [results[seq] for seq in seqs]


def _claim(seqs: list[int], now: datetime) -> list[int]:
    """``UPDATE events SET dispatched_at = now WHERE seq IN (...) AND dispatched_at IS
    NULL RETURNING seq``. On PostgreSQL the rows are picked ``FOR UPDATE SKIP
    LOCKED``: an event another transaction is fanning out right now is skipped
    instead of waited for (if that transaction rolls back, the outbox scan
    retries it). SQLite serialises writers, and the ``IS NULL`` re-check makes
    the loser claim nothing."""
    events = Event.__table__
    pick = sa.select(events.c.seq).where(events.c.seq.in_(seqs), events.c.dispatched_at.is_(None))
    if is_postgresql():
        pick = pick.order_by(events.c.seq).with_for_update(skip_locked=True)
    claim = (sa.update(events)
             .where(events.c.seq.in_(pick.scalar_subquery()), events.c.dispatched_at.is_(None))
             .values(dispatched_at=now)
             .returning(events.c.seq))
    return sorted(db.session.execute(claim).scalars())


def _realtime(name: str, *args) -> None:
    """Call ``tasktracker.realtime.<name>(*args)`` if it exists; log (never raise) failures."""
    try:
        from tasktracker import realtime

        fn = getattr(realtime, name, None)
    except Exception:  # noqa: BLE001 - a broken realtime package must not break the fan-out
        log.exception("fan-out: tasktracker.realtime failed to import")
        return
    if fn is None:
        log.debug("fan-out: tasktracker.realtime.%s is not available; skipped", name)
        return
    try:
        fn(*args)
    except Exception:  # noqa: BLE001 - the notifications are committed; a lost push is replayed
        log.exception("fan-out: realtime.%s%r failed", name, args[:1])


def _dump_notification(notification: Notification) -> dict:
    from tasktracker.notifications.schemas import notification_schema

    return notification_schema.dump(notification)


def _existing_ids(table: str, ids: set[int]) -> set[int]:
    """Which of ``ids`` exist in ``tasks`` / ``teams`` / ``users`` (one query)."""
    if not ids:
        return set()
    from tasktracker.tasks.models import Task
    from tasktracker.teams.models import Team

    column = {"tasks": Task.id, "teams": Team.id, "users": User.id}[table]
    return set(db.session.scalars(sa.select(column).where(column.in_(ids))))


def _load(ids: list[int]) -> list[Notification]:
    if not ids:
        return []
    return list(db.session.scalars(
        sa.select(Notification).where(Notification.id.in_(ids)).order_by(Notification.id)))


def _notification_rows(events: list[Event], planned: dict[int, list[_Planned]]) -> list[dict]:
    """Insert rows for the planned notifications, minus recipients whose account is
    gone; ``team_id`` is dropped when the team is gone (both are foreign keys)."""
    users = _existing_ids("users", {p.user_id for plans in planned.values() for p in plans})
    teams = _existing_ids("teams", {e.team_id for e in events if e.team_id is not None and planned.get(e.seq)})
    return [
        {
            "user_id": p.user_id, "event_seq": e.seq, "type": p.type,
            "message": p.message[:MESSAGE_MAX], "task_id": e.task_id,
            "team_id": e.team_id if e.team_id in teams else None,
            "actor_id": e.actor_id, "data": p.data, "created_at": e.created_at,
        }
        for e in events for p in planned.get(e.seq, []) if p.user_id in users
    ]


def _insert_notifications(rows: list[dict]) -> list[int]:
    """``INSERT ... ON CONFLICT (event_seq, user_id) DO NOTHING RETURNING id``: a row
    that exists already is not created again."""
    if not rows:
        return []
    table = Notification.__table__
    if is_postgresql():
        from sqlalchemy.dialects.postgresql import insert
    else:  # SQLite, the only other supported database
        from sqlalchemy.dialects.sqlite import insert
    stmt = (insert(table)
            .on_conflict_do_nothing(index_elements=["event_seq", "user_id"])
            .returning(table.c.id))
    # executemany + RETURNING: SQLAlchemy batches it into multi-row INSERTs ("insertmanyvalues")
    return sorted(db.session.execute(stmt, rows).scalars())


# --------------------------------------------------------------------------- planning


def _ref_id(ref: Any) -> int | None:
    """The id of a UserRef dict (or None)."""
    if isinstance(ref, dict):
        value = ref.get("id")
        return value if isinstance(value, int) else None
    return None


def _task_people(task: dict) -> tuple[int | None, int | None]:
    """(owner_id, assignee_id) of a task payload."""
    return _ref_id(task.get("owner")), _ref_id(task.get("assignee"))


def _name(user: User | None) -> str:
    if user is None:
        return "Someone"
    return user.full_name or user.username


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


def _plan_notifications(event: Event) -> list[_Planned]:
    """The notifications an event causes (before the existence checks)."""
    payload = event.payload or {}
    task = payload.get("task") if isinstance(payload.get("task"), dict) else {}
    owner_id, assignee_id = _task_people(task)
    title = _quote(task.get("title"))
    actor = _name(event.actor)
    changes = payload.get("changes") if isinstance(payload.get("changes"), dict) else {}
    base = {"task_title": task.get("title")} if task else {}

    def plan(type_: str, recipients, message: str, data: dict | None = None) -> list[_Planned]:
        return [_Planned(user_id, type_, message, {**base, **(data or {})})
                for user_id in _unique(recipients, event.actor_id)]

    etype = event.type
    if etype == "task.created":
        return plan("task_assigned", [assignee_id], f"{actor} assigned you to {title}.",
                    {"changes": {"assignee_id": [None, assignee_id]}})
    if etype == "task.assigned":
        new = (changes.get("assignee_id") or [None, None])[-1]
        return plan("task_assigned", [new], f"{actor} assigned you to {title}.", {"changes": changes})
    if etype == "task.updated":
        fields_ = ", ".join(sorted(changes)) or "details"
        return plan("task_updated", [owner_id, assignee_id], f"{actor} updated {title} ({fields_}).",
                    {"changes": changes})
    if etype == "task.status_changed":
        new_status = (changes.get("status") or [None, task.get("status")])[-1]
        return plan("task_status_changed", [owner_id, assignee_id],
                    f"{actor} changed the status of {title} to {new_status}.", {"changes": changes})
    if etype == "task.deleted":
        return plan("task_deleted", [owner_id, assignee_id], f"{actor} deleted {title}.")
    if etype == "comment.created":
        comment = payload.get("comment") if isinstance(payload.get("comment"), dict) else {}
        body = str(comment.get("body") or "")
        excerpt = body[:140] + ("…" if len(body) > 140 else "")
        recipients = [owner_id, assignee_id] + _earlier_commenters(event.task_id, comment.get("id"))
        return plan("comment_added", recipients, f"{actor} commented on {title}: {excerpt}",
                    {"comment_id": comment.get("id"), "excerpt": excerpt})
    if etype == "reminder.due":
        due = task.get("due_at")
        message = f"Reminder: {title} is due {due}." if due else f"Reminder: {title}."
        return plan("deadline_reminder", [assignee_id, owner_id], message,
                    {"reminder_id": payload.get("reminder_id"), "remind_at": payload.get("remind_at"),
                     "due_at": due})
    if etype == "task.overdue":
        due = task.get("due_at")
        return plan("task_overdue", [owner_id, assignee_id], f"{title} is overdue (due {due}).",
                    {"due_at": due})
    if etype == "invitation.created":
        invitation = payload.get("invitation") if isinstance(payload.get("invitation"), dict) else {}
        team = invitation.get("team") if isinstance(invitation.get("team"), dict) else {}
        return plan("team_invitation", [payload.get("invitee_user_id")],
                    f"{actor} invited you to join the team {_quote(team.get('name'))} "
                    f"as {invitation.get('role') or 'member'}.",
                    {"invitation_id": invitation.get("id"), "team_name": team.get("name"),
                     "role": invitation.get("role")})
    if etype == "invitation.accepted":
        invitation = payload.get("invitation") if isinstance(payload.get("invitation"), dict) else {}
        team = invitation.get("team") if isinstance(invitation.get("team"), dict) else {}
        return plan("invitation_accepted", _inviter_and_owner(invitation.get("id"), event.team_id),
                    f"{actor} accepted the invitation to join the team {_quote(team.get('name'))}.",
                    {"invitation_id": invitation.get("id"), "user_id": payload.get("user_id"),
                     "team_name": team.get("name")})
    return []


def _earlier_commenters(task_id: int | None, comment_id: Any) -> list[int]:
    """Authors of the task's earlier comments who may still see the task."""
    if task_id is None:
        return []
    from tasktracker.comments.models import Comment
    from tasktracker.tasks.models import Task
    from tasktracker.tasks.permissions import can_see

    query = sa.select(Comment.author_id).where(Comment.task_id == task_id, Comment.author_id.is_not(None))
    if isinstance(comment_id, int):
        query = query.where(Comment.id < comment_id)
    author_ids = sorted(set(db.session.scalars(query.distinct())))
    if not author_ids:
        return []
    task = db.session.get(Task, task_id)
    users = db.session.scalars(sa.select(User).where(User.id.in_(author_ids))).all()
    return [u.id for u in users if task is not None and can_see(u, task)]


def _inviter_and_owner(invitation_id: Any, team_id: int | None) -> list[int]:
    from tasktracker.teams.models import Invitation, Team

    recipients: list[int | None] = []
    if isinstance(invitation_id, int):
        recipients.append(db.session.scalar(
            sa.select(Invitation.invited_by_id).where(Invitation.id == invitation_id)))
    if team_id is not None:
        recipients.append(db.session.scalar(sa.select(Team.owner_id).where(Team.id == team_id)))
    return [r for r in recipients if r is not None]


def _plan_emits(event: Event) -> list[tuple[str, dict, list[str]]]:
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
    changes = payload.get("changes") if isinstance(payload.get("changes"), dict) else {}
    old_assignee = changes.get("assignee_id")
    if isinstance(old_assignee, list) and old_assignee:
        users.append(old_assignee[0])  # the previous assignee learns they were unassigned
    rooms += [f"user:{u}" for u in _unique(users, None)]
    return [(name, {**resource, "actor_id": event.actor_id, "seq": event.seq}, rooms)]


#: Task fields whose change can hide the task from someone (api-contract.md, "Tasks": who sees a task).
_ACCESS_FIELDS = frozenset({"owner_id", "assignee_id", "team_id"})


def _plan_rechecks(event: Event) -> list[int]:
    """``[task_id]`` when the event can hide its task from a subscriber: a soft delete,
    or a change of owner, assignee or team."""
    if event.task_id is None or not (event.type or "").startswith("task."):
        return []
    changes = (event.payload or {}).get("changes")
    if event.type == "task.deleted" or (isinstance(changes, dict) and _ACCESS_FIELDS & set(changes)):
        return [event.task_id]
    return []


def _plan_memberships(event: Event) -> list[tuple[int, int, bool]]:
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
