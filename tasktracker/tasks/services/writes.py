"""Task writes (api-contract.md, "Tasks"): create, update, status, assign, trash,
restore, purge.

Every public function here commits its own transaction, writes the matching
event of the catalog (:mod:`tasktracker.events`) in that same transaction
(:func:`_save`), bumps ``updated_at`` (``version`` grows by itself through
``version_id_col``) and raises :mod:`tasktracker.core.errors` exceptions:

- 404 ``task_not_found``: missing, not visible, or soft-deleted;
- 403 ``forbidden``: visible but the caller may not do this;
- 409 ``invalid_transition`` / ``not_deleted`` / ``not_in_trash`` / ``concurrent_update``;
- 412 ``precondition_failed``: ``If-Match`` does not name the current version;
- 422 ``validation_error`` (``details`` field -> messages) / ``idempotency_key_reused``.

Services never read the request: resources pass the parsed body, the
``If-Match`` versions and the ``Idempotency-Key``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm.exc import StaleDataError

from tasktracker.attachments.models import Attachment
from tasktracker.auth.models import User
from tasktracker.core import storage
from tasktracker.core.db import commit_keeping_loaded, refused_as
from tasktracker.core.errors import (
    ConcurrentUpdate, Conflict, Forbidden, PreconditionFailed, TaskNotFound, Unprocessable,
)
from tasktracker.core.fields import iso_utc
from tasktracker.core.types import utcnow
from tasktracker.events.services import diff, record_event
from tasktracker.extensions import db
from tasktracker.tasks.models import Reminder, Task
from tasktracker.tasks.permissions import can_edit, can_manage, get_visible_task, team_role
from tasktracker.tasks.services import idempotency, labels, recurring
from tasktracker.tasks.services.payload import record_task_event
from tasktracker.teams.models import Team, TeamMember

#: Allowed status changes (the status endpoint, PUT and PATCH). Anything else,
#: including a change to the same status on the status endpoint, is a 409.
TRANSITIONS = frozenset({
    ("todo", "in_progress"), ("in_progress", "done"), ("in_progress", "todo"),
    ("done", "in_progress"), ("todo", "done"),
})
#: Plain fields of PUT/PATCH, recorded in ``task.updated`` changes.
PLAIN_FIELDS = ("title", "description", "priority", "due_at", "team_id", "labels", "recurrence")
_NOT_A_MEMBER = {"assignee_id": ["The assignee is not a member of the task's team."]}


# --------------------------------------------------------------------------- checks


def _snapshot(task: Task) -> dict:
    """The JSON-ready values of the editable fields (for ``changes``)."""
    return {"title": task.title, "description": task.description, "priority": task.priority,
            "due_at": iso_utc(task.due_at), "team_id": task.team_id, "status": task.status,
            "assignee_id": task.assignee_id,
            "reminders": [iso_utc(r.remind_at) for r in task.reminders if r.sent_at is None],
            "labels": sorted(label.id for label in task.labels),
            "recurrence": task.recurrence}


def _check_if_match(task: Task, if_match: list[int] | None) -> None:
    """412 unless ``if_match`` is None (no header / ``*``) or names ``task.version``."""
    if if_match is not None and task.version not in if_match:
        raise PreconditionFailed(
            f'If-Match does not match the current version "{task.version}".',
            details={"current_version": task.version})


def _active_user(user_id: int | None, field: str = "assignee_id") -> User | None:
    """The active user ``user_id`` (None for None); 422 on ``field`` otherwise."""
    if user_id is None:
        return None
    user = db.session.get(User, user_id)
    if user is None or not user.active:
        raise Unprocessable(details={field: ["Unknown or inactive user."]})
    return user


def _check_team_choice(actor: User, team_id: int | None) -> None:
    """A task may be put in a team only by its members (site admins: any existing team)."""
    if team_id is None:
        return
    if actor.is_admin:
        if db.session.get(Team, team_id) is not None:
            return
    elif team_role(actor.id, team_id) is not None:
        return
    raise Unprocessable(details={"team_id": ["Unknown team, or you are not a member of it."]})


def _check_assignee(assignee: User | None, team_id: int | None) -> None:
    """A team task's assignee must be a member of the team (422 on ``assignee_id``)."""
    if assignee is not None and team_id is not None and team_role(assignee.id, team_id) is None:
        raise Unprocessable(details=_NOT_A_MEMBER)


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
        raise Unprocessable(details=_NOT_A_MEMBER)


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


# --------------------------------------------------------------------------- writing


def _stale(if_match: list[int] | None) -> Exception:
    """A concurrent writer changed the task first: 412 if the client sent ``If-Match``."""
    if if_match is not None:
        return PreconditionFailed("The task was changed by someone else (If-Match).")
    return ConcurrentUpdate("The task was changed by someone else; reload it and retry.")


def _write(if_match: list[int] | None, *, commit: bool = False) -> None:
    """Flush (or commit) the task change. A concurrent writer (``StaleDataError``)
    gives 412 if the client sent ``If-Match``, else 409 ``concurrent_update``; a
    row deleted meanwhile (``IntegrityError``, e.g. the new team or assignee) gives
    409. Nothing is written in any of these cases. The commit keeps the task
    loaded: the response renders what was just written."""
    with refused_as(lambda: _stale(if_match), on=StaleDataError), refused_as(ConcurrentUpdate):
        commit_keeping_loaded() if commit else db.session.flush()


def _save(actor: User, task: Task, if_match: list[int] | None,
          *events: tuple[str, dict[str, Any]], confirm_membership: bool = False,
          next_occurrence: bool = False) -> None:
    """Write a task change with its events, in one transaction: flush (so the
    events carry the new ``version``), re-check the assignee's membership under a
    lock if the team or assignee changed (:func:`_confirm_assignee_membership`),
    record each ``(type, extra payload)`` event, create the next occurrence of a
    recurring task that became ``done`` (``next_occurrence``: the claim was taken,
    :func:`recurring.claim_next_occurrence`), commit (:func:`_write` maps the
    refusals)."""
    _write(if_match)
    if confirm_membership:
        _confirm_assignee_membership(task)
    for type_, extra in events:
        record_task_event(type_, task, actor_id=actor.id, **extra)
    if next_occurrence:
        with refused_as(ConcurrentUpdate):  # the unique recurrence_of backs the claim
            recurring.create_next_occurrence(actor, task)
    _write(if_match, commit=True)


# --------------------------------------------------------------------------- create


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
    ``idempotency_key_reused`` (:mod:`tasktracker.tasks.services.idempotency`).
    """
    body_hash = idempotency.request_hash(raw_body if raw_body is not None else {})
    if idempotency_key is not None:
        earlier = idempotency.earlier_result(actor.id, idempotency_key, body_hash)
        if earlier is not None:
            return earlier, True

    _check_team_choice(actor, data["team_id"])
    assignee = _active_user(data["assignee_id"])
    _check_assignee(assignee, data["team_id"])

    record = None
    if idempotency_key is not None:
        record = idempotency.claim(actor.id, idempotency_key, body_hash)
        if record is None:  # a concurrent twin holds the key
            return idempotency.replay(actor.id, idempotency_key, body_hash), True

    now = utcnow()
    task = Task(title=data["title"], description=data["description"], priority=data["priority"],
                status="todo", due_at=data["due_at"], owner=actor, assignee=assignee,
                team_id=data["team_id"], created_at=now, updated_at=now,
                checklist=[])  # a new task has none: no SELECT when the payload reads it
    _set_status(task, data["status"], now)
    task.reminders = [Reminder(remind_at=t) for t in sorted(set(data["reminders"]))]
    task.labels = labels.labels_for_task(actor.id, data["team_id"], data.get("label_ids") or [])
    recurring.set_recurrence(task, data.get("recurrence"))
    db.session.add(task)
    try:
        db.session.flush()
        _confirm_assignee_membership(task)
        if record is not None:
            record.task_id = task.id
        record_task_event("task.created", task, actor_id=actor.id)
        commit_keeping_loaded()
    except sa.exc.IntegrityError:  # e.g. the team or assignee vanished meanwhile
        db.session.rollback()
        if idempotency_key is None:
            raise ConcurrentUpdate("A concurrent change prevented creating the task; retry.")
        return idempotency.replay(actor.id, idempotency_key, body_hash), True
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
    assignee = _active_user(data["assignee_id"]) if assignee_changes else task.assignee
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
    if "label_ids" in data:
        task.labels = labels.labels_for_task(task.owner_id, task.team_id, data["label_ids"])
    elif team_changes:  # labels of the old scope leave with it
        task.labels = labels.labels_in_scope(task.labels, task.owner_id, task.team_id)
    if "recurrence" in data:
        recurring.set_recurrence(task, data["recurrence"])
    recurring.check_due_keeps_recurrence(task)
    spawn = "status" in data and task.status == "done" and before["status"] != "done" \
        and recurring.claim_next_occurrence(task, now)

    changes = diff(before, _snapshot(task))
    if not changes:
        return task  # nothing changed: no write, no event, same version
    task.updated_at = now
    if "due_at" in changes and (task.due_at is None or task.due_at > now):
        task.overdue_notified_at = None  # a new deadline earns a new overdue notice
    plain = {k: v for k, v in changes.items() if k in PLAIN_FIELDS or k == "reminders"}
    events = [("task.updated", {"changes": plain})] if plain else []
    if "status" in changes:
        events.append(("task.status_changed", {"changes": {"status": changes["status"]}}))
    if "assignee_id" in changes:
        events.append(("task.assigned", {"changes": {"assignee_id": changes["assignee_id"]}}))
    _save(actor, task, if_match, *events,
          confirm_membership="team_id" in changes or "assignee_id" in changes,
          next_occurrence=spawn)
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
    spawn = status == "done" and recurring.claim_next_occurrence(task, now)
    _save(actor, task, if_match, ("task.status_changed", {"changes": {"status": [old, status]}}),
          next_occurrence=spawn)
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
    assignee = _active_user(assignee_id)
    _check_assignee(assignee, task.team_id)
    old = task.assignee_id
    task.assignee = assignee
    task.assignee_id = assignee_id
    task.updated_at = utcnow()
    _save(actor, task, if_match, ("task.assigned", {"changes": {"assignee_id": [old, assignee_id]}}),
          confirm_membership=True)
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
    _save(actor, task, if_match, ("task.deleted", {}))


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
        raise TaskNotFound()
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
    _save(actor, task, None, ("task.restored", {}))
    return task


def purge_task(actor: User, task_id: int) -> None:
    """``DELETE /api/tasks/<id>?permanent=true``: delete a trashed task for good.

    409 ``not_in_trash`` for a live task. The row goes; comments, reminders,
    attachments, notifications and idempotency keys follow through ``ON DELETE
    CASCADE``; attachment files are removed from ``UPLOAD_DIR`` after the commit.
    Writes ``task.purged`` (``{task_id, title, owner_id, assignee_id}``: the task
    is gone, so not its JSON).
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
    _save(actor, task, None)
    storage.delete_files(stored_names)
