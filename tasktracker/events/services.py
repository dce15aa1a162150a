"""Writing events (DESIGN.md "Events: one table, four uses").

:func:`record_event` adds the row to the current session, so it commits or
rolls back with the change it describes. After a successful commit the new
events' seqs are handed to the app's event consumer, which ``create_app``
registers (:func:`register_event_hooks`; the fan-out's hand-off,
:func:`tasktracker.jobs.enqueue_fanout`: the outbox's fast path); the outbox scan
re-enqueues whatever that missed. This package never imports ``jobs``.
"""

from __future__ import annotations

from typing import Any, Callable

import sqlalchemy as sa
from flask import Flask, current_app, has_app_context
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

from tasktracker.core.hotcache import VERSION, defer_invalidation
from tasktracker.events.models import Event
from tasktracker.extensions import db

_PENDING_KEY = "tasktracker_new_events"


def record_event(type: str, *, actor_id: int | None, task_id: int | None = None,
                 team_id: int | None = None, payload: dict[str, Any] | None = None) -> Event:
    """Add an event row to the session (not flushed, not committed).

    ``type`` is dotted (``task.created``, ``task.updated``, ``comment.created``...);
    ``payload`` must be JSON-serialisable (use ISO strings for times).
    """
    event = Event(type=type, actor_id=actor_id, task_id=task_id, team_id=team_id,
                  payload=payload or {})
    db.session.add(event)
    db.session.info.setdefault(_PENDING_KEY, []).append(event)
    defer_invalidation(db.session, VERSION)  # a new data version, in every process
    return event


def diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, list]:
    """``{field: [old, new]}`` for every field whose value changed."""
    return {k: [old.get(k), v] for k, v in new.items() if old.get(k) != v}


def _after_commit(session: Session) -> None:
    events = session.info.pop(_PENDING_KEY, None)
    if not events:
        return
    seqs = [e.seq for e in events if e.seq is not None]
    consumer = current_app.extensions.get(_CONSUMER_KEY) if has_app_context() else None
    if seqs and consumer is not None:
        consumer(seqs)


def _after_rollback(session: Session) -> None:
    session.info.pop(_PENDING_KEY, None)


_CONSUMER_KEY = "tt_event_consumer"


def register_event_hooks(app: Flask, consumer: Callable[[list[int]], None]) -> None:
    """Make ``consumer(seqs)`` receive the seqs of the events each commit of ``app``
    wrote (after the commit; it must not raise), and install the session hooks once."""
    app.extensions[_CONSUMER_KEY] = consumer
    if not sa_event.contains(Session, "after_commit", _after_commit):
        sa_event.listen(Session, "after_commit", _after_commit)
        sa_event.listen(Session, "after_soft_rollback", lambda s, prev: _after_rollback(s))


def task_events_query(task_id: int) -> sa.Select:
    """Events of one task, newest first (the activity log)."""
    return sa.select(Event).where(Event.task_id == task_id).order_by(Event.seq.desc())
