"""Sending webhook deliveries: claim with a lease, POST with httpx, record the result
(api-contract.md v1.1, "Webhooks"; DESIGN.md "every outbound side effect is a row").

Life of a :class:`~tasktracker.webhooks.models.WebhookDelivery`::

    pending --2xx--> succeeded
    pending --other status / timeout / connection error / refused target-->
        pending again after ~30 s, 2 min, 10 min, 1 h, 6 h, 24 h (+-10 % jitter)
        --the 7th attempt fails--> failed

- Durable: the schedule is ``next_attempt_at`` on the row; nothing waits in memory.
  A worker or scan picks due rows (:func:`due_deliveries`, :func:`claim_due`) after
  any restart.
- At least once, one row: an attempt first claims the row (conditional UPDATE that
  sets the lease ``claimed_until``, counts the attempt, commits), then sends, then
  records the result only if its lease is still the row's. A worker killed between
  claim and result leaves the row pending with a lease that runs out
  (:data:`LEASE_SECONDS`); the next claim sends the same bytes with the same
  delivery id. A receiver that saw the first attempt recognises the id.
- The clock is a parameter (``now``): tests move it; workers pass ``utcnow()``.
- Inactive webhooks: their event deliveries are not claimed (they wait, pending,
  until the webhook is active again); ``ping`` deliveries are sent regardless (the
  way to test a receiver before re-enabling it).

Nothing here touches a Flask request; everything runs on ``db.session`` in an app
context and commits its own transactions (call it from a worker task with no
pending changes in the session).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable

import httpx
import sqlalchemy as sa

from tasktracker.core.db import is_postgresql
from tasktracker.extensions import db
from tasktracker.webhooks import signing
from tasktracker.webhooks.models import DeliveryStatus, Webhook, WebhookDelivery
from tasktracker.webhooks.ssrf import UnsafeTarget, check_target

#: Waits after the 1st..6th failed attempt (the contract's "about 30 s, 2 min,
#: 10 min, 1 h, 6 h, 24 h"); the 7th failed attempt makes the delivery ``failed``.
BACKOFF_SECONDS: tuple[int, ...] = (30, 120, 600, 3600, 6 * 3600, 24 * 3600)
MAX_ATTEMPTS = len(BACKOFF_SECONDS) + 1
#: Each wait is multiplied by a uniform factor in [1 - JITTER, 1 + JITTER], so the
#: retries of many deliveries that failed together (a receiver outage) spread out.
JITTER = 0.1
#: Success is a 2xx within this many seconds (contract); slower counts as a timeout.
TOTAL_TIMEOUT_SECONDS = 10.0
#: httpx's per-phase limits, inside the total: connect 5 s, each read/write 10 s.
HTTP_TIMEOUT = httpx.Timeout(TOTAL_TIMEOUT_SECONDS, connect=5.0)
#: How long a claim holds a delivery. Longer than one attempt can take, so a live
#: attempt is never claimed twice; a crashed one is retried once it runs out.
LEASE_SECONDS = 60
#: A webhook whose attempts have all failed for this long is disabled.
DISABLE_AFTER = timedelta(hours=24)
USER_AGENT = "TaskTracker-Webhook/1"
_ERROR_MAX = 500


def make_client() -> httpx.Client:
    """The HTTP client the workers share: explicit timeouts, no redirects followed
    (a 3xx is a failed attempt: a redirect could point past the SSRF guard), no
    proxy or ``.netrc`` taken from the environment (``trust_env=False``: the guard
    checks the address actually connected to). Reuse one per worker process."""
    return httpx.Client(timeout=HTTP_TIMEOUT, follow_redirects=False, trust_env=False,
                        headers={"User-Agent": USER_AGENT})


@dataclass(frozen=True)
class Claim:
    """A delivery this caller holds until ``lease`` (the row's ``claimed_until``, also
    the fencing token :func:`record_result` checks). ``attempt`` is this attempt's
    number (1-based)."""

    delivery_id: int
    webhook_id: int
    team_id: int
    url: str
    secret: str
    event: str
    body: bytes
    attempt: int
    lease: datetime


@dataclass(frozen=True)
class SendResult:
    """What one POST gave: ``status_code`` (None when no answer), ``error`` (None on
    a 2xx), ``duration_ms`` (wall time of the attempt)."""

    status_code: int | None
    error: str | None
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class WebhookDisabled:
    """A webhook this attempt disabled (after :data:`DISABLE_AFTER` of failures): what
    the caller needs for the team owner's ``webhook_disabled`` notification."""

    webhook_id: int
    team_id: int
    url: str
    failing_since: datetime
    consecutive_failures: int
    reason: str


@dataclass(frozen=True)
class Outcome:
    """The result of :func:`attempt` / :func:`record_result`.

    ``status``: the delivery's status after this attempt (``pending`` = will retry at
    ``next_attempt_at``), or None when nothing was done (not claimable: not due,
    claimed by someone else, finished, inactive webhook) or the lease was lost
    before the result was recorded (``stale``). ``disabled`` is set when this
    attempt disabled the webhook."""

    delivery_id: int
    status: DeliveryStatus | None
    attempt: int | None = None
    response_status: int | None = None
    error: str | None = None
    next_attempt_at: datetime | None = None
    disabled: WebhookDisabled | None = None
    stale: bool = False


def backoff_delay(failed_attempts: int, rng: random.Random | None = None) -> timedelta | None:
    """The wait after the ``failed_attempts``-th failed attempt (1-based), with jitter;
    None when that was the last one (:data:`MAX_ATTEMPTS`)."""
    if failed_attempts < 1:
        raise ValueError("failed_attempts counts from 1")
    if failed_attempts > len(BACKOFF_SECONDS):
        return None
    factor = 1 + (rng or random).uniform(-JITTER, JITTER)
    return timedelta(seconds=BACKOFF_SECONDS[failed_attempts - 1] * factor)


#: How long a delivery the scan handed to the queue is held for that message
#: (:func:`queue_due`): later scans leave it alone meanwhile, so a backlog in the
#: broker is not re-enqueued on every scan.
QUEUE_HOLD_SECONDS = 120
#: The scan takes a delivery only this long after it fell due: a fresh one is first
#: the after-commit hand-off's, a retry the scan's a few seconds late at most.
SCAN_GRACE_SECONDS = 5


def _claimable(now: datetime, queued: datetime | None = None):
    """The WHERE clause of a delivery that may be claimed at ``now`` (with ``queued``:
    also one the scan holds under that token for the message being processed)."""
    d = WebhookDelivery
    active = sa.select(Webhook.id).where(Webhook.id == d.webhook_id, Webhook.active.is_(True)).exists()
    lease_free = sa.or_(d.claimed_until.is_(None), d.claimed_until < now)
    if queued is not None:
        lease_free = sa.or_(lease_free, d.claimed_until == queued)
    return sa.and_(d.status == DeliveryStatus.PENDING, d.next_attempt_at <= now, lease_free,
                   sa.or_(d.event == "ping", active))


def queue_due(now: datetime, limit: int = 500, *, hold_seconds: float = QUEUE_HOLD_SECONDS,
              grace_seconds: float = SCAN_GRACE_SECONDS) -> tuple[list[int], datetime]:
    """The beat scan's pick: mark up to ``limit`` deliveries due for ``grace_seconds``
    and not leased as held until ``now + hold_seconds`` (``claimed_until``, the token)
    and return ``(ids, token)``; the caller commits, then enqueues one message per id
    carrying the token, whose :func:`claim` (``queued=token``) may take the held row.
    A message lost in the broker costs ``hold_seconds``: the next scan after that
    takes the row again. PostgreSQL: ``FOR UPDATE SKIP LOCKED``. Does not commit."""
    token = now + timedelta(seconds=hold_seconds)
    d = WebhookDelivery
    candidates = (sa.select(d.id).where(_claimable(now), d.next_attempt_at <= now - timedelta(seconds=grace_seconds))
                  .order_by(d.next_attempt_at, d.id).limit(limit))
    if is_postgresql():
        candidates = candidates.with_for_update(skip_locked=True, of=d)
    ids = list(db.session.scalars(
        sa.update(d).where(d.id.in_(candidates.scalar_subquery())).values(claimed_until=token)
        .returning(d.id).execution_options(synchronize_session=False)))
    return sorted(ids), token


def due_deliveries(now: datetime, limit: int = 500) -> list[int]:
    """Ids of deliveries due at ``now`` (pending, ``next_attempt_at`` passed, no live
    lease, webhook active or a ping), oldest due first: what the beat scan hands to
    the workers (each then :func:`attempt`s its id; a duplicate hand-off is harmless,
    the claim decides). Read-only."""
    d = WebhookDelivery
    return list(db.session.scalars(sa.select(d.id).where(_claimable(now))
                                   .order_by(d.next_attempt_at, d.id).limit(limit)))


def _load_claim(delivery_id: int, lease: datetime) -> Claim:
    row = db.session.execute(
        sa.select(WebhookDelivery.id, WebhookDelivery.webhook_id, Webhook.team_id, Webhook.url,
                  Webhook.secret, WebhookDelivery.event, WebhookDelivery.body,
                  WebhookDelivery.attempts)
        .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
        .where(WebhookDelivery.id == delivery_id)).one()
    return Claim(delivery_id=row.id, webhook_id=row.webhook_id, team_id=row.team_id, url=row.url,
                 secret=row.secret, event=row.event, body=bytes(row.body), attempt=row.attempts,
                 lease=lease)


def claim(delivery_id: int, *, now: datetime, lease_seconds: float = LEASE_SECONDS,
          queued: datetime | None = None) -> Claim | None:
    """Claim one delivery at ``now``: the conditional UPDATE sets ``claimed_until =
    now + lease_seconds`` and counts the attempt; rowcount 1 means it is ours.
    ``queued``: the token of the scan message being processed (:func:`queue_due`).
    Returns the :class:`Claim`, or None (not due, leased or held by another,
    finished, inactive webhook, gone). Does not commit: the caller commits before
    sending."""
    lease = now + timedelta(seconds=lease_seconds)
    d = WebhookDelivery
    result = db.session.execute(
        sa.update(d).where(d.id == delivery_id, _claimable(now, queued))
        .values(claimed_until=lease, attempts=d.attempts + 1)
        .execution_options(synchronize_session=False))
    if result.rowcount != 1:
        return None
    return _load_claim(delivery_id, lease)


def claim_due(now: datetime, limit: int = 100, *, lease_seconds: float | None = None) -> list[Claim]:
    """Claim up to ``limit`` due deliveries in one statement (a batch worker or the
    embedded scheduler). On PostgreSQL the candidates are locked ``FOR UPDATE SKIP
    LOCKED``, so concurrent batch claimers take disjoint rows without waiting; on
    SQLite the write lock serialises them. The lease covers sending the whole batch
    one after another (default: ``LEASE_SECONDS + limit * TOTAL_TIMEOUT_SECONDS``).
    Does not commit."""
    if lease_seconds is None:
        lease_seconds = LEASE_SECONDS + limit * TOTAL_TIMEOUT_SECONDS
    lease = now + timedelta(seconds=lease_seconds)
    d = WebhookDelivery
    candidates = sa.select(d.id).where(_claimable(now)).order_by(d.next_attempt_at, d.id).limit(limit)
    if is_postgresql():
        candidates = candidates.with_for_update(skip_locked=True, of=d)
    ids = list(db.session.scalars(
        sa.update(d).where(d.id.in_(candidates.scalar_subquery()))
        .values(claimed_until=lease, attempts=d.attempts + 1)
        .returning(d.id).execution_options(synchronize_session=False)))
    return [_load_claim(i, lease) for i in sorted(ids)]


def build_request(c: Claim, now: datetime) -> tuple[dict[str, str], bytes]:
    """The headers and body of an attempt at ``now`` (contract: Content-Type,
    User-Agent, X-TaskTracker-Event/-Delivery/-Timestamp/-Signature)."""
    timestamp = int(now.timestamp())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-TaskTracker-Event": c.event,
        "X-TaskTracker-Delivery": str(c.delivery_id),
        "X-TaskTracker-Timestamp": str(timestamp),
        "X-TaskTracker-Signature": signing.sign(c.secret, timestamp, c.body),
    }
    return headers, c.body


def send(c: Claim, *, now: datetime, client: httpx.Client, allow_private: bool = False) -> SendResult:
    """POST the claimed delivery. Checks the target again first (DNS rebinding) and
    connects to the address it checked; never raises for network trouble: every
    failure is a :class:`SendResult` with ``error`` (``HTTP 500``, ``timeout``,
    ``connection error: ...``, ``refused target: ...``). No database access."""
    started = time.monotonic()

    def result(status: int | None, error: str | None) -> SendResult:
        return SendResult(status, error[:_ERROR_MAX] if error else None,
                          int((time.monotonic() - started) * 1000))

    try:
        target = check_target(c.url, allow_private=allow_private)
    except UnsafeTarget as exc:
        return result(None, f"refused target: {exc}")
    url, host_headers, extensions = target.pinned()
    headers, body = build_request(c, now)
    headers.update(host_headers)
    try:
        with client.stream("POST", url, content=body, headers=headers, extensions=extensions) as response:
            status = response.status_code
    except httpx.TimeoutException:
        return result(None, f"timeout: no answer within {TOTAL_TIMEOUT_SECONDS:g} s")
    except httpx.HTTPError as exc:
        return result(None, f"connection error: {exc.__class__.__name__}: {exc}")
    if time.monotonic() - started > TOTAL_TIMEOUT_SECONDS:
        return result(status, f"timeout: answered after more than {TOTAL_TIMEOUT_SECONDS:g} s")
    if 200 <= status < 300:
        return result(status, None)
    return result(status, f"HTTP {status}")


def record_result(c: Claim, res: SendResult, *, now: datetime,
                  rng: random.Random | None = None) -> Outcome:
    """Write an attempt's result, if ``c``'s lease is still the row's (else nothing is
    written: ``Outcome(stale=True)``). Success -> ``succeeded``, ``delivered_at=now``,
    the webhook's failure run reset. Failure -> ``pending`` with ``next_attempt_at``
    per :func:`backoff_delay`, or ``failed`` after the last attempt; the webhook's
    failure run grows and, :data:`DISABLE_AFTER` after its first failure, the webhook
    is set inactive with ``disabled_reason`` (exactly once: a conditional UPDATE;
    ``Outcome.disabled`` tells the caller to notify). Does not commit."""
    d, w = WebhookDelivery, Webhook
    if res.ok:
        values = {"status": DeliveryStatus.SUCCEEDED, "delivered_at": now, "next_attempt_at": None}
        next_at = None
    else:
        delay = backoff_delay(c.attempt, rng)
        next_at = now + delay if delay is not None else None
        values = {"status": DeliveryStatus.PENDING if delay is not None else DeliveryStatus.FAILED,
                  "next_attempt_at": next_at}
    written = db.session.execute(
        sa.update(d).where(d.id == c.delivery_id, d.claimed_until == c.lease,
                           d.status == DeliveryStatus.PENDING)
        .values(response_status=res.status_code, error=res.error, duration_ms=res.duration_ms,
                claimed_until=None, **values)
        .execution_options(synchronize_session=False))
    if written.rowcount != 1:
        return Outcome(c.delivery_id, None, c.attempt, stale=True)
    disabled = None
    if res.ok:
        db.session.execute(sa.update(w).where(w.id == c.webhook_id, w.consecutive_failures != 0)
                           .values(consecutive_failures=0, first_failure_at=None)
                           .execution_options(synchronize_session=False))
    else:
        db.session.execute(sa.update(w).where(w.id == c.webhook_id)
                           .values(consecutive_failures=w.consecutive_failures + 1,
                                   first_failure_at=sa.func.coalesce(w.first_failure_at, now))
                           .execution_options(synchronize_session=False))
        disabled = _disable_if_failing_too_long(c.webhook_id, now)
    return Outcome(c.delivery_id, values["status"], c.attempt, res.status_code, res.error, next_at, disabled)


def _disable_if_failing_too_long(webhook_id: int, now: datetime) -> WebhookDisabled | None:
    w = Webhook
    row = db.session.execute(sa.select(w.first_failure_at, w.consecutive_failures, w.team_id, w.url)
                             .where(w.id == webhook_id)).one_or_none()
    if row is None or row.first_failure_at is None or now - row.first_failure_at < DISABLE_AFTER:
        return None
    reason = (f"Every delivery failed for 24 hours ({row.consecutive_failures} attempts since "
              f"{row.first_failure_at.isoformat().replace('+00:00', 'Z')}).")[:200]
    changed = db.session.execute(
        sa.update(w).where(w.id == webhook_id, w.active.is_(True))
        .values(active=False, disabled_reason=reason, updated_at=now)
        .execution_options(synchronize_session=False))
    if changed.rowcount != 1:
        return None  # already inactive: someone else disabled it (and notified)
    return WebhookDisabled(webhook_id, row.team_id, row.url, row.first_failure_at,
                           row.consecutive_failures, reason)


def attempt(delivery_id: int, *, now: datetime, client: httpx.Client, allow_private: bool = False,
            rng: random.Random | None = None,
            on_disabled: Callable[[WebhookDisabled], None] | None = None,
            queued: datetime | None = None) -> Outcome:
    """One attempt of one delivery at ``now``: claim (commit), send, record (commit).

    The worker task's body: idempotent, safe to run twice or concurrently for the same
    id (the claim lets one through). ``on_disabled(info)`` runs inside the result's
    transaction when this attempt disables the webhook: write the team owner's
    ``webhook_disabled`` notification there, so it commits with the disable, once.
    ``allow_private`` is ``WEBHOOK_ALLOW_PRIVATE_TARGETS``. Returns the
    :class:`Outcome` (``status`` None: nothing to do, or ``stale``). ``queued``: the
    scan's token when the id came from :func:`queue_due`."""
    c = claim(delivery_id, now=now, queued=queued)
    db.session.commit()
    if c is None:
        return Outcome(delivery_id, None)
    res = send(c, now=now, client=client, allow_private=allow_private)
    return _finish(c, res, now=now, rng=rng, on_disabled=on_disabled)


def _finish(c: Claim, res: SendResult, *, now: datetime, rng, on_disabled) -> Outcome:
    try:
        outcome = record_result(c, res, now=now, rng=rng)
        if outcome.disabled is not None and on_disabled is not None:
            on_disabled(outcome.disabled)
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    return outcome


def run_due(*, clock: Callable[[], datetime], client: httpx.Client, limit: int = 100,
            allow_private: bool = False, rng: random.Random | None = None,
            on_disabled: Callable[[WebhookDisabled], None] | None = None) -> list[Outcome]:
    """Claim a batch of due deliveries (:func:`claim_due`, commit) and send them one
    after another, recording each result in its own transaction: the embedded
    scheduler's pass, or a batch worker's. ``clock()`` gives the current UTC time
    (each attempt's ``now``). Returns the outcomes, in id order."""
    claims = claim_due(clock(), limit)
    db.session.commit()
    outcomes = []
    for c in claims:
        now = clock()
        res = send(c, now=now, client=client, allow_private=allow_private)
        outcomes.append(_finish(c, res, now=now, rng=rng, on_disabled=on_disabled))
    return outcomes
