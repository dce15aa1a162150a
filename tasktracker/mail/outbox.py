"""The mail outbox: rows written in the caller's transaction, claimed and sent by the
workers after commit (contract v1.1 "Email"; DESIGN.md: every outbound side effect
is a row written with the change and claimed by a worker).

Writing (the caller commits, in the same transaction as the change):

- :func:`enqueue_for_notifications`: called by the fan-out with the notification
  rows it just inserted. Recipients whose settings turn the type on get the
  notification added to their *open batch*: the one pending, never-claimed
  ``notification`` row of the user (a unique partial index), created with
  ``next_attempt_at`` = first notification + ``MAIL_BATCH_SECONDS`` (60 s).
  ``INSERT ... ON CONFLICT (user_id) WHERE <open> DO UPDATE``: concurrent fan-outs
  for one user meet in the database and end up in the same row. A notification is
  linked to at most one row ever (``outgoing_email_notifications.notification_id``
  is unique).
- :func:`enqueue_password_reset`, :func:`enqueue_verification`: one row per request
  id (``dedupe_key``), so a redelivered job writes nothing twice.
- digests: :func:`tasktracker.mail.digest.enqueue_digests`.

Sending (:func:`deliver_due`, the beat/embedded scan; :func:`deliver_now`, the
after-commit fast path):

1. :func:`claim_due` takes due rows with one conditional UPDATE that sets a lease
   (``claimed_until``) and counts the attempt; PostgreSQL picks the rows ``FOR UPDATE
   SKIP LOCKED``, SQLite serialises writers and the WHERE is re-checked, so two
   workers never hold the same row. Once claimed, a notification batch is closed:
   later notifications start a new one.
2. The claimed batch is rendered once (subject, bodies, ``Message-ID``; stored and
   committed before anything is sent, so every retry sends the same message), from
   its users, notifications and tasks read with one SELECT per table
   (:class:`tasktracker.mail.compose.Sources`). Then each message goes out on the
   batch's one SMTP connection and is marked ``sent`` with one conditional UPDATE
   committed at once, before the next is sent.
3. A temporary failure (4yz, connection refused, timeout) schedules a retry with
   exponential backoff; after ``MAIL_MAX_ATTEMPTS`` attempts, or on a permanent one
   (5yz), the row is ``failed`` with the reason in ``error`` and in the log.

The one window left (honestly): if the process dies after the server answered 250 to
the data and before the ``sent`` UPDATE commits (microseconds to milliseconds: the
UPDATE is the next statement), the lease expires and the message is sent again, with
the same ``Message-ID``, so receivers that deduplicate on it (most MTAs and mail
clients do for identical IDs) show it once. SMTP has no two-phase commit; closing the
window entirely would need the receiver's cooperation.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa

from tasktracker.core.db import is_postgresql
from tasktracker.core.types import utcnow
from tasktracker.extensions import db
from tasktracker.mail.config import MailConfig, current_mail_config
from tasktracker.mail.models import (
    OPEN_BATCH_WHERE, EmailKind, EmailStatus, OutgoingEmail, OutgoingEmailNotification,
)
from tasktracker.mail.transport import DeliveryError, TemporaryFailure, open_transport

log = logging.getLogger(__name__)

TOKEN_KINDS = (EmailKind.PASSWORD_RESET, EmailKind.VERIFY_EMAIL)


def _insert(table):
    if is_postgresql():
        from sqlalchemy.dialects.postgresql import insert
    else:  # SQLite, the only other supported database
        from sqlalchemy.dialects.sqlite import insert
    return insert(table)


def _field(obj, name):
    return obj[name] if isinstance(obj, dict) else getattr(obj, name)


# --------------------------------------------------------------------------- writing


def enqueue_for_notifications(notifications: Iterable, now: datetime | None = None, *,
                              config: MailConfig | None = None) -> list[int]:
    """Add each notification to its recipient's open batch, for recipients whose
    settings turn its type on and whose account is active.

    ``notifications``: ``Notification`` objects or mappings with ``id``, ``user_id``,
    ``type``, ``created_at`` (aware), e.g. the rows the fan-out just inserted.
    Call it in the transaction that inserts them (the caller commits): the email rows
    then exist if and only if the notifications do. Notifications already carried by
    a row are skipped (idempotent). Returns the ids of the outbox rows written or
    joined, sorted.
    """
    from tasktracker.auth.models import User
    from tasktracker.mail.settings import email_on_for

    config = config or current_mail_config()
    now = now or utcnow()
    items = [{"id": int(_field(n, "id")), "user_id": int(_field(n, "user_id")),
              "type": str(_field(n, "type")), "created_at": _field(n, "created_at") or now}
             for n in notifications]
    if not items:
        return []
    linked = set(db.session.scalars(sa.select(OutgoingEmailNotification.notification_id).where(
        OutgoingEmailNotification.notification_id.in_([i["id"] for i in items]))))
    items = [i for i in items if i["id"] not in linked]
    wanted = []
    for type_ in {i["type"] for i in items}:
        on = email_on_for({i["user_id"] for i in items if i["type"] == type_}, type_)
        wanted += [i for i in items if i["type"] == type_ and i["user_id"] in on]
    if not wanted:
        return []
    addresses = dict(db.session.execute(sa.select(User.id, User.email).where(
        User.id.in_({i["user_id"] for i in wanted}), User.active.is_(True))).all())
    by_user: dict[int, list[dict]] = {}
    for item in sorted(wanted, key=lambda i: i["id"]):
        if item["user_id"] in addresses:
            by_user.setdefault(item["user_id"], []).append(item)
    if not by_user:
        return []
    batch = timedelta(seconds=config.batch_seconds)
    table = OutgoingEmail.__table__
    rows = [{"user_id": uid, "to_address": addresses[uid], "kind": EmailKind.NOTIFICATION.value,
             "dedupe_key": f"notification:{its[0]['id']}", "context": {},
             "status": EmailStatus.PENDING.value, "attempts": 0,
             "next_attempt_at": min(i["created_at"] for i in its) + batch, "created_at": now}
            for uid, its in sorted(by_user.items())]
    # in user order: concurrent fan-outs to the same recipients then take the open-batch
    # index's row locks in one order, so one waits for the other; in notification order
    # they deadlocked (tests/test_mail_outbox.py, ...wait_instead_of_deadlocking)
    stmt = _insert(table)
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.c.user_id], index_where=OPEN_BATCH_WHERE,
        set_={"to_address": stmt.excluded.to_address}).returning(table.c.id, table.c.user_id)
    email_of = {}
    for row in rows:  # one statement per recipient: usually one or two per event
        email_id, user_id = db.session.execute(stmt, row).one()
        email_of[user_id] = email_id
    links = [{"email_id": email_of[uid], "notification_id": i["id"]} for uid, its in by_user.items() for i in its]
    link_table = OutgoingEmailNotification.__table__
    db.session.execute(_insert(link_table).on_conflict_do_nothing(index_elements=[link_table.c.notification_id]),
                       links)
    return sorted(email_of.values())


def _insert_once(values: dict) -> int | None:
    """Insert one outbox row unless its ``dedupe_key`` exists; its id, or None."""
    table = OutgoingEmail.__table__
    stmt = (_insert(table).on_conflict_do_nothing(index_elements=[table.c.dedupe_key])
            .returning(table.c.id))
    return db.session.execute(stmt, values).scalar()


def _account_row(kind: EmailKind, user_id: int, address: str, request_id: str, now: datetime) -> dict:
    if not request_id or len(request_id) > 80:
        raise ValueError("request_id must be 1..80 characters (e.g. uuid4().hex)")
    return {"user_id": user_id, "to_address": address, "kind": kind.value,
            "dedupe_key": f"{kind.value}:{request_id}", "context": {},
            "status": EmailStatus.PENDING.value, "attempts": 0, "next_attempt_at": now, "created_at": now}


def enqueue_password_reset(email: str, request_id: str, now: datetime | None = None) -> int | None:
    """The worker's half of ``POST /api/auth/password-reset {email}``: if an active user
    has that address (case-insensitive), write a ``password_reset`` row keyed by
    ``request_id`` (made by the endpoint, e.g. ``uuid4().hex``: a redelivered job
    writes nothing twice). Returns the row id, or None (unknown address or
    duplicate request): the endpoint answered 202 before either was known. The token
    is created when the message is rendered (before its send), so no raw token waits
    in the database longer than the send. The caller commits."""
    from tasktracker.auth.models import User

    user = db.session.scalars(sa.select(User).where(
        sa.func.lower(User.email) == (email or "").strip().lower(), User.active.is_(True))).first()
    if user is None:
        return None
    return _insert_once(_account_row(EmailKind.PASSWORD_RESET, user.id, user.email, request_id, now or utcnow()))


def enqueue_verification(user_id: int, request_id: str, now: datetime | None = None) -> int | None:
    """``POST /api/auth/verify-email/request``: a ``verify_email`` row for the user's
    current address, keyed by ``request_id``. Returns its id (None: duplicate request
    or no such active user). The caller commits."""
    from tasktracker.auth.models import User

    user = db.session.get(User, user_id)
    if user is None or not user.active:
        return None
    return _insert_once(_account_row(EmailKind.VERIFY_EMAIL, user.id, user.email, request_id, now or utcnow()))


# --------------------------------------------------------------------------- claiming


def _due_conditions(table, now: datetime):
    return (table.c.status == EmailStatus.PENDING.value, table.c.next_attempt_at <= now,
            sa.or_(table.c.claimed_until.is_(None), table.c.claimed_until < now))


def claim_due(now: datetime | None = None, limit: int = 100, *, ids: Iterable[int] | None = None,
              config: MailConfig | None = None) -> list[int]:
    """Claim up to ``limit`` due rows (``pending``, ``next_attempt_at <= now``, no live
    lease), oldest due first, optionally only among ``ids``; set their lease to
    ``now + MAIL_CLAIM_LEASE_SECONDS`` and count the attempt. Commits; returns the
    claimed ids in due order. A row whose worker died is claimable again once its
    lease has passed."""
    config = config or current_mail_config()
    now = now or utcnow()
    table = OutgoingEmail.__table__
    pick = sa.select(table.c.id).where(*_due_conditions(table, now))
    if ids is not None:
        ids = [int(i) for i in ids]
        if not ids:
            return []
        pick = pick.where(table.c.id.in_(ids))
    pick = pick.order_by(table.c.next_attempt_at, table.c.id).limit(limit)
    if is_postgresql():
        pick = pick.with_for_update(skip_locked=True)
    claim = (sa.update(table)
             .where(table.c.id.in_(pick.scalar_subquery()), *_due_conditions(table, now))
             .values(claimed_until=now + timedelta(seconds=config.claim_lease_seconds),
                     attempts=table.c.attempts + 1)
             .returning(table.c.id, table.c.next_attempt_at))
    try:
        rows = db.session.execute(claim).all()
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    return [r.id for r in sorted(rows, key=lambda r: (r.next_attempt_at, r.id))]


def retry_delay(attempts: int, config: MailConfig) -> timedelta:
    """The wait after the ``attempts``-th failed attempt: ``MAIL_RETRY_BASE_SECONDS *
    2**(attempts - 1)``, at most ``MAIL_RETRY_MAX_SECONDS``."""
    seconds = config.retry_base_seconds * 2 ** max(0, attempts - 1)
    return timedelta(seconds=min(seconds, config.retry_max_seconds))


# --------------------------------------------------------------------------- rendering


def _render(email: OutgoingEmail, now: datetime, config: MailConfig, sources) -> bool:
    """Fill ``subject``, bodies, ``message_id`` of ``email`` (first attempt only) from
    ``sources`` (:class:`tasktracker.mail.compose.Sources`). Returns False when there
    is nothing to send (every notification of a batch was deleted meanwhile). Changes
    nothing on ``email`` when it raises."""
    from tasktracker.mail import compose
    from tasktracker.mail.message import message_id_for

    composed = compose.compose(email, now, config, sources)
    if composed is None:
        return False
    email.subject, email.text_body, email.html_body, unsubscribe = composed
    email.context = {**(email.context or {}), "unsubscribe_url": unsubscribe, "date": now.isoformat()}
    email.message_id = message_id_for(email.id, config)
    return True


def _message_fields(email: OutgoingEmail, to_name: str, now: datetime, config: MailConfig) -> dict:
    """The keyword arguments of :func:`tasktracker.mail.message.build_message` for a
    rendered row (plain values: the message is built when it is sent, so a batch
    does not hold 200 ``EmailMessage`` trees for the garbage collector to walk)."""
    return dict(to=email.to_address, to_name=to_name or "", subject=email.subject, text=email.text_body,
                html=email.html_body, message_id=email.message_id,
                date=datetime.fromisoformat((email.context or {}).get("date") or now.isoformat()),
                config=config, unsubscribe=(email.context or {}).get("unsubscribe_url"))


@dataclass
class _Ready:
    """A claimed row rendered (and committed), to hand to SMTP."""

    email_id: int
    kind: str
    attempts: int
    fields: dict  # for build_message


def _prepare(ids: list[int], now: datetime, config: MailConfig, run: RunResult) -> list[_Ready]:
    """Load the claimed rows ``ids`` still pending and what they are rendered from
    (:class:`tasktracker.mail.compose.Sources`: one SELECT per table for the batch),
    render those never rendered and commit them (one transaction for the notification
    batches and digests, one per token row: its token with it), before anything is
    sent: a retry or a re-send after a crash sends the same bytes with the same
    ``Message-ID``. A row that fails to render is retried (:func:`_temporary`), one
    with nothing left to send is ``failed``; both are added to ``run``. Returns the
    rest in ``ids`` order, with no transaction open and nothing of the batch left in
    the session."""
    from tasktracker.mail.compose import Sources

    held = set(db.session.identity_map.keys())  # the caller's objects stay in its session
    emails = {e.id: e for e in db.session.scalars(sa.select(OutgoingEmail).where(
        OutgoingEmail.id.in_(ids), OutgoingEmail.status == EmailStatus.PENDING.value)
        .execution_options(populate_existing=True))}
    for email_id in ids:
        if email_id not in emails:
            run.add(DeliveryResult(email_id, "skipped"))
    sources = Sources(emails.values())
    ready, empty, broken = [], [], []  # _Ready; (id, kind); (id, kind, attempts, error)

    def render(email: OutgoingEmail, commit: bool) -> None:
        email_id, kind, attempts = email.id, email.kind, email.attempts  # before a commit expires them
        try:
            item = None
            if email.message_id is not None or _render(email, now, config, sources):
                user = sources.users.get(email.user_id)
                item = _Ready(email_id, kind, attempts,
                              _message_fields(email, user.full_name if user else "", now, config))
            if commit:
                db.session.commit()
        except Exception as exc:  # noqa: BLE001 - a render error must not stop the batch
            if commit:
                db.session.rollback()
            log.exception("mail: rendering outbox row %s failed", email_id)
            broken.append((email_id, kind, attempts, exc))
            return
        if item is None:
            empty.append((email_id, kind))
        else:
            ready.append(item)

    # notification batches and digests only read to render (a failure changes nothing):
    # one commit for them all; a token row creates its token: a transaction each
    tokens = []
    for email in (emails[i] for i in ids if i in emails):
        if email.message_id is None and email.kind in TOKEN_KINDS:
            tokens.append(email)
        else:
            render(email, commit=False)
    try:
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    for email in tokens:
        render(email, commit=True)
    db.session.rollback()  # no transaction open while talking SMTP
    for key in set(db.session.identity_map.keys()) - held:
        obj = db.session.identity_map.get(key)
        if obj is not None:
            db.session.expunge(obj)
    for email_id, kind in empty:
        _finish(email_id, _failed_values(kind, "nothing to send: its notifications were deleted", now))
        run.add(DeliveryResult(email_id, "failed"))
    for email_id, kind, attempts, exc in broken:
        run.add(_temporary(email_id, kind, attempts, TemporaryFailure(f"render: {exc}"), now, config))
    order = {email_id: n for n, email_id in enumerate(ids)}
    return sorted(ready, key=lambda r: order[r.email_id])


# --------------------------------------------------------------------------- sending


@contextmanager
def _autocommit():
    """A connection of its own in autocommit mode: each statement on it commits itself."""
    with db.engine.connect() as connection:
        yield connection.execution_options(isolation_level="AUTOCOMMIT")


def _finish(email_id: int, values: dict, connection=None) -> bool:
    """One conditional UPDATE of a still-pending row, committed at once: a statement
    on an autocommit connection (``connection``, e.g. the one a batch's marks share,
    or one of its own), so one round trip, no BEGIN/COMMIT. True if it changed the row."""
    if connection is None:
        with _autocommit() as connection:
            return _finish(email_id, values, connection)
    table = OutgoingEmail.__table__
    return bool(connection.execute(sa.update(table).where(
        table.c.id == email_id, table.c.status == EmailStatus.PENDING.value).values(**values)).rowcount)


def _failed_values(kind: str, reason: str, now: datetime) -> dict:
    values = {"status": EmailStatus.FAILED.value, "claimed_until": None, "error": reason[:500]}
    if kind in TOKEN_KINDS:
        values.update(text_body=None, html_body=None)
    return values


@dataclass
class DeliveryResult:
    """What happened to one claimed row: ``outcome`` is ``sent``, ``retry`` (temporary
    failure, ``next_attempt_at`` set), ``failed`` (permanent, out of attempts, or
    nothing to send) or ``skipped`` (not pending any more). ``error``: the failure,
    if any."""

    email_id: int
    outcome: str
    error: DeliveryError | None = None


def _send(ready: _Ready, now: datetime | None, config: MailConfig, transport, marks=None) -> DeliveryResult:
    """Build a prepared row's message (one it cannot build, e.g. a malformed address,
    is ``failed``: retrying would not mend it), hand it to ``transport``, then mark it ``sent`` (``sent_at``: ``now``,
    default the moment SMTP accepted it)
    with one conditional UPDATE committed at once: a crash can re-send at most the
    message in flight. Failures: see :class:`DeliveryResult`; a temporary one waits
    :func:`retry_delay`. Never raises for an SMTP failure; database errors propagate
    (the lease then expires and the row is retried)."""
    from email.errors import MessageError

    from tasktracker.mail.message import build_message

    try:
        message = build_message(**ready.fields)
    except (ValueError, MessageError) as exc:  # e.g. an address the email package refuses: no retry mends it
        log.warning("mail: outbox row %s: cannot build its message: %s", ready.email_id, exc)
        reason = f"cannot build the message: {exc}"
        _finish(ready.email_id, _failed_values(ready.kind, reason, now or utcnow()), marks)
        return DeliveryResult(ready.email_id, "failed")
    try:
        transport.send(message)
    except DeliveryError as error:
        now = now or utcnow()
        if error.temporary:
            return _temporary(ready.email_id, ready.kind, ready.attempts, error, now, config, marks)
        log.warning("mail: outbox row %s to %s rejected for good: %s", ready.email_id, message["To"],
                    error.reason)
        _finish(ready.email_id, _failed_values(ready.kind, error.reason, now), marks)
        return DeliveryResult(ready.email_id, "failed", error)
    sent = {"status": EmailStatus.SENT.value, "sent_at": now or utcnow(), "claimed_until": None, "error": None}
    if ready.kind in TOKEN_KINDS:
        sent.update(text_body=None, html_body=None)  # the raw token leaves the database
    _finish(ready.email_id, sent, marks)
    return DeliveryResult(ready.email_id, "sent")


def _temporary(email_id: int, kind: str, attempts: int, error: DeliveryError, now: datetime,
               config: MailConfig, connection=None) -> DeliveryResult:
    if attempts >= config.max_attempts:
        reason = f"gave up after {attempts} attempts: {error.reason}"
        log.warning("mail: outbox row %s failed: %s", email_id, reason)
        _finish(email_id, _failed_values(kind, reason, now), connection)
        return DeliveryResult(email_id, "failed", error)
    delay = retry_delay(attempts, config)
    log.info("mail: outbox row %s: temporary failure (%s); retry in %ds", email_id, error.reason,
             delay.total_seconds())
    _finish(email_id, {"next_attempt_at": now + delay, "claimed_until": None, "error": error.reason[:500]},
            connection)
    return DeliveryResult(email_id, "retry", error)


def _release(email_ids: list[int], now: datetime, config: MailConfig) -> None:
    """Give claimed rows back untried (the server is unreachable): due again after the
    first backoff step, and the claim does not count as an attempt."""
    if not email_ids:
        return
    table = OutgoingEmail.__table__
    try:
        db.session.execute(sa.update(table).where(
            table.c.id.in_(email_ids), table.c.status == EmailStatus.PENDING.value).values(
            claimed_until=None, attempts=table.c.attempts - 1,
            next_attempt_at=now + retry_delay(1, config)))
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise


@dataclass
class RunResult:
    """Counts of one :func:`deliver_due` / :func:`deliver_now` call."""

    sent: int = 0
    retry: int = 0
    failed: int = 0
    released: int = 0
    results: list[DeliveryResult] = field(default_factory=list)

    def add(self, result: DeliveryResult) -> None:
        self.results.append(result)
        if result.outcome in ("sent", "retry", "failed"):
            setattr(self, result.outcome, getattr(self, result.outcome) + 1)


def _deliver_claimed(ids: list[int], now: datetime | None, config: MailConfig, transport, run: RunResult) -> bool:
    """Deliver claimed ``ids``: render the batch (:func:`_prepare`), then send each on
    the one connection ``transport`` (:func:`_send`), its mark committed on the batch's
    one autocommit database connection (no transaction open meanwhile). When the server cannot be reached
    (a temporary failure without a reply code), the rest is released untried.
    Returns False in that case."""
    ready = _prepare(ids, now or utcnow(), config, run)
    if not ready:
        return True
    with _autocommit() as marks:  # one connection for the batch's marks: no checkout (and ping) per message
        for n, item in enumerate(ready):
            result = _send(item, now, config, transport, marks)
            run.add(result)
            if result.outcome == "retry" and result.error is not None and result.error.code is None:
                rest = [r.email_id for r in ready[n + 1:]]
                _release(rest, now or utcnow(), config)
                run.released += len(rest)
                return False
    return True


def deliver_due(now: datetime | None = None, *, batch: int = 200, config: MailConfig | None = None) -> RunResult:
    """The scan: claim and deliver due rows ``batch`` at a time on one SMTP
    connection, until none is due or the server is unreachable. For the beat
    (Celery) and the embedded scheduler, every ``SCAN_INTERVAL_SECONDS`` or more often.
    Two of these at once (two workers) never send one row twice."""
    config = config or current_mail_config()
    run = RunResult()
    transport = open_transport(config)
    try:
        while True:
            at = now or utcnow()
            ids = claim_due(at, batch, config=config)
            if not ids or not _deliver_claimed(ids, now, config, transport, run):
                break
    finally:
        transport.close()
    if run.sent or run.failed or run.retry:
        log.info("mail: %d sent, %d to retry, %d failed, %d released", run.sent, run.retry, run.failed, run.released)
    return run


def deliver_now(email_ids: Iterable[int], now: datetime | None = None, *,
                config: MailConfig | None = None) -> RunResult:
    """The after-commit fast path: claim and deliver these rows if they are due (a
    notification batch is not due before its 60 s; a password reset is at once).
    Rows another worker holds, or that are not due, are left to :func:`deliver_due`."""
    config = config or current_mail_config()
    now = now or utcnow()
    run = RunResult()
    email_ids = list(email_ids)
    ids = claim_due(now, max(1, len(email_ids)), ids=email_ids, config=config)
    if ids:
        transport = open_transport(config)
        try:
            _deliver_claimed(ids, now, config, transport, run)
        finally:
            transport.close()
    return run
