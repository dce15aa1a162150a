"""marshmallow schemas of the email endpoints (api-contract v1.1 "Email")."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from tasktracker.mail.models import DIGEST_FREQUENCIES
from tasktracker.mail.settings import EMAIL_TYPES

#: The password rule of registration (api-contract: >= 8 characters).
PASSWORD = validate.Length(min=8, max=128)
#: A raw account token is 43 characters (token_urlsafe(32)); anything much longer is not one.
TOKEN = validate.Length(min=1, max=200)


class StrictBoolean(fields.Boolean):
    """A JSON ``true``/``false`` only (marshmallow's Boolean also takes ``"yes"``, ``1``...)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


class PasswordResetRequestSchema(Schema):
    """``POST /api/auth/password-reset``: ``{email}``. Any string up to 254 characters is
    accepted (the answer is ``202`` whatever it is, so it tells nothing)."""

    email = fields.String(required=True, validate=validate.Length(min=1, max=254))


class PasswordResetConfirmSchema(Schema):
    """``POST /api/auth/password-reset/confirm``: ``{token, password}``."""

    token = fields.String(required=True, validate=TOKEN)
    password = fields.String(required=True, load_only=True, validate=PASSWORD)


class VerifyEmailSchema(Schema):
    """``POST /api/auth/verify-email``: ``{token}`` from the verification message."""

    token = fields.String(required=True, validate=TOKEN)


class UnsubscribeArgsSchema(Schema):
    """``POST /api/email/unsubscribe?token=``: the signed token of the message's link."""

    token = fields.String(required=True, validate=validate.Length(min=1, max=2000))


#: ``{<notification type>: bool}``: one boolean per type that can be mailed (the answer:
#: every type; a PATCH: any of them). Two components: generated clients want response
#: shapes apart from request shapes.
EmailSwitchesSchema = Schema.from_dict({t: fields.Boolean() for t in EMAIL_TYPES}, name="EmailSwitchesSchema")
EmailSwitchesPatchSchema = Schema.from_dict({t: StrictBoolean() for t in EMAIL_TYPES},
                                            name="EmailSwitchesPatchSchema")


class NotificationSettingsSchema(Schema):
    """``{email: {<notification type>: bool}, digest: "off"|"daily", digest_hour: 0..23}``
    (every type present, defaults filled in)."""

    email = fields.Nested(EmailSwitchesSchema)
    digest = fields.String(validate=validate.OneOf(DIGEST_FREQUENCIES))
    digest_hour = fields.Integer(validate=validate.Range(0, 23))


class NotificationSettingsPatchSchema(Schema):
    """PATCH body: any of the three fields; ``email`` may name some types only (the
    others keep their value). Unknown types or non-boolean values -> 422 on ``email``."""

    email = fields.Nested(EmailSwitchesPatchSchema)
    digest = fields.String(validate=validate.OneOf(DIGEST_FREQUENCIES))
    digest_hour = fields.Integer(strict=True, validate=validate.Range(0, 23))
