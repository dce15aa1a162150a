"""The events table and its writers.

Event types (``Event.type``) and their payloads. Every writer uses
:func:`tasktracker.events.services.record_event` in the same transaction as the
change. ``task`` is the task as ``GET /api/tasks/<id>`` returns it (after the
change), ``comment``/``attachment``/``team``/``invitation`` likewise.

| type                  | task_id | team_id | payload                                              |
|-----------------------|---------|---------|------------------------------------------------------|
| task.created          | yes     | task's  | {task}                                               |
| task.updated          | yes     | task's  | {task, changes: {field: [old, new]}}                 |
| task.status_changed   | yes     | task's  | {task, changes: {status: [old, new]}}                |
| task.assigned         | yes     | task's  | {task, changes: {assignee_id: [old, new]}}           |
| task.deleted          | yes     | task's  | {task}                    (soft delete)              |
| task.restored         | yes     | task's  | {task}                                               |
| task.purged           | yes     | task's  | {task_id, title, owner_id, assignee_id} (permanent)  |
| reminder.due          | yes     | task's  | {task, reminder_id, remind_at}                       |
| task.overdue          | yes     | task's  | {task}                                               |
| comment.created       | yes     | task's  | {comment, task}                                      |
| comment.updated       | yes     | task's  | {comment, changes: {body: [old, new]}}               |
| comment.deleted       | yes     | task's  | {comment_id}                                         |
| attachment.added      | yes     | task's  | {attachment}                                         |
| attachment.deleted    | yes     | task's  | {attachment_id, filename}                            |
| team.created/updated/deleted | no | yes   | {team, changes?}                                     |
| member.added / member.role_changed / member.removed | no | yes | {user_id, role, changes?} |
| invitation.created    | no      | yes     | {invitation, invitee_user_id (or null)}              |
| invitation.accepted / invitation.declined | no | yes | {invitation, user_id}                        |
| invitation.revoked    | no      | yes     | {invitation}                                         |
| user.updated          | no      | no      | {user: {id, username, full_name}, changes}  (username, full_name, role or active changed: profile, admin, CLI) |
| reminder.skipped      | no      | no      | {reminder_ids, task_ids} (reminders of done/trashed tasks marked sent, one per scan batch) |
| data.seeded           | no      | no      | {tasks} or {users, teams}  (`flask seed` bulk inserts, one per batch) |

The newest ``seq`` is also the *data version* of the task-list cache
(:mod:`tasktracker.tasks.cache`): any write that can change what ``GET
/api/tasks`` returns to anyone (a task's fields or reminders, a user shown as
owner/assignee, a role, a team membership) must write an event. Writes without
one, and why that is safe: registration (a new user owns and sees nothing yet),
login/logout/refresh (sessions), ``last_seen_at``, notification read state,
idempotency keys, ``events.dispatched_at``, ``tasks.overdue_notified_at`` (not
part of a task's JSON). Unknown types are ignored by the fan-out (no
notification, no Socket.IO message).
"""
