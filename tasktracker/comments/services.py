"""Comment rules (api-contract.md, "Comments and attachments").

- read: anyone who sees the task (:func:`get_visible_task`; otherwise 404,
  also for a soft-deleted task);
- add: owner, assignee, members of the task's team (``can_contribute``; 403);
- edit: the author only (anyone else who sees the task: 403);
- delete: the author, the task owner, or a site admin (moderation); others 403.

Every change records ``comment.created/updated/deleted`` in its transaction.

Mentions (api-contract.md v1.1, "Watchers and mentions"): ``@username`` of a
user who sees the task. The comment's ``mentions`` are kept to its current body;
the event names the newly mentioned users (``new_mention_ids``: all of them on
create, only those an edit adds), and the fan-out notifies exactly those.
"""

from __future__ import annotations

import sqlalchemy as sa

from tasktracker.auth.models import User
from tasktracker.comments.models import Comment
from tasktracker.comments.schemas import comment_schema
from tasktracker.core.db import commit_keeping_loaded
from tasktracker.core.errors import CommentNotFound, Forbidden
from tasktracker.events.services import record_event
from tasktracker.extensions import db
from tasktracker.tasks.models import Task
from tasktracker.tasks.permissions import can_contribute, get_visible_task, get_visible_task_item
from tasktracker.tasks.services import mentioned_users, record_task_event


def comments_query(user: User, task_id: int) -> sa.Select:
    """Comments of a visible task, oldest first (404 if the task is not visible)."""
    task = get_visible_task(user, task_id, collections=False)
    return sa.select(Comment).where(Comment.task_id == task.id).order_by(Comment.created_at, Comment.id)


def create_comment(user: User, task_id: int, body: str) -> Comment:
    """Add a comment (owner, assignee, team members, site admins). 404 if the task
    is not visible, 403 if the caller may see but not contribute.
    Records ``comment.created {comment, task}``."""
    task = get_visible_task(user, task_id)
    if not can_contribute(user, task):
        raise Forbidden("You may not comment on this task.")
    comment = Comment(task_id=task.id, author_id=user.id, author=user, body=body,
                      mentions=mentioned_users(body, task))
    db.session.add(comment)
    db.session.flush()
    record_task_event("comment.created", task, actor_id=user.id, comment=comment_schema.dump(comment),
                      new_mention_ids=[u.id for u in comment.mentions])
    commit_keeping_loaded()  # the response renders the comment as written
    return comment


def _visible_comment(user: User, comment_id: int) -> tuple[Comment, Task]:
    """The comment and its task if the caller sees the task (not trashed), else 404."""
    return get_visible_task_item(user, Comment, comment_id, CommentNotFound)


def update_comment(user: User, comment_id: int, body: str) -> Comment:
    """Edit a comment's body (author only: 403 ``not_author`` for others who see it).
    Records ``comment.updated {comment, changes: {body: [old, new]}, new_mention_ids}``
    unless unchanged."""
    comment, task = _visible_comment(user, comment_id)
    if comment.author_id != user.id:
        raise Forbidden("Only the author may edit a comment.", code="not_author")
    if comment.body != body:
        old, before = comment.body, {u.id for u in comment.mentions}
        comment.body = body
        comment.mentions = mentioned_users(body, task)
        db.session.flush()
        record_event("comment.updated", actor_id=user.id, task_id=task.id, team_id=task.team_id,
                     payload={"comment": comment_schema.dump(comment), "changes": {"body": [old, body]},
                              "new_mention_ids": [u.id for u in comment.mentions if u.id not in before]})
    commit_keeping_loaded()  # the response renders the comment as written
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
