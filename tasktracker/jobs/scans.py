"""One pass of the beat's scans (the embedded scheduler's work; ``flask reminders
dispatch``). The scans themselves live with their domains; this module only
calls them:

- due reminders and overdue tasks:
  :func:`tasktracker.tasks.services.dispatch_due_reminders`,
  :func:`tasktracker.tasks.services.dispatch_overdue`;
- the outbox: :func:`tasktracker.events.services.redispatch_outbox`;
- due webhook deliveries (retries, missed hand-offs):
  :func:`tasktracker.webhooks.worker.run_due_deliveries`;
- mail: due digests, expired account tokens, then the due mail
  (:func:`tasktracker.mail.work.scan`);
- expired idempotency keys: :func:`tasktracker.tasks.services.purge_expired_idempotency_keys`
  (the Celery beat does that hourly).
"""

from __future__ import annotations

from datetime import datetime

from flask import Flask, current_app

from tasktracker import jobs
from tasktracker.events.services import redispatch_outbox
from tasktracker.mail import work as mail_work
from tasktracker.tasks.services import (
    dispatch_due_reminders, dispatch_overdue, purge_expired_idempotency_keys,
)
from tasktracker.webhooks.worker import run_due_deliveries


def run_all_scans(app: Flask | None = None, now: datetime | None = None) -> dict:
    """One pass of every scan.

    Pushes an app context of ``app`` (default: the current app). Returns
    ``{"reminders": reminder.due events written, "overdue": task.overdue
    events written, "redispatched": outbox events fanned out, "purged_keys":
    expired idempotency keys deleted, "mail": the mail pass's counts}``. In embedded (thread) mode it returns
    once the fan-outs it queued have run.
    """
    app = app or current_app._get_current_object()
    with app.app_context():
        reminders = dispatch_due_reminders(now)["sent"]
        overdue = dispatch_overdue(now)
        redispatched = redispatch_outbox(now)
        purged = purge_expired_idempotency_keys(now)
        jobs.wait_idle()
        webhooks = run_due_deliveries()
        mail = mail_work.scan(now)  # after the fan-outs: their mail rows exist by now
    return {"reminders": reminders, "overdue": overdue, "redispatched": redispatched, "purged_keys": purged,
            "webhook_deliveries": webhooks, "mail": mail}
