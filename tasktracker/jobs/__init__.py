"""Background work. Only this package decides whether work goes to Celery
(production) or runs in place (embedded mode). See DESIGN.md "Modes".

Three modes, chosen per app by :func:`jobs_mode`:

- ``celery``: ``CELERY_BROKER_URL`` is set. :func:`enqueue_fanout` publishes a
  ``fanout_events`` task (short timeout, no retry; a dead broker is logged and
  the outbox scan delivers later). Workers and one beat run from
  ``celery_worker.py``; the beat runs the scans every ``SCAN_INTERVAL_SECONDS``.
- ``thread`` (embedded default): jobs run on one in-process daemon worker
  thread (each in its own app context) and, when ``SCHEDULER_ENABLED``, a
  scheduler thread (started when gunicorn boots, see gunicorn.conf.py, or
  else by the app's first request) does the beat's scans
  (:mod:`tasktracker.jobs.embedded`).
- ``inline`` (``JOBS_INLINE``, the tests' default): the fan-out runs
  synchronously right after the commit, in a fresh app context. No threads.

Public API: :func:`enqueue_fanout`, :func:`enqueue_mail_job`, :func:`check_broker`, :func:`wait_idle`,
and :func:`tasktracker.jobs.scans.run_all_scans` (``flask reminders dispatch``).
This package schedules and runs work; the work itself (fan-out, scans) lives
with its domain.
"""

from __future__ import annotations

import logging
import time

from flask import Flask, current_app
from kombu import Connection

from tasktracker.jobs.embedded import get_runner
from tasktracker.mail import work as mail_work
from tasktracker.notifications.services import fan_out_job
from tasktracker.webhooks.worker import attempt_deliveries

log = logging.getLogger(__name__)

FANOUT_TASK = "tasktracker.fanout_events"
SCAN_REMINDERS_TASK = "tasktracker.scan_reminders"
SCAN_OVERDUE_TASK = "tasktracker.scan_overdue"
REDISPATCH_OUTBOX_TASK = "tasktracker.redispatch_outbox"
PURGE_IDEMPOTENCY_KEYS_TASK = "tasktracker.purge_idempotency_keys"
DELIVER_WEBHOOK_TASK = "tasktracker.deliver_webhooks"
SCAN_WEBHOOKS_TASK = "tasktracker.scan_webhook_deliveries"
MAIL_JOB_TASK = "tasktracker.mail_job"
SCAN_MAIL_TASK = "tasktracker.scan_mail"
DELIVER_MAIL_TASK = "tasktracker.deliver_mail"

#: After a failed publish, skip publishing for this long (seconds): while the broker
#: is down each API write would otherwise wait ``BROKER_PUBLISH_TIMEOUT_SECONDS``.
BROKER_BACKOFF_SECONDS = 5.0
_BROKER_DOWN_UNTIL = "tasktracker.broker_down_until"


def jobs_mode(app: Flask | None = None) -> str:
    """``"celery"`` if a broker is configured, else ``"inline"`` with ``JOBS_INLINE``,
    else ``"thread"``."""
    config = (app or current_app).config
    if config.get("CELERY_BROKER_URL"):
        return "celery"
    if config.get("JOBS_INLINE"):
        return "inline"
    return "thread"


def enqueue_fanout(seqs: list[int]) -> None:
    """Hand committed events (their ``seq``s) to the fan-out. Never raises.

    The app's event consumer (``create_app`` registers it with
    :func:`tasktracker.events.services.register_event_hooks`): called after each
    commit that wrote events. Whatever fails here (broker down, a bug) is logged and the events
    stay undispatched: the outbox scan fans them out after
    ``OUTBOX_REDISPATCH_AFTER_SECONDS``.
    """
    seqs = [int(s) for s in seqs]
    if not seqs:
        return
    try:
        app = current_app._get_current_object()
        mode = jobs_mode(app)
        if mode == "celery":
            _publish_fanout(app, seqs)
        elif mode == "inline":
            run_fanout(app, seqs)
        else:
            get_runner(app).submit(run_fanout, app, seqs)
    except Exception:  # noqa: BLE001 - the API must never fail because of the fan-out
        log.exception("jobs: could not hand events %s to the fan-out; the outbox scan will", seqs)


def enqueue_mail_job(name: str, args: list) -> None:
    """Run the mail job ``name`` (:data:`tasktracker.mail.work.JOBS`) with ``args`` in the
    background: a ``mail_job`` Celery task (no retry; a dead broker is logged: the
    request has been answered, the user may ask again), the in-process runner, or
    inline in a fresh app context (``JOBS_INLINE``). Never raises. The mail endpoints
    call it through :func:`tasktracker.mail.dispatch.submit` (``create_app`` wires it)."""
    try:
        app = current_app._get_current_object()
        mode = jobs_mode(app)
        if mode == "celery":
            if time.monotonic() < app.extensions.get(_BROKER_DOWN_UNTIL, 0.0):
                log.warning("jobs: broker marked down; mail job %s dropped", name)
                return
            try:
                app.extensions["celery"].tasks[MAIL_JOB_TASK].apply_async(
                    args=[name, args], retry=False, timeout=app.config["BROKER_PUBLISH_TIMEOUT_SECONDS"])
            except Exception as exc:  # noqa: BLE001 - kombu/amqp/socket errors of every kind
                app.extensions[_BROKER_DOWN_UNTIL] = time.monotonic() + BROKER_BACKOFF_SECONDS
                log.warning("jobs: broker unavailable (%s: %s); mail job %s dropped",
                            exc.__class__.__name__, exc, name)
        elif mode == "inline":
            run_mail_job(app, name, args)
        else:
            get_runner(app).submit(run_mail_job, app, name, args)
    except Exception:  # noqa: BLE001 - the API must never fail because of a background job
        log.exception("jobs: could not run mail job %s", name)


def run_mail_job(app: Flask, name: str, args: list) -> object:
    """Run mail job ``name`` in place, in a fresh app context; errors are logged."""
    with app.app_context():
        try:
            return mail_work.run_job(name, args)
        except Exception:  # noqa: BLE001 - logged; the scan retries what was written
            log.exception("jobs: mail job %s failed", name)
            return None


def _publish_fanout(app: Flask, seqs: list[int]) -> None:
    """Publish ``fanout_events(seqs)``: no retry, connecting for at most
    ``BROKER_PUBLISH_TIMEOUT_SECONDS``; after a failure, skip publishing for
    :data:`BROKER_BACKOFF_SECONDS` (the outbox scan delivers those events)."""
    if time.monotonic() < app.extensions.get(_BROKER_DOWN_UNTIL, 0.0):
        log.info("jobs: broker marked down; events %s left to the outbox scan", seqs)
        return
    celery = app.extensions["celery"]
    timeout = app.config["BROKER_PUBLISH_TIMEOUT_SECONDS"]
    try:
        celery.tasks[FANOUT_TASK].apply_async(args=[seqs], retry=False, timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - kombu/amqp/socket errors of every kind
        app.extensions[_BROKER_DOWN_UNTIL] = time.monotonic() + BROKER_BACKOFF_SECONDS
        log.warning("jobs: broker unavailable (%s: %s); events %s left to the outbox scan",
                    exc.__class__.__name__, exc, seqs)


def run_fanout(app: Flask, seqs: list[int]) -> int:
    """Fan out ``seqs`` (and newer undispatched events: the same job as Celery's,
    :func:`~tasktracker.notifications.services.fan_out_job`) in place, in a fresh
    app context (so a caller's session is untouched). Returns how many were
    claimed; a failing event is logged and left to the outbox scan."""
    with app.app_context():
        return fan_out_job(seqs)


def enqueue_deliveries(delivery_ids: list[int]) -> None:
    """Hand committed webhook deliveries (their ids) to an attempt. Never raises.

    The consumer ``create_app`` registers with
    :func:`tasktracker.webhooks.services.register_delivery_hooks`, called after each
    commit that wrote or re-queued deliveries. Celery: one ``deliver_webhooks`` task
    per commit (a list of ids: a team event gives one per webhook; ``acks_late``,
    prefetch 1: a worker killed mid-attempt leaves the message to another; the rows'
    leases decide who sends). Embedded: the in-process worker thread (``inline``:
    right here). Whatever fails is logged: the rows stay pending and the webhook scan
    picks them up. The worker that takes a message attempts its ids as one batch
    (:func:`tasktracker.webhooks.worker.attempt_deliveries`: one claim, the POSTs
    concurrently, one result write).
    """
    ids = [int(i) for i in delivery_ids]
    if not ids:
        return
    try:
        app = current_app._get_current_object()
        mode = jobs_mode(app)
        if mode == "celery":
            if time.monotonic() < app.extensions.get(_BROKER_DOWN_UNTIL, 0.0):
                return
            task = app.extensions["celery"].tasks[DELIVER_WEBHOOK_TASK]
            timeout = app.config["BROKER_PUBLISH_TIMEOUT_SECONDS"]
            try:
                task.apply_async(args=[ids], retry=False, timeout=timeout)
            except Exception as exc:  # noqa: BLE001 - kombu/amqp/socket errors of every kind
                app.extensions[_BROKER_DOWN_UNTIL] = time.monotonic() + BROKER_BACKOFF_SECONDS
                log.warning("jobs: broker unavailable (%s); deliveries %s left to the webhook scan",
                            exc.__class__.__name__, ids)
        elif mode == "inline":
            run_deliveries(app, ids)
        else:
            get_runner(app).submit(run_deliveries, app, ids)
    except Exception:  # noqa: BLE001 - the API must never fail because of a webhook
        log.exception("jobs: could not hand deliveries %s over; the webhook scan will", ids)


def run_deliveries(app: Flask, delivery_ids: list[int]) -> None:
    """Attempt the deliveries in place, as one batch, in a fresh app context (embedded
    mode); a failing batch is logged and left to the scan."""
    with app.app_context():
        try:
            attempt_deliveries(delivery_ids)
        except Exception:  # noqa: BLE001 - e.g. database down; the rows stay pending
            log.exception("jobs: webhook deliveries %s failed to run", delivery_ids)


def wait_idle(timeout: float = 30.0) -> bool:
    """Embedded (thread) mode: wait until the in-process job queue is empty.
    True when idle (always True in the other modes)."""
    app = current_app._get_current_object()
    if jobs_mode(app) != "thread":
        return True
    return get_runner(app).wait_idle(timeout)


def check_broker() -> str | None:
    """For ``/ready``: None if the broker answers (or none is configured: embedded
    mode), else a short description of the error."""
    url = current_app.config.get("CELERY_BROKER_URL")
    if not url:
        return None
    timeout = current_app.config["BROKER_PUBLISH_TIMEOUT_SECONDS"]
    try:
        with Connection(url, connect_timeout=timeout) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout)
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        return exc.__class__.__name__
