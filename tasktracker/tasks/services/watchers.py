"""Watchers and mentions (api-contract.md v1.1, "Watchers and mentions").

Anyone who sees a task may watch it. Watchers get the notifications an assignee
gets, never for their own actions and none once they no longer see the task:
the fan-out asks :func:`watchers_who_see` at delivery time, so a watcher who lost
access is simply not a recipient (the row stays, harmless, and counts again if
access comes back).

A mention is ``@username`` in a comment body, case-insensitive, at a word
boundary. Only users who see the task are mentioned (stored and listed); anyone
else is ignored, so a mention reveals nothing.
"""

from __future__ import annotations

import re

import sqlalchemy as sa

from tasktracker.auth.models import User
from tasktracker.core.db import dialect_insert
from tasktracker.events.services import record_event
from tasktracker.extensions import db
from tasktracker.tasks.models import Task, TaskWatcher
from tasktracker.tasks.permissions import get_visible_task, viewers_condition

#: ``@name`` not preceded by a word character (so e-mail addresses don't mention),
#: with the username characters of :class:`tasktracker.auth.schemas` (3..32 of
#: ``[A-Za-z0-9_.-]``); a trailing ``.`` or ``-`` is punctuation, not the name.
MENTION = re.compile(r"(?<![\w@])@([A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,30}[A-Za-z0-9_])?)(?![\w])")


def _record_watching(type_: str, actor: User, task: Task) -> None:
    # ``GET /api/tasks?watching=`` depends on it: a new data version for the list cache.
    # No task_id: the task's activity log is about the task, not its audience.
    record_event(type_, actor_id=actor.id, team_id=task.team_id,
                 payload={"task_id": task.id, "user_id": actor.id})


def watch(actor: User, task_id: int) -> None:
    """``PUT /api/tasks/<id>/watchers/me``: start watching (idempotent; 404 if not visible).
    Concurrent twins are settled by the primary key (``ON CONFLICT DO NOTHING``)."""
    task = get_visible_task(actor, task_id, collections=False)
    added = db.session.execute(dialect_insert(TaskWatcher).values(task_id=task.id, user_id=actor.id)
                               .on_conflict_do_nothing(index_elements=["task_id", "user_id"])).rowcount
    if added:
        _record_watching("task.watched", actor, task)
    db.session.commit()


def unwatch(actor: User, task_id: int) -> None:
    """``DELETE /api/tasks/<id>/watchers/me``: stop watching (idempotent; 404 if not visible)."""
    task = get_visible_task(actor, task_id, collections=False)
    removed = db.session.execute(sa.delete(TaskWatcher).where(
        TaskWatcher.task_id == task.id, TaskWatcher.user_id == actor.id)).rowcount
    if removed:
        _record_watching("task.unwatched", actor, task)
    db.session.commit()


def watchers_query(actor: User, task_id: int) -> sa.Select:
    """``GET /api/tasks/<id>/watchers``: the active watchers who see the task now, by
    username (someone who lost access is not listed, and not notified)."""
    task = get_visible_task(actor, task_id, collections=False)
    return (sa.select(User).join(TaskWatcher, TaskWatcher.user_id == User.id)
            .where(TaskWatcher.task_id == task.id, User.active.is_(True), viewers_condition(task))
            .order_by(sa.func.lower(User.username), User.id))


def watching_condition(user: User):
    """SQL condition for ``GET /api/tasks?watching=true``."""
    return Task.id.in_(sa.select(TaskWatcher.task_id).where(TaskWatcher.user_id == user.id))


def watchers_who_see(task: Task) -> list[int]:
    """Ids of the active watchers of ``task`` who see it now (fan-out recipients)."""
    return list(db.session.scalars(
        sa.select(User.id).join(TaskWatcher, TaskWatcher.user_id == User.id)
        .where(TaskWatcher.task_id == task.id, User.active.is_(True), viewers_condition(task))
        .order_by(User.id)))


def mentioned_users(body: str, task: Task) -> list[User]:
    """The active users named ``@username`` in ``body`` who see ``task``, by id."""
    names = {name.lower() for name in MENTION.findall(body)}
    if not names:
        return []
    return list(db.session.scalars(
        sa.select(User).where(sa.func.lower(User.username).in_(names), User.active.is_(True),
                              viewers_condition(task)).order_by(User.id)))

