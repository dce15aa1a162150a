"""marshmallow schemas of webhooks and deliveries (api-contract.md v1.1, "Webhooks")."""

from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate

from tasktracker.core.fields import UTCDateTime
from tasktracker.core.pagination import page_envelope_schema

#: The contract's webhook event names; ``*`` means all of them.
WEBHOOK_EVENTS = ("task.created", "task.updated", "task.deleted", "task.restored", "task.assigned",
                  "task.status_changed", "comment.created", "member.joined", "member.left")
ALL_EVENTS = "*"


def validate_events(value: list[str]) -> None:
    """A non-empty list of :data:`WEBHOOK_EVENTS` names or ``"*"`` (else
    ``ValidationError``, a 422 on ``events``)."""
    if not isinstance(value, list) or not value:
        raise ValidationError("Must be a non-empty list of event names or [\"*\"].")
    unknown = sorted({e for e in value if e != ALL_EVENTS and e not in WEBHOOK_EVENTS})
    if unknown:
        raise ValidationError(f"Unknown events: {', '.join(unknown)}. Allowed: *, {', '.join(WEBHOOK_EVENTS)}.")


class WebhookSchema(Schema):
    """``{id, team_id, url, events, active, created_at, consecutive_failures,
    disabled_reason}``; ``secret`` only where :data:`webhook_with_secret_schema` is used
    (the create and rotate answers)."""

    id = fields.Integer(dump_only=True)
    team_id = fields.Integer(dump_only=True)
    url = fields.String()
    events = fields.List(fields.String())
    active = fields.Boolean()
    created_at = UTCDateTime(dump_only=True)
    consecutive_failures = fields.Integer(dump_only=True)
    disabled_reason = fields.String(allow_none=True, dump_only=True)


class WebhookWithSecretSchema(WebhookSchema):
    secret = fields.String(dump_only=True)


class WebhookCreateSchema(Schema):
    """``{url, events?: [...] (default ["*"]), active?: true}``. The URL's SSRF check
    needs DNS and a setting, so it runs in the service, not here."""

    url = fields.String(required=True, validate=validate.Length(min=1, max=2048))
    events = fields.List(fields.String(validate=validate.OneOf((ALL_EVENTS, *WEBHOOK_EVENTS))),
                         load_default=lambda: [ALL_EVENTS], validate=[validate.Length(min=1), validate_events])
    active = fields.Boolean(load_default=True)


class WebhookUpdateSchema(Schema):
    """``{url?, events?, active?}``."""

    url = fields.String(validate=validate.Length(min=1, max=2048))
    events = fields.List(fields.String(validate=validate.OneOf((ALL_EVENTS, *WEBHOOK_EVENTS))),
                         validate=[validate.Length(min=1), validate_events])
    active = fields.Boolean()


class DeliverySchema(Schema):
    """``{id, event, status, attempts, response_status, error, duration_ms, created_at,
    next_attempt_at, delivered_at}``."""

    id = fields.Integer()
    event = fields.String()
    status = fields.String(validate=validate.OneOf(("pending", "succeeded", "failed")))
    attempts = fields.Integer()
    response_status = fields.Integer(allow_none=True)
    error = fields.String(allow_none=True)
    duration_ms = fields.Integer(allow_none=True)
    created_at = UTCDateTime()
    next_attempt_at = UTCDateTime(allow_none=True)
    delivered_at = UTCDateTime(allow_none=True)


class WebhookSecretSchema(Schema):
    """``{secret}``: the answer of rotate-secret."""

    secret = fields.String()


class DeliveryQueuedSchema(Schema):
    """``{delivery_id}``: the answer of ping and redeliver (``202``)."""

    delivery_id = fields.Integer()


#: A page of deliveries.
DeliveryPageSchema = page_envelope_schema(DeliverySchema, "DeliveryPageSchema")

webhook_schema = WebhookSchema()
webhooks_schema = WebhookSchema(many=True)
webhook_with_secret_schema = WebhookWithSecretSchema()
webhook_create_schema = WebhookCreateSchema()
webhook_update_schema = WebhookUpdateSchema()
delivery_schema = DeliverySchema()
deliveries_schema = DeliverySchema(many=True)
