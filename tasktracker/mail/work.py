"""The mail domain's background work, run by :mod:`tasktracker.jobs` (a Celery task in
production, the in-process runner when embedded, inline in tests). ``jobs`` only
schedules; what each job does is here.

- :func:`password_reset_job`: the slow half of ``POST /api/auth/password-reset``
  (the lookup, the row, the token, SMTP), so the endpoint answers ``202`` at once and
  its timing is the same whether the address exists or not.
- :func:`verification_job`: ``POST /api/auth/verify-email/request``.
- :func:`scan`: the beat's mail pass (every ``SCAN_INTERVAL_SECONDS``): due digests,
  expired tokens, then :func:`deliver_due`.
- :func:`deliver_due`: claim and send what is due; several at once (workers,
  processes) split the rows between them by the claim (``SKIP LOCKED`` on PostgreSQL).

Every job takes plain values (JSON-able) and is idempotent: a redelivered job finds its
row by ``dedupe_key`` (request id) or its rows claimed.
"""

from __future__ import annotations

import logging
from datetime import datetime

from tasktracker.core.types import utcnow
from tasktracker.extensions import db
from tasktracker.mail import digest, outbox, tokens

log = logging.getLogger(__name__)


def password_reset_job(email: str, request_id: str) -> int | None:
    """Write the reset message of the active user with address ``email`` (if any),
    commit, and send it at once. Returns the outbox row id, or None (unknown address,
    duplicate request). SMTP trouble leaves the row to the scan's retries."""
    email_id = outbox.enqueue_password_reset(email, request_id)
    db.session.commit()
    if email_id is not None:
        outbox.deliver_now([email_id])
    return email_id


def verification_job(user_id: int, request_id: str) -> int | None:
    """Write the verification message for user ``user_id``'s current address, commit,
    send it at once. Returns the row id, or None (inactive/unknown user, duplicate)."""
    email_id = outbox.enqueue_verification(int(user_id), request_id)
    db.session.commit()
    if email_id is not None:
        outbox.deliver_now([email_id])
    return email_id


def deliver_due(now: datetime | None = None) -> dict:
    """Claim and send every due row (:func:`tasktracker.mail.outbox.deliver_due`);
    returns ``{"sent", "retry", "failed", "released"}`` counts."""
    run = outbox.deliver_due(now)
    return {"sent": run.sent, "retry": run.retry, "failed": run.failed, "released": run.released}


def prepare(now: datetime | None = None) -> dict:
    """The scan's writing half: the digests due at ``now`` (each user's ``digest_hour``
    in their timezone; committed with the day's decisions) and the purge of expired
    account tokens. Returns ``{"digests": rows written, "purged_tokens": n}``."""
    now = now or utcnow()
    digests = digest.enqueue_digests(now)
    db.session.commit()
    purged = tokens.purge_expired(now)
    db.session.commit()
    return {"digests": len(digests), "purged_tokens": purged}


def scan(now: datetime | None = None, *, deliver: bool = True) -> dict:
    """One mail pass: :func:`prepare`, then (``deliver``) :func:`deliver_due`.
    Returns their counts merged (``sent``... prefixed ``mail_``)."""
    result = prepare(now)
    if deliver:
        result.update({f"mail_{k}": v for k, v in deliver_due(now).items()})
    return result


#: The jobs :func:`tasktracker.jobs.enqueue_mail_job` may run, by name.
JOBS = {"password_reset": password_reset_job, "verification": verification_job}


def run_job(name: str, args: list) -> object:
    """Run the job ``name`` of :data:`JOBS` with ``args``. ``KeyError`` for an unknown name."""
    return JOBS[name](*args)
