"""marshmallow schemas of personal access tokens (api-contract.md v1.1)."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from tasktracker.core.fields import UTCDateTime


class TokenSchema(Schema):
    """``{id, name, scopes, created_at, expires_at, last_used_at}``; ``token`` only in
    the 201 (:data:`new_token_schema`)."""

    id = fields.Integer()
    name = fields.String()
    scopes = fields.List(fields.String())
    created_at = UTCDateTime()
    expires_at = UTCDateTime()
    last_used_at = UTCDateTime(allow_none=True)


class NewTokenSchema(TokenSchema):
    token = fields.String(metadata={"description": "shown this once; prefix tt_pat_"})


class TokenCreateSchema(Schema):
    """``{name, scopes: ["read"] | ["read", "write"], expires_at?}`` (the service
    checks the scope set and the lifetime)."""

    name = fields.String(required=True, validate=validate.Length(min=1, max=100))
    scopes = fields.List(fields.String(validate=validate.OneOf(("read", "write"))), required=True,
                         validate=validate.Length(min=1, max=2),
                         metadata={"description": '["read"] or ["read", "write"]'})
    expires_at = UTCDateTime(load_default=None, allow_none=True)


token_schema = TokenSchema()
tokens_schema = TokenSchema(many=True)
new_token_schema = NewTokenSchema()
token_create_schema = TokenCreateSchema()
