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
- Batches: a commit's deliveries (one per webhook of the event) are attempted
  together (:func:`attempt_many`): one claim statement and commit, the POSTs
  concurrently on :data:`SEND_CONCURRENCY` threads, one statement for the results
  and commit. Each row keeps its own lease check, attempt count and schedule.
- The clock is a parameter (``now``): tests move it; workers pass ``utcnow()``.
- Inactive webhooks: their event deliveries are not claimed (they wait, pending,
  until the webhook is active again); ``ping`` deliveries are sent regardless (the
  way to test a receiver before re-enabling it).

Nothing here touches a Flask request; everything runs on ``db.session`` in an app
context and commits its own transactions (call it from a worker task with no
pending changes in the session).
"""

from __future__ import annotations

import logging
import math
import random
import ssl
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any, Callable, Iterable

import httpx
import sqlalchemy as sa

from tasktracker.core.db import is_postgresql
from tasktracker.extensions import db
from tasktracker.webhooks import signing
from tasktracker.webhooks.models import DeliveryStatus, Webhook, WebhookDelivery
from tasktracker.webhooks.ssrf import UnsafeTarget, check_target

log = logging.getLogger(__name__)

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
#: Sends of one batch run on this many threads at once (:func:`send_all`): the POSTs
#: wait on the network, so one worker process keeps several in flight.
SEND_CONCURRENCY = 8
#: The part of a receiver's answer read (and discarded): reading a short answer to its
#: end lets the connection be reused; a longer one is not read further.
RESPONSE_READ_MAX = 64 * 1024
_ERROR_MAX = 500


@cache
def _tls_context() -> ssl.SSLContext:
    """The TLS context httpx builds by default for a ``trust_env=False`` client
    (certifi's CA bundle, hostname checks on), built once per process: loading the CA
    bundle costs about 20 ms of CPU, for each client otherwise."""
    return httpx.create_ssl_context(trust_env=False)


def make_client() -> httpx.Client:
    """The HTTP client the workers share: explicit timeouts, no redirects followed
    (a 3xx is a failed attempt: a redirect could point past the SSRF guard), no
    proxy or ``.netrc`` taken from the environment (``trust_env=False``: the guard
    checks the address actually connected to), httpx's default TLS verification.
    Reuse one per worker process."""
    return httpx.Client(timeout=HTTP_TIMEOUT, follow_redirects=False, trust_env=False, verify=_tls_context(),
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


def batch_lease_seconds(n: int, concurrency: int = SEND_CONCURRENCY) -> float:
    """How long a claim of ``n`` deliveries sent ``concurrency`` at a time holds them:
    :data:`LEASE_SECONDS` per round of sends (a round takes at most one attempt's
    time)."""
    return LEASE_SECONDS * max(1, math.ceil(n / max(1, concurrency)))


def _load_claims(ids: Iterable[int], lease: datetime) -> list[Claim]:
    """The :class:`Claim` of each delivery of ``ids`` (just claimed under ``lease``), in
    id order: one SELECT."""
    ids = sorted(ids)
    if not ids:
        return []
    d, w = WebhookDelivery, Webhook
    rows = db.session.execute(
        sa.select(d.id, d.webhook_id, w.team_id, w.url, w.secret, d.event, d.body, d.attempts)
        .join(w, w.id == d.webhook_id).where(d.id.in_(ids)).order_by(d.id))
    return [Claim(delivery_id=r.id, webhook_id=r.webhook_id, team_id=r.team_id, url=r.url,
                  secret=r.secret, event=r.event, body=bytes(r.body), attempt=r.attempts, lease=lease)
            for r in rows]


def _claim_candidates(candidates: sa.Select, lease: datetime) -> list[Claim]:
    """Claim the deliveries ``candidates`` (a SELECT of ids, already restricted to
    :func:`_claimable` ones) selects: one conditional UPDATE sets the lease and counts
    the attempt, RETURNING the ids it changed. PostgreSQL: the candidates are locked
    ``FOR UPDATE SKIP LOCKED``, so concurrent claimers take disjoint rows without
    waiting; SQLite's write lock serialises them."""
    d = WebhookDelivery
    if is_postgresql():
        candidates = candidates.with_for_update(skip_locked=True, of=d)
    ids = db.session.scalars(
        sa.update(d).where(d.id.in_(candidates.scalar_subquery()))
        .values(claimed_until=lease, attempts=d.attempts + 1)
        .returning(d.id).execution_options(synchronize_session=False)).all()
    return _load_claims(ids, lease)


def claim_many(delivery_ids: Iterable[int], *, now: datetime, lease_seconds: float | None = None,
               queued: datetime | None = None) -> list[Claim]:
    """Claim those of ``delivery_ids`` claimable at ``now`` in one statement (see
    :func:`_claim_candidates`): the lease is ``now + lease_seconds`` (default
    :func:`batch_lease_seconds` of the batch). ``queued``: the token of the scan
    message being processed (:func:`queue_due`). Returns the :class:`Claim` of each
    delivery taken, in id order; the others (not due, leased or held by another,
    finished, inactive webhook, gone) are left alone. Does not commit: the caller
    commits before sending."""
    ids = sorted({int(i) for i in delivery_ids})
    if not ids:
        return []
    if lease_seconds is None:
        lease_seconds = batch_lease_seconds(len(ids))
    d = WebhookDelivery
    return _claim_candidates(sa.select(d.id).where(d.id.in_(ids), _claimable(now, queued)),
                             now + timedelta(seconds=lease_seconds))


def claim(delivery_id: int, *, now: datetime, lease_seconds: float = LEASE_SECONDS,
          queued: datetime | None = None) -> Claim | None:
    """Claim one delivery at ``now`` (:func:`claim_many` of one id): the lease is ``now
    + lease_seconds``. Returns the :class:`Claim`, or None. Does not commit."""
    claims = claim_many([delivery_id], now=now, lease_seconds=lease_seconds, queued=queued)
    return claims[0] if claims else None


def claim_due(now: datetime, limit: int = 100, *, lease_seconds: float | None = None) -> list[Claim]:
    """Claim up to ``limit`` due deliveries, oldest due first, in one statement (the
    embedded scheduler's pass, :func:`run_due`). The lease covers sending the batch
    (default :func:`batch_lease_seconds`). Does not commit."""
    if lease_seconds is None:
        lease_seconds = batch_lease_seconds(limit)
    d = WebhookDelivery
    candidates = sa.select(d.id).where(_claimable(now)).order_by(d.next_attempt_at, d.id).limit(limit)
    return _claim_candidates(candidates, now + timedelta(seconds=lease_seconds))


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
            read = 0
            for chunk in response.iter_raw():  # to its end: the connection goes back to the pool
                read += len(chunk)
                if read > RESPONSE_READ_MAX:
                    break
    except httpx.TimeoutException:
        return result(None, f"timeout: no answer within {TOTAL_TIMEOUT_SECONDS:g} s")
    except httpx.HTTPError as exc:
        return result(None, f"connection error: {exc.__class__.__name__}: {exc}")
    if time.monotonic() - started > TOTAL_TIMEOUT_SECONDS:
        return result(status, f"timeout: answered after more than {TOTAL_TIMEOUT_SECONDS:g} s")
    if 200 <= status < 300:
        return result(status, None)
    return result(status, f"HTTP {status}")


def send_all(claims: list[Claim], *, now: datetime, client: httpx.Client, allow_private: bool = False,
             executor: Executor | None = None) -> list[SendResult]:
    """:func:`send` each claim, :data:`SEND_CONCURRENCY` at a time on ``executor``'s
    threads (the caller's pool, or one made for this call); the results in the order
    of ``claims``. An unexpected exception in one send (a bug) is logged and becomes
    that attempt's failure (``internal error: ...``), so the others' results are still
    recorded. No database access."""
    def one(c: Claim) -> SendResult:
        started = time.monotonic()
        try:
            return send(c, now=now, client=client, allow_private=allow_private)
        except Exception as exc:  # noqa: BLE001 - a bug: a failed attempt, the batch's other results kept
            log.exception("webhooks: sending delivery %s raised", c.delivery_id)
            return SendResult(None, f"internal error: {exc.__class__.__name__}: {exc}"[:_ERROR_MAX],
                              int((time.monotonic() - started) * 1000))

    if len(claims) <= 1:
        return [one(c) for c in claims]
    if executor is not None:
        return list(executor.map(one, claims))
    with ThreadPoolExecutor(min(SEND_CONCURRENCY, len(claims)), thread_name_prefix="webhook-send") as pool:
        return list(pool.map(one, claims))


def _result_values(c: Claim, res: SendResult, now: datetime, rng) -> dict[str, Any]:
    """The delivery columns an attempt's result writes (:func:`record_results`)."""
    values = {"response_status": res.status_code, "error": res.error, "duration_ms": res.duration_ms}
    if res.ok:
        return {**values, "status": DeliveryStatus.SUCCEEDED, "delivered_at": now, "next_attempt_at": None}
    delay = backoff_delay(c.attempt, rng)
    return {**values, "status": DeliveryStatus.PENDING if delay is not None else DeliveryStatus.FAILED,
            "next_attempt_at": now + delay if delay is not None else None}


def _per_row(key: sa.ColumnElement, column: sa.ColumnElement, values: dict[int, Any],
             else_: Any = None) -> Any:
    """``CASE key WHEN k THEN v ... ELSE else_ END`` typed as ``column``: one value per
    row in one UPDATE (just the value when every row gets the same one and none
    keeps its own: the common all-succeeded batch)."""
    distinct = set(values.values())
    if len(distinct) == 1 and else_ is None:
        return distinct.pop()
    return sa.case({k: sa.literal(v, column.type) for k, v in values.items()}, value=key, else_=else_)


def record_results(results: list[tuple[Claim, SendResult]], *, now: datetime,
                   rng: random.Random | None = None) -> list[Outcome]:
    """Write the results of a batch of attempts, each only if its claim's lease is still
    the row's (else nothing is written for it: ``Outcome(stale=True)``).

    Success -> ``succeeded``, ``delivered_at=now``. Failure -> ``pending`` with
    ``next_attempt_at`` per :func:`backoff_delay`, or ``failed`` after the last
    attempt. One UPDATE writes every delivery's result (``CASE id``), fenced by
    ``claimed_until = lease`` and RETURNING the ids written. Then the webhooks'
    failure runs, from the written results: a webhook with a success in the batch has
    its run reset (one UPDATE for all of them); one with only failures has its run
    grow by their number and, :data:`DISABLE_AFTER` after its first failure, is set
    inactive with ``disabled_reason`` (exactly once: a conditional UPDATE;
    ``Outcome.disabled`` tells the caller to notify). Does not commit. Returns the
    outcomes in the order of ``results``."""
    if not results:
        return []
    d, w = WebhookDelivery, Webhook
    values = {c.delivery_id: _result_values(c, res, now, rng) for c, res in results}
    by_lease: dict[datetime, list[int]] = {}
    for c, _ in results:
        by_lease.setdefault(c.lease, []).append(c.delivery_id)
    written: set[int] = set()
    for lease, ids in by_lease.items():  # one lease per claim_many: one statement per batch
        columns = {}
        for name in sorted({name for i in ids for name in values[i]}):
            per_id = {i: values[i][name] for i in ids if name in values[i]}
            # a row without a value keeps its own (a failure leaves delivered_at as it was)
            columns[name] = _per_row(d.id, getattr(d, name), per_id,
                                     else_=None if len(per_id) == len(ids) else getattr(d, name))
        written.update(db.session.scalars(
            sa.update(d).where(d.id.in_(ids), d.claimed_until == lease, d.status == DeliveryStatus.PENDING)
            .values(claimed_until=None, **columns)
            .returning(d.id).execution_options(synchronize_session=False)))
    succeeded = {c.webhook_id for c, res in results if c.delivery_id in written and res.ok}
    failures: dict[int, int] = {}
    for c, res in results:
        if c.delivery_id in written and not res.ok and c.webhook_id not in succeeded:
            failures[c.webhook_id] = failures.get(c.webhook_id, 0) + 1
    if succeeded:
        db.session.execute(sa.update(w).where(w.id.in_(succeeded), w.consecutive_failures != 0)
                           .values(consecutive_failures=0, first_failure_at=None)
                           .execution_options(synchronize_session=False))
    disabled: dict[int, WebhookDisabled | None] = {}
    if failures:
        db.session.execute(sa.update(w).where(w.id.in_(failures))
                           .values(consecutive_failures=w.consecutive_failures
                                   + _per_row(w.id, w.consecutive_failures, failures),
                                   first_failure_at=sa.func.coalesce(w.first_failure_at, now))
                           .execution_options(synchronize_session=False))
        disabled = {webhook_id: _disable_if_failing_too_long(webhook_id, now) for webhook_id in sorted(failures)}
    outcomes = []
    for c, res in results:
        if c.delivery_id not in written:
            outcomes.append(Outcome(c.delivery_id, None, c.attempt, stale=True))
            continue
        v = values[c.delivery_id]
        outcomes.append(Outcome(c.delivery_id, v["status"], c.attempt, res.status_code, res.error,
                                v["next_attempt_at"], disabled.pop(c.webhook_id, None)))
    return outcomes


def record_result(c: Claim, res: SendResult, *, now: datetime,
                  rng: random.Random | None = None) -> Outcome:
    """Write one attempt's result (:func:`record_results` of one). Does not commit."""
    return record_results([(c, res)], now=now, rng=rng)[0]


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


def attempt_many(delivery_ids: Iterable[int], *, now: datetime, client: httpx.Client,
                 allow_private: bool = False, rng: random.Random | None = None,
                 on_disabled: Callable[[WebhookDisabled], None] | None = None,
                 queued: datetime | None = None, executor: Executor | None = None) -> list[Outcome]:
    """One attempt of each delivery of ``delivery_ids`` at ``now``: claim them all
    (:func:`claim_many`, commit), send them concurrently (:func:`send_all`), record
    every result (:func:`record_results`, commit): two transactions for the batch.

    The worker task's body: idempotent, safe to run twice or concurrently for the
    same ids (the claim lets each through once). A worker killed between the two
    commits leaves the batch's rows leased; once the lease runs out the next claim
    sends the same bytes with the same delivery ids. ``on_disabled(info)`` runs
    inside the result's transaction when this batch disables a webhook: write the
    team owner's ``webhook_disabled`` notification there, so it commits with the
    disable, once. ``allow_private`` is ``WEBHOOK_ALLOW_PRIVATE_TARGETS``;
    ``queued``: the scan's token when the ids came from :func:`queue_due`;
    ``executor``: the threads to send on. Returns one :class:`Outcome` per distinct
    id, in id order (``status`` None: nothing to do, or ``stale``)."""
    ids = sorted({int(i) for i in delivery_ids})
    try:
        claims = claim_many(ids, now=now, queued=queued)
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    results = send_all(claims, now=now, client=client, allow_private=allow_private, executor=executor)
    outcomes = {o.delivery_id: o for o in _finish(list(zip(claims, results)), now=now, rng=rng,
                                                  on_disabled=on_disabled)}
    return [outcomes.get(i) or Outcome(i, None) for i in ids]


def attempt(delivery_id: int, *, now: datetime, client: httpx.Client, allow_private: bool = False,
            rng: random.Random | None = None,
            on_disabled: Callable[[WebhookDisabled], None] | None = None,
            queued: datetime | None = None) -> Outcome:
    """One attempt of one delivery at ``now``: claim (commit), send, record (commit)
    (:func:`attempt_many` of one id). Returns its :class:`Outcome`."""
    return attempt_many([delivery_id], now=now, client=client, allow_private=allow_private, rng=rng,
                        on_disabled=on_disabled, queued=queued)[0]


def _finish(results: list[tuple[Claim, SendResult]], *, now: datetime, rng, on_disabled) -> list[Outcome]:
    if not results:
        return []
    try:
        outcomes = record_results(results, now=now, rng=rng)
        if on_disabled is not None:
            for outcome in outcomes:
                if outcome.disabled is not None:
                    on_disabled(outcome.disabled)
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    return outcomes


def run_due(*, clock: Callable[[], datetime], client: httpx.Client, limit: int = 100,
            allow_private: bool = False, rng: random.Random | None = None,
            on_disabled: Callable[[WebhookDisabled], None] | None = None,
            executor: Executor | None = None) -> list[Outcome]:
    """Claim a batch of due deliveries (:func:`claim_due`, commit), send them
    concurrently and record the results in one transaction: the embedded
    scheduler's pass. ``clock()`` gives the current UTC time. Returns the outcomes,
    in id order."""
    now = clock()
    claims = claim_due(now, limit)
    db.session.commit()
    now = clock()
    results = send_all(claims, now=now, client=client, allow_private=allow_private, executor=executor)
    return _finish(list(zip(claims, results)), now=now, rng=rng, on_disabled=on_disabled)
