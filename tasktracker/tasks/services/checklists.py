"""Checklists of tasks (api-contract.md v1.1, "Checklists").

Task editors change a task's checklist. Every change locks the task's row
(``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite serialises writers), keeps the
positions dense (``0..n-1``), bumps the task's ``version`` (an ``If-Match``
naming the old one gets 412) and records ``task.updated`` with
``changes.checklist = [old item or null, new item or null]`` (the activity log;
``task:updated`` for the task's listeners). Concurrent inserts therefore never
share a position: the second waits for the first's commit and places its item
among the first one's.
"""

from __future__ import annotations

import sqlalchemy as sa

from tasktracker.auth.models import User
from tasktracker.core.db import valid_id
from tasktracker.core.errors import ChecklistItemNotFound, Conflict, TaskNotFound
from tasktracker.core.types import utcnow
from tasktracker.extensions import db
from tasktracker.tasks.models import CHECKLIST_MAX_ITEMS, ChecklistItem, Task
from tasktracker.tasks.services.writes import _check_if_match, _editable_task, _save


def item_snapshot(item: ChecklistItem) -> dict:
    """``{id, text, done, position}``: an item as the API returns it."""
    return {"id": item.id, "text": item.text, "done": item.done, "position": item.position}


def _locked_task(actor: User, task_id: int, if_match: list[int] | None) -> Task:
    """The visible, editable, live task, re-read under its row lock (404 / 403 / 412)."""
    task = _editable_task(actor, task_id)
    task = db.session.scalar(sa.select(Task).where(Task.id == task.id).with_for_update(of=Task)
                             .execution_options(populate_existing=True))
    if task is None or task.deleted_at is not None:  # purged or trashed while we waited
        raise TaskNotFound()
    _check_if_match(task, if_match)
    return task


def _items(task_id: int) -> list[ChecklistItem]:
    return list(db.session.scalars(sa.select(ChecklistItem).where(ChecklistItem.task_id == task_id)
                                   .order_by(ChecklistItem.position, ChecklistItem.id)))


def _place(items: list[ChecklistItem], item: ChecklistItem, position: int | None) -> None:
    """Put ``item`` at ``position`` of ``items`` (clamped; None: the end) and renumber."""
    at = len(items) if position is None else max(0, min(position, len(items)))
    items.insert(at, item)
    for number, each in enumerate(items):
        if each.position != number:
            each.position = number


def _commit(actor: User, task: Task, if_match: list[int] | None,
            old: dict | None, new: dict | None) -> None:
    task.updated_at = utcnow()  # the task's UPDATE bumps its version (version_id_col)
    _save(actor, task, if_match, ("task.updated", {"changes": {"checklist": [old, new]}}))


def add_item(actor: User, task_id: int, data: dict, *,
             if_match: list[int] | None = None) -> ChecklistItem:
    """``POST /api/tasks/<id>/checklist``: ``data`` = ``{text, position?}``; the item is
    inserted at ``position`` (clamped to ``0..n``; default: the end) and later items
    move down one. 409 ``checklist_full`` beyond :data:`CHECKLIST_MAX_ITEMS`."""
    task = _locked_task(actor, task_id, if_match)
    items = _items(task.id)
    if len(items) >= CHECKLIST_MAX_ITEMS:
        raise Conflict(f"A checklist holds at most {CHECKLIST_MAX_ITEMS} items.",
                       code="checklist_full")
    item = ChecklistItem(task_id=task.id, text=data["text"], done=False, position=len(items))
    db.session.add(item)
    _place(items, item, data.get("position"))
    db.session.flush()  # the item's id, for the event
    _commit(actor, task, if_match, None, item_snapshot(item))
    return item


def _locked_item(actor: User, item_id: int, if_match: list[int] | None) -> tuple[ChecklistItem, Task]:
    item = db.session.get(ChecklistItem, item_id) if valid_id(item_id) else None
    if item is None:
        raise ChecklistItemNotFound()
    try:
        task = _locked_task(actor, item.task_id, if_match)
    except TaskNotFound:
        raise ChecklistItemNotFound() from None
    item = db.session.get(ChecklistItem, item_id, populate_existing=True)
    if item is None:  # deleted while we waited for the lock
        raise ChecklistItemNotFound()
    return item, task


def update_item(actor: User, item_id: int, data: dict, *,
                if_match: list[int] | None = None) -> ChecklistItem:
    """``PATCH /api/checklist-items/<id>``: ``{text?, done?, position?}`` (a new position
    moves the item, clamped to ``0..n-1``). A change to nothing writes nothing.
    404 ``checklist_item_not_found`` if the item's task is not visible; 403 if it
    may not be edited; 412 on a stale ``If-Match`` (the task's version)."""
    item, task = _locked_item(actor, item_id, if_match)
    old = item_snapshot(item)
    for field in ("text", "done"):
        if field in data:
            setattr(item, field, data[field])
    if "position" in data:
        _place([i for i in _items(task.id) if i.id != item.id], item, data["position"])
    new = item_snapshot(item)
    if new != old:
        _commit(actor, task, if_match, old, new)
    return item


def delete_item(actor: User, item_id: int, *, if_match: list[int] | None = None) -> None:
    """``DELETE /api/checklist-items/<id>``: the item goes, later items move up one."""
    item, task = _locked_item(actor, item_id, if_match)
    old = item_snapshot(item)
    rest = [i for i in _items(task.id) if i.id != item.id]
    db.session.delete(item)
    for number, each in enumerate(rest):
        each.position = number
    _commit(actor, task, if_match, old, None)

