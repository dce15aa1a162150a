"""marshmallow schemas of the real-time layer (``GET /api/teams/<id>/presence``)."""

from __future__ import annotations

from marshmallow import Schema, fields

from tasktracker.core.fields import UTCDateTime


class PresenceSchema(Schema):
    """A team member's presence: online while at least one Socket.IO connection is open."""

    user_id = fields.Integer(dump_only=True)
    online = fields.Boolean(dump_only=True)
    last_seen_at = UTCDateTime(dump_only=True, allow_none=True, metadata={
        "description": "Last Socket.IO connect or disconnect (UTC); null if never connected."})


class PresencePageSchema(Schema):
    """A page of team members' presence, ordered by ``user_id``."""

    items = fields.List(fields.Nested(PresenceSchema))
    page = fields.Integer()
    per_page = fields.Integer()
    total = fields.Integer()
    pages = fields.Integer()


presences_schema = PresenceSchema(many=True)
