"""The fan-out of events (DESIGN.md "Events: one table, four uses", 3. Fan-out).

:func:`fan_out` turns one committed event into

(a) notification rows, one per (event, recipient)
    (:func:`tasktracker.notifications.services.recipients.plan_notifications`):
    ``UNIQUE(event_seq, user_id)`` plus ``INSERT ... ON CONFLICT DO NOTHING``
    means a redelivered job creates nothing twice. The actor is never notified
    of their own action.
(b) Socket.IO events through the registered realtime layer (:func:`register_realtime`)
    *after* the commit (the resource as REST returns it plus ``actor_id`` and
    ``seq``, and ``notification:new`` to each recipient), and room changes
    (``sync_membership``) for membership events.

Events are claimed with a conditional ``UPDATE events SET dispatched_at=now
WHERE seq IN (...) AND dispatched_at IS NULL RETURNING seq`` in the same
transaction as the inserts (:func:`fan_out_many` does up to
:data:`FANOUT_CHUNK` events per transaction): of two workers on the same event
only one claims it (PostgreSQL: ``FOR UPDATE SKIP LOCKED``, the other skips the
row; SQLite: writers are serialised and the ``IS NULL`` re-check fails). A crash
before the commit leaves the events undispatched for the outbox scan; a crash
between the commit and the emits loses only the live push (clients catch up
with ``last_seq`` replay).

Events of types without a rule are still marked dispatched. Task events whose
task was purged before the fan-out ran create nothing and emit nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from flask import Flask, current_app

from tasktracker.auth.models import User
from tasktracker.core.db import dialect_insert, skip_locked
from tasktracker.core.types import utcnow
from tasktracker.events.models import Event
from tasktracker.extensions import db
from tasktracker.mail import outbox as mail_outbox
from tasktracker.notifications.models import Notification
from tasktracker.notifications.schemas import notification_schema
from tasktracker.notifications.services import recipients
from tasktracker.tasks.models import WITHOUT_COLLECTIONS, Task
from tasktracker.teams.models import Team

log = logging.getLogger(__name__)

MESSAGE_MAX = 500
_REALTIME_KEY = "tasktracker.fanout_realtime"


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
    return claimed_count(results)


def claimed_count(results: list[FanoutResult]) -> int:
    """How many of the fan-out ``results`` claimed their event."""
    return sum(r.claimed for r in results)


def redispatch(seqs) -> int:
    """The outbox scan's fan-out (``create_app`` registers it with
    :func:`tasktracker.events.services.register_event_hooks`): :func:`fan_out_many`
    of ``seqs``; returns how many it claimed. Never raises for a failing event."""
    return claimed_count(fan_out_many(seqs))


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
        # the events' tasks that still exist, loaded once: while ``tasks`` holds them, the
        # rules' reads of a task (recipients' ``live_task``) find them in the session
        tasks = _live_tasks({e.task_id for e in events if e.task_id is not None})
        alive = set(tasks)
        live = [e for e in events if e.task_id is None or e.task_id in alive]
        planned = {e.seq: recipients.plan_notifications(e) for e in live}
        rows = _notification_rows(live, planned)
        by_event: dict[int, list[Notification]] = {}
        inserted = _load(_insert_notifications(rows))
        for notification in inserted:
            by_event.setdefault(notification.event_seq, []).append(notification)
        # contract v1.1 "Email": the mail rows are written in this transaction, so they
        # exist if and only if the notifications do; the workers' mail scan sends them.
        mail_outbox.enqueue_for_notifications(inserted, now)
        for event in events:
            result = results[event.seq]
            result.claimed = True
            result.memberships = recipients.plan_memberships(event)
            result.rechecks = recipients.plan_rechecks(event)
            if event.task_id is not None and event.task_id not in alive:
                continue  # the task was purged meanwhile: nothing to tell anyone
            mine = by_event.get(event.seq, [])
            result.notification_ids = [n.id for n in mine]
            result.emits = recipients.plan_emits(event) + [
                ("notification:new", notification_schema.dump(n), [f"user:{n.user_id}"]) for n in mine]
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
    pick = (sa.select(events.c.seq).where(events.c.seq.in_(seqs), events.c.dispatched_at.is_(None))
            .order_by(events.c.seq))
    claim = (sa.update(events)
             .where(events.c.seq.in_(skip_locked(pick).scalar_subquery()), events.c.dispatched_at.is_(None))
             .values(dispatched_at=now)
             .returning(events.c.seq))
    return sorted(db.session.execute(claim).scalars())


def register_realtime(app: Flask, target: Any) -> None:
    """Make the fan-out of ``app`` push through ``target`` (``create_app`` passes
    :mod:`tasktracker.realtime`): its ``emit``, ``sync_membership`` and
    ``recheck_task_room``, looked up at each call. Without one, nothing is pushed."""
    app.extensions[_REALTIME_KEY] = target


def _realtime(name: str, *args) -> None:
    """Call ``<registered realtime>.<name>(*args)`` if it exists; log (never raise) failures."""
    fn = getattr(current_app.extensions.get(_REALTIME_KEY), name, None)
    if fn is None:
        log.debug("fan-out: realtime.%s is not available; skipped", name)
        return
    try:
        fn(*args)
    except Exception:  # noqa: BLE001 - the notifications are committed; a lost push is replayed
        log.exception("fan-out: realtime.%s%r failed", name, args[:1])


def _existing_ids(table: str, ids: set[int]) -> set[int]:
    """Which of ``ids`` exist in ``teams`` / ``users`` (one query)."""
    if not ids:
        return set()
    column = {"teams": Team.id, "users": User.id}[table]
    return set(db.session.scalars(sa.select(column).where(column.in_(ids))))


def _live_tasks(ids: set[int]) -> dict[int, Task]:
    """The tasks among ``ids`` that still exist, by id (one query; columns and people,
    :data:`~tasktracker.tasks.models.WITHOUT_COLLECTIONS`)."""
    if not ids:
        return {}
    return {task.id: task for task in db.session.scalars(
        sa.select(Task).where(Task.id.in_(ids)).options(*WITHOUT_COLLECTIONS))}


def _load(ids: list[int]) -> list[Notification]:
    if not ids:
        return []
    return list(db.session.scalars(
        sa.select(Notification).where(Notification.id.in_(ids)).order_by(Notification.id)))


def _notification_rows(events: list[Event], planned: dict[int, list[recipients.Planned]]) -> list[dict]:
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
    stmt = (dialect_insert(table)
            .on_conflict_do_nothing(index_elements=["event_seq", "user_id"])
            .returning(table.c.id))
    # executemany + RETURNING: SQLAlchemy batches it into multi-row INSERTs ("insertmanyvalues")
    return sorted(db.session.execute(stmt, rows).scalars())
