"""The calendar feed: RFC 5545 ``text/calendar`` built with the ``icalendar`` library,
and its URL token (api-contract.md v1.1, "Calendar feed").

One ``VEVENT`` per task given (the caller selects the visible, not deleted tasks
with a ``due_at``):

- ``UID`` ``task-<id>@<host>``: stable for the task's life, so clients update the
  event in place instead of duplicating it (RFC 5545 §3.8.4.7).
- ``DTSTART`` = ``due_at`` in UTC (``...Z``); no ``DTEND``: a DATE-TIME start without
  end is an event of no duration at that instant (§3.6.1), what a deadline is.
- ``DTSTAMP`` and ``LAST-MODIFIED`` = the task's ``updated_at``, ``CREATED`` = its
  ``created_at``, ``SEQUENCE`` = ``version - 1``: all derived from the task, never
  from the clock, so the same tasks always give the same bytes (and ``ETag``).
- ``SUMMARY`` = title, ``DESCRIPTION`` = description.
- ``STATUS``: a ``VEVENT`` may only be ``TENTATIVE``, ``CONFIRMED`` or
  ``CANCELLED`` (§3.8.1.11); the to-do values (``NEEDS-ACTION``, ``IN-PROCESS``,
  ``COMPLETED``) belong to ``VTODO``, which the contract does not ask for and common
  calendar clients (Google Calendar, Outlook subscriptions) do not show from a
  feed. So every task is ``CONFIRMED`` (the deadline stands); the task's own status
  goes into ``X-TASKTRACKER-STATUS`` and ``CATEGORIES``, and a done task's summary
  starts with a check mark.
- One ``VALARM`` (``ACTION:DISPLAY``) per unsent reminder, its ``TRIGGER`` relative
  to the start (``-PT1H`` for a reminder an hour before the due time). Relative,
  not absolute: an absolute trigger needs ``VALUE=DATE-TIME`` (§3.8.6.3), which
  icalendar 7.3 does not write, and relative triggers are the ones clients honour.

Times are timezone-aware UTC throughout; a naive one raises ``ValueError``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

import icalendar
import sqlalchemy as sa

from tasktracker.core.types import utcnow
from tasktracker.extensions import db
from tasktracker.feeds.models import CalendarFeedToken

PRODID = "-//TaskTracker//Calendar feed 1.1//EN"
CONTENT_TYPE = "text/calendar; charset=utf-8"


# --------------------------------------------------------------------------- the feed

def _get(obj: Any, key: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key, default)
    return getattr(obj, key, default)


def _utc(value: Any) -> datetime | None:
    """An aware datetime or an ISO 8601 string with offset (``Z`` included) -> UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError("naive datetime refused: feed times must be timezone-aware")
    return value.astimezone(timezone.utc)


def task_uid(task_id: int, host: str) -> str:
    """The stable UID of a task's event: ``task-<id>@<host>``."""
    return f"task-{task_id}@{host}"


def task_event(task: Any, *, host: str, url: str | None = None) -> icalendar.Event:
    """The ``VEVENT`` of one task (a dict as the API returns it, or a Task row):
    needs ``id, title, description, status, due_at, created_at, updated_at``;
    ``version`` and ``reminders`` (``[{remind_at, sent_at}]``) are optional.
    ``url`` (the task's page) becomes ``URL``."""
    due = _utc(_get(task, "due_at"))
    if due is None:
        raise ValueError("a task without due_at has no calendar event")
    updated = _utc(_get(task, "updated_at")) or due
    status = str(_get(task, "status") or "todo")
    title = _get(task, "title") or ""
    event = icalendar.Event()
    event.add("uid", task_uid(_get(task, "id"), host))
    event.add("dtstamp", updated)
    event.add("dtstart", due)
    event.add("summary", f"\u2713 {title}" if status == "done" else title)
    if _get(task, "description"):
        event.add("description", _get(task, "description"))
    event.add("status", "CONFIRMED")
    event.add("categories", [status])
    event.add("x-tasktracker-status", status)
    created = _utc(_get(task, "created_at"))
    if created is not None:
        event.add("created", created)
    event.add("last-modified", updated)
    version = _get(task, "version")
    if version:
        event.add("sequence", max(int(version) - 1, 0))
    if url:
        event.add("url", url)
    for reminder in sorted(_get(task, "reminders") or [], key=lambda r: _utc(_get(r, "remind_at"))):
        if _get(reminder, "sent_at") is not None:
            continue
        alarm = icalendar.Alarm()
        alarm.add("action", "DISPLAY")
        alarm.add("description", f"Reminder: {title}")
        alarm.add("trigger", _utc(_get(reminder, "remind_at")) - due)
        event.add_component(alarm)
    return event


def build_feed(tasks: Iterable[Any], *, host: str, name: str = "TaskTracker",
               task_url: str | None = None) -> bytes:
    """The whole feed as bytes (CRLF lines, folded at 75 octets, UTF-8).

    ``tasks``: the tasks to show; those without ``due_at`` are skipped. ``host``
    goes into the UIDs (the public host name, e.g. from ``PUBLIC_BASE_URL``).
    ``task_url``: a format string with ``{id}`` for each event's ``URL``. Events are
    ordered by task id, so the bytes depend only on the tasks' content."""
    cal = icalendar.Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    cal.add("x-wr-calname", name)
    for task in sorted((t for t in tasks if _get(t, "due_at") is not None), key=lambda t: _get(t, "id")):
        cal.add_component(task_event(task, host=host,
                                     url=task_url.format(id=_get(task, "id")) if task_url else None))
    return cal.to_ical()


def etag(body: bytes) -> str:
    """A strong ``ETag`` over the feed's bytes: ``"<first 32 hex of SHA-256>"``."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def not_modified(if_none_match: str | None, current: str) -> bool:
    """Whether an ``If-None-Match`` header matches ``current`` (then answer 304):
    ``*``, or any listed tag, weak or strong (RFC 9110 §13.1.2 weak comparison)."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
    return current.removeprefix("W/") in tags


# --------------------------------------------------------------------------- the token

def _hash(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def rotate_feed_token(user_id: int, *, now: datetime | None = None) -> str:
    """A new feed token for ``user_id`` (the ``POST /api/auth/calendar-feed``); commits.

    Replaces the previous one in the same row, so the old URL is unknown (404) from
    this commit on. Returns the raw token (43 URL-safe chars), shown in the 201 only."""
    raw = secrets.token_urlsafe(32)
    t = CalendarFeedToken
    values = {"token_hash": _hash(raw), "created_at": now or utcnow()}
    changed = db.session.execute(sa.update(t).where(t.user_id == user_id).values(**values)
                                 .execution_options(synchronize_session=False)).rowcount
    if not changed:
        db.session.add(CalendarFeedToken(user_id=user_id, **values))
        try:
            db.session.commit()
            return raw
        except sa.exc.IntegrityError:  # a concurrent first rotation inserted meanwhile
            db.session.rollback()
            db.session.execute(sa.update(t).where(t.user_id == user_id).values(**values)
                               .execution_options(synchronize_session=False))
    db.session.commit()
    return raw


def delete_feed_token(user_id: int) -> bool:
    """Remove the user's feed token (``DELETE /api/auth/calendar-feed``); commits.
    Returns whether there was one (the endpoint answers 204 either way)."""
    gone = db.session.execute(sa.delete(CalendarFeedToken).where(CalendarFeedToken.user_id == user_id))
    db.session.commit()
    return gone.rowcount > 0


def feed_user_id(raw: str | None) -> int | None:
    """The user id a feed token belongs to, or None (the 404). Looked up by hash,
    compared again in constant time; whether the user is active is the caller's
    check (an inactive user's feed should 404 too)."""
    if not isinstance(raw, str) or not 20 <= len(raw) <= 64:
        return None
    digest = _hash(raw)
    row = db.session.execute(sa.select(CalendarFeedToken.user_id, CalendarFeedToken.token_hash)
                             .where(CalendarFeedToken.token_hash == digest)).first()
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        return None
    return row.user_id


def feed_url(base_url: str, raw: str) -> str:
    """``<PUBLIC_BASE_URL>/api/calendar/<token>.ics``."""
    return f"{base_url.rstrip('/')}/api/calendar/{raw}.ics"
