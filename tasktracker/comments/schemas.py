"""marshmallow schemas of comments (api-contract.md, "Comments and attachments")."""

from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate

from tasktracker.auth.schemas import UserRefSchema
from tasktracker.core.fields import NOT_BLANK_TEXT_PATTERN, UTCDateTime
from tasktracker.core.pagination import page_envelope_schema

BODY_MAX = 10_000


def _not_blank(value: str) -> None:
    if not value.strip():
        raise ValidationError("Must not be blank.")


class CommentSchema(Schema):
    """``{id, task_id, author: UserRef | null, body, created_at, updated_at}``
    (``author`` is null once the author's account is gone)."""

    id = fields.Integer()
    task_id = fields.Integer()
    author = fields.Nested(UserRefSchema, allow_none=True)
    body = fields.String()
    created_at = UTCDateTime()
    updated_at = UTCDateTime()


class CommentBodySchema(Schema):
    """``POST /api/tasks/<id>/comments`` and ``PATCH /api/comments/<id>``:
    ``{body}``, 1..10000 characters, not only whitespace (kept as sent)."""

    body = fields.String(required=True, validate=[validate.Length(min=1, max=BODY_MAX), _not_blank],
                         metadata={"pattern": NOT_BLANK_TEXT_PATTERN})


#: A page of comments.
CommentPageSchema = page_envelope_schema(CommentSchema, "CommentPageSchema")


comment_schema = CommentSchema()
comments_schema = CommentSchema(many=True)
