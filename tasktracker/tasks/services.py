"""Task rules and transactions (api-contract.md, "Tasks").

Every public function here that changes a task commits its own transaction,
writes the matching event of the catalog (:mod:`tasktracker.events`) in that
same transaction, bumps ``updated_at`` (``version`` grows by itself through
``version_id_col``) and raises :mod:`tasktracker.core.errors` exceptions:

- 404 ``task_not_found``: missing, not visible, or (for reads) soft-deleted;
- 403 ``forbidden``: visible but the caller may not do this;
- 409 ``invalid_transition`` / ``not_deleted`` / ``not_in_trash`` / ``concurrent_update``;
- 412 ``precondition_failed``: ``If-Match`` does not name the current version;
- 422 ``validation_error`` (``details`` field -> messages) / ``idempotency_key_reused``.

Services never read the request: resources pass the parsed body, the
``If-Match`` versions and the ``Idempotency-Key``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.orm.exc import StaleDataError

from tasktracker.attachments.models import Attachment
from tasktracker.auth.models import User
from tasktracker.attachments import storage
from tasktracker.core.db import commit_keeping_loaded, is_postgresql
from tasktracker.core.pagination import paginate
from tasktracker.core.serialization import dumps
from tasktracker.core.errors import Conflict, Forbidden, NotFound, PreconditionFailed, Unprocessable
from tasktracker.core.fields import UTCDateTime as UTCDateTimeField
from tasktracker.core.types import utcnow
from tasktracker.events.services import diff, record_event, task_events_query
from tasktracker.extensions import db
from tasktracker.tasks import cache as list_cache
from tasktracker.tasks.models import IdempotencyKey, Reminder, Task
from tasktracker.tasks.permissions import (
    TEAM_MANAGER_ROLES, can_edit, can_manage, get_visible_task, team_role, visible_condition,
)
from tasktracker.tasks.schemas import task_item, task_schema
from tasktracker.teams.models import TeamMember

log = logging.getLogger(__name__)

#: Allowed status changes (the status endpoint, PUT and PATCH). Anything else,
#: including a change to the same status on the status endpoint, is a 409.
TRANSITIONS = frozenset({
    ("todo", "in_progress"), ("in_progress", "done"), ("in_progress", "todo"),
    ("done", "in_progress"), ("todo", "done"),
})
PRIORITY_RANK = {"low": 0, "medium": 1, "high": 2, "urgent": 3}
STATUS_RANK = {"todo": 0, "in_progress": 1, "done": 2}
#: Plain fields of PUT/PATCH, recorded in ``task.updated`` changes.
PLAIN_FIELDS = ("title", "description", "priority", "due_at", "team_id")


# --------------------------------------------------------------------------- helpers


_UTC_FIELD = UTCDateTimeField()


def _iso(value: datetime | None) -> str | None:
    """A time as the API writes it (``...Z``), or None."""
    return _UTC_FIELD._serialize(value, None, None)


def _reminder_times(task: Task) -> list[str]:
    return [_iso(r.remind_at) for r in task.reminders if r.sent_at is None]


def _snapshot(task: Task) -> dict:
    """The JSON-ready values of the editable fields (for ``changes``)."""
    return {"title": task.title, "description": task.description, "priority": task.priority,
            "due_at": _iso(task.due_at), "team_id": task.team_id, "status": task.status,
            "assignee_id": task.assignee_id, "reminders": _reminder_times(task)}


def _check_if_match(task: Task, if_match: list[int] | None) -> None:
    """412 unless ``if_match`` is None (no header / ``*``) or names ``task.version``."""
    if if_match is not None and task.version not in if_match:
        raise PreconditionFailed(
            f'If-Match does not match the current version "{task.version}".',
            details={"current_version": task.version})


def _active_user(user_id: int, field: str = "assignee_id") -> User:
    user = db.session.get(User, user_id)
    if user is None or not user.active:
        raise Unprocessable(details={field: ["Unknown or inactive user."]})
    return user


def _check_team_choice(actor: User, team_id: int | None) -> None:
    """A task may be put in a team only by its members (site admins: any existing team)."""
    if team_id is None:
        return
    if actor.is_admin:
        from tasktracker.teams.models import Team

        if db.session.get(Team, team_id) is not None:
            return
    elif team_role(actor.id, team_id) is not None:
        return
    raise Unprocessable(details={"team_id": ["Unknown team, or you are not a member of it."]})


def _check_assignee(assignee: User | None, team_id: int | None) -> None:
    """A team task's assignee must be a member of the team (422 on ``assignee_id``)."""
    if assignee is not None and team_id is not None and team_role(assignee.id, team_id) is None:
        raise Unprocessable(details={"assignee_id": ["The assignee is not a member of the task's team."]})


def _confirm_assignee_membership(task: Task) -> None:
    """After the task's row is written (flushed): a team task's assignee must still be
    a member of the team, read under a lock a concurrent removal has to wait for.

    The check before the write (:func:`_check_assignee`) answers the sequential
    case; this one settles a race with ``DELETE /api/teams/<id>/members/<user>``
    (tasktracker.teams.services.remove_member deletes the membership first, then
    unassigns the member's tasks). On PostgreSQL the membership row is read ``FOR
    KEY SHARE``: a removal that deleted it first makes us wait and then see it
    gone; one that comes later waits for our commit and then finds (and
    unassigns) this task. On SQLite our flush holds the database's write lock, so
    no removal commits between this read and our commit. If the member is gone,
    the transaction is rolled back: 422 on ``assignee_id``, nothing changed.
    """
    if task.team_id is None or task.assignee_id is None:
        return
    member = db.session.scalar(
        sa.select(TeamMember.user_id)
        .where(TeamMember.team_id == task.team_id, TeamMember.user_id == task.assignee_id)
        .with_for_update(read=True, key_share=True))
    if member is None:
        db.session.rollback()
        raise Unprocessable(details={"assignee_id": ["The assignee is not a member of the task's team."]})


def _check_transition(old: str, new: str) -> None:
    if (old, new) not in TRANSITIONS:
        raise Conflict(f"Cannot change status from {old} to {new}.", code="invalid_transition",
                       details={"status": [old, new],
                                "allowed": sorted(n for o, n in TRANSITIONS if o == old)})


def _set_status(task: Task, new: str, now: datetime) -> None:
    """Set the status; ``done`` sets ``completed_at``, leaving ``done`` clears it."""
    if new == "done" and task.status != "done":
        task.completed_at = now
    elif new != "done":
        task.completed_at = None
    task.status = new


def _replace_unsent_reminders(task: Task, times: list[datetime]) -> None:
    """Replace the task's unsent reminders by ``times`` (sent ones stay; duplicates merged)."""
    wanted = sorted(set(times))
    unsent = sorted(r.remind_at for r in task.reminders if r.sent_at is None)
    if unsent == wanted:
        return
    kept = [r for r in task.reminders if r.sent_at is not None]
    task.reminders = sorted(kept + [Reminder(remind_at=t) for t in wanted], key=lambda r: r.remind_at)


def _write(if_match: list[int] | None, *, commit: bool = False) -> None:
    """Flush (or commit) the task change. A concurrent writer (``StaleDataError``)
    gives 412 if the client sent ``If-Match``, else 409 ``concurrent_update``; a
    row deleted meanwhile (``IntegrityError``, e.g. the new team or assignee) gives
    409. Nothing is written in any of these cases. The commit keeps the task
    loaded: the response renders what was just written."""
    try:
        commit_keeping_loaded() if commit else db.session.flush()
    except StaleDataError:
        db.session.rollback()
        if if_match is not None:
            raise PreconditionFailed("The task was changed by someone else (If-Match).")
        raise Conflict("The task was changed by someone else; reload it and retry.",
                       code="concurrent_update")
    except sa.exc.IntegrityError:
        db.session.rollback()
        raise Conflict("A concurrent change prevented this update; reload and retry.",
                       code="concurrent_update")


def _record(type_: str, actor: User, task: Task, **payload) -> None:
    record_event(type_, actor_id=actor.id, task_id=task.id, team_id=task.team_id,
                 payload={"task": task_schema.dump(task), **payload})


def _editable_task(actor: User, task_id: int) -> Task:
    """The visible, not-deleted task that ``actor`` may edit (404 / 403)."""
    task = get_visible_task(actor, task_id)
    if not can_edit(actor, task):
        raise Forbidden("You may not edit this task.")
    return task


def _managed_task(actor: User, task_id: int) -> Task:
    """The visible, not-deleted task that ``actor`` may manage (404 / 403)."""
    task = get_visible_task(actor, task_id)
    if not can_manage(actor, task):
        raise Forbidden("Only the task's owner or its team's owner/admins may do this.")
    return task


# --------------------------------------------------------------------------- reads


def get_task(actor: User, task_id: int) -> Task:
    """``GET /api/tasks/<id>``: the task if visible and not deleted, else 404."""
    return get_visible_task(actor, task_id)


def _trash_condition(user: User):
    """Soft-deleted tasks ``user`` may restore: own tasks, tasks of teams they own or
    administer; every task for site admins."""
    deleted = Task.deleted_at.is_not(None)
    if user.is_admin:
        return deleted
    managed = sa.select(TeamMember.team_id).where(TeamMember.user_id == user.id,
                                                  TeamMember.role.in_(TEAM_MANAGER_ROLES))
    return sa.and_(deleted, sa.or_(Task.owner_id == user.id, Task.team_id.in_(managed)))


def _like_escape(text: str) -> str:
    return text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _contains(column, text: str):
    return sa.func.lower(column).like(f"%{_like_escape(text)}%", escape="\\")


def filtered_query(actor: User, args: dict) -> sa.Select:
    """Tasks ``actor`` may see, filtered by the parsed query ``args`` (not ordered).

    ``args`` keys (all optional): ``status`` (list), ``priority``, ``assignee_id``
    (int or ``"me"``), ``owner_id`` (int or ``"me"``), ``team_id``, ``due_before``
    (exclusive), ``due_after`` (inclusive), ``overdue`` (bool), ``q`` (case-
    insensitive substring of title or description), ``deleted="only"`` (the
    caller's trash instead of live tasks).
    """
    stmt = sa.select(Task)
    if args.get("deleted") == "only":
        stmt = stmt.where(_trash_condition(actor))
    else:
        stmt = stmt.where(Task.deleted_at.is_(None), visible_condition(actor))
    if args.get("status"):
        stmt = stmt.where(Task.status.in_(args["status"]))
    if args.get("priority"):
        stmt = stmt.where(Task.priority == args["priority"])
    for key, column in (("assignee_id", Task.assignee_id), ("owner_id", Task.owner_id)):
        if key in args:
            stmt = stmt.where(column == (actor.id if args[key] == "me" else args[key]))
    if "team_id" in args:
        stmt = stmt.where(Task.team_id == args["team_id"])
    if "due_before" in args:
        stmt = stmt.where(Task.due_at < args["due_before"])
    if "due_after" in args:
        stmt = stmt.where(Task.due_at >= args["due_after"])
    if "overdue" in args:
        overdue = sa.and_(Task.due_at.is_not(None), Task.due_at < utcnow(), Task.status != "done")
        stmt = stmt.where(overdue if args["overdue"] else sa.not_(overdue))
    if args.get("q"):
        q = args["q"].strip()
        stmt = stmt.where(sa.or_(_contains(Task.title, q), _contains(Task.description, q)))
    return stmt


def _sort_expressions(key: str) -> list:
    if key == "priority":
        return [sa.case(PRIORITY_RANK, value=Task.priority, else_=-1)]
    if key == "status":
        return [sa.case(STATUS_RANK, value=Task.status, else_=-1)]
    if key == "title":
        lowered = sa.func.lower(Task.title)
        if is_postgresql():  # code-point order, as SQLite's BINARY collation
            return [lowered.collate("C"), Task.title.collate("C")]
        return [lowered, Task.title]
    return [getattr(Task, key)]


def list_query(actor: User, args: dict) -> sa.Select:
    """``GET /api/tasks``: :func:`filtered_query` ordered by ``args["sort"]``.

    ``sort`` is a list of ``(key, descending)``. ``priority`` sorts by rank
    (low < medium < high < urgent), ``status`` by todo < in_progress < done,
    ``title`` case-insensitively by code point, ``due_at`` with tasks without a
    due date last in both directions. ``id`` (in the direction of the last key)
    breaks ties, so pages are stable on SQLite and PostgreSQL alike.
    """
    sort = args.get("sort") or [("created_at", True)]
    order = []
    for key, desc in sort:
        if key == "due_at":
            order.append(sa.case((Task.due_at.is_(None), 1), else_=0))
        for expr in _sort_expressions(key):
            order.append(expr.desc() if desc else expr.asc())
    order.append(Task.id.desc() if sort[-1][1] else Task.id.asc())
    return filtered_query(actor, args).order_by(*order)


def search_query(actor: User, args: dict) -> sa.Select:
    """``GET /api/tasks/search``: the tasks of ``GET /api/tasks?q=`` ranked by relevance.

    Rank (same SQL on SQLite and PostgreSQL): 0 title equals ``q``, 1 title
    starts with ``q``, 2 title contains ``q``, 3 only the description matches
    (all case-insensitive); then newest first, then id.
    """
    q = args["q"].strip()
    title = sa.func.lower(Task.title)
    rank = sa.case(
        (title == q.lower(), 0),
        (title.like(f"{_like_escape(q)}%", escape="\\"), 1),
        (_contains(Task.title, q), 2),
        else_=3,
    )
    return filtered_query(actor, args).order_by(rank, Task.created_at.desc(), Task.id.desc())


_OWNER = sa.orm.aliased(User, name="owner")
_ASSIGNEE = sa.orm.aliased(User, name="assignee")
_TASK_COLUMNS = [Task.id, Task.title, Task.description, Task.status, Task.priority, Task.due_at,
                 Task.team_id, Task.created_at, Task.updated_at, Task.completed_at,
                 Task.deleted_at, Task.version]
_USER_REF_COLUMNS = ("id", "username", "full_name")


def page_items(query: sa.Select) -> list[dict]:
    """The JSON items of one page of ``query`` (a ``select(Task)`` with its
    filters, order, limit and offset), as :class:`TaskSchema` dumps them.

    Two statements whatever the page size: the page's task columns joined with
    owner and assignee, then the page's reminders. Plain rows, no ORM objects:
    building and dumping 100 ORM tasks cost more than the queries themselves
    (bench/cpu_cost.py).
    """
    owner = [getattr(_OWNER, c).label(f"owner_{c}") for c in _USER_REF_COLUMNS]
    assignee = [getattr(_ASSIGNEE, c).label(f"assignee_{c}") for c in _USER_REF_COLUMNS]
    stmt = (query.with_only_columns(*_TASK_COLUMNS, *owner, *assignee)
            .join(_OWNER, _OWNER.id == Task.owner_id)
            .outerjoin(_ASSIGNEE, _ASSIGNEE.id == Task.assignee_id))
    rows = db.session.execute(stmt).all()
    reminders: dict[int, list] = {row.id: [] for row in rows}
    if rows:
        for r in db.session.execute(
                sa.select(Reminder.task_id, Reminder.id, Reminder.remind_at, Reminder.sent_at)
                .where(Reminder.task_id.in_(list(reminders)))
                .order_by(Reminder.remind_at, Reminder.id)):
            reminders[r.task_id].append(r)
    items = []
    for row in rows:
        owner_ref = {c: getattr(row, f"owner_{c}") for c in _USER_REF_COLUMNS}
        assignee_ref = ({c: getattr(row, f"assignee_{c}") for c in _USER_REF_COLUMNS}
                        if row.assignee_id is not None else None)
        items.append(task_item(row, owner_ref, assignee_ref, reminders[row.id]))
    return items


@dataclass
class ListResult:
    """A list response: ``body`` is the rendered JSON page (None when
    ``not_modified``); ``etag`` its strong entity tag (None for uncacheable
    queries, see :func:`task_page`)."""

    etag: str | None
    body: bytes | None
    not_modified: bool = False


def task_page(actor: User, args: dict, *, search: bool = False,
              if_none_match: str | None = None) -> ListResult:
    """``GET /api/tasks`` (or ``/api/tasks/search``): one page, with conditional GET
    and the read cache of :mod:`tasktracker.tasks.cache`.

    The entity tag hashes (caller id, caller role, endpoint, loaded ``args``,
    data version); ``if_none_match`` naming it gives ``not_modified`` without
    running the list queries, a cached body for it is returned as is, and only
    otherwise the count and page queries run (and the body is stored). Queries
    with ``overdue`` depend on the clock, not only on the data: they get no tag
    and are never cached.
    """
    endpoint = "search" if search else "list"

    def render() -> bytes:
        query = search_query(actor, args) if search else list_query(actor, args)
        page = paginate(query, args["page"], args["per_page"], fetch=page_items)
        return dumps(page)

    if "overdue" in args:
        return ListResult(etag=None, body=render())
    etag = list_cache.list_etag(actor.id, actor.role, endpoint, args, list_cache.data_version())
    if list_cache.if_none_match_matches(if_none_match, etag):
        return ListResult(etag=etag, body=None, not_modified=True)
    store = list_cache.get_store()
    body = store.get(etag)
    if body is not None:
        return ListResult(etag=etag, body=body)
    body = render()
    store.set(etag, body)
    return ListResult(etag=etag, body=body)


def activity_query(actor: User, task_id: int) -> sa.Select:
    """``GET /api/tasks/<id>/activity``: the task's events, newest first (404 if not visible)."""
    task = get_visible_task(actor, task_id)
    return task_events_query(task.id)


# --------------------------------------------------------------------------- create


def _request_hash(body: dict) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _idempotency_cutoff(now: datetime | None = None) -> datetime:
    """Keys created before this are expired (``IDEMPOTENCY_TTL`` ago)."""
    return (now or utcnow()) - current_app.config["IDEMPOTENCY_TTL"]


def purge_expired_idempotency_keys(now: datetime | None = None, *, batch: int = 1000) -> int:
    """Delete the idempotency keys older than ``IDEMPOTENCY_TTL`` (they would only be
    replaced on reuse otherwise: the table would grow forever), ``batch`` rows per
    transaction, oldest first (index on ``created_at``). Returns how many were deleted.
    Safe beside :func:`create_task`: an expired key is never replayed anyway."""
    cutoff = _idempotency_cutoff(now)
    deleted = 0
    while True:
        ids = sa.select(IdempotencyKey.id).where(IdempotencyKey.created_at < cutoff) \
            .order_by(IdempotencyKey.created_at).limit(batch)
        count = db.session.execute(sa.delete(IdempotencyKey).where(IdempotencyKey.id.in_(ids.scalar_subquery()))
                                   .execution_options(synchronize_session=False)).rowcount
        db.session.commit()
        deleted += count
        if count < batch:
            return deleted


def _find_key(user_id: int, key: str) -> IdempotencyKey | None:
    return db.session.scalar(sa.select(IdempotencyKey).where(IdempotencyKey.user_id == user_id,
                                                             IdempotencyKey.key == key))


def _replay(record: IdempotencyKey | None, request_hash: str) -> Task:
    """The task created by the first request with this key (422 if the body differs)."""
    if record is None or record.task_id is None:
        raise Conflict("A request with this Idempotency-Key is still in progress; retry.",
                       code="idempotency_key_in_progress")
    if record.request_hash != request_hash:
        raise Unprocessable("This Idempotency-Key was used with a different request body.",
                            code="idempotency_key_reused",
                            details={"Idempotency-Key": ["Already used with a different body."]})
    task = db.session.get(Task, record.task_id)
    if task is None:  # purged in between: the key row goes with it (ON DELETE CASCADE)
        raise Conflict("The task created with this Idempotency-Key no longer exists.",
                       code="idempotency_key_in_progress")
    return task


def create_task(actor: User, data: dict, *, idempotency_key: str | None = None,
                raw_body: dict | None = None) -> tuple[Task, bool]:
    """``POST /api/tasks``. Returns ``(task, replayed)``.

    ``data`` is the loaded :class:`TaskCreateSchema` body. ``team_id`` needs the
    caller's membership (422 on ``team_id`` otherwise: the team is not revealed);
    the assignee must be an active user (422) and, for a team task, a member of
    the team (422). Writes ``task.created``.

    With ``idempotency_key``, the first result for (caller, key) within
    ``IDEMPOTENCY_TTL`` (24 h) is returned again (``replayed=True``) and nothing
    is created, provided ``raw_body`` hashes the same; another body is a 422
    ``idempotency_key_reused``. Concurrent duplicates are settled by the unique
    (user_id, key) constraint: the loser rolls back and replays the winner.
    """
    request_hash = _request_hash(raw_body if raw_body is not None else {})
    if idempotency_key is not None:
        record = _find_key(actor.id, idempotency_key)
        cutoff = _idempotency_cutoff()
        if record is not None and record.created_at < cutoff:
            # expired: the key may be used again (a bulk DELETE, so a concurrent twin
            # that deleted it first is no error)
            db.session.execute(sa.delete(IdempotencyKey).where(
                IdempotencyKey.user_id == actor.id, IdempotencyKey.key == idempotency_key,
                IdempotencyKey.created_at < cutoff).execution_options(synchronize_session=False))
            db.session.expunge(record)
            record = None
        if record is not None:
            return _replay(record, request_hash), True

    _check_team_choice(actor, data["team_id"])
    assignee = _active_user(data["assignee_id"]) if data["assignee_id"] is not None else None
    _check_assignee(assignee, data["team_id"])

    record = None
    if idempotency_key is not None:
        record = IdempotencyKey(user_id=actor.id, key=idempotency_key, request_hash=request_hash)
        db.session.add(record)
        try:
            db.session.flush()  # claims the key; a concurrent twin blocks or fails here
        except sa.exc.IntegrityError:
            db.session.rollback()
            return _replay(_find_key(actor.id, idempotency_key), request_hash), True

    now = utcnow()
    task = Task(title=data["title"], description=data["description"], priority=data["priority"],
                status="todo", due_at=data["due_at"], owner=actor, assignee=assignee,
                team_id=data["team_id"], created_at=now, updated_at=now)
    _set_status(task, data["status"], now)
    task.reminders = [Reminder(remind_at=t) for t in sorted(set(data["reminders"]))]
    db.session.add(task)
    try:
        db.session.flush()
        _confirm_assignee_membership(task)
        if record is not None:
            record.task_id = task.id
        _record("task.created", actor, task)
        commit_keeping_loaded()
    except sa.exc.IntegrityError:  # e.g. the team or assignee vanished meanwhile
        db.session.rollback()
        if idempotency_key is None:
            raise Conflict("A concurrent change prevented creating the task; retry.",
                           code="concurrent_update")
        return _replay(_find_key(actor.id, idempotency_key), request_hash), True
    return task, False


# --------------------------------------------------------------------------- updates


def update_task(actor: User, task_id: int, data: dict, *, if_match: list[int] | None = None) -> Task:
    """``PUT`` (``data`` = full :class:`TaskReplaceSchema` body) and ``PATCH``
    (only the given fields) of ``/api/tasks/<id>``.

    404 not visible; 403 cannot edit, or changes ``team_id``/``assignee_id``
    without being able to manage the task; 412 stale ``If-Match``; 422 team or
    assignee rules (as on create); 409 ``invalid_transition`` for a status change
    the status endpoint would refuse. A request that changes nothing writes
    nothing (same version). Events, in this order, only for what changed:
    ``task.updated`` (plain fields and reminders), ``task.status_changed``,
    ``task.assigned``.
    """
    task = _editable_task(actor, task_id)
    _check_if_match(task, if_match)
    before = _snapshot(task)

    team_changes = "team_id" in data and data["team_id"] != task.team_id
    assignee_changes = "assignee_id" in data and data["assignee_id"] != task.assignee_id
    if (team_changes or assignee_changes) and not can_manage(actor, task):
        raise Forbidden("Only the task's owner or its team's owner/admins may change its team "
                        "or assignee.")
    new_team = data["team_id"] if "team_id" in data else task.team_id
    if team_changes:
        _check_team_choice(actor, new_team)
    if assignee_changes:
        assignee = _active_user(data["assignee_id"]) if data["assignee_id"] is not None else None
    else:
        assignee = task.assignee
    if team_changes or assignee_changes:
        _check_assignee(assignee, new_team)
    if "status" in data and data["status"] != task.status:
        _check_transition(task.status, data["status"])

    now = utcnow()
    for field in ("title", "description", "priority", "due_at"):
        if field in data:
            setattr(task, field, data[field])
    if team_changes:
        task.team_id = new_team
    if assignee_changes:
        task.assignee = assignee
        task.assignee_id = assignee.id if assignee is not None else None
    if "status" in data and data["status"] != task.status:
        _set_status(task, data["status"], now)
    if "reminders" in data:
        _replace_unsent_reminders(task, data["reminders"])

    after = _snapshot(task)
    changes = diff(before, after)
    if not changes:
        return task  # nothing changed: no write, no event, same version
    task.updated_at = now
    if "due_at" in changes and (task.due_at is None or task.due_at > now):
        task.overdue_notified_at = None  # a new deadline earns a new overdue notice
    _write(if_match)
    if "team_id" in changes or "assignee_id" in changes:
        _confirm_assignee_membership(task)
    plain = {k: v for k, v in changes.items() if k in PLAIN_FIELDS or k == "reminders"}
    if plain:
        _record("task.updated", actor, task, changes=plain)
    if "status" in changes:
        _record("task.status_changed", actor, task, changes={"status": changes["status"]})
    if "assignee_id" in changes:
        _record("task.assigned", actor, task, changes={"assignee_id": changes["assignee_id"]})
    _write(if_match, commit=True)
    return task


def change_status(actor: User, task_id: int, status: str, *,
                  if_match: list[int] | None = None) -> Task:
    """``PATCH /api/tasks/<id>/status``: one of :data:`TRANSITIONS`, else 409
    ``invalid_transition`` (same -> same included). ``done`` sets
    ``completed_at``; leaving ``done`` clears it. Needs edit rights (403).
    Writes ``task.status_changed``."""
    task = _editable_task(actor, task_id)
    _check_if_match(task, if_match)
    old = task.status
    _check_transition(old, status)
    now = utcnow()
    _set_status(task, status, now)
    task.updated_at = now
    _write(if_match)
    _record("task.status_changed", actor, task, changes={"status": [old, status]})
    _write(if_match, commit=True)
    return task


def assign_task(actor: User, task_id: int, assignee_id: int | None, *,
                if_match: list[int] | None = None) -> Task:
    """``PATCH /api/tasks/<id>/assign``: set or clear (None) the assignee.

    Needs manage rights (403). The assignee must be an active user and, for a
    team task, a member of the team (422; also when the membership is removed
    concurrently: :func:`_confirm_assignee_membership`). Assigning the current
    assignee again changes nothing. Writes ``task.assigned``.
    """
    task = _managed_task(actor, task_id)
    _check_if_match(task, if_match)
    if assignee_id == task.assignee_id:
        return task
    assignee = _active_user(assignee_id) if assignee_id is not None else None
    _check_assignee(assignee, task.team_id)
    old = task.assignee_id
    task.assignee = assignee
    task.assignee_id = assignee_id
    task.updated_at = utcnow()
    _write(if_match)
    _confirm_assignee_membership(task)
    _record("task.assigned", actor, task, changes={"assignee_id": [old, assignee_id]})
    _write(if_match, commit=True)
    return task


# --------------------------------------------------------------------------- delete / restore


def soft_delete_task(actor: User, task_id: int, *, if_match: list[int] | None = None) -> None:
    """``DELETE /api/tasks/<id>``: move a live task to the trash (``deleted_at``).

    Needs manage rights (403); a deleted task is already gone for reads (404).
    Writes ``task.deleted``.
    """
    task = _managed_task(actor, task_id)
    _check_if_match(task, if_match)
    now = utcnow()
    task.deleted_at = now
    task.updated_at = now
    _write(if_match)
    _record("task.deleted", actor, task)
    _write(if_match, commit=True)


def _trashed_task(actor: User, task_id: int) -> Task:
    """A task in ``actor``'s trash. A live visible task: 409 ``not_in_trash`` for
    those who may manage it (403 otherwise); a deleted task the caller may not
    restore is not in their trash: 404."""
    task = get_visible_task(actor, task_id, include_deleted=True)
    if task.deleted_at is None:
        if not can_manage(actor, task):
            raise Forbidden("Only the task's owner or its team's owner/admins may do this.")
        return task
    if not can_manage(actor, task):
        raise NotFound("Task not found.", code="task_not_found")
    return task


def restore_task(actor: User, task_id: int) -> Task:
    """``PATCH /api/tasks/<id>/restore``: take a task out of the trash.

    404 unless in the caller's trash; 409 ``not_deleted`` for a live task.
    Writes ``task.restored``.
    """
    task = _trashed_task(actor, task_id)
    if task.deleted_at is None:
        raise Conflict("The task is not deleted.", code="not_deleted")
    task.deleted_at = None
    task.updated_at = utcnow()
    _write(None)
    _record("task.restored", actor, task)
    _write(None, commit=True)
    return task


def purge_task(actor: User, task_id: int) -> None:
    """``DELETE /api/tasks/<id>?permanent=true``: delete a trashed task for good.

    409 ``not_in_trash`` for a live task. The row goes; comments, reminders,
    attachments, notifications and idempotency keys follow through ``ON DELETE
    CASCADE``; attachment files are removed from ``UPLOAD_DIR`` after the commit.
    Writes ``task.purged`` (``{task_id, title, owner_id, assignee_id}``).
    """
    task = _trashed_task(actor, task_id)
    if task.deleted_at is None:
        raise Conflict("Only a task in the trash can be deleted permanently.", code="not_in_trash")
    stored_names = list(db.session.scalars(
        sa.select(Attachment.stored_name).where(Attachment.task_id == task.id)))
    record_event("task.purged", actor_id=actor.id, task_id=task.id, team_id=task.team_id,
                 payload={"task_id": task.id, "title": task.title, "owner_id": task.owner_id,
                          "assignee_id": task.assignee_id})
    db.session.delete(task)
    _write(None)
    _write(None, commit=True)
    storage.delete_files(stored_names)
