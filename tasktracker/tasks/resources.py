"""REST resources of tasks (api-contract.md, "Tasks").

Every response that carries a task also carries ``ETag: "<version>"``.
``If-Match`` (optional) is honoured by PUT, PATCH, ``/status``, ``/assign`` and
DELETE: a list of strong entity tags (``"3"``, ``"3", "4"``) or ``*``. A
malformed value can never match the current version and therefore answers 412
like a stale one.
"""

from __future__ import annotations

import re

from flask import Blueprint, Response, request
from flask_jwt_extended import current_user
from flask_restful import Resource
from werkzeug.http import parse_etags

from tasktracker.auth.access import auth_required
from tasktracker.core.api import Api, json_body, load_args, load_body, no_content, page_response
from tasktracker.core.errors import Unprocessable
from tasktracker.tasks import services
from tasktracker.tasks.models import Task
from tasktracker.auth.schemas import users_ref_schema
from tasktracker.tasks.schemas import (
    ChecklistItemCreateSchema, ChecklistItemPatchSchema, LabelCreateSchema, LabelPatchSchema,
    TaskAssignSchema, TaskCreateSchema, TaskDeleteArgsSchema, TaskListArgsSchema, TaskPatchSchema,
    TaskReplaceSchema, TaskSearchArgsSchema, TaskStatusUpdateSchema, activity_schema,
    checklist_item_schema, label_schema, labels_schema, task_schema,
)

bp = Blueprint("tasks", __name__, url_prefix="/api")
api = Api(bp)
# schema instances, built once (loading does not change a schema; building one copies
# every field: a measurable share of a cached list read)
task_assign_schema = TaskAssignSchema()
task_delete_args_schema = TaskDeleteArgsSchema()
task_patch_schema = TaskPatchSchema()
task_replace_schema = TaskReplaceSchema()
task_status_schema = TaskStatusUpdateSchema()
task_list_args_schema = TaskListArgsSchema()
task_search_args_schema = TaskSearchArgsSchema()
task_create_schema = TaskCreateSchema()
label_create_schema = LabelCreateSchema()
label_patch_schema = LabelPatchSchema()
checklist_item_create_schema = ChecklistItemCreateSchema()
checklist_item_patch_schema = ChecklistItemPatchSchema()

#: A well-formed ``If-Match``: ``*`` or a comma list of strong tags ``"<version>"``
#: (the pattern /api/openapi.json documents for the header).
IF_MATCH = re.compile(r'[ \t]*(\*|"[0-9]{1,18}"([ \t]*,[ \t]*"[0-9]{1,18}")*)[ \t]*')
#: ``Idempotency-Key``: 1..255 visible ASCII characters.
IDEMPOTENCY_KEY = re.compile(r"[!-~]{1,255}")


def if_match_versions() -> list[int] | None:
    """The versions named by ``If-Match`` (RFC 9110 §13.1.1): None when absent or
    ``*`` (no condition); a list otherwise, empty when the value is malformed
    (not ``IF_MATCH``: e.g. unquoted or weak tags), which never matches and so
    answers 412 like a stale one.

    Parsed by Werkzeug's ``parse_etags`` (what ``request.if_match`` uses), on the
    stripped value: it reads ``"3"`` followed by trailing whitespace as one
    unquoted tag (servers strip it; the test client does not).
    """
    raw = request.headers.get("If-Match")
    if raw is None:
        return None
    if not IF_MATCH.fullmatch(raw):
        return []
    etags = parse_etags(raw.strip())
    if etags.star_tag:
        return None
    return [int(tag) for tag in etags.as_set()]


def if_none_match() -> str | None:
    """The raw ``If-None-Match`` header (the list services compare with their ETag)."""
    return request.headers.get("If-None-Match")


def idempotency_key() -> str | None:
    """The ``Idempotency-Key`` header: 1..255 visible ASCII characters (else 422)."""
    raw = request.headers.get("Idempotency-Key")
    if raw is None:
        return None
    if not IDEMPOTENCY_KEY.fullmatch(raw.strip()):
        raise Unprocessable(details={"Idempotency-Key": [
            "Must be 1..255 visible ASCII characters."]})
    return raw.strip()


def task_response(task: Task, status: int = 200, headers: dict | None = None):
    """``(body, status, headers)`` of a task response, with its ETag."""
    return task_schema.dump(task), status, {"ETag": f'"{task.version}"', **(headers or {})}


def list_response(result: services.ListResult) -> Response:
    """The HTTP response of :func:`services.task_page`: 200 with the JSON page, or
    304 with no body (RFC 7232 §4.1: the ETag is sent again). Lists are per user:
    ``Cache-Control: private, no-cache`` (shared caches must not store them;
    clients revalidate with ``If-None-Match``)."""
    headers = {"Cache-Control": "private, no-cache", "Vary": "Authorization"}
    if result.etag is not None:
        headers["ETag"] = result.etag
    if result.not_modified:
        return Response(status=304, headers=headers)
    return Response(result.body, status=200, mimetype="application/json", headers=headers)


class TaskList(Resource):
    method_decorators = [auth_required]

    def get(self):
        """Tasks the caller may see (not deleted), filtered, sorted and paginated.
        ---
        operationId: tasks_list
        description: >
          Filters combine with AND. `deleted=only` lists the caller's trash instead
          (soft-deleted tasks the caller may restore: own tasks and tasks of teams the
          caller owns or administers; every deleted task for site admins). Unknown
          parameters, unknown values and unknown sort keys answer 422.
        query: TaskListArgsSchema
        headers: [If-None-Match]
        errors: [400]
        responses:
          200:
            description: >
              A page of tasks. The ETag is the strong tag of this result for the caller
              (absent when the query uses `overdue`, whose result depends on the clock);
              it changes after any write that could change it
            schema: TaskPageSchema
            headers: [ETag, Cache-Control]
          304: {description: "Not modified (If-None-Match named the current ETag); no body", headers: [ETag]}
        """
        args = load_args(task_list_args_schema)
        return list_response(services.task_page(current_user, args, if_none_match=if_none_match()))

    def post(self):
        """Create a task (the caller is its owner).
        ---
        operationId: tasks_create
        description: >
          `team_id` must name a team the caller belongs to (else 422 on `team_id`, the
          team is not revealed). `assignee_id` must be an active user (422) and, for a
          team task, a member of the team (422); a personal task may be assigned to any
          active user, who then sees it. With `Idempotency-Key`, the same key and body
          from the same user within 24 h returns the first result (201, same task,
          same Location) and creates nothing; the same key with another body is a 422
          `idempotency_key_reused`.
        headers: [Idempotency-Key]
        body: TaskCreateSchema
        errors: [409]
        responses:
          201:
            description: The new task (or, replaying an Idempotency-Key, the task it created)
            schema: TaskSchema
            headers: [Location, ETag, Idempotent-Replayed]
        """
        key = idempotency_key()
        raw = json_body()
        data = task_create_schema.load(raw)
        task, replayed = services.create_task(current_user, data, idempotency_key=key, raw_body=raw)
        headers = {"Location": api.url_for(TaskDetail, task_id=task.id)}
        if replayed:
            headers["Idempotent-Replayed"] = "true"
        return task_response(task, 201, headers)


class TaskSearch(Resource):
    method_decorators = [auth_required]

    def get(self):
        """Search tasks, ranked by relevance.
        ---
        operationId: tasks_search
        description: >
          The tasks of `GET /api/tasks?q=` (same visibility and filters), ordered by
          rank: title equal to `q`, title starting with `q`, title containing `q`,
          then description-only matches (case-insensitive); ties newest first.
        query: TaskSearchArgsSchema
        headers: [If-None-Match]
        errors: [400]
        responses:
          200: {description: A page of tasks (ETag as in tasks_list), schema: TaskPageSchema, headers: [ETag, Cache-Control]}
          304: {description: "Not modified (If-None-Match named the current ETag); no body", headers: [ETag]}
        """
        args = load_args(task_search_args_schema)
        return list_response(services.task_page(current_user, args, search=True,
                                                if_none_match=if_none_match()))


class TaskDetail(Resource):
    method_decorators = [auth_required]

    def get(self, task_id: int):
        """One task.
        ---
        operationId: tasks_get
        responses:
          200: {description: The task, schema: TaskSchema, headers: [ETag]}
        """
        return task_response(services.get_task(current_user, task_id))

    def put(self, task_id: int):
        """Replace the editable fields of a task.
        ---
        operationId: tasks_replace
        description: >
          Owner, assignee, team owner/admins. `title` is required; omitted fields are
          reset to their defaults (an omitted `assignee_id` unassigns, an omitted
          `status` means `todo`). Changing `team_id` or `assignee_id` needs the rights
          to manage the task (owner, team owner/admins; else 403) and follows the
          membership rules of creation (422). A status change follows the rules of
          `/status` (409). `reminders` replace the task's unsent reminders.
        headers: [If-Match]
        body: TaskReplaceSchema
        errors: [403, 409]
        responses:
          200: {description: The task, schema: TaskSchema, headers: [ETag]}
        """
        data = load_body(task_replace_schema)
        return task_response(services.update_task(current_user, task_id, data,
                                                  if_match=if_match_versions()))

    def patch(self, task_id: int):
        """Change some fields of a task.
        ---
        operationId: tasks_update
        description: >
          Same rules as PUT, for the given fields only. A request that changes
          nothing answers the task unchanged (same version).
        headers: [If-Match]
        body: TaskPatchSchema
        errors: [403, 409]
        responses:
          200: {description: The task, schema: TaskSchema, headers: [ETag]}
        """
        data = load_body(task_patch_schema)
        return task_response(services.update_task(current_user, task_id, data,
                                                  if_match=if_match_versions()))

    def delete(self, task_id: int):
        """Move a task to the trash, or (`permanent=true`) delete a trashed task for good.
        ---
        operationId: tasks_delete
        description: >
          Owner, team owner/admins (else 403). A soft-deleted task answers 404 to reads
          and leaves lists except `deleted=only`. `permanent=true` only works for a task
          already in the caller's trash (409 `not_in_trash` for a live one) and removes
          its comments, attachments (files too), reminders and notifications.
          `If-Match` applies to the soft delete only.
        query: TaskDeleteArgsSchema
        headers: [If-Match]
        errors: [403, 409]
        responses:
          204: {description: Deleted}
        """
        args = load_args(task_delete_args_schema)
        if args["permanent"]:
            services.purge_task(current_user, task_id)
        else:
            services.soft_delete_task(current_user, task_id, if_match=if_match_versions())
        return no_content()


class TaskStatus(Resource):
    method_decorators = [auth_required]

    def patch(self, task_id: int):
        """Change the status of a task.
        ---
        operationId: tasks_update_status
        description: >
          Allowed: todo->in_progress, in_progress->done, in_progress->todo,
          done->in_progress, todo->done; anything else (same->same included) is a 409
          `invalid_transition`. `done` sets `completed_at`; leaving `done` clears it.
          Owner, assignee, team owner/admins (else 403).
        headers: [If-Match]
        body: TaskStatusUpdateSchema
        errors: [403, 409]
        responses:
          200: {description: The task, schema: TaskSchema, headers: [ETag]}
        """
        data = load_body(task_status_schema)
        return task_response(services.change_status(current_user, task_id, data["status"],
                                                    if_match=if_match_versions()))


class TaskAssign(Resource):
    method_decorators = [auth_required]

    def patch(self, task_id: int):
        """Assign a task to a user, or unassign it (`assignee_id: null`).
        ---
        operationId: tasks_assign
        description: >
          Owner, team owner/admins (else 403). The assignee must be an active user
          and, for a team task, a member of the team (else 422).
        headers: [If-Match]
        body: TaskAssignSchema
        errors: [403]
        responses:
          200: {description: The task, schema: TaskSchema, headers: [ETag]}
        """
        data = load_body(task_assign_schema)
        return task_response(services.assign_task(current_user, task_id, data["assignee_id"],
                                                  if_match=if_match_versions()))


class TaskRestore(Resource):
    method_decorators = [auth_required]

    def patch(self, task_id: int):
        """Take a task out of the trash.
        ---
        operationId: tasks_restore
        description: >
          For a task in the caller's trash (owner, team owner/admins, site admins;
          404 otherwise). A live task answers 409 `not_deleted`. No request body.
        errors: [403, 409]
        responses:
          200: {description: The task, schema: TaskSchema, headers: [ETag]}
        """
        return task_response(services.restore_task(current_user, task_id))


class TaskActivity(Resource):
    method_decorators = [auth_required]

    def get(self, task_id: int):
        """The history of a task, newest first, paginated.
        ---
        operationId: tasks_activity
        description: >
          One entry per event of the task: `id` is the event's seq, `changes` maps
          field -> [old, new] (empty for created/deleted/restored).
        query: PageArgsSchema
        responses:
          200: {description: A page of events, schema: TaskActivityPageSchema}
        """
        return page_response(activity_schema.dump, services.activity_query, current_user, task_id)


class LabelList(Resource):
    method_decorators = [auth_required]

    def get(self):
        """The caller's personal labels, by name, paginated.
        ---
        operationId: labels_list
        tags: [labels]
        query: PageArgsSchema
        responses:
          200: {description: A page of labels, schema: LabelPageSchema}
        """
        return page_response(labels_schema.dump, services.personal_labels_query, current_user)

    def post(self):
        """Create a personal label (for the caller's personal tasks).
        ---
        operationId: labels_create
        tags: [labels]
        description: Names are unique per scope, case-insensitively (409 `label_name_taken`).
        body: LabelCreateSchema
        errors: [409]
        responses:
          201: {description: The label, schema: LabelSchema, headers: [Location]}
        """
        label = services.create_label(current_user, load_body(label_create_schema))
        return label_schema.dump(label), 201, {"Location": api.url_for(LabelDetail, label_id=label.id)}


class TeamLabelList(Resource):
    method_decorators = [auth_required]

    def get(self, team_id: int):
        """The team's labels, by name, paginated (members; others 404).
        ---
        operationId: team_labels_list
        tags: [labels]
        query: PageArgsSchema
        responses:
          200: {description: A page of labels, schema: LabelPageSchema}
        """
        return page_response(labels_schema.dump, services.team_labels_query, current_user, team_id)

    def post(self, team_id: int):
        """Create a label of the team (any member; others 404).
        ---
        operationId: team_labels_create
        tags: [labels]
        description: Names are unique per team, case-insensitively (409 `label_name_taken`).
        body: LabelCreateSchema
        errors: [409]
        responses:
          201: {description: The label, schema: LabelSchema, headers: [Location]}
        """
        label = services.create_label(current_user, load_body(label_create_schema), team_id=team_id)
        return label_schema.dump(label), 201, {"Location": api.url_for(LabelDetail, label_id=label.id)}


class LabelDetail(Resource):
    method_decorators = [auth_required]

    def patch(self, label_id: int):
        """Rename or recolour a label.
        ---
        operationId: labels_update
        tags: [labels]
        description: >
          A personal label: its user (others 404). A team label: the team's owner and
          admins (members 403, others 404). Tasks carrying it show the change at once.
        body: LabelPatchSchema
        errors: [403, 409]
        responses:
          200: {description: The label, schema: LabelSchema}
        """
        label = services.update_label(current_user, label_id, load_body(label_patch_schema))
        return label_schema.dump(label), 200

    def delete(self, label_id: int):
        """Delete a label: it leaves every task (each task's version grows, its activity
        records the change).
        ---
        operationId: labels_delete
        tags: [labels]
        errors: [403]
        responses:
          204: {description: Deleted}
        """
        services.delete_label(current_user, label_id)
        return no_content()


class TaskChecklist(Resource):
    method_decorators = [auth_required]

    def post(self, task_id: int):
        """Add an item to a task's checklist (task editors; others who see it 403).
        ---
        operationId: checklist_items_create
        tags: [checklists]
        description: >
          At `position` (from 0; default and beyond the end: the end); later items move
          down one. Bumps the task's version (ETag), so an `If-Match` naming the old one
          answers 412. At most 200 items (409 `checklist_full`).
        headers: [If-Match]
        body: ChecklistItemCreateSchema
        errors: [403, 409]
        responses:
          201: {description: The item, schema: ChecklistItemSchema, headers: [Location]}
        """
        item = services.add_item(current_user, task_id, load_body(checklist_item_create_schema),
                                 if_match=if_match_versions())
        return checklist_item_schema.dump(item), 201, {
            "Location": api.url_for(ChecklistItemDetail, item_id=item.id)}


class ChecklistItemDetail(Resource):
    method_decorators = [auth_required]

    def patch(self, item_id: int):
        """Change a checklist item: its text, whether it is done, its position.
        ---
        operationId: checklist_items_update
        tags: [checklists]
        description: Task editors (others who see the task 403). Bumps the task's version.
        headers: [If-Match]
        body: ChecklistItemPatchSchema
        errors: [403]
        responses:
          200: {description: The item, schema: ChecklistItemSchema}
        """
        item = services.update_item(current_user, item_id, load_body(checklist_item_patch_schema),
                                    if_match=if_match_versions())
        return checklist_item_schema.dump(item), 200

    def delete(self, item_id: int):
        """Delete a checklist item; later items move up one.
        ---
        operationId: checklist_items_delete
        tags: [checklists]
        headers: [If-Match]
        errors: [403]
        responses:
          204: {description: Deleted}
        """
        services.delete_item(current_user, item_id, if_match=if_match_versions())
        return no_content()


class TaskWatcherMe(Resource):
    method_decorators = [auth_required]

    def put(self, task_id: int):
        """Start watching a task (anyone who sees it; idempotent).
        ---
        operationId: task_watchers_watch
        tags: [watchers]
        description: >
          Watchers get the notifications an assignee gets (task updated, status
          changed, comment added, task deleted), never for their own actions, and none
          once they no longer see the task.
        responses:
          204: {description: Watching}
        """
        services.watch(current_user, task_id)
        return no_content()

    def delete(self, task_id: int):
        """Stop watching a task (idempotent).
        ---
        operationId: task_watchers_unwatch
        tags: [watchers]
        responses:
          204: {description: Not watching}
        """
        services.unwatch(current_user, task_id)
        return no_content()


class TaskWatchers(Resource):
    method_decorators = [auth_required]

    def get(self, task_id: int):
        """Who watches a task, by username, paginated (anyone who sees the task).
        ---
        operationId: task_watchers_list
        tags: [watchers]
        query: PageArgsSchema
        responses:
          200: {description: A page of users, schema: UserRefPageSchema}
        """
        return page_response(users_ref_schema.dump, services.watchers_query, current_user, task_id)


api.add_resource(TaskList, "/tasks")
api.add_resource(TaskSearch, "/tasks/search")
api.add_resource(TaskDetail, "/tasks/<int:task_id>")
api.add_resource(TaskStatus, "/tasks/<int:task_id>/status")
api.add_resource(TaskAssign, "/tasks/<int:task_id>/assign")
api.add_resource(TaskRestore, "/tasks/<int:task_id>/restore")
api.add_resource(TaskActivity, "/tasks/<int:task_id>/activity")
api.add_resource(LabelList, "/labels")
api.add_resource(TeamLabelList, "/teams/<int:team_id>/labels")
api.add_resource(LabelDetail, "/labels/<int:label_id>")
api.add_resource(TaskChecklist, "/tasks/<int:task_id>/checklist")
api.add_resource(ChecklistItemDetail, "/checklist-items/<int:item_id>")
api.add_resource(TaskWatcherMe, "/tasks/<int:task_id>/watchers/me")
api.add_resource(TaskWatchers, "/tasks/<int:task_id>/watchers")
