"""Task rules and transactions (api-contract.md, "Tasks"), by seam:

- :mod:`.queries`: reads (one task, lists, search, trash, activity, list pages);
- :mod:`.writes`: create, update, status, assign, trash, restore, purge;
- :mod:`.idempotency`: the ``Idempotency-Key`` of task creation, and its purge;
- :mod:`.reminders`: the beat's scans of due reminders and overdue tasks;
- :mod:`.payload`: the task in event payloads (the one builder; comments and
  teams use it too);
- :mod:`.labels`, :mod:`.checklists`, :mod:`.watchers`, :mod:`.recurring`: the
  v1.1 task model (api-contract.md v1.1).

The names below are the package's public API (``from tasktracker.tasks import
services; services.task_page(...)``).
"""

from tasktracker.tasks.services.checklists import add_item, delete_item, update_item
from tasktracker.tasks.services.idempotency import purge_expired_idempotency_keys
from tasktracker.tasks.services.labels import (
    create_label, delete_label, personal_labels_query, team_labels_query, update_label,
)
from tasktracker.tasks.services.payload import record_task_event, task_payload
from tasktracker.tasks.services.queries import (
    ListResult, activity_query, filtered_query, get_task, list_query, page_items, search_query,
    task_page,
)
from tasktracker.tasks.services.reminders import dispatch_due_reminders, dispatch_overdue
from tasktracker.tasks.services.watchers import (
    mentioned_users, unwatch, watch, watchers_query, watchers_who_see,
)
from tasktracker.tasks.services.writes import (
    assign_task, change_status, create_task, purge_task, restore_task,
    soft_delete_task, update_task,
)

__all__ = [
    "ListResult", "activity_query", "add_item", "assign_task", "change_status",
    "create_label", "create_task", "delete_item", "delete_label", "mentioned_users",
    "personal_labels_query", "team_labels_query", "unwatch", "update_item", "update_label",
    "watch", "watchers_query", "watchers_who_see", "dispatch_due_reminders", "dispatch_overdue", "filtered_query", "get_task",
    "list_query", "page_items", "purge_expired_idempotency_keys", "purge_task", "record_task_event",
    "restore_task", "search_query", "soft_delete_task", "task_page", "task_payload", "update_task",
]
