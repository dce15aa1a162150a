"""REST resources of feeds: the calendar feed (``/api/auth/calendar-feed``,
``/api/calendar/<token>.ics``) and the CSV export (``/api/tasks/export.csv``)
(api-contract.md v1.1)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, request
from flask_jwt_extended import current_user
from flask_restful import Resource

from tasktracker.auth.access import auth_required
from tasktracker.core.api import Api, load_args, no_content
from tasktracker.feeds import services
from tasktracker.feeds.calendar import CONTENT_TYPE as CALENDAR_TYPE, not_modified
from tasktracker.feeds.csv_export import CONTENT_TYPE as CSV_TYPE
from tasktracker.feeds.schemas import CalendarFeedSchema  # noqa: F401 - named in the OpenAPI docstrings
from tasktracker.tasks.schemas import TaskListArgsSchema

bp = Blueprint("feeds", __name__, url_prefix="/api")
api = Api(bp)
task_list_args_schema = TaskListArgsSchema()


def _base_url() -> str:
    return current_app.config["PUBLIC_BASE_URL"]


class CalendarFeedToken(Resource):
    method_decorators = [auth_required]

    def post(self):
        """Create the caller's calendar feed URL, or rotate it (the old URL is 404 at once).
        ---
        operationId: calendar_feed_create
        tags: [auth]
        description: Not with a personal access token (403 insufficient_scope).
        responses:
          201: {description: The feed URL and its token, schema: CalendarFeedSchema}
        """
        return services.create_feed(current_user.id, _base_url()), 201

    def delete(self):
        """Stop the caller's calendar feed (its URL is 404 from now on).
        ---
        operationId: calendar_feed_delete
        tags: [auth]
        responses:
          204: {description: Deleted (also when there was none)}
        """
        services.delete_feed(current_user.id)
        return no_content()


class CalendarFeed(Resource):
    method_decorators = []

    def get(self, token: str):
        """The RFC 5545 calendar of the token's user (no bearer: the token is the credential).
        ---
        operationId: calendar_feed_get
        tags: [auth]
        description: >-
          One VEVENT per visible, not deleted task with a due_at (UID stable per task,
          DTSTART the due time in UTC, a VALARM per unsent reminder). Unknown, rotated
          or deleted token, or an inactive user: 404.
        headers: [If-None-Match]
        responses:
          200:
            description: The calendar
            headers: [ETag, Cache-Control]
            content: {text/calendar: {schema: {type: string}}}
          304: {description: "Not modified (If-None-Match named the current ETag); no body", headers: [ETag]}
        """
        body, tag = services.feed(token, _base_url())
        headers = {"ETag": tag, "Cache-Control": "private, no-cache"}
        if not_modified(request.headers.get("If-None-Match"), tag):
            return Response(status=304, headers=headers)
        return Response(body, status=200, content_type=CALENDAR_TYPE, headers=headers)


class TaskExport(Resource):
    method_decorators = [auth_required]

    def get(self):
        """Every task the list would show (its filters and sort, no pagination) as CSV, streamed.
        ---
        operationId: tasks_export_csv
        tags: [tasks]
        description: >-
          Header row: id, title, description, status, priority, due_at, owner,
          assignee, team_id, labels, created_at, updated_at, completed_at (owner and
          assignee as usernames, labels as names separated by "; "). A cell starting
          with =, +, -, @, tab or CR is prefixed with '. `page` and `per_page` are
          accepted and ignored.
        query: TaskListArgsSchema
        responses:
          200:
            description: The CSV (UTF-8), streamed
            headers:
              Content-Disposition: {description: attachment; filename=tasks.csv, schema: {type: string}}
            content: {text/csv: {schema: {type: string}}}
        """
        args = load_args(task_list_args_schema)
        chunks = services.export_csv(current_user._get_current_object(), args)
        return Response(chunks, status=200, content_type=CSV_TYPE, headers={
            "Content-Disposition": 'attachment; filename="tasks.csv"', "Cache-Control": "private, no-store"})


api.add_resource(CalendarFeedToken, "/auth/calendar-feed")
api.add_resource(CalendarFeed, "/calendar/<string:token>.ics")
api.add_resource(TaskExport, "/tasks/export.csv")
