"""Checklist rules and transactions (api-contract.md v1.1, "Checklists").

Task editors change a task's checklist. Every change locks the task's row
(``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's write lock), keeps the
positions dense (``0..n-1``, ordered), bumps the task's ``version`` (so an
``If-Match`` naming the old one gets 412), and records ``task.updated`` with
``changes.checklist = [old item or null, new item or null]`` (the activity log;
watchers of the task get ``task:updated``). Concurrent inserts therefore never
share a position: the second waits for the first's commit and appends after it.
"""

from __future__ import annotations

import sqlalchemy as sa

from tasktracker.auth.models import User
from tasktracker.tasks.models import CHECKLIST_MAX_ITEMS as MAX_ITEMS, ChecklistItem
from tasktracker.core.db import MAX_ID
from tasktracker.core.errors import Conflict, Forbidden, NotFound, PreconditionFailed
from tasktracker.core.types import utcnow
from tasktracker.extensions import db
from tasktracker.tasks.models import Task
from tasktracker.tasks.payloads import record_task_event
from tasktracker.tasks.permissions import can_edit, get_visible_task


def _item_snapshot(item: ChecklistItem) -> dict:
    return {"id": item.id, "text": item.text, "done": item.done, "position": item.position}


def _locked_task(actor: User, task_id: int, if_match: list[int] | None) -> Task:
    """The visible, editable, live task, re-read under its row lock (404 / 403 / 412)."""
    task = get_visible_task(actor, task_id)
    if not can_edit(actor, task):
        raise Forbidden("You may not edit this task.")
    task = db.session.scalar(sa.select(Task).where(Task.id == task.id).with_for_update()
                             .execution_options(populate_existing=True))
    if task is None or task.deleted_at is not None:
        raise NotFound("Task not found.", code="task_not_found")
    if if_match is not None and task.version not in if_match:
        raise PreconditionFailed(
            f'If-Match does not match the current version "{task.version}".',
            details={"current_version": task.version})
    return task


def _items(task_id: int) -> list[ChecklistItem]:
    return list(db.session.scalars(sa.select(ChecklistItem).where(ChecklistItem.task_id == task_id)
                                   .order_by(ChecklistItem.position, ChecklistItem.id)))


def _renumber(items: list[ChecklistItem]) -> None:
    for position, item in enumerate(items):
        if item.position != position:
            item.position = position


def _commit(actor: User, task: Task, old: dict | None, new: dict | None) -> None:
    task.updated_at = utcnow()  # the UPDATE bumps version (version_id_col)
    db.session.flush()
    record_task_event("task.updated", actor, task, changes={"checklist": [old, new]})
    db.session.commit()


def _clamp(position: int | None, size: int) -> int:
    return size if position is None else max(0, min(position, size))


def add_item(actor: User, task_id: int, data: dict, *,
             if_match: list[int] | None = None) -> ChecklistItem:
    """``POST /api/tasks/<id>/checklist``: ``data`` = ``{text, position?}``; the item is
    inserted at ``position`` (clamped to ``0..n``; default: the end), later items
    move down one. 409 ``checklist_full`` beyond :data:`MAX_ITEMS` items."""
    task = _locked_task(actor, task_id, if_match)
    items = _items(task.id)
    if len(items) >= MAX_ITEMS:
        raise Conflict(f"A checklist holds at most {MAX_ITEMS} items.", code="checklist_full")
    item = ChecklistItem(task_id=task.id, text=data["text"], done=False)
    items.insert(_clamp(data.get("position"), len(items)), item)
    db.session.add(item)
    _renumber(items)
    db.session.flush()
    _commit(actor, task, None, _item_snapshot(item))
    return item


def _locked_item(actor: User, item_id: int, if_match: list[int] | None) -> tuple[ChecklistItem, Task]:
    item = db.session.get(ChecklistItem, item_id) if 0 < item_id <= MAX_ID else None
    if item is None:
        raise NotFound("Checklist item not found.", code="checklist_item_not_found")
    try:
        task = _locked_task(actor, item.task_id, if_match)
    except NotFound:
        raise NotFound("Checklist item not found.", code="checklist_item_not_found") from None
    item = db.session.get(ChecklistItem, item_id, populate_existing=True)
    if item is None:  # deleted while we waited for the lock
        raise NotFound("Checklist item not found.", code="checklist_item_not_found")
    return item, task


def update_item(actor: User, item_id: int, data: dict, *,
                if_match: list[int] | None = None) -> ChecklistItem:
    """``PATCH /api/checklist-items/<id>``: ``{text?, done?, position?}`` (a new
    position moves the item, clamped to ``0..n-1``). A change to nothing writes
    nothing. 404 if the item's task is not visible; 403 if not editable."""
    item, task = _locked_item(actor, item_id, if_match)
    old = _item_snapshot(item)
    for field in ("text", "done"):
        if field in data:
            setattr(item, field, data[field])
    if "position" in data:
        items = [i for i in _items(task.id) if i.id != item.id]
        items.insert(_clamp(data["position"], len(items)), item)
        _renumber(items)
    new = _item_snapshot(item)
    if new == old:
        return item
    _commit(actor, task, old, new)
    return item


def delete_item(actor: User, item_id: int, *, if_match: list[int] | None = None) -> None:
    """``DELETE /api/checklist-items/<id>``: the item goes, later items move up one."""
    item, task = _locked_item(actor, item_id, if_match)
    old = _item_snapshot(item)
    db.session.delete(item)
    _renumber([i for i in _items(task.id) if i.id != item.id])
    _commit(actor, task, old, None)


def items_by_task(task_ids: list[int]) -> dict[int, list[dict]]:
    """``{task_id: [{id, text, done, position}, ...]}`` in one statement (the list
    endpoints), each in checklist order."""
    result: dict[int, list[dict]] = {task_id: [] for task_id in task_ids}
    if not task_ids:
        return result
    for row in db.session.execute(
            sa.select(ChecklistItem.task_id, ChecklistItem.id, ChecklistItem.text,
                      ChecklistItem.done, ChecklistItem.position)
            .where(ChecklistItem.task_id.in_(task_ids))
            .order_by(ChecklistItem.task_id, ChecklistItem.position, ChecklistItem.id)):
        result[row.task_id].append({"id": row.id, "text": row.text, "done": row.done,
                                    "position": row.position})
    return result
