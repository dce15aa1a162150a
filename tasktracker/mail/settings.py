"""Per-user email settings (contract v1.1 "Email":
``GET, PATCH /api/auth/profile/notification-settings``).

Shape: ``{"email": {<notification type>: bool}, "digest": "off" | "daily",
"digest_hour": 0..23}``. Defaults: email on for :data:`DEFAULT_EMAIL_ON`, off for
the other :data:`EMAIL_TYPES`; digest off; ``digest_hour`` 8. The caller commits.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import sqlalchemy as sa

from tasktracker.core.errors import Unprocessable
from tasktracker.extensions import db
from tasktracker.mail.models import DIGEST_FREQUENCIES, DigestFrequency, NotificationSettings
from tasktracker.notifications.models import NOTIFICATION_TYPES

#: Types the contract turns on by default. ``mentioned`` and ``webhook_disabled`` come
#: with the v1.1 mentions and webhooks features (not in ``NotificationType`` yet).
DEFAULT_EMAIL_ON = frozenset({"deadline_reminder", "task_overdue", "task_assigned", "team_invitation",
                              "mentioned", "webhook_disabled"})
#: Every type a setting may name: v1's notification types plus the v1.1 ones.
EMAIL_TYPES = tuple(dict.fromkeys((*NOTIFICATION_TYPES, "mentioned", "webhook_disabled")))
DEFAULT_DIGEST_HOUR = 8

#: Unsubscribe scopes beyond a notification type: ``digest`` (the daily digest) and
#: ``*`` (every optional email: all types and the digest).
DIGEST_SCOPE = "digest"
ALL_SCOPE = "*"


def default_email_map() -> dict[str, bool]:
    """``{type: on}`` for every :data:`EMAIL_TYPES` with the contract's defaults."""
    return {t: t in DEFAULT_EMAIL_ON for t in EMAIL_TYPES}


def effective(row: NotificationSettings | None) -> dict:
    """The settings document of ``row`` (``None``: a user without a row): every type
    present, defaults filled in."""
    email = default_email_map()
    if row is not None:
        email.update({t: bool(v) for t, v in (row.email or {}).items() if t in email})
    return {"email": email,
            "digest": str(row.digest) if row is not None else DigestFrequency.OFF.value,
            "digest_hour": row.digest_hour if row is not None else DEFAULT_DIGEST_HOUR}


def get_settings(user_id: int) -> dict:
    """The settings document of user ``user_id`` (:func:`effective`)."""
    return effective(db.session.get(NotificationSettings, user_id))


def _row(user_id: int, *, lock: bool = False) -> NotificationSettings:
    stmt = sa.select(NotificationSettings).where(NotificationSettings.user_id == user_id)
    if lock:
        stmt = stmt.with_for_update()
    row = db.session.scalars(stmt).first()
    if row is None:
        row = NotificationSettings(user_id=user_id, email={}, digest=DigestFrequency.OFF,
                                   digest_hour=DEFAULT_DIGEST_HOUR)
        db.session.add(row)
    return row


def validate_patch(data: Mapping) -> dict:
    """Check a PATCH body: ``email`` a map of known types to booleans, ``digest`` one of
    ``off|daily``, ``digest_hour`` an integer 0..23; unknown keys refused. Returns it
    unchanged. Raises ``Unprocessable`` (422, ``details``: field -> messages)."""
    details: dict[str, list[str]] = {}
    for key in set(data) - {"email", "digest", "digest_hour"}:
        details[key] = ["Unknown field."]
    email = data.get("email", {})
    if not isinstance(email, Mapping):
        details["email"] = ["Must be an object of notification type -> boolean."]
    else:
        bad = [f"{t}: unknown notification type." for t in email if t not in EMAIL_TYPES]
        bad += [f"{t}: must be a boolean." for t, v in email.items() if t in EMAIL_TYPES and not isinstance(v, bool)]
        if bad:
            details["email"] = bad
    if "digest" in data and data["digest"] not in DIGEST_FREQUENCIES:
        details["digest"] = [f"Must be one of: {', '.join(DIGEST_FREQUENCIES)}."]
    hour = data.get("digest_hour", 0)
    if isinstance(hour, bool) or not isinstance(hour, int) or not 0 <= hour <= 23:
        details["digest_hour"] = ["Must be an integer from 0 to 23."]
    if details:
        raise Unprocessable(details=details)
    return dict(data)


def update_settings(user_id: int, data: Mapping) -> dict:
    """Apply a validated PATCH (:func:`validate_patch`) to user ``user_id``'s settings,
    creating the row if needed. Returns the new settings document. The caller commits."""
    data = validate_patch(data)
    row = _row(user_id, lock=True)
    if "email" in data:
        row.email = {**(row.email or {}), **{t: bool(v) for t, v in data["email"].items()}}
    if "digest" in data:
        row.digest = DigestFrequency(data["digest"])
    if "digest_hour" in data:
        row.digest_hour = int(data["digest_hour"])
    db.session.flush()
    return effective(row)


def turn_off(user_id: int, scopes: Iterable[str]) -> dict:
    """Turn email off for ``scopes`` (notification types, :data:`DIGEST_SCOPE`,
    :data:`ALL_SCOPE`) for user ``user_id``: what a one-click unsubscribe does.
    Unknown scopes are ignored (a token signed by an older release). Idempotent.
    Returns the new settings document. The caller commits."""
    scopes = set(scopes)
    row = _row(user_id, lock=True)
    types = set(EMAIL_TYPES) if ALL_SCOPE in scopes else scopes & set(EMAIL_TYPES)
    if types:
        row.email = {**(row.email or {}), **{t: False for t in types}}
    if ALL_SCOPE in scopes or DIGEST_SCOPE in scopes:
        row.digest = DigestFrequency.OFF
    db.session.flush()
    return effective(row)


def email_on_for(user_ids: Iterable[int], notification_type: str) -> set[int]:
    """Which of ``user_ids`` have email on for ``notification_type`` (one query)."""
    ids = set(user_ids)
    if not ids:
        return set()
    rows = {r.user_id: r for r in db.session.scalars(
        sa.select(NotificationSettings).where(NotificationSettings.user_id.in_(ids)))}
    return {uid for uid in ids if effective(rows.get(uid))["email"].get(notification_type, False)}
