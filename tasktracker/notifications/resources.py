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
    method_decorators = [auth_required]

    def get(self):
        """The caller's notifications, newest first, with the unread count.
        ---
        operationId: notifications_list
        query: NotificationListArgsSchema
        responses:
          200:
            description: A page of notifications and `unread_count` (over all pages)
            schema: NotificationPageSchema
        """
        args = load_args(notification_list_args_schema)
        query = services.notifications_query(current_user.id, unread=args["unread"])
        page = paginate(query, args["page"], args["per_page"], notifications_schema.dump)
        page["unread_count"] = services.unread_count(current_user.id)
        return page, 200


class NotificationDetail(Resource):
    method_decorators = [auth_required]

    def patch(self, notification_id: int):
        """Mark one of the caller's notifications read or unread.
        ---
        operationId: notifications_update
        description: "`read: true` sets `read_at` (kept if already read); `read: false` clears it.
          Another user's notification is a 404."
        body: NotificationUpdateSchema
        responses:
          200: {description: The notification, schema: NotificationSchema}
        """
        data = load_body(notification_update_schema)
        notification = services.set_read(current_user.id, notification_id, data["read"])
        return notification_schema.dump(notification), 200


class NotificationReadAll(Resource):
    method_decorators = [auth_required]

    def post(self):
        """Mark all of the caller's notifications read.
        ---
        operationId: notifications_read_all
        description: No request body is needed (any body is ignored).
        responses:
          200: {description: How many were unread, schema: ReadAllResultSchema}
        """
        return read_all_result_schema.dump({"updated": services.read_all(current_user.id)}), 200


api.add_resource(NotificationList, "/notifications")
api.add_resource(NotificationDetail, "/notifications/<int:notification_id>")
api.add_resource(NotificationReadAll, "/notifications/read-all")
