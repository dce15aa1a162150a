"""REST resources of notifications: ``/api/notifications`` (api-contract.md, "Notifications")."""

from __future__ import annotations

from flask import Blueprint
from flask_jwt_extended import current_user
from flask_restful import Resource

from tasktracker.auth.access import auth_required
from tasktracker.core.api import Api, load_args, load_body
from tasktracker.core.pagination import paginate
from tasktracker.notifications import services
from tasktracker.notifications.schemas import (
    NotificationListArgsSchema, NotificationUpdateSchema, ReadAllResultSchema, notification_schema,
    notifications_schema,
)

bp = Blueprint("notifications", __name__, url_prefix="/api")
api = Api(bp)
# schema instances, built once (loading or dumping does not change a schema)
notification_list_args_schema = NotificationListArgsSchema()
notification_update_schema = NotificationUpdateSchema()
read_all_result_schema = ReadAllResultSchema()


class NotificationList(Resource):
    @auth_required
    def get(self):
        """The caller's notifications, newest first, with the unread count.
        ---
        tags: [notifications]
        parameters:
          - in: query
            schema: NotificationListArgsSchema
        responses:
          200:
            description: A page of notifications and `unread_count` (over all pages)
            content: {application/json: {schema: NotificationPageSchema}}
          401: {$ref: "#/components/responses/Unauthorized"}
          422: {$ref: "#/components/responses/ValidationError"}
        """
        args = load_args(notification_list_args_schema)
        query = services.notifications_query(current_user.id, unread=args["unread"])
        page = paginate(query, args["page"], args["per_page"], notifications_schema.dump)
        page["unread_count"] = services.unread_count(current_user.id)
        return page, 200


class NotificationDetail(Resource):
    @auth_required
    def patch(self, notification_id: int):
        """Mark one of the caller's notifications read or unread.
        ---
        tags: [notifications]
        description: "`read: true` sets `read_at` (kept if already read); `read: false` clears it.
          Another user's notification is a 404."
        parameters:
          - {in: path, name: notification_id, required: true, schema: {type: integer}}
        requestBody:
          required: true
          content:
            application/json:
              schema: NotificationUpdateSchema
        responses:
          200: {description: The notification, content: {application/json: {schema: NotificationSchema}}}
          400: {$ref: "#/components/responses/BadRequest"}
          401: {$ref: "#/components/responses/Unauthorized"}
          404: {$ref: "#/components/responses/NotFound"}
          415: {$ref: "#/components/responses/UnsupportedMediaType"}
          422: {$ref: "#/components/responses/ValidationError"}
        """
        data = load_body(notification_update_schema)
        notification = services.set_read(current_user.id, notification_id, data["read"])
        return notification_schema.dump(notification), 200


class NotificationReadAll(Resource):
    @auth_required
    def post(self):
        """Mark all of the caller's notifications read.
        ---
        tags: [notifications]
        description: No request body is needed (any body is ignored).
        responses:
          200: {description: How many were unread, content: {application/json: {schema: ReadAllResultSchema}}}
          401: {$ref: "#/components/responses/Unauthorized"}
        """
        return read_all_result_schema.dump({"updated": services.read_all(current_user.id)}), 200


api.add_resource(NotificationList, "/notifications")
api.add_resource(NotificationDetail, "/notifications/<int:notification_id>")
api.add_resource(NotificationReadAll, "/notifications/read-all")
