"""Feed rules that need no request: the calendar feed of a token and the CSV export of
a task list (api-contract.md v1.1, "Calendar feed", "CSV export"). Both read the
tasks through :func:`tasktracker.tasks.services.filtered_query`, so they show exactly
what the list shows the user (visibility, not deleted, the list's filters)."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

from sqlalchemy.orm import Session, lazyload, selectinload

from tasktracker.auth.models import User
from tasktracker.core.errors import NotFound
from tasktracker.extensions import db
from tasktracker.feeds import calendar
from tasktracker.feeds.csv_export import stream_csv
from tasktracker.tasks.models import Task
from tasktracker.tasks.services import filtered_query, list_query

#: Rows fetched per round trip while streaming the export (constant memory).
EXPORT_BATCH = 500


class FeedNotFound(NotFound):
    """404: unknown, rotated or deleted feed token, or an inactive user (never says which)."""

    code, message = "feed_not_found", "Calendar feed not found."


def create_feed(user_id: int, base_url: str) -> dict:
    """``POST /api/auth/calendar-feed``: a new token (rotating the old one: its URL is
    404 from this commit on); commits. Returns ``{url, token}``."""
    raw = calendar.rotate_feed_token(user_id)
    return {"url": calendar.feed_url(base_url, raw), "token": raw}


def delete_feed(user_id: int) -> None:
    """``DELETE /api/auth/calendar-feed``: the URL stops working; commits."""
    calendar.delete_feed_token(user_id)


def feed(raw_token: str, base_url: str) -> tuple[bytes, str]:
    """The feed of token ``raw_token``: ``(body, etag)``. :class:`FeedNotFound` when
    the token is unknown or its user inactive. The events are the user's visible, not
    deleted tasks with a ``due_at`` (reminders loaded in one more query); the UIDs'
    host and the events' URLs come from ``base_url`` (``PUBLIC_BASE_URL``)."""
    user_id = calendar.feed_user_id(raw_token)
    user = db.session.get(User, user_id) if user_id is not None else None
    if user is None or not user.active:
        raise FeedNotFound()
    query = (filtered_query(user, {}).where(Task.due_at.is_not(None))
             .options(selectinload(Task.reminders), lazyload(Task.labels), lazyload(Task.checklist))
             .order_by(Task.id))
    tasks = db.session.scalars(query).all()
    host = urlsplit(base_url).hostname or "tasktracker"
    body = calendar.build_feed(tasks, host=host, task_url=base_url.rstrip("/") + "/api/tasks/{id}")
    db.session.rollback()  # read-only; nothing to keep
    return body, calendar.etag(body)


def export_csv(user: User, args: dict) -> Iterator[bytes]:
    """``GET /api/tasks/export.csv``: the chunks of the CSV of every task ``GET
    /api/tasks`` with ``args`` (its filters and ``sort``; pagination ignored) would
    list for ``user``.

    The query is built now (in the request); the rows are read when the body is
    iterated, on a session of its own (not the request's scoped one, which the
    request's teardown closes before a WSGI server iterates a streamed body, possibly
    on another thread): one transaction and a server-side cursor for the whole
    export, :data:`EXPORT_BATCH` rows per round trip (``yield_per``; owner and
    assignee joined, labels by one ``selectin`` query per batch), so memory stays
    constant whatever the count. The session closes when the body ends or the client
    goes away (the generator is closed)."""
    args = {k: v for k, v in args.items() if k not in ("page", "per_page")}
    query = (list_query(user, args)
             .options(selectinload(Task.labels), lazyload(Task.reminders), lazyload(Task.checklist))
             .execution_options(yield_per=EXPORT_BATCH))
    engine = db.engine

    def chunks() -> Iterator[bytes]:
        with Session(engine) as session:
            yield from stream_csv(session.scalars(query))

    return chunks()


__all__ = ["FeedNotFound", "create_feed", "delete_feed", "export_csv", "feed"]
