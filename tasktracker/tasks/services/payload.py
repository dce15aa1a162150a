"""The one builder of the task in event payloads (``tasktracker.events`` catalog)."""

from __future__ import annotations

from typing import Any

from tasktracker.events.models import Event
from tasktracker.events.services import record_event
from tasktracker.tasks.models import Task
from tasktracker.tasks.schemas import task_schema


def task_payload(task: Task) -> dict:
    """The task as ``GET /api/tasks/<id>`` returns it (the ``task`` of event payloads)."""
    return task_schema.dump(task)


def record_task_event(type_: str, task: Task, *, actor_id: int | None, team_id: int | None = None,
                      **extra: Any) -> Event:
    """Record an event about ``task``: payload ``{task, **extra}`` with the task as it
    is now (flush first, so that its ``version`` is the written one).

    ``team_id`` is the team whose listeners hear of it: the task's by default; the
    old team when the task leaves one (a team deleted under it).
    """
    return record_event(type_, actor_id=actor_id, task_id=task.id,
                        team_id=team_id if team_id is not None else task.team_id,
                        payload={"task": task_payload(task), **extra})
