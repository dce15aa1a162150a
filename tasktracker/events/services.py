"""Writing events and the outbox (DESIGN.md "Events: one table, four uses").

:func:`record_event` adds the row to the current session, so it commits or
rolls back with the change it describes. After a successful commit the new
events' seqs are handed to the app's event consumer, which ``create_app``
registers (:func:`register_event_hooks`; the fan-out's hand-off,
:func:`tasktracker.jobs.enqueue_fanout`: the outbox's fast path); the outbox scan
(:func:`redispatch_outbox`) fans out whatever that missed, through the fan-out
``create_app`` registers too. This package imports no other domain: neither
``jobs`` nor ``notifications``.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any, Callable

import sqlalchemy as sa
from flask import Flask, current_app, has_app_context
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

from tasktracker.core.db import scan_batch_size
from tasktracker.core.hotcache import VERSION, defer_invalidation
from tasktracker.core.types import utcnow
from tasktracker.events.models import Event
from tasktracker.extensions import db

log = logging.getLogger(__name__)

_PENDING_KEY = "tasktracker_new_events"
_CONSUMER_KEY = "tt_event_consumer"
_FAN_OUT_KEY = "tt_event_fan_out"
_WRITERS_KEY = "tt_event_outbox_writers"


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


def _before_commit(session: Session) -> None:
    """Run the app's outbox writers (:func:`register_event_writer`) on each event this
    transaction wrote, inside it: their rows commit or roll back with the change."""
    events = session.info.get(_PENDING_KEY)
    writers = current_app.extensions.get(_WRITERS_KEY) if has_app_context() else None
    if not events or not writers:
        return
    for event in list(events):
        for writer in writers:
            writer(event)


def register_event_writer(app: Flask, writer: Callable[[Event], object]) -> None:
    """Make ``writer(event)`` run, just before each commit of ``app``'s sessions, for
    every event that transaction wrote (:func:`record_event`), in that transaction
    (``create_app`` registers :func:`tasktracker.webhooks.services.deliveries_for_event`:
    the webhook deliveries are outbox rows written with the change). ``writer`` may
    add rows and flush; if it raises, the commit fails and the change is rolled back.
    This package imports none of the writers."""
    writers = app.extensions.setdefault(_WRITERS_KEY, [])
    if writer not in writers:
        writers.append(writer)
    if not sa_event.contains(Session, "before_commit", _before_commit):
        sa_event.listen(Session, "before_commit", _before_commit)


def register_event_hooks(app: Flask, consumer: Callable[[list[int]], None],
                         fan_out: Callable[[list[int]], int]) -> None:
    """Wire ``app``'s events to their readers (``create_app`` does it) and install
    the session hooks once.

    ``consumer(seqs)`` receives the seqs of the events each commit wrote, after the
    commit (it must not raise): the outbox's fast path. ``fan_out(seqs)`` fans out
    undispatched events now and returns how many it claimed (it must not raise
    for a failing event): what :func:`redispatch_outbox` runs.
    """
    app.extensions[_CONSUMER_KEY] = consumer
    app.extensions[_FAN_OUT_KEY] = fan_out
    if not sa_event.contains(Session, "after_commit", _after_commit):
        sa_event.listen(Session, "after_commit", _after_commit)
        sa_event.listen(Session, "after_soft_rollback", lambda s, prev: _after_rollback(s))


def task_events_query(task_id: int) -> sa.Select:
    """Events of one task, newest first (the activity log)."""
    return sa.select(Event).where(Event.task_id == task_id).order_by(Event.seq.desc())


def redispatch_outbox(now: datetime | None = None, *, older_than: float | None = None,
                      batch: int | None = None) -> int:
    """The outbox scan: fan out events still undispatched ``older_than`` seconds
    (default ``OUTBOX_REDISPATCH_AFTER_SECONDS``) after they were written, oldest
    first, ``batch`` (default ``SCAN_BATCH_SIZE``) per call of the app's fan-out
    (:func:`register_event_hooks`). The delay leaves the fast path (the job
    enqueued after the commit) time to do it. Returns how many events this call
    fanned out; a failing event is logged by the fan-out and retried by the next scan.
    """
    now = now or utcnow()
    if older_than is None:
        older_than = current_app.config["OUTBOX_REDISPATCH_AFTER_SECONDS"]
    cutoff = now - timedelta(seconds=older_than)
    size = scan_batch_size(batch)
    fan_out = current_app.extensions[_FAN_OUT_KEY]
    done = 0
    last_seq = 0
    while True:
        seqs = list(db.session.scalars(
            sa.select(Event.seq)
            .where(Event.dispatched_at.is_(None), Event.created_at <= cutoff, Event.seq > last_seq)
            .order_by(Event.seq).limit(size)))
        db.session.rollback()  # end the read transaction before the fan-outs' own
        if not seqs:
            break
        done += fan_out(seqs)
        last_seq = seqs[-1]
    if done:
        log.info("scans: outbox re-dispatched %d event(s)", done)
    return done
