"""Task reads (api-contract.md, "Tasks"): one task, the filtered and sorted lists,
search, the trash, the activity log; list pages are rendered by
:func:`task_page` with conditional GET and the read cache
(:mod:`tasktracker.tasks.cache`).

Reads raise 404 ``task_not_found`` (:class:`~tasktracker.core.errors.TaskNotFound`)
for a task that is missing, not visible or in the trash.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import aggregate_order_by

from tasktracker.auth.models import User
from tasktracker.core.db import is_postgresql
from tasktracker.core.fields import iso_utc
from tasktracker.core.pagination import paginate
from tasktracker.core.serialization import dumps
from tasktracker.core.types import utcnow
from tasktracker.events.services import task_events_query
from tasktracker.extensions import db
from tasktracker.tasks import cache as list_cache
from tasktracker.tasks.models import ChecklistItem, Label, Reminder, Task, TaskLabel
from tasktracker.tasks.permissions import TEAM_MANAGER_ROLES, get_visible_task, visible_condition
from tasktracker.tasks.schemas import task_item
from tasktracker.tasks.services import labels, watchers
from tasktracker.teams.models import TeamMember

PRIORITY_RANK = {"low": 0, "medium": 1, "high": 2, "urgent": 3}
STATUS_RANK = {"todo": 0, "in_progress": 1, "done": 2}


def get_task(actor: User, task_id: int) -> Task:
    """``GET /api/tasks/<id>``: the task if visible and not deleted, else 404."""
    return get_visible_task(actor, task_id)


def _trash_condition(user: User):
    """Soft-deleted tasks ``user`` may restore: own tasks, tasks of teams they own or
    administer; every task for site admins."""
    deleted = Task.deleted_at.is_not(None)
    if user.is_admin:
        return deleted
    managed = sa.select(TeamMember.team_id).where(TeamMember.user_id == user.id,
                                                  TeamMember.role.in_(TEAM_MANAGER_ROLES))
    return sa.and_(deleted, sa.or_(Task.owner_id == user.id, Task.team_id.in_(managed)))


def _like_escape(text: str) -> str:
    return text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _contains(column, text: str):
    return sa.func.lower(column).like(f"%{_like_escape(text)}%", escape="\\")


def filtered_query(actor: User, args: dict) -> sa.Select:
    """Tasks ``actor`` may see, filtered by the parsed query ``args`` (not ordered).

    ``args`` keys (all optional): ``status`` (list), ``priority``, ``assignee_id``
    (int or ``"me"``), ``owner_id`` (int or ``"me"``), ``team_id``, ``due_before``
    (exclusive), ``due_after`` (inclusive), ``overdue`` (bool), ``q`` (case-
    insensitive substring of title or description), ``deleted="only"`` (the
    caller's trash instead of live tasks), ``label_id`` (list: every one of these
    labels), ``watching`` (bool: tasks the caller watches, or the others).
    """
    stmt = sa.select(Task)
    if args.get("deleted") == "only":
        stmt = stmt.where(_trash_condition(actor))
    else:
        stmt = stmt.where(Task.deleted_at.is_(None), visible_condition(actor))
    if args.get("status"):
        stmt = stmt.where(Task.status.in_(args["status"]))
    if args.get("priority"):
        stmt = stmt.where(Task.priority == args["priority"])
    for key, column in (("assignee_id", Task.assignee_id), ("owner_id", Task.owner_id)):
        if key in args:
            stmt = stmt.where(column == (actor.id if args[key] == "me" else args[key]))
    if "team_id" in args:
        stmt = stmt.where(Task.team_id == args["team_id"])
    if "due_before" in args:
        stmt = stmt.where(Task.due_at < args["due_before"])
    if "due_after" in args:
        stmt = stmt.where(Task.due_at >= args["due_after"])
    if "overdue" in args:
        overdue = sa.and_(Task.due_at.is_not(None), Task.due_at < utcnow(), Task.status != "done")
        stmt = stmt.where(overdue if args["overdue"] else sa.not_(overdue))
    if args.get("q"):
        q = args["q"].strip()
        stmt = stmt.where(sa.or_(_contains(Task.title, q), _contains(Task.description, q)))
    if args.get("label_id"):
        stmt = stmt.where(labels.has_labels_condition(Task.id, args["label_id"]))
    if "watching" in args:
        watched = watchers.watching_condition(actor)
        stmt = stmt.where(watched if args["watching"] else sa.not_(watched))
    return stmt


def _sort_expressions(key: str) -> list:
    if key == "priority":
        return [sa.case(PRIORITY_RANK, value=Task.priority, else_=-1)]
    if key == "status":
        return [sa.case(STATUS_RANK, value=Task.status, else_=-1)]
    if key == "title":
        lowered = sa.func.lower(Task.title)
        if is_postgresql():  # code-point order, as SQLite's BINARY collation
            return [lowered.collate("C"), Task.title.collate("C")]
        return [lowered, Task.title]
    return [getattr(Task, key)]


def list_query(actor: User, args: dict) -> sa.Select:
    """``GET /api/tasks``: :func:`filtered_query` ordered by ``args["sort"]``.

    ``sort`` is a list of ``(key, descending)``. ``priority`` sorts by rank
    (low < medium < high < urgent), ``status`` by todo < in_progress < done,
    ``title`` case-insensitively by code point, ``due_at`` with tasks without a
    due date last in both directions. ``id`` (in the direction of the last key)
    breaks ties, so pages are stable on SQLite and PostgreSQL alike.
    """
    sort = args.get("sort") or [("created_at", True)]
    order = []
    for key, desc in sort:
        if key == "due_at":
            order.append(sa.case((Task.due_at.is_(None), 1), else_=0))
        for expr in _sort_expressions(key):
            order.append(expr.desc() if desc else expr.asc())
    order.append(Task.id.desc() if sort[-1][1] else Task.id.asc())
    return filtered_query(actor, args).order_by(*order)


def search_query(actor: User, args: dict) -> sa.Select:
    """``GET /api/tasks/search``: the tasks of ``GET /api/tasks?q=`` ranked by relevance.

    Rank (same SQL on SQLite and PostgreSQL): 0 title equals ``q``, 1 title
    starts with ``q``, 2 title contains ``q``, 3 only the description matches
    (all case-insensitive); then newest first, then id.
    """
    q = args["q"].strip()
    title = sa.func.lower(Task.title)
    rank = sa.case(
        (title == q.lower(), 0),
        (title.like(f"{_like_escape(q)}%", escape="\\"), 1),
        (_contains(Task.title, q), 2),
        else_=3,
    )
    return filtered_query(actor, args).order_by(rank, Task.created_at.desc(), Task.id.desc())


_OWNER = sa.orm.aliased(User, name="owner")
_ASSIGNEE = sa.orm.aliased(User, name="assignee")
_TASK_COLUMNS = [Task.id, Task.title, Task.description, Task.status, Task.priority, Task.due_at,
                 Task.team_id, Task.created_at, Task.updated_at, Task.completed_at,
                 Task.deleted_at, Task.version, Task.recurrence_rule, Task.recurrence_from,
                 Task.recurrence_of]
_USER_REF_COLUMNS = ("id", "username", "full_name")


def _json_array_column(postgresql: bool, rows: sa.Select, fields: dict, order: list):
    """A correlated scalar subquery: the JSON array (text) of ``{key: column}`` objects
    for the ``rows`` of the outer task, ordered by ``order``; ``[]`` when none.

    The database builds the array as compact JSON (PostgreSQL: ``to_json`` of each
    value, concatenated, ``string_agg(... ORDER BY ...)``: its ``json_build_object``
    text has spaces; SQLite: ``json_group_array`` of ``json_object`` over an ordered
    subquery), and the page embeds the text as is (``orjson.Fragment``): a task's
    labels and checklist cost no Python per item (bench/task_model.py), and the list
    keeps its statement count."""
    if postgresql:
        parts = []
        for n, (key, column) in enumerate(fields.items()):
            parts += [sa.literal(("{" if n == 0 else ",") + f'"{key}":'),
                      sa.cast(sa.func.to_json(column), sa.Text)]
        obj = sa.func.concat(*parts, sa.literal("}"))
        array = sa.func.string_agg(obj, aggregate_order_by(sa.literal_column("','"), *order))
        return rows.with_only_columns(
            sa.func.concat("[", sa.func.coalesce(array, ""), "]")).scalar_subquery()
    ordered = rows.with_only_columns(*(column.label(key) for key, column in fields.items())) \
        .order_by(*order).correlate(Task).subquery()
    pairs = [x for key in fields for x in (sa.literal(key), _sqlite_json_value(ordered.c[key]))]
    array = sa.func.json_group_array(sa.func.json_object(*pairs))
    return sa.select(sa.func.coalesce(array, "[]")).select_from(ordered).scalar_subquery()


def _sqlite_json_value(column):
    # SQLite keeps booleans as 0/1: json('true'/'false') makes them JSON booleans
    if isinstance(column.type, sa.Boolean):
        return sa.func.json(sa.case((column, "true"), else_="false"))
    return column


def _children_columns(postgresql: bool) -> list:
    """The ``labels`` and ``checklist`` JSON columns of a task page (TaskSchema's order)."""
    labels = _json_array_column(
        postgresql,
        sa.select(Label.id).join(TaskLabel, TaskLabel.label_id == Label.id)
        .where(TaskLabel.task_id == Task.id),
        {"id": Label.id, "name": Label.name, "color": Label.color},
        [sa.func.lower(Label.name), Label.id])
    checklist = _json_array_column(
        postgresql,
        sa.select(ChecklistItem.id).where(ChecklistItem.task_id == Task.id),
        {"id": ChecklistItem.id, "text": ChecklistItem.text, "done": ChecklistItem.done,
         "position": ChecklistItem.position},
        [ChecklistItem.position, ChecklistItem.id])
    return [labels.label("labels_json"), checklist.label("checklist_json")]


_CHILDREN_COLUMNS = {dialect: _children_columns(dialect) for dialect in (True, False)}


def page_items(query: sa.Select) -> list[dict]:
    """The JSON items of one page of ``query`` (a ``select(Task)`` with its
    filters, order, limit and offset), as :class:`TaskSchema` dumps them.

    Two statements whatever the page size: the page's task columns joined with
    owner and assignee, with each task's labels and checklist as JSON arrays
    built by the database (:func:`_json_array_column`), then the page's
    reminders. Plain rows, no ORM objects: building and dumping 100 ORM tasks
    cost more than the queries themselves (bench/cpu_cost.py).
    """
    owner = [getattr(_OWNER, c).label(f"owner_{c}") for c in _USER_REF_COLUMNS]
    assignee = [getattr(_ASSIGNEE, c).label(f"assignee_{c}") for c in _USER_REF_COLUMNS]
    stmt = (query.with_only_columns(*_TASK_COLUMNS, *owner, *assignee,
                                    *_CHILDREN_COLUMNS[is_postgresql()])
            .join(_OWNER, _OWNER.id == Task.owner_id)
            .outerjoin(_ASSIGNEE, _ASSIGNEE.id == Task.assignee_id))
    rows = db.session.execute(stmt).all()
    reminders: dict[int, list] = {row.id: [] for row in rows}
    if rows:
        for r in db.session.execute(
                sa.select(Reminder.task_id, Reminder.id, Reminder.remind_at, Reminder.sent_at)
                .where(Reminder.task_id.in_(list(reminders)))
                .order_by(Reminder.remind_at, Reminder.id)):
            reminders[r.task_id].append(
                {"id": r.id, "remind_at": iso_utc(r.remind_at), "sent_at": iso_utc(r.sent_at)})
    items = []
    for row in rows:
        owner_ref = {c: getattr(row, f"owner_{c}") for c in _USER_REF_COLUMNS}
        assignee_ref = ({c: getattr(row, f"assignee_{c}") for c in _USER_REF_COLUMNS}
                        if row.assignee_id is not None else None)
        items.append(task_item(row, owner_ref, assignee_ref, reminders[row.id],
                               orjson.Fragment(row.labels_json), orjson.Fragment(row.checklist_json)))
    return items


@dataclass
class ListResult:
    """A list response: ``body`` is the rendered JSON page (None when
    ``not_modified``); ``etag`` its strong entity tag (None for uncacheable
    queries, see :func:`task_page`)."""

    etag: str | None
    body: bytes | None
    not_modified: bool = False


def task_page(actor: User, args: dict, *, search: bool = False,
              if_none_match: str | None = None) -> ListResult:
    """``GET /api/tasks`` (or ``/api/tasks/search``): one page, with conditional GET
    and the read cache of :mod:`tasktracker.tasks.cache`.

    The entity tag hashes (caller id, caller role, endpoint, loaded ``args``,
    data version); ``if_none_match`` naming it gives ``not_modified`` without
    running the list queries, a cached body for it is returned as is, and only
    otherwise the count and page queries run (and the body is stored). Queries
    with ``overdue`` depend on the clock, not only on the data: they get no tag
    and are never cached.
    """
    endpoint = "search" if search else "list"

    def render() -> bytes:
        query = search_query(actor, args) if search else list_query(actor, args)
        page = paginate(query, args["page"], args["per_page"], fetch=page_items)
        return dumps(page)

    if "overdue" in args:
        return ListResult(etag=None, body=render())
    etag = list_cache.list_etag(actor.id, actor.role, endpoint, args, list_cache.data_version())
    if list_cache.if_none_match_matches(if_none_match, etag):
        return ListResult(etag=etag, body=None, not_modified=True)
    store = list_cache.get_store()
    body = store.get(etag)
    if body is not None:
        return ListResult(etag=etag, body=body)
    body = render()
    store.set(etag, body)
    return ListResult(etag=etag, body=body)


def activity_query(actor: User, task_id: int) -> sa.Select:
    """``GET /api/tasks/<id>/activity``: the task's events, newest first (404 if not visible)."""
    task = get_visible_task(actor, task_id, collections=False)
    return task_events_query(task.id)
