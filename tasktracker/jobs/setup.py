"""Binding background work to the app (Celery in production, in place when embedded)."""

from __future__ import annotations

import logging

from celery import Celery, Task
from celery.concurrency.solo import TaskPool as SoloPool
from celery.signals import worker_init
from flask import Flask

from tasktracker.jobs import (
    PURGE_IDEMPOTENCY_KEYS_TASK, REDISPATCH_OUTBOX_TASK, SCAN_MAIL_TASK, SCAN_OVERDUE_TASK,
    SCAN_REMINDERS_TASK, SCAN_WEBHOOKS_TASK, jobs_mode,
)
from tasktracker.jobs import tasks  # noqa: F401 - registers the shared tasks
from tasktracker.jobs.embedded import get_runner, init_runner
from tasktracker.jobs.scans import run_all_scans

log = logging.getLogger(__name__)


def celery_settings_for(app: Flask) -> dict:
    """``app.config["CELERY"]`` (from :func:`tasktracker.config.celery_settings`)
    completed with what depends on other settings, unless set there already:
    the queue (``CELERY_TASK_QUEUE``), the connect timeout
    (``BROKER_PUBLISH_TIMEOUT_SECONDS``, with quick reconnect attempts within it)
    and the beat schedule (the three scans
    every ``SCAN_INTERVAL_SECONDS``; a scan message older than the next two runs
    expires, so a backlog built while workers were down does not replay them all).
    """
    interval = float(app.config["SCAN_INTERVAL_SECONDS"])
    options = {"expires": max(2 * interval, 10.0)}
    settings = dict(app.config["CELERY"])
    settings.setdefault("task_default_queue", app.config["CELERY_TASK_QUEUE"])
    settings.setdefault("broker_connection_timeout", app.config["BROKER_PUBLISH_TIMEOUT_SECONDS"])
    # kombu retries a publisher's connection until that timeout but sleeps 2 s first by
    # default: retry sooner so a publish to a dead broker gives up after ~the timeout.
    settings.setdefault("broker_transport_options",
                        {"interval_start": 0, "interval_step": 0.25, "interval_max": 0.5})
    settings.setdefault("beat_schedule", {
        "scan-reminders": {"task": SCAN_REMINDERS_TASK, "schedule": interval, "options": options},
        "scan-overdue": {"task": SCAN_OVERDUE_TASK, "schedule": interval, "options": options},
        "redispatch-outbox": {"task": REDISPATCH_OUTBOX_TASK, "schedule": interval, "options": options},
        # webhook retries are due at their own times (30 s at the shortest): scan often
        "scan-webhook-deliveries": {"task": SCAN_WEBHOOKS_TASK, "options": options,
                                    "schedule": min(interval, float(app.config.get("WEBHOOK_SCAN_INTERVAL_SECONDS", 10.0)))},
        # mail: digests (each user's digest_hour), token purge, then delivery; at least every
        # minute so a digest goes out within its hour's first minute and a batch soon after its 60 s
        "scan-mail": {"task": SCAN_MAIL_TASK, "schedule": min(interval, 60.0), "options": options},
        # keys live 24 h (IDEMPOTENCY_TTL): an hourly purge keeps the table to about a day of keys
        "purge-idempotency-keys": {"task": PURGE_IDEMPOTENCY_KEYS_TASK, "schedule": 3600.0,
                                   "options": {"expires": 3600.0}},
    })
    return settings


def celery_init_app(app: Flask) -> Celery:
    """Flask's Celery pattern: a Celery app whose tasks run inside ``app.app_context()``,
    configured from ``app.config["CELERY"]``; stored as ``app.extensions["celery"]``."""

    class FlaskTask(Task):
        def __call__(self, *args: object, **kwargs: object) -> object:
            with app.app_context():
                return self.run(*args, **kwargs)

    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.config_from_object(celery_settings_for(app))
    celery_app.set_default()
    app.extensions["celery"] = celery_app
    return celery_app


@worker_init.connect
def warn_if_solo_pool(sender: object = None, **_: object) -> bool:
    """Celery's ``worker_init`` handler: warn when a worker runs the solo pool on an AMQP
    broker with late acknowledgement (this project's setting); returns whether it warned.

    There the worker's event loop (kombu's hub) can sleep up to 10 s with a finished task's
    ack still queued: the solo pool runs the task inside the loop's own callback, the ack
    is scheduled from the loop thread, and the loop polls before running it; with the
    prefetch window full, RabbitMQ sends nothing that would wake it (celery/celery#7718,
    kombu PR #1587, unmerged in kombu 5.7.0; measured: 10 s gaps in 4 of 4 loaded runs,
    none with the threads or prefork pool). Use the default prefork pool or
    ``--pool=threads``.
    """
    pool, app = getattr(sender, "pool_cls", None), getattr(sender, "app", None)
    if not (isinstance(pool, type) and issubclass(pool, SoloPool) and app is not None):
        return False
    conf = app.conf
    if not conf.task_acks_late or not str(conf.broker_url or "").startswith(("amqp", "pyamqp")):
        return False
    log.warning("celery: the solo pool with late acks on AMQP can leave a worker idle for up to "
                "10 s between tasks (celery/celery#7718); run the prefork pool or --pool=threads")
    return True


def init_jobs(app: Flask) -> None:
    """Called by ``create_app``: bind Celery (always: workers and beat import the app)
    and the in-process runner (embedded mode), whose scheduler runs :func:`run_all_scans`.

    In embedded mode with ``SCHEDULER_ENABLED``, the in-process scheduler thread
    starts when the server boots (gunicorn's ``post_worker_init`` hook) or else
    with the first request the app serves (:func:`start_scheduler`), so
    ``flask`` CLI commands (``db upgrade``, ``seed``...) never run scans behind
    the command's back. Celery mode starts no thread: the beat does the scans.
    """
    celery_init_app(app)
    init_runner(app, run_all_scans)
    if jobs_mode(app) != "celery" and app.config["SCHEDULER_ENABLED"]:
        def _start_scheduler_once() -> None:  # a before_request hook must return None
            start_scheduler(app)

        app.before_request(_start_scheduler_once)


def start_scheduler(app: Flask) -> bool:
    """Start the embedded scheduler thread of ``app`` if it is not running (cheap when
    it is); the scans run every ``SCAN_INTERVAL_SECONDS``. False in Celery mode
    (the beat does the scans) or when ``SCHEDULER_ENABLED`` is off."""
    if jobs_mode(app) == "celery" or not app.config.get("SCHEDULER_ENABLED"):
        return False
    runner = get_runner(app)
    if not runner.scheduler_running:
        runner.start_scheduler(float(app.config["SCAN_INTERVAL_SECONDS"]))
        log.info("jobs: embedded mode, scans every %ss in-process", app.config["SCAN_INTERVAL_SECONDS"])
    return True
