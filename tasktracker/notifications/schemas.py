"""marshmallow schemas of notifications (api-contract.md, "Notifications")."""

from __future__ import annotations

from marshmallow import Schema, fields

from tasktracker.auth.schemas import UserRefSchema
from tasktracker.core.fields import UTCDateTime
from tasktracker.core.pagination import PageArgsSchema, page_envelope_schema
from tasktracker.notifications.models import NOTIFICATION_TYPES


class NotificationSchema(Schema):
    """A notification as the API (and the ``notification:new`` Socket.IO event) returns it.

    ``seq`` is the ``seq`` of the event that caused it: the replay cursor of
    Socket.IO clients (``last_seq``). ``actor`` is null for system events
    (deadline reminders, overdue tasks) or when the acting account is gone.
    """

    id = fields.Integer(dump_only=True)
    type = fields.String(dump_only=True, metadata={"enum": list(NOTIFICATION_TYPES)})
    message = fields.String(dump_only=True)
    task_id = fields.Integer(dump_only=True, allow_none=True)
    team_id = fields.Integer(dump_only=True, allow_none=True)
    actor = fields.Nested(UserRefSchema, dump_only=True, allow_none=True)
    actor_id = fields.Integer(dump_only=True, allow_none=True, metadata={
        "description": "id of the acting user (api-contract: every Socket.IO event carries actor_id)."})
    data = fields.Dict(dump_only=True, metadata={
        "description": "Type-specific details (task_title, changes, reminder_id, team_name...)."})
    read_at = UTCDateTime(dump_only=True, allow_none=True)
    created_at = UTCDateTime(dump_only=True)
    seq = fields.Integer(attribute="event_seq", dump_only=True,
                         metadata={"description": "seq of the event behind it (Socket.IO replay cursor)."})


class NotificationListArgsSchema(PageArgsSchema):
    """``GET /api/notifications`` query: pagination and ``unread``.

    ``unread=true`` lists unread notifications only; ``unread=false`` (or
    absent) lists all of them.
    """

    unread = fields.Boolean(load_default=False, metadata={
        "description": "true: unread notifications only; false or absent: all."})


#: A page of notifications plus the caller's total ``unread_count``.
NotificationPageSchema = page_envelope_schema(NotificationSchema, "NotificationPageSchema",
    unread_count=fields.Integer(metadata={"description": "The caller's unread notifications (all pages)."}))


class NotificationUpdateSchema(Schema):
    """``PATCH /api/notifications/<id>``: mark read (``true``) or unread (``false``)."""

    read = fields.Boolean(required=True)


class ReadAllResultSchema(Schema):
    """``POST /api/notifications/read-all`` result: how many were unread and are now read."""

    updated = fields.Integer()


notification_schema = NotificationSchema()
notifications_schema = NotificationSchema(many=True)
