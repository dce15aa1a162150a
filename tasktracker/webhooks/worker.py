"""The webhook work the jobs layer schedules (jobs/ only decides where it runs).

- :func:`attempt_deliveries`: one attempt of each delivery of a batch now, the body
  of the ``tasktracker.deliver_webhooks`` Celery task and of the in-process hand-off;
- :func:`queue_due_deliveries` / :func:`run_due_deliveries`: the scan of due and retry
  deliveries (the beat enqueues the ids; the embedded scheduler sends them in place);
- :func:`record_webhook_disabled`: the ``on_disabled`` callback, which writes a
  ``webhook.disabled`` event in the transaction that disables the webhook, so the
  fan-out turns it into the team owner's ``webhook_disabled`` notification (and its
  push) exactly once, through the events outbox.

Every function runs in an app context and reads ``WEBHOOK_ALLOW_PRIVATE_TARGETS``
from the app's config. One :func:`~tasktracker.webhooks.delivery.make_client` and
one pool of :data:`~tasktracker.webhooks.delivery.SEND_CONCURRENCY` send threads per
process (connection reuse), made on first use and remade after a ``fork``.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import httpx
from flask import current_app

from tasktracker.core.fields import iso_utc
from tasktracker.core.types import utcnow
from tasktracker.events.services import record_event
from tasktracker.webhooks import delivery

_client: httpx.Client | None = None
_pool: ThreadPoolExecutor | None = None
_owner_pid: int | None = None
_lock = threading.Lock()


def _process_resources() -> tuple[httpx.Client, ThreadPoolExecutor]:
    """This process's HTTP client and send threads (made again in a forked child)."""
    global _client, _pool, _owner_pid
    with _lock:
        if _client is None or _owner_pid != os.getpid():  # first use, or a forked child
            _client = delivery.make_client()
            _pool = ThreadPoolExecutor(delivery.SEND_CONCURRENCY, thread_name_prefix="webhook-send")
            _owner_pid = os.getpid()
        return _client, _pool


def _allow_private() -> bool:
    return bool(current_app.config.get("WEBHOOK_ALLOW_PRIVATE_TARGETS"))


def record_webhook_disabled(info: delivery.WebhookDisabled) -> None:
    """``on_disabled``: add the ``webhook.disabled`` event (team ``info.team_id``,
    payload ``{webhook_id, url, failing_since, consecutive_failures, reason}``) to the
    session of the disabling transaction (the caller commits). The fan-out's rule
    for that type notifies the team owner (``webhook_disabled``)."""
    record_event("webhook.disabled", actor_id=None, team_id=info.team_id, payload={
        "webhook_id": info.webhook_id, "url": info.url,
        "failing_since": iso_utc(info.failing_since),
        "consecutive_failures": info.consecutive_failures, "reason": info.reason})


def attempt_deliveries(delivery_ids: list[int], queued: str | None = None) -> list[str | None]:
    """Attempt the deliveries ``delivery_ids`` now, as one batch (claim, POST
    concurrently, record; see :func:`delivery.attempt_many`). ``queued``: the ISO token
    of a scan message (:func:`queue_due_deliveries`). Idempotent: a duplicate hand-off
    finds nothing to claim. Returns each distinct id's outcome status (``succeeded``,
    ``pending``, ``failed``, or None when there was nothing to do), in id order."""
    token = datetime.fromisoformat(queued) if isinstance(queued, str) else None
    client, pool = _process_resources()
    outcomes = delivery.attempt_many(delivery_ids, now=utcnow(), client=client,
                                     allow_private=_allow_private(), on_disabled=record_webhook_disabled,
                                     queued=token, executor=pool)
    return [None if o.status is None else str(o.status) for o in outcomes]


def queue_due_deliveries(limit: int = 500) -> tuple[list[int], str]:
    """The beat's scan: hold the deliveries due now (retries whose backoff ran out,
    hand-offs missed, leases of crashed attempts that expired) for one message each
    (:func:`delivery.queue_due`) and commit; returns ``(ids, token)`` (token as ISO
    text, for the Celery message)."""
    from tasktracker.extensions import db

    ids, token = delivery.queue_due(utcnow(), limit)
    db.session.commit()
    return ids, token.isoformat()


def run_due_deliveries(limit: int = 100) -> int:
    """Embedded scheduler: claim the due deliveries and send them in place, concurrently
    (:func:`delivery.run_due`); returns how many were attempted."""
    client, pool = _process_resources()
    return len(delivery.run_due(clock=utcnow, client=client, limit=limit, allow_private=_allow_private(),
                                on_disabled=record_webhook_disabled, executor=pool))
