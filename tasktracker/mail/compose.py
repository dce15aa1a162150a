"""Composing an outbox row's message: subject, text and HTML bodies, and its one-click
unsubscribe URL, from the rows it refers to, in the recipient's time zone.

Called once per row, by its first delivery attempt (:func:`tasktracker.mail.outbox.deliver_due`
and :func:`~tasktracker.mail.outbox.deliver_now`), for a claimed batch at a time: the
batch's users, notifications and tasks are loaded first by :class:`Sources`, one
SELECT per table (plain column rows, no ORM objects), not three per message.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, timedelta

import sqlalchemy as sa

from tasktracker.extensions import db
from tasktracker.mail import render as templates
from tasktracker.mail.config import MailConfig
from tasktracker.mail.message import unsubscribe_url
from tasktracker.mail.models import EmailKind, OutgoingEmail, TokenPurpose
from tasktracker.mail.settings import ALL_SCOPE, DIGEST_SCOPE
from tasktracker.mail.unsubscribe import make_token

#: How each notification type reads in a message.
TYPE_LABELS = {
    "task_assigned": "Assigned to you", "task_updated": "Task updated",
    "task_status_changed": "Status changed", "task_deleted": "Task deleted",
    "comment_added": "New comment", "deadline_reminder": "Deadline reminder",
    "task_overdue": "Overdue", "team_invitation": "Team invitation",
    "invitation_accepted": "Invitation accepted", "mentioned": "You were mentioned",
    "webhook_disabled": "Webhook disabled",
}

Composed = tuple[str, str, str, str]  # subject, text, html, unsubscribe URL

#: Ids per ``IN (...)`` list (SQLite limits the bound parameters of one statement).
_CHUNK = 500


def _iso(value: datetime | None) -> str:
    return value.isoformat().replace("+00:00", "Z") if value else ""


def _rows_by_id(columns: list, ids: Iterable[int]) -> dict:
    """``{id: row}`` of ``SELECT columns WHERE id IN ids`` (``columns[0]`` is the id),
    a statement per :data:`_CHUNK` ids."""
    ids = sorted({i for i in ids if i is not None})
    found = {}
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start:start + _CHUNK]
        found.update((row[0], row) for row in db.session.execute(sa.select(*columns).where(columns[0].in_(chunk))))
    return found


class Sources:
    """What ``emails`` (outbox rows) are rendered from: their users, the notifications
    they carry (notification batches and digests) and those notifications' and digests'
    tasks, each table read with one SELECT (per :data:`_CHUNK` ids) as column rows.
    ``users``, ``notifications``, ``tasks``: ``{id: row}``; a deleted row is missing."""

    def __init__(self, emails: Iterable[OutgoingEmail]):
        from tasktracker.auth.models import User
        from tasktracker.notifications.models import Notification
        from tasktracker.tasks.models import Task

        emails = list(emails)
        notification_ids, task_ids = set(), set()
        for email in emails:
            if email.kind == EmailKind.NOTIFICATION:
                notification_ids.update(email.notification_ids)
            elif email.kind == EmailKind.DIGEST:
                notification_ids.update((email.context or {}).get("notification_ids", []))
                task_ids.update((email.context or {}).get("task_ids", []))
        self.users = _rows_by_id([User.id, User.username, User.full_name, User.email, User.timezone],
                                 {e.user_id for e in emails})
        self.notifications = _rows_by_id(
            [Notification.id, Notification.type, Notification.message, Notification.task_id, Notification.data,
             Notification.read_at, Notification.created_at], notification_ids)
        task_ids.update(n.task_id for n in self.notifications.values())
        self.tasks = _rows_by_id([Task.id, Task.title, Task.status, Task.priority, Task.due_at, Task.deleted_at],
                                 task_ids)

    def notifications_of(self, ids: Iterable[int]) -> list:
        """The notifications among ``ids`` still there, oldest first."""
        found = [self.notifications[i] for i in ids if i in self.notifications]
        return sorted(found, key=lambda n: (n.created_at, n.id))

    def tasks_of(self, ids: Iterable[int]) -> list:
        """The tasks among ``ids`` still there."""
        return [self.tasks[i] for i in ids if i in self.tasks]


def _notification_items(notifications, sources: Sources, zone) -> list[dict]:
    items = []
    for n in notifications:
        task = sources.tasks.get(n.task_id)
        title = task.title if task is not None else ((n.data or {}).get("task") or {}).get("title")
        due = task.due_at if task is not None else None
        items.append({"type": str(n.type), "label": TYPE_LABELS.get(str(n.type), str(n.type)),
                      "message": n.message, "task_title": title,
                      "when": templates.local_time(n.created_at, zone), "when_iso": _iso(n.created_at),
                      "due": templates.local_time(due, zone), "due_iso": _iso(due)})
    return items


def compose(email: OutgoingEmail, now: datetime, config: MailConfig,
            sources: Sources | None = None) -> Composed | None:
    """``(subject, text, html, unsubscribe_url)`` of ``email``, or None when nothing is
    left to send (a batch or digest whose rows were all deleted). ``sources``: the
    batch's :class:`Sources` (default: loaded for this row alone). Notification
    batches and digests only read; for the token kinds this creates the token
    (:func:`tasktracker.mail.tokens.create_token`, in the caller's transaction) and
    may move ``email.to_address`` to the user's current address. Raises
    ``LookupError`` if the user is gone."""
    sources = sources if sources is not None else Sources([email])
    user = sources.users.get(email.user_id)
    if user is None:
        raise LookupError(f"user {email.user_id} of outbox row {email.id} is gone")
    zone = templates.user_zone(user.timezone)
    base = {"name": user.full_name or user.username, "to_address": email.to_address, "tz_name": zone.key}

    if email.kind == EmailKind.NOTIFICATION:
        notifications = sources.notifications_of(email.notification_ids)
        if not notifications:
            return None
        items = _notification_items(notifications, sources, zone)
        titles = {i["task_title"] for i in items}
        if len(items) == 1:
            subject = items[0]["message"]
        else:
            subject = f"{len(items)} new notifications"
            if len(titles) == 1 and None not in titles:
                subject += f' on "{next(iter(titles))}"'
        scopes = sorted({i["type"] for i in items})
        name, context = templates.NOTIFICATION_BATCH, {"items": items}
    elif email.kind == EmailKind.DIGEST:
        found = digest_context(email.context or {}, now, zone, sources)
        if found is None:
            return None
        context, subject = found, (f"Your TaskTracker digest for {found['local_date']}: "
                                   f"{len(found['tasks'])} due, {len(found['items'])} unread")
        scopes, name = [DIGEST_SCOPE], templates.DIGEST
    else:
        from tasktracker.mail.tokens import create_token

        purpose = TokenPurpose(email.kind.value)
        reset = purpose is TokenPurpose.PASSWORD_RESET
        if not reset:  # verify the address the user has now
            email.to_address = user.email
            base["to_address"] = user.email
        ttl = timedelta(seconds=config.password_reset_ttl if reset else config.verification_ttl)
        raw = create_token(user.id, email.to_address, purpose, now, ttl)
        url = (config.reset_url if reset else config.verify_url).format(base=config.public_base_url, token=raw)
        context = {"link": url, "expires": templates.local_time(now + ttl, zone), "expires_iso": _iso(now + ttl)}
        subject = "Reset your TaskTracker password" if reset else "Confirm your email address"
        scopes, name = [ALL_SCOPE], templates.PASSWORD_RESET if reset else templates.VERIFY_EMAIL

    link = unsubscribe_url(make_token(config.secret_key, user.id, scopes), config)
    text, html = templates.render(name, {**base, **context, "subject": subject, "unsubscribe_url": link})
    return subject[:255], text, html, link


def digest_context(context: dict, now: datetime, zone, sources: Sources) -> dict | None:
    """The template context of a digest row (``context``: ``local_date``,
    ``notification_ids``, ``task_ids``, as :func:`tasktracker.mail.digest.enqueue_digests`
    wrote it; ``sources`` hold them): the notifications still there and unread, the
    tasks still open and not in the trash. None when both are empty."""
    notifications = [n for n in sources.notifications_of(context.get("notification_ids", [])) if n.read_at is None]
    tasks = [t for t in sources.tasks_of(context.get("task_ids", []))
             if t.deleted_at is None and t.status != "done" and t.due_at is not None]
    if not notifications and not tasks:
        return None
    tasks.sort(key=lambda t: (t.due_at, t.id))
    local_date = date.fromisoformat(context["local_date"])
    return {
        "local_date": f"{local_date:%A} {local_date.day} {local_date:%B %Y}",
        "items": _notification_items(notifications, sources, zone),
        "tasks": [{"title": t.title, "status": str(t.status).replace("_", " "), "priority": str(t.priority),
                   "due": templates.local_time(t.due_at, zone), "due_iso": _iso(t.due_at),
                   "overdue": t.due_at <= now} for t in tasks],
    }
