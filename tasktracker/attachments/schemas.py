"""marshmallow schemas of attachments (api-contract.md, "Comments and attachments")."""

from __future__ import annotations

from marshmallow import Schema, fields

from tasktracker.auth.schemas import UserRefSchema
from tasktracker.core.fields import UTCDateTime
from tasktracker.core.pagination import page_envelope_schema


class AttachmentSchema(Schema):
    """``{id, task_id, filename, content_type, size, sha256, uploaded_by: UserRef | null,
    created_at}``. ``filename`` is the client's name (display only); ``size`` is in
    bytes; ``sha256`` is the hex digest of the stored bytes."""

    id = fields.Integer()
    task_id = fields.Integer()
    filename = fields.String()
    content_type = fields.String()
    size = fields.Integer(metadata={"description": "bytes"})
    sha256 = fields.String(metadata={"description": "hex SHA-256 of the content"})
    uploaded_by = fields.Nested(UserRefSchema, allow_none=True)
    created_at = UTCDateTime()


class AttachmentUploadSchema(Schema):
    """The ``multipart/form-data`` body of an upload: one part named ``file``."""

    file = fields.Raw(required=True, metadata={"type": "string", "format": "binary"})


#: A page of attachments.
AttachmentPageSchema = page_envelope_schema(AttachmentSchema, "AttachmentPageSchema")


attachment_schema = AttachmentSchema()
attachments_schema = AttachmentSchema(many=True)
