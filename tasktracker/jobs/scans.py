"""The beat's scans: due reminders, overdue tasks, the outbox (DESIGN.md "Events");
:func:`run_all_scans` also purges expired idempotency keys
(:func:`tasktracker.tasks.services.purge_expired_idempotency_keys`; the beat does that hourly).

Each scan claims rows with one conditional UPDATE and writes the events in the
same transaction, so the work happens exactly once:

- two scans at once (two beats, the CLI next to the scheduler) never claim the
  same row: PostgreSQL ``FOR UPDATE SKIP LOCKED`` hands each one different rows,
  SQLite serialises writers and the ``... IS NULL`` condition is re-checked;
- a crash before the commit loses nothing (nothing was claimed); a crash after
  it leaves events that the outbox scan (:func:`redispatch_outbox`) fans out;
- the fan-out itself is idempotent (:func:`tasktracker.notifications.services.fan_out`).

Committed events reach the fan-out through the usual after-commit hook
(:func:`tasktracker.jobs.enqueue_fanout`).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import sqlalchemy as sa
from flask import Flask, current_app

from tasktracker.core.db import is_postgresql
from tasktracker.core.types import utcnow
from tasktracker.events.models import Event
from tasktracker.events.services import record_event
from tasktracker.extensions import db
from tasktracker.tasks.models import Reminder, Task

log = logging.getLogger(__name__)


def _batch_size(batch: int | None) -> int:
    return int(batch or current_app.config["SCAN_BATCH_SIZE"])


def _task_payload(task: Task) -> dict:
    """The task as ``GET /api/tasks/<id>`` returns it."""
    from tasktracker.tasks.schemas import task_schema

    return task_schema.dump(task)


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def _load_tasks(task_ids) -> dict[int, Task]:
    """Fresh copies of the tasks (identity map refreshed: the claim used Core SQL)."""
    if not task_ids:
        return {}
    tasks = db.session.scalars(
        sa.select(Task).where(Task.id.in_(set(task_ids))).execution_options(populate_existing=True)
    ).all()
    return {t.id: t for t in tasks}


def dispatch_due_reminders(now: datetime | None = None, *, batch: int | None = None) -> dict:
    """Claim every reminder with ``remind_at <= now`` and ``sent_at`` NULL, in batches.

    Per batch, one transaction: ``UPDATE reminders SET sent_at = now WHERE id IN
    (SELECT id ... ORDER BY remind_at LIMIT :batch [FOR UPDATE SKIP LOCKED])
    AND sent_at IS NULL RETURNING id, task_id, remind_at`` and one
    ``reminder.due {task, reminder_id, remind_at}`` event per claimed reminder.
    Reminders of tasks that are done or in the trash are marked sent without a
    ``reminder.due`` (nobody needs reminding of them; restoring a task does not
    replay reminders whose time passed in the trash); one ``reminder.skipped``
    per batch records them (no notification; it moves the data version of the
    task-list cache, since ``sent_at`` is part of a task's JSON). Loops until
    nothing is due.

    Returns ``{"sent": events written, "skipped": claimed without event}``.
    """
    now = now or utcnow()
    size = _batch_size(batch)
    table = Reminder.__table__
    sent = skipped = 0
    while True:
        due = (sa.select(table.c.id)
               .where(table.c.sent_at.is_(None), table.c.remind_at <= now)
               .order_by(table.c.remind_at, table.c.id).limit(size))
        if is_postgresql():
            due = due.with_for_update(skip_locked=True)
        claim = (sa.update(table)
                 .where(table.c.id.in_(due.scalar_subquery()), table.c.sent_at.is_(None))
                 .values(sent_at=now)
                 .returning(table.c.id, table.c.task_id, table.c.remind_at))
        try:
            rows = db.session.execute(claim).all()
            if not rows:
                db.session.rollback()
                break
            tasks = _load_tasks(r.task_id for r in rows)
            quiet = []  # (reminder_id, task_id) claimed without a reminder.due
            for reminder_id, task_id, remind_at in sorted(rows, key=lambda r: (r.remind_at, r.id)):
                task = tasks.get(task_id)
                if task is None or task.deleted_at is not None or task.status == "done":
                    skipped += 1
                    quiet.append((reminder_id, task_id))
                    continue
                record_event("reminder.due", actor_id=None, task_id=task.id, team_id=task.team_id,
                             payload={"task": _task_payload(task), "reminder_id": reminder_id,
                                      "remind_at": _iso(remind_at)})
                sent += 1
            if quiet:  # their sent_at shows in the tasks' JSON: the data version must move
                record_event("reminder.skipped", actor_id=None, payload={
                    "reminder_ids": [r for r, _ in quiet],
                    "task_ids": sorted({t for _, t in quiet})})
            db.session.commit()
        except BaseException:
            db.session.rollback()
            raise
    if sent or skipped:
        log.info("scans: %d reminder(s) due, %d skipped (task done or deleted)", sent, skipped)
    return {"sent": sent, "skipped": skipped}


def dispatch_overdue(now: datetime | None = None, *, batch: int | None = None) -> int:
    """Flag tasks that became overdue and write one ``task.overdue {task}`` each.

    Overdue: ``due_at <= now``, ``status != 'done'``, not in the trash and
    ``overdue_notified_at`` NULL. The claim sets ``overdue_notified_at`` (Core
    UPDATE: the task's ``version`` does not change, the flag is internal). If
    ``due_at`` later moves into the future, clearing ``overdue_notified_at``
    re-arms the notice. Returns the number of events written.
    """
    now = now or utcnow()
    size = _batch_size(batch)
    table = Task.__table__
    written = 0
    while True:
        overdue = (sa.select(table.c.id)
                   .where(table.c.due_at <= now, table.c.status != "done",
                          table.c.deleted_at.is_(None), table.c.overdue_notified_at.is_(None))
                   .order_by(table.c.due_at, table.c.id).limit(size))
        if is_postgresql():
            overdue = overdue.with_for_update(skip_locked=True)
        claim = (sa.update(table)
                 .where(table.c.id.in_(overdue.scalar_subquery()), table.c.overdue_notified_at.is_(None))
                 .values(overdue_notified_at=now)
                 .returning(table.c.id))
        try:
            ids = list(db.session.execute(claim).scalars())
            if not ids:
                db.session.rollback()
                break
            tasks = _load_tasks(ids)
            for task_id in sorted(ids):
                task = tasks[task_id]
                record_event("task.overdue", actor_id=None, task_id=task.id, team_id=task.team_id,
                             payload={"task": _task_payload(task)})
                written += 1
            db.session.commit()
        except BaseException:
            db.session.rollback()
            raise
    if written:
        log.info("scans: %d task(s) became overdue", written)
    return written


def redispatch_outbox(now: datetime | None = None, *, older_than: float | None = None,
                      batch: int | None = None) -> int:
    """Fan out events still undispatched ``older_than`` seconds (default
    ``OUTBOX_REDISPATCH_AFTER_SECONDS``) after they were written, oldest first,
    in batches. The delay leaves the fast path (the job enqueued after the
    commit) time to do it. Returns how many events this call fanned out; a
    failing event is logged and retried by the next scan.
    """
    from tasktracker.notifications.services import fan_out_many

    now = now or utcnow()
    if older_than is None:
        older_than = current_app.config["OUTBOX_REDISPATCH_AFTER_SECONDS"]
    cutoff = now - timedelta(seconds=older_than)
    size = _batch_size(batch)
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
        done += sum(r.claimed for r in fan_out_many(seqs))  # never raises: failures are logged
        last_seq = seqs[-1]
    if done:
        log.info("scans: outbox re-dispatched %d event(s)", done)
    return done


def run_all_scans(app: Flask | None = None, now: datetime | None = None) -> dict:
    """One pass of every scan (the beat's work; ``flask reminders dispatch``).

    Pushes an app context of ``app`` (default: the current app). Returns
    ``{"reminders": reminder.due events written, "overdue": task.overdue
    events written, "redispatched": outbox events fanned out, "purged_keys":
    expired idempotency keys deleted}``. In embedded (thread) mode it returns
    once the fan-outs it queued have run.
    """
    from tasktracker import jobs
    from tasktracker.tasks.services import purge_expired_idempotency_keys

    app = app or current_app._get_current_object()
    with app.app_context():
        reminders = dispatch_due_reminders(now)["sent"]
        overdue = dispatch_overdue(now)
        redispatched = redispatch_outbox(now)
        purged = purge_expired_idempotency_keys(now)
        jobs.wait_idle()
    return {"reminders": reminders, "overdue": overdue, "redispatched": redispatched, "purged_keys": purged}
