"""Mail models: the outbox (:class:`OutgoingEmail` and the notifications each row
carries), per-user :class:`NotificationSettings` and single-use :class:`UserToken`.

Migration: ``migrations/versions/a1b2c3d40014_v1_1_email.py`` (with ``users.email_verified``).
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from tasktracker.core.types import CreatedAt, IntPK, Timestamp, UpdatedAt, enum_values, str_enum, utcnow
from tasktracker.extensions import db


class EmailKind(StrEnum):
    """What an outbox row is (``OutgoingEmail.kind``)."""

    NOTIFICATION = "notification"      # one or more notifications of one user, coalesced (60 s)
    DIGEST = "digest"                  # the daily digest
    PASSWORD_RESET = "password_reset"
    VERIFY_EMAIL = "verify_email"


class EmailStatus(StrEnum):
    """Where an outbox row stands (``OutgoingEmail.status``): ``pending`` until SMTP
    accepted it (``sent``) or rejected it for good / ran out of attempts (``failed``)."""

    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


class DigestFrequency(StrEnum):
    """``NotificationSettings.digest``: contract v1.1 ``"off" | "daily"``."""

    OFF = "off"
    DAILY = "daily"


EMAIL_KINDS = enum_values(EmailKind)
EMAIL_STATUSES = enum_values(EmailStatus)
DIGEST_FREQUENCIES = enum_values(DigestFrequency)

#: The predicate of the one *open* notification batch per user: pending and never
#: claimed. New notifications of the user join that row (``INSERT ... ON CONFLICT``
#: on :data:`OPEN_BATCH_INDEX`); once a worker has claimed it, it is closed and the
#: next notification starts a new row.
OPEN_BATCH_WHERE = sa.text("kind = 'notification' AND status = 'pending' AND claimed_until IS NULL")
OPEN_BATCH_INDEX = "uq_outgoing_emails_open_batch"


class OutgoingEmail(db.Model):
    """One email to send: a row of the mail outbox (DESIGN.md: every outbound side
    effect is a row written with the change and claimed by a worker after commit).

    - ``dedupe_key`` is unique: ``notification:<first notification id>``,
      ``digest:<user id>:<local date>``, ``password_reset:<request id>``,
      ``verify_email:<request id>``; a second row for the same thing cannot exist.
    - ``context`` is the data to render from (digest: notification and task ids;
      token kinds: nothing secret). ``subject``/``text_body``/``html_body``/
      ``message_id`` are filled by the first delivery attempt and reused by every
      retry, so a re-sent message is the same message (same ``Message-ID``).
      For the token kinds the bodies (which hold the raw token) are cleared once
      the row is ``sent`` or ``failed``.
    - ``next_attempt_at``: not before then (a notification batch: its first
      notification + 60 s; a retry: the backoff). ``claimed_until`` is the lease of
      the worker sending it; ``attempts`` counts claims.
    """

    __tablename__ = "outgoing_emails"
    __table_args__ = (
        sa.Index("ix_outgoing_emails_due", "status", "next_attempt_at"),
        sa.Index(OPEN_BATCH_INDEX, "user_id", unique=True,
                 postgresql_where=OPEN_BATCH_WHERE, sqlite_where=OPEN_BATCH_WHERE),
    )

    id: Mapped[IntPK]
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    to_address: Mapped[str] = mapped_column(sa.String(254))
    kind: Mapped[EmailKind] = mapped_column(str_enum(EmailKind, 20))
    dedupe_key: Mapped[str] = mapped_column(sa.String(120), unique=True)
    context: Mapped[dict] = mapped_column(sa.JSON, default=dict)
    subject: Mapped[str | None] = mapped_column(sa.String(255))
    text_body: Mapped[str | None] = mapped_column(sa.Text)
    html_body: Mapped[str | None] = mapped_column(sa.Text)
    message_id: Mapped[str | None] = mapped_column(sa.String(255))
    status: Mapped[EmailStatus] = mapped_column(str_enum(EmailStatus, 16), default=EmailStatus.PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[Timestamp] = mapped_column(default=utcnow)
    claimed_until: Mapped[Timestamp | None]
    sent_at: Mapped[Timestamp | None]
    error: Mapped[str | None] = mapped_column(sa.String(500))
    created_at: Mapped[CreatedAt]

    notifications: Mapped[list[OutgoingEmailNotification]] = relationship(
        lazy="selectin", cascade="all, delete-orphan", passive_deletes=True,
        order_by="OutgoingEmailNotification.notification_id")

    @property
    def notification_ids(self) -> list[int]:
        """The notifications this message carries (kind ``notification``), in id order."""
        return [link.notification_id for link in self.notifications]


class OutgoingEmailNotification(db.Model):
    """A notification carried by an outbox row. ``notification_id`` is unique: a
    notification is mailed in at most one message, ever (a redelivered fan-out
    cannot add it to a second one)."""

    __tablename__ = "outgoing_email_notifications"

    email_id: Mapped[int] = mapped_column(sa.ForeignKey("outgoing_emails.id", ondelete="CASCADE"),
                                          primary_key=True)
    notification_id: Mapped[int] = mapped_column(
        sa.ForeignKey("notifications.id", ondelete="CASCADE"), primary_key=True, unique=True)


class NotificationSettings(db.Model):
    """A user's email settings (``/api/auth/profile/notification-settings``).

    ``email`` maps a notification type to on/off; types missing from it take the
    contract's defaults (:data:`tasktracker.mail.settings.DEFAULT_EMAIL_ON`); a user
    without a row has all defaults. ``digest_hour`` is 0..23 in the user's
    ``timezone``. ``last_digest_on`` is the local date of the last digest decision
    (sent, or nothing to send), ``last_digest_at`` the instant the last digest was
    written: its content starts there.
    """

    __tablename__ = "notification_settings"
    __table_args__ = (sa.CheckConstraint("digest_hour BETWEEN 0 AND 23", name="hour"),)

    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    email: Mapped[dict] = mapped_column(sa.JSON, default=dict)
    digest: Mapped[DigestFrequency] = mapped_column(str_enum(DigestFrequency, 8), default=DigestFrequency.OFF)
    digest_hour: Mapped[int] = mapped_column(default=8)
    last_digest_on: Mapped[date | None] = mapped_column(sa.Date)
    last_digest_at: Mapped[Timestamp | None]
    updated_at: Mapped[UpdatedAt]


class TokenPurpose(StrEnum):
    """What a :class:`UserToken` is for."""

    PASSWORD_RESET = "password_reset"
    VERIFY_EMAIL = "verify_email"


class UserToken(db.Model):
    """A single-use account token. Only its SHA-256 (hex) is stored; the raw token
    exists in the email only. ``email`` is the address it was issued for (a
    verification token verifies that address only). Consumed by a conditional
    ``UPDATE ... SET used_at WHERE used_at IS NULL`` (:mod:`tasktracker.mail.tokens`)."""

    __tablename__ = "user_tokens"
    __table_args__ = (sa.Index("ix_user_tokens_user_purpose", "user_id", "purpose"),)

    id: Mapped[IntPK]
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"))
    purpose: Mapped[TokenPurpose] = mapped_column(str_enum(TokenPurpose, 20))
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    email: Mapped[str] = mapped_column(sa.String(254))
    created_at: Mapped[CreatedAt]
    expires_at: Mapped[Timestamp]
    used_at: Mapped[Timestamp | None]
