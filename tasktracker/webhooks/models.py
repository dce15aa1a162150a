"""Webhooks and their deliveries (api-contract.md v1.1, "Webhooks").

A :class:`WebhookDelivery` is an outbox row: written in the transaction of the change
(:func:`tasktracker.webhooks.services.deliveries_for_event`), attempted only after
commit by whoever claims it (:mod:`tasktracker.webhooks.delivery`), retried from the
row itself, so nothing lives only in a worker's memory.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from tasktracker.core.types import CreatedAt, IntPK, Timestamp, UTCDateTime, str_enum, utcnow
from tasktracker.extensions import db


class DeliveryStatus(StrEnum):
    """Where a delivery stands (``WebhookDelivery.status``)."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Webhook(db.Model):
    """An HTTP(S) endpoint that receives one team's events.

    ``events`` is a JSON list of the contract's dotted names (``task.created`` ...)
    or ``["*"]``. ``secret`` is the HMAC key: it must be kept in the clear to sign,
    so it is only ever shown in the answers that create or rotate it.
    ``consecutive_failures``/``first_failure_at`` describe the current run of failed
    attempts (reset by a success); after 24 h of them the webhook is set inactive
    with ``disabled_reason`` (:func:`tasktracker.webhooks.delivery.record_result`).
    """

    __tablename__ = "webhooks"

    id: Mapped[IntPK]
    team_id: Mapped[int] = mapped_column(sa.ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(sa.String(2048))
    events: Mapped[list] = mapped_column(sa.JSON, default=lambda: ["*"])
    active: Mapped[bool] = mapped_column(default=True)
    secret: Mapped[str] = mapped_column(sa.String(128))
    created_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[CreatedAt]
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    consecutive_failures: Mapped[int] = mapped_column(default=0)
    first_failure_at: Mapped[Timestamp | None]
    disabled_reason: Mapped[str | None] = mapped_column(sa.String(200))


class WebhookDelivery(db.Model):
    """One event (or ping) for one webhook: the body as sent and its attempts' state.

    ``id`` is the delivery id sent to the receiver (body ``id`` and
    ``X-TaskTracker-Delivery``), the same on every attempt and on a redelivery.
    ``body`` holds the exact bytes that are POSTed and signed.

    Uniqueness: ``(webhook_id, event_seq)`` is unique, so one event gives at most one
    delivery per webhook, whoever writes it twice. A ``ping`` has ``event_seq`` NULL
    (NULLs are distinct in a unique constraint on SQLite and PostgreSQL): each ping is
    its own delivery. A redelivery reuses its row (same id, same bytes, attempts go
    on counting): it never adds one.

    Claiming: ``claimed_until`` is a lease. An attempt claims the row with a
    conditional UPDATE (``status='pending' AND (claimed_until IS NULL OR
    claimed_until < now) AND next_attempt_at <= now``) and records its result only
    if the lease it took is still the row's (the value is the fencing token), so a
    worker killed mid-attempt is replaced once the lease runs out, and a late
    answer from it changes nothing.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        sa.UniqueConstraint("webhook_id", "event_seq", name="uq_webhook_deliveries_webhook_event"),
        sa.Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        sa.Index("ix_webhook_deliveries_webhook_created", "webhook_id", "created_at"),
        {"sqlite_autoincrement": True},  # a delivery id is never reused
    )

    id: Mapped[IntPK]
    webhook_id: Mapped[int] = mapped_column(sa.ForeignKey("webhooks.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(sa.String(40))
    event_seq: Mapped[int | None] = mapped_column(sa.BigInteger().with_variant(sa.Integer(), "sqlite"))
    body: Mapped[bytes] = mapped_column(sa.LargeBinary, default=b"")
    status: Mapped[DeliveryStatus] = mapped_column(str_enum(DeliveryStatus, 16),
                                                   default=DeliveryStatus.PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    response_status: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(sa.String(500))
    duration_ms: Mapped[int | None]
    created_at: Mapped[CreatedAt]
    next_attempt_at: Mapped[Timestamp | None] = mapped_column(default=utcnow)
    delivered_at: Mapped[Timestamp | None]
    claimed_until: Mapped[Timestamp | None]

    webhook: Mapped[Webhook] = relationship()
