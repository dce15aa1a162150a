"""The beat's task scans: due reminders and overdue tasks (DESIGN.md "Events").

Each scan claims rows with one conditional UPDATE and writes the events in the
same transaction, so the work happens exactly once:

- two scans at once (two beats, the CLI next to the scheduler) never claim the
  same row: PostgreSQL ``FOR UPDATE SKIP LOCKED`` hands each one different rows,
  SQLite serialises writers and the ``... IS NULL`` condition is re-checked;
- a crash before the commit loses nothing (nothing was claimed); a crash after
  it leaves events that the outbox scan
  (:func:`tasktracker.events.services.redispatch_outbox`) fans out.

Committed events reach the fan-out through the app's after-commit consumer.
:mod:`tasktracker.jobs` schedules these scans; they know nothing of it.
"""

from __future__ import annotations

import logging
from datetime import datetime

import sqlalchemy as sa

from tasktracker.core.db import scan_batch_size, skip_locked
from tasktracker.core.fields import iso_utc
from tasktracker.core.types import utcnow
from tasktracker.events.services import record_event
from tasktracker.extensions import db
from tasktracker.tasks.models import Reminder, Task
from tasktracker.tasks.services.payload import record_task_event

log = logging.getLogger(__name__)


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
    size = scan_batch_size(batch)
    table = Reminder.__table__
    sent = skipped = 0
    while True:
        due = (sa.select(table.c.id)
               .where(table.c.sent_at.is_(None), table.c.remind_at <= now)
               .order_by(table.c.remind_at, table.c.id).limit(size))
        claim = (sa.update(table)
                 .where(table.c.id.in_(skip_locked(due).scalar_subquery()), table.c.sent_at.is_(None))
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
                record_task_event("reminder.due", task, actor_id=None, reminder_id=reminder_id,
                                  remind_at=iso_utc(remind_at))
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
    size = scan_batch_size(batch)
    table = Task.__table__
    written = 0
    while True:
        overdue = (sa.select(table.c.id)
                   .where(table.c.due_at <= now, table.c.status != "done",
                          table.c.deleted_at.is_(None), table.c.overdue_notified_at.is_(None))
                   .order_by(table.c.due_at, table.c.id).limit(size))
        claim = (sa.update(table)
                 .where(table.c.id.in_(skip_locked(overdue).scalar_subquery()),
                        table.c.overdue_notified_at.is_(None))
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
                record_task_event("task.overdue", task, actor_id=None)
                written += 1
            db.session.commit()
        except BaseException:
            db.session.rollback()
            raise
    if written:
        log.info("scans: %d task(s) became overdue", written)
    return written
