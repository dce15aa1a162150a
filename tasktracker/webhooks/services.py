"""Webhook rules that need no request (api-contract.md v1.1, "Webhooks").

Authorisation stays with the caller: every function taking ``team_ids`` expects the
ids of the teams in which the caller is owner or admin (the lead's team-role check);
a webhook outside them is a ``404`` (never reveal it exists), like a missing one.

The outbox: :func:`deliveries_for_event` turns an ``events`` row into one
:class:`WebhookDelivery` per matching active webhook of the event's team, in the
session of the change, so the rows commit (or roll back) with it. After the commit
the ids written are handed to the consumer installed by
:func:`register_delivery_hooks` (the jobs layer: enqueue ``attempt(id)`` or run it in
process), exactly as ``events`` hands over its seqs; the beat scan
(:func:`tasktracker.webhooks.delivery.due_deliveries`) picks up whatever that
missed (broker down, process killed after commit).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable

import sqlalchemy as sa
from flask import Flask, current_app, has_app_context
from marshmallow import ValidationError
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

from tasktracker.core.db import valid_id
from tasktracker.core.errors import NotFound, TeamNotFound, Unprocessable
from tasktracker.core.pagination import paginate
from tasktracker.core.types import utcnow
from tasktracker.extensions import db
from tasktracker.teams.models import Team, TeamMember
from tasktracker.webhooks import signing
from tasktracker.webhooks.models import DeliveryStatus, Webhook, WebhookDelivery
from tasktracker.webhooks.schemas import ALL_EVENTS, deliveries_schema, validate_events
from tasktracker.webhooks.ssrf import UnsafeTarget, check_target

#: ``events.type`` -> the contract's webhook event name, for the types webhooks carry.
EVENT_NAMES: dict[str, str] = {
    "task.created": "task.created",
    "task.updated": "task.updated",
    "task.deleted": "task.deleted",
    "task.restored": "task.restored",
    "task.assigned": "task.assigned",
    "task.status_changed": "task.status_changed",
    "comment.created": "comment.created",
    "member.added": "member.joined",
    "member.removed": "member.left",
}
PING = "ping"
_UNSET: Any = object()
_PENDING_KEY = "tasktracker_new_webhook_deliveries"
_CONSUMER_KEY = "tt_webhook_delivery_consumer"


# --------------------------------------------------------------------------- validation

def _checked_url(url: str, allow_private: bool, resolver) -> str:
    try:
        return check_target(url, allow_private=allow_private, resolver=resolver).url
    except UnsafeTarget as exc:
        raise Unprocessable(details={"url": [str(exc)]}) from None


def _checked_events(events: list[str]) -> list[str]:
    try:
        validate_events(events)
    except ValidationError as exc:
        raise Unprocessable(details={"events": exc.messages}) from None
    if ALL_EVENTS in events:
        return [ALL_EVENTS]
    return sorted(set(events))


def matches(webhook_events: list[str], event_name: str) -> bool:
    """Whether a webhook subscribed to ``webhook_events`` receives ``event_name``
    (``"*"`` = every contract event; ``ping`` is not filtered: it is always sent)."""
    return event_name == PING or ALL_EVENTS in webhook_events or event_name in webhook_events


# --------------------------------------------------------------------------- access

#: Team roles that manage the team's webhooks (site admins too).
MANAGER_ROLES = ("owner", "admin")


class _AllTeams(frozenset):
    """What a site admin manages: every team (``team_id in`` is always true)."""

    def __contains__(self, item) -> bool:
        return True


def managed_team_ids(user) -> frozenset[int]:
    """The ids of the teams whose webhooks ``user`` manages: those where they are
    owner or admin; every team for a site admin. The ``team_ids`` the functions
    below take."""
    if user.is_admin:
        return _AllTeams()
    return frozenset(db.session.scalars(sa.select(TeamMember.team_id).where(
        TeamMember.user_id == user.id, TeamMember.role.in_(MANAGER_ROLES))))


def require_manager(user, team_id: int) -> None:
    """``TeamNotFound`` (404) unless the team exists and ``user`` manages its webhooks
    (a plain member gets the same 404 as an outsider: the contract's "everyone else
    gets 404")."""
    if not valid_id(team_id) or db.session.get(Team, team_id) is None:
        raise TeamNotFound()
    if user.is_admin:
        return
    member = db.session.get(TeamMember, (team_id, user.id))
    if member is None or member.role not in MANAGER_ROLES:
        raise TeamNotFound()


# --------------------------------------------------------------------------- webhooks

def get_webhook(webhook_id: int, team_ids: set[int] | frozenset[int]) -> Webhook:
    """The webhook if it belongs to one of ``team_ids``, else ``NotFound`` (404)."""
    webhook = db.session.get(Webhook, webhook_id) if valid_id(webhook_id) else None
    if webhook is None or webhook.team_id not in team_ids:
        raise NotFound("Webhook not found.", code="webhook_not_found")
    return webhook


def list_webhooks(team_id: int) -> list[Webhook]:
    """The team's webhooks, oldest first (the caller checked the role)."""
    return list(db.session.scalars(sa.select(Webhook).where(Webhook.team_id == team_id)
                                   .order_by(Webhook.id)))


def create_webhook(team_id: int, *, url: str, events: list[str] | None = None, active: bool = True,
                   created_by_id: int | None = None, allow_private: bool = False,
                   resolver=None, now: datetime | None = None) -> Webhook:
    """Register a webhook for ``team_id`` with a fresh secret; commits.

    422 ``validation_error`` with ``details.url`` when the URL is not http(s), does
    not resolve or resolves to a refused address (unless ``allow_private``, i.e.
    ``WEBHOOK_ALLOW_PRIVATE_TARGETS``), and ``details.events`` for unknown names.
    ``webhook.secret`` is then shown once, in the 201."""
    now = now or utcnow()
    webhook = Webhook(team_id=team_id, url=_checked_url(url, allow_private, resolver),
                      events=_checked_events(events if events is not None else [ALL_EVENTS]),
                      active=active, secret=signing.new_secret(), created_by_id=created_by_id,
                      created_at=now, updated_at=now)
    db.session.add(webhook)
    db.session.commit()
    return webhook


def update_webhook(webhook_id: int, team_ids, *, url: str = _UNSET, events: list[str] = _UNSET,
                   active: bool = _UNSET, allow_private: bool = False, resolver=None,
                   now: datetime | None = None) -> Webhook:
    """Change ``url``/``events``/``active`` (only those passed); same 404/422 rules as
    create; commits. Re-activating a webhook clears ``disabled_reason`` and its
    failure run, and its paused pending deliveries resume at their due time."""
    webhook = get_webhook(webhook_id, team_ids)
    if url is not _UNSET:
        webhook.url = _checked_url(url, allow_private, resolver)
    if events is not _UNSET:
        webhook.events = _checked_events(events)
    if active is not _UNSET:
        if active and not webhook.active:
            webhook.disabled_reason = None
            webhook.consecutive_failures = 0
            webhook.first_failure_at = None
        webhook.active = bool(active)
    webhook.updated_at = now or utcnow()
    db.session.commit()
    return webhook


def delete_webhook(webhook_id: int, team_ids) -> None:
    """Delete the webhook and its deliveries (cascade); 404 rules as above; commits."""
    webhook = get_webhook(webhook_id, team_ids)
    db.session.execute(sa.delete(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook.id))
    db.session.delete(webhook)
    db.session.commit()


def rotate_secret(webhook_id: int, team_ids, *, now: datetime | None = None) -> str:
    """Give the webhook a new secret and return it (the ``200 {secret}``); commits.
    Attempts from then on are signed with it: the old one verifies nothing new
    (an attempt claimed before the rotation may still carry the old one)."""
    webhook = get_webhook(webhook_id, team_ids)
    webhook.secret = signing.new_secret()
    webhook.updated_at = now or utcnow()
    db.session.commit()
    return webhook.secret


def _webhook_data(webhook: Webhook) -> dict[str, Any]:
    from tasktracker.webhooks.schemas import webhook_schema

    return webhook_schema.dump(webhook)


def ping(webhook_id: int, team_ids, *, actor_id: int | None, now: datetime | None = None) -> WebhookDelivery:
    """Queue a ``ping`` delivery (``data`` = the webhook as the API returns it), due
    now; commits, then the after-commit hand-off sends it. Returns the row (its id
    is the ``202 {delivery_id}``). Every ping is a delivery of its own
    (``event_seq`` NULL); it is sent even to an inactive webhook."""
    webhook = get_webhook(webhook_id, team_ids)
    now = now or utcnow()
    [delivery] = _new_deliveries([webhook], PING, seq=None, created_at=now, team_id=webhook.team_id,
                                 actor_id=actor_id, data=_webhook_data(webhook), now=now)
    db.session.commit()
    return delivery


def redeliver(delivery_id: int, team_ids, *, now: datetime | None = None) -> WebhookDelivery:
    """A new attempt of a delivery's stored bytes, due now (the ``202``); commits.

    The same row is reused: the receiver sees the same delivery id and body (it can
    deduplicate), ``attempts`` goes on counting, the status is ``pending`` again and
    the retry schedule goes on from the attempt count. The lease is dropped too: an
    attempt in flight at this moment gets its result discarded (its lease is no
    longer the row's), the redelivery's attempt is the one recorded. 404 when the
    delivery's webhook is outside ``team_ids``."""
    delivery = db.session.get(WebhookDelivery, delivery_id) if valid_id(delivery_id) else None
    if delivery is None:
        raise NotFound("Delivery not found.", code="delivery_not_found")
    webhook = db.session.get(Webhook, delivery.webhook_id)
    if webhook is None or webhook.team_id not in team_ids:
        raise NotFound("Delivery not found.", code="delivery_not_found")
    now = now or utcnow()
    d = WebhookDelivery
    db.session.execute(sa.update(d).where(d.id == delivery.id)
                       .values(status=DeliveryStatus.PENDING, next_attempt_at=now, claimed_until=None)
                       .execution_options(synchronize_session=False))
    _pending_ids().append(delivery.id)
    db.session.commit()
    db.session.refresh(delivery)
    return delivery


def list_deliveries(webhook_id: int, team_ids, page: int = 1, per_page: int = 20) -> dict:
    """The webhook's deliveries, newest first, paginated (``{items, page, per_page,
    total, pages}``, items per :class:`~tasktracker.webhooks.schemas.DeliverySchema`)."""
    webhook = get_webhook(webhook_id, team_ids)
    query = (sa.select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook.id)
             .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc()))
    return paginate(query, page, per_page, deliveries_schema.dump)


# --------------------------------------------------------------------------- the outbox

def _pending_ids() -> list[int]:
    return db.session.info.setdefault(_PENDING_KEY, [])


def _new_deliveries(webhooks: list[Webhook], event: str, *, seq: int | None, created_at: datetime,
                    team_id: int | None, actor_id: int | None, data: Any,
                    now: datetime) -> list[WebhookDelivery]:
    """Insert one delivery per webhook, then store each body (which carries its id).

    One flush inserts them all (one multi-row ``INSERT ... RETURNING id``); the bodies
    then go out with the commit's flush (one executemany ``UPDATE``), instead of a
    flush per row."""
    rows = [WebhookDelivery(webhook_id=w.id, event=event, event_seq=seq, body=b"",
                            status=DeliveryStatus.PENDING, created_at=now, next_attempt_at=now)
            for w in webhooks]
    if not rows:
        return []
    db.session.add_all(rows)
    db.session.flush()
    for row in rows:
        row.body = signing.body_bytes(signing.delivery_body(
            delivery_id=row.id, event=event, created_at=created_at, team_id=team_id,
            actor_id=actor_id, seq=seq, data=data))
    _pending_ids().extend(row.id for row in rows)
    return rows


def event_data(event) -> Any:
    """The ``data`` of an event's deliveries: the resource as the REST API returns it,
    taken from the event's payload (written by the services): the task for ``task.*``,
    the comment for ``comment.created``, ``{team_id, user_id, role}`` for
    ``member.*`` (the payload carries no more of the membership)."""
    payload = event.payload or {}
    if event.type.startswith("task."):
        return payload.get("task")
    if event.type == "comment.created":
        return payload.get("comment")
    if event.type.startswith("member."):
        return {"team_id": event.team_id, "user_id": payload.get("user_id"), "role": payload.get("role")}
    return payload


def deliveries_for_event(event, *, now: datetime | None = None) -> list[WebhookDelivery]:
    """Write one pending delivery per active webhook of ``event.team_id`` whose filter
    matches the event, in the current session (not committed).

    ``event`` is a :class:`tasktracker.events.models.Event` (``type, team_id,
    actor_id, seq, payload, created_at``); it is flushed first if it has no ``seq``
    yet. Events without a team, and types webhooks do not carry
    (:data:`EVENT_NAMES`), give nothing. Idempotent: webhooks that already have a
    delivery for ``event.seq`` are skipped (and the unique constraint
    ``(webhook_id, event_seq)`` makes a concurrent second writer fail), so a re-run
    fan-out creates nothing twice. Returns the rows written."""
    name = EVENT_NAMES.get(event.type)
    if name is None or event.team_id is None:
        return []
    if event.seq is None:
        db.session.flush()
    now = now or utcnow()
    # correlated per webhook row: the unique (webhook_id, event_seq) index answers it
    already = sa.select(WebhookDelivery.id).where(WebhookDelivery.webhook_id == Webhook.id,
                                                  WebhookDelivery.event_seq == event.seq).exists()
    webhooks = db.session.scalars(sa.select(Webhook).where(
        Webhook.team_id == event.team_id, Webhook.active.is_(True), ~already)
        .order_by(Webhook.id)).all()
    data = event_data(event)
    created_at = event.created_at or now
    return _new_deliveries([w for w in webhooks if matches(w.events or [], name)], name, seq=event.seq,
                           created_at=created_at, team_id=event.team_id, actor_id=event.actor_id,
                           data=data, now=now)


def _after_commit(session: Session) -> None:
    ids = session.info.pop(_PENDING_KEY, None)
    if not ids:
        return
    consumer = current_app.extensions.get(_CONSUMER_KEY) if has_app_context() else None
    if consumer is not None:
        consumer(list(ids))


def _after_rollback(session: Session) -> None:
    session.info.pop(_PENDING_KEY, None)


def register_delivery_hooks(app: Flask, consumer: Callable[[list[int]], None]) -> None:
    """Make ``consumer(delivery_ids)`` receive, after each commit of ``app``, the ids
    of the deliveries that commit wrote or re-queued (it must not raise: a lost
    hand-off is picked up by the scan), and install the session hooks once."""
    app.extensions[_CONSUMER_KEY] = consumer
    if not sa_event.contains(Session, "after_commit", _after_commit):
        sa_event.listen(Session, "after_commit", _after_commit)
        sa_event.listen(Session, "after_soft_rollback", lambda s, prev: _after_rollback(s))
