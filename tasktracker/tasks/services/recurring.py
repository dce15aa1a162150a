"""Recurring tasks (api-contract.md v1.1, "Recurring tasks").

A task with ``recurrence`` that becomes ``done`` gets its next occurrence,
exactly once whatever happens after (reopen and redo, a retried request, two
processes): :func:`claim_next_occurrence` sets ``next_occurrence_created_at`` in
the same versioned UPDATE that makes the task ``done`` (``version_id_col``: of
concurrent writers of the task, one wins and the others get 409/412), so the
claim is taken once; and the unique index on ``recurrence_of`` backs it in the
database (a second occurrence of one task cannot be stored). The arithmetic is
:mod:`tasktracker.tasks.recurrence` (dateutil, the owner's timezone).
"""

from __future__ import annotations

from datetime import datetime

from tasktracker.auth.models import User
from tasktracker.core.errors import Unprocessable
from tasktracker.core.types import utcnow
from tasktracker.extensions import db
from tasktracker.tasks.models import ChecklistItem, Reminder, Task
from tasktracker.tasks.recurrence import InvalidRule, next_occurrence, parse_rule
from tasktracker.tasks.services.payload import record_task_event


def set_recurrence(task: Task, recurrence: dict | None) -> None:
    """Validate and set ``recurrence`` (``{rule, from}`` or None) on ``task``, whose
    ``due_at`` is already the new one. 422 on ``recurrence`` when there is no
    ``due_at``, the rule is not one the contract accepts (the message names the
    problem), or its ``UNTIL`` is before ``due_at``."""
    if recurrence is None:
        task.recurrence_rule = task.recurrence_from = None
        return
    if task.due_at is None:
        raise Unprocessable(details={"recurrence": ["A recurring task needs a due_at."]})
    try:
        rule = parse_rule(recurrence["rule"])
    except InvalidRule as exc:
        raise Unprocessable(details={"recurrence": [f"Invalid rule {recurrence['rule']!r}: {exc}"]})
    if rule.until is not None and rule.until < task.due_at:
        raise Unprocessable(details={"recurrence": ["UNTIL is before the task's due_at."]})
    task.recurrence_rule, task.recurrence_from = rule.text, recurrence["from"]


def check_due_keeps_recurrence(task: Task) -> None:
    """422 if a change leaves a recurring task without a ``due_at``."""
    if task.recurrence_rule is not None and task.due_at is None:
        raise Unprocessable(details={"due_at": [
            "A recurring task needs a due_at (set recurrence to null first)."]})


def claim_next_occurrence(task: Task, now: datetime) -> bool:
    """Call when ``task`` becomes ``done``, before its UPDATE is flushed: True if this
    transaction is the one to create its next occurrence (sets the claim)."""
    if task.recurrence_rule is None or task.next_occurrence_created_at is not None:
        return False
    task.next_occurrence_created_at = now
    return True


def create_next_occurrence(actor: User, task: Task) -> Task | None:
    """The finished ``task``'s next occurrence, added to the session with its
    ``task.created`` event (after ``task``'s own UPDATE is flushed), or None when
    the rule's ``COUNT`` or ``UNTIL`` is exhausted.

    Same title, description, priority, team, assignee (if still active), labels,
    recurrence and checklist (all unchecked); ``recurrence_of`` = ``task.id``;
    ``due_at`` per the rule, in the owner's timezone; reminders keep their offset
    to ``due_at`` (those that would already be past are dropped).
    """
    now = utcnow()
    nxt = next_occurrence(parse_rule(task.recurrence_rule), task.recurrence_from,
                          due_at=task.due_at, completed_at=task.completed_at or now,
                          index=task.recurrence_index, tz=task.owner.timezone, now=now)
    if nxt is None:
        return None
    assignee = task.assignee if task.assignee is not None and task.assignee.active else None
    reminders = sorted({nxt.due_at + (r.remind_at - task.due_at) for r in task.reminders})
    new = Task(title=task.title, description=task.description, priority=task.priority,
               status="todo", due_at=nxt.due_at, owner=task.owner, assignee=assignee,
               team_id=task.team_id, created_at=now, updated_at=now,
               recurrence_rule=task.recurrence_rule, recurrence_from=task.recurrence_from,
               recurrence_index=nxt.index, recurrence_of=task.id,
               labels=list(task.labels),
               checklist=[ChecklistItem(text=i.text, done=False, position=i.position)
                          for i in task.checklist],
               reminders=[Reminder(remind_at=t) for t in reminders if t > now])
    db.session.add(new)
    db.session.flush()
    record_task_event("task.created", new, actor_id=actor.id)
    return new
