"""Comment rules (api-contract.md, "Comments and attachments").

- read: anyone who sees the task (:func:`get_visible_task`; otherwise 404,
  also for a soft-deleted task);
- add: owner, assignee, members of the task's team (``can_contribute``; 403);
- edit: the author only (anyone else who sees the task: 403);
- delete: the author, the task owner, or a site admin (moderation); others 403.

Every change records ``comment.created/updated/deleted`` in its transaction.
"""

from __future__ import annotations

import sqlalchemy as sa

from tasktracker.auth.models import User
from tasktracker.comments.models import Comment
from tasktracker.comments.schemas import comment_schema
from tasktracker.core.db import MAX_ID
from tasktracker.core.errors import Forbidden, NotFound
from tasktracker.events.services import record_event
from tasktracker.extensions import db
from tasktracker.tasks.models import Task
from tasktracker.tasks.permissions import can_contribute, get_visible_task


def valid_id(value: int) -> bool:
    """True if ``value`` can be an id (1..2**31-1); larger ids cannot exist."""
    return 0 < value <= MAX_ID


def task_payload(task: Task) -> dict:
    """The task as ``GET /api/tasks/<id>`` returns it (event payloads)."""
    from tasktracker.tasks.schemas import task_schema

    return task_schema.dump(task)


def visible_task(user: User, task_id: int) -> Task:
    """The task if the caller sees it and it is not in the trash, else 404 ``task_not_found``."""
    if not valid_id(task_id):
        raise NotFound("Task not found.", code="task_not_found")
    return get_visible_task(user, task_id)


def comments_query(user: User, task_id: int) -> sa.Select:
    """Comments of a visible task, oldest first (404 if the task is not visible)."""
    task = visible_task(user, task_id)
    return sa.select(Comment).where(Comment.task_id == task.id).order_by(Comment.created_at, Comment.id)


def create_comment(user: User, task_id: int, body: str) -> Comment:
    """Add a comment (owner, assignee, team members, site admins). 404 if the task
    is not visible, 403 if the caller may see but not contribute.
    Records ``comment.created {comment, task}``."""
    task = visible_task(user, task_id)
    if not can_contribute(user, task):
        raise Forbidden("You may not comment on this task.")
    comment = Comment(task_id=task.id, author_id=user.id, author=user, body=body)
    db.session.add(comment)
    db.session.flush()
    record_event("comment.created", actor_id=user.id, task_id=task.id, team_id=task.team_id,
                 payload={"comment": comment_schema.dump(comment), "task": task_payload(task)})
    db.session.commit()
    return comment


def _visible_comment(user: User, comment_id: int) -> tuple[Comment, Task]:
    """The comment and its task if the caller sees the task (not trashed), else 404."""
    comment = db.session.get(Comment, comment_id) if valid_id(comment_id) else None
    if comment is None:
        raise NotFound("Comment not found.", code="comment_not_found")
    try:
        task = get_visible_task(user, comment.task_id)
    except NotFound:
        raise NotFound("Comment not found.", code="comment_not_found") from None
    return comment, task


def update_comment(user: User, comment_id: int, body: str) -> Comment:
    """Edit a comment's body (author only: 403 ``not_author`` for others who see it).
    Records ``comment.updated {comment, changes: {body: [old, new]}}`` unless unchanged."""
    comment, task = _visible_comment(user, comment_id)
    if comment.author_id != user.id:
        raise Forbidden("Only the author may edit a comment.", code="not_author")
    if comment.body != body:
        old = comment.body
        comment.body = body
        db.session.flush()
        record_event("comment.updated", actor_id=user.id, task_id=task.id, team_id=task.team_id,
                     payload={"comment": comment_schema.dump(comment), "changes": {"body": [old, body]}})
    db.session.commit()
    return comment


def delete_comment(user: User, comment_id: int) -> None:
    """Delete a comment (author, task owner, site admin; others who see it: 403).
    Records ``comment.deleted {comment_id}``."""
    comment, task = _visible_comment(user, comment_id)
    if not (user.id in (comment.author_id, task.owner_id) or user.is_admin):
        raise Forbidden("Only the author or the task owner may delete a comment.")
    record_event("comment.deleted", actor_id=user.id, task_id=task.id, team_id=task.team_id,
                 payload={"comment_id": comment.id})
    db.session.delete(comment)
    db.session.commit()
