"""marshmallow schemas of feeds (api-contract.md v1.1, "Calendar feed")."""

from __future__ import annotations

from marshmallow import Schema, fields


class CalendarFeedSchema(Schema):
    """``{url, token}``: the answer of ``POST /api/auth/calendar-feed``."""

    url = fields.String(metadata={"description": "<PUBLIC_BASE_URL>/api/calendar/<token>.ics"})
    token = fields.String()
