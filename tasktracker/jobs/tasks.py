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

from celery import shared_task

from tasktracker.events import services as events
from tasktracker.jobs import (
    DELIVER_WEBHOOK_TASK, FANOUT_TASK, SCAN_WEBHOOKS_TASK, PURGE_IDEMPOTENCY_KEYS_TASK, REDISPATCH_OUTBOX_TASK, SCAN_OVERDUE_TASK,
    SCAN_REMINDERS_TASK,
)
from tasktracker.notifications.services import fan_out_job
from tasktracker.tasks import services as tasks
from tasktracker.webhooks import worker as webhooks


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
def deliver_webhook(delivery_id: int) -> str | None:
    """One attempt of webhook delivery ``delivery_id`` (idempotent: the row's claim
    lets one attempt through; a redelivered message finds nothing due)."""
    return webhooks.attempt_delivery(delivery_id)


@shared_task(name=SCAN_WEBHOOKS_TASK, ignore_result=True)
def scan_webhook_deliveries() -> int:
    """Enqueue one ``deliver_webhook`` per due delivery (retries, missed hand-offs,
    expired leases); returns how many."""
    from flask import current_app

    ids = webhooks.due_delivery_ids(current_app.config["SCAN_BATCH_SIZE"])
    for delivery_id in ids:
        deliver_webhook.apply_async(args=[delivery_id], retry=False,
                                    timeout=current_app.config["BROKER_PUBLISH_TIMEOUT_SECONDS"])
    return len(ids)
