"""Celery tasks (production). They take ids only and are idempotent: with
``acks_late`` a task killed mid-way runs again, and every step claims its work
with a conditional UPDATE (the scans of :mod:`tasktracker.tasks.services.reminders`
and :func:`tasktracker.events.services.redispatch_outbox`, and
:func:`tasktracker.notifications.services.fan_out`).

Defined with ``shared_task`` (Flask's Celery example), so each app's Celery
instance (``app.extensions["celery"]``) has them; each run is wrapped in an app
context by the ``FlaskTask`` of :func:`tasktracker.jobs.setup.celery_init_app`.
"""

from __future__ import annotations

import logging

from celery import shared_task

from tasktracker.events import services as events
from tasktracker.extensions import db
from tasktracker.jobs import (
    DELIVER_MAIL_TASK, DELIVER_WEBHOOK_TASK, FANOUT_TASK, MAIL_JOB_TASK, PURGE_IDEMPOTENCY_KEYS_TASK,
    REDISPATCH_OUTBOX_TASK, SCAN_MAIL_TASK, SCAN_OVERDUE_TASK, SCAN_REMINDERS_TASK, SCAN_WEBHOOKS_TASK,
)
from tasktracker.mail import work as mail_work
from tasktracker.notifications.services import fan_out_job
from tasktracker.tasks import services as tasks
from tasktracker.webhooks import worker as webhooks

log = logging.getLogger(__name__)


@shared_task(name=FANOUT_TASK, ignore_result=True)
def fanout_events(seqs: list[int]) -> int:
    """Fan out the events ``seqs`` and catch up with newer undispatched ones
    (:func:`~tasktracker.notifications.services.fan_out_job`); returns how many this
    run claimed. A failing event is logged and left to the outbox scan."""
    return fan_out_job(seqs)


@shared_task(name=SCAN_REMINDERS_TASK, ignore_result=True)
def scan_reminders() -> dict:
    """Claim due reminders and write their ``reminder.due`` events."""
    return tasks.dispatch_due_reminders()


@shared_task(name=SCAN_OVERDUE_TASK, ignore_result=True)
def scan_overdue() -> int:
    """Flag newly overdue tasks and write their ``task.overdue`` events."""
    return tasks.dispatch_overdue()


@shared_task(name=REDISPATCH_OUTBOX_TASK, ignore_result=True)
def redispatch_outbox() -> int:
    """Fan out events left undispatched longer than ``OUTBOX_REDISPATCH_AFTER_SECONDS``."""
    return events.redispatch_outbox()


@shared_task(name=PURGE_IDEMPOTENCY_KEYS_TASK, ignore_result=True)
def purge_idempotency_keys() -> int:
    """Delete idempotency keys older than ``IDEMPOTENCY_TTL``; returns how many."""
    return tasks.purge_expired_idempotency_keys()


@shared_task(name=DELIVER_WEBHOOK_TASK, ignore_result=True)
def deliver_webhooks(delivery_ids: list[int], queued: str | None = None) -> int:
    """One attempt of each webhook delivery of ``delivery_ids``, as one batch (one
    claim, the POSTs concurrently, one result write:
    :func:`~tasktracker.webhooks.worker.attempt_deliveries`; idempotent: each row's
    claim lets one attempt through, a redelivered message finds nothing due).
    ``queued``: the scan's hold token, when the scan enqueued them. A batch whose
    claim or result write raises (database down) is logged and left to the scan
    (claimed rows once their lease runs out). Returns how many were attempted."""
    try:
        return sum(status is not None for status in webhooks.attempt_deliveries(delivery_ids, queued))
    except Exception:  # noqa: BLE001 - the rows stay pending
        log.exception("jobs: webhook deliveries %s failed to run", delivery_ids)
        db.session.rollback()
        return 0


#: Deliveries per message of the scan (several workers share a backlog).
SCAN_MESSAGE_IDS = 20


@shared_task(name=SCAN_WEBHOOKS_TASK, ignore_result=True)
def scan_webhook_deliveries() -> int:
    """Hold the due deliveries (retries, missed hand-offs, expired leases) and enqueue
    them, :data:`SCAN_MESSAGE_IDS` per ``deliver_webhooks`` message; returns how many.
    A held delivery is not enqueued again for ``QUEUE_HOLD_SECONDS``, so a backlog in
    the broker is not multiplied."""
    from flask import current_app

    ids, token = webhooks.queue_due_deliveries(current_app.config["SCAN_BATCH_SIZE"])
    for start in range(0, len(ids), SCAN_MESSAGE_IDS):
        deliver_webhooks.apply_async(args=[ids[start:start + SCAN_MESSAGE_IDS], token], retry=False,
                                     timeout=current_app.config["BROKER_PUBLISH_TIMEOUT_SECONDS"])
    return len(ids)


@shared_task(name=MAIL_JOB_TASK, ignore_result=True)
def mail_job(name: str, args: list) -> object:
    """A mail endpoint's background half (:func:`tasktracker.mail.work.run_job`:
    password reset, verification); idempotent by its request id."""
    return mail_work.run_job(name, args)


@shared_task(name=SCAN_MAIL_TASK, ignore_result=True)
def scan_mail() -> dict:
    """The beat's mail pass: due digests and the token purge
    (:func:`tasktracker.mail.work.prepare`), then ``MAIL_SEND_CONCURRENCY``
    ``deliver_mail`` tasks that split the due rows between the workers by their claims."""
    from flask import current_app

    result = mail_work.prepare()
    for _ in range(max(1, int(current_app.config["MAIL_SEND_CONCURRENCY"]))):
        deliver_mail.apply_async(expires=max(2 * float(current_app.config["SCAN_INTERVAL_SECONDS"]), 10.0))
    return result


@shared_task(name=DELIVER_MAIL_TASK, ignore_result=True)
def deliver_mail() -> dict:
    """Claim and send due mail until none is due (:func:`tasktracker.mail.work.deliver_due`);
    several at once never send one row twice."""
    return mail_work.deliver_due()
