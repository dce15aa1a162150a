"""marshmallow schemas of the real-time layer (``GET /api/teams/<id>/presence``)."""

from __future__ import annotations

from marshmallow import Schema, fields

from tasktracker.core.fields import UTCDateTime
from tasktracker.core.pagination import page_envelope_schema


class PresenceSchema(Schema):
    """A team member's presence: online while at least one Socket.IO connection is open."""

    user_id = fields.Integer(dump_only=True)
    online = fields.Boolean(dump_only=True)
    last_seen_at = UTCDateTime(dump_only=True, allow_none=True, metadata={
        "description": "Last Socket.IO connect or disconnect (UTC); null if never connected."})


#: A page of team members' presence, ordered by ``user_id``.
PresencePageSchema = page_envelope_schema(PresenceSchema, "PresencePageSchema")


presences_schema = PresenceSchema(many=True)
