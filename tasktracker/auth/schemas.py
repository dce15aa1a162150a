"""marshmallow schemas of accounts (api-contract.md, "Auth and users")."""

from __future__ import annotations

from zoneinfo import available_timezones

from marshmallow import Schema, ValidationError, fields, validate, validates, validates_schema

from tasktracker.auth.models import ROLES
from tasktracker.core.fields import UTCDateTime
from tasktracker.core.pagination import PageArgsSchema, page_envelope_schema

USERNAME = validate.Regexp(r"^[A-Za-z0-9_.-]{3,32}$",
                           error="3-32 characters: letters, digits, '_', '.', '-'.")
PASSWORD = validate.Length(min=8, max=128)
_TIMEZONES = frozenset(available_timezones()) | {"UTC"}
#: The known zones as one JSON-Schema pattern (for OpenAPI; a 600-member enum would
#: give generated clients a 600-member type, with names that collide: Etc/GMT+0, Etc/GMT-0).
TIMEZONE_PATTERN = "^(?:" + "|".join(sorted(z.replace("+", r"\+") for z in _TIMEZONES)) + ")$"


class UserSchema(Schema):
    """A user as the API returns it; never a password or hash."""

    id = fields.Integer(dump_only=True)
    username = fields.String()
    email = fields.Email()
    full_name = fields.String()
    role = fields.String()
    timezone = fields.String()
    active = fields.Boolean()
    created_at = UTCDateTime(dump_only=True)


class PublicUserSchema(UserSchema):
    """A teammate's view of a user: :class:`UserSchema` without the email."""

    class Meta:
        exclude = ("email",)


#: A page of users (``GET /api/users``).
UserPageSchema = page_envelope_schema(UserSchema, "UserPageSchema")


class UserRefSchema(Schema):
    """``{id, username, full_name}``: how tasks, comments and events name a user."""

    id = fields.Integer()
    username = fields.String()
    full_name = fields.String()


class RegisterSchema(Schema):
    """``POST /api/auth/register``. ``role`` is not a field: a client never picks it."""

    username = fields.String(required=True, validate=USERNAME)
    email = fields.Email(required=True, validate=validate.Length(max=254))
    password = fields.String(required=True, load_only=True, validate=PASSWORD)
    full_name = fields.String(load_default="", validate=validate.Length(max=120))


class LoginSchema(Schema):
    """``POST /api/auth/login``: ``password`` with ``email`` or ``username``."""

    email = fields.String(validate=validate.Length(max=254))
    username = fields.String(validate=validate.Length(max=32))
    password = fields.String(required=True, load_only=True, validate=validate.Length(max=128))

    @validates_schema
    def _one_identifier(self, data, **kwargs):
        if not data.get("email") and not data.get("username"):
            raise ValidationError("email or username is required.", "email")


class TokenPairSchema(Schema):
    access_token = fields.String()
    refresh_token = fields.String()
    token_type = fields.String()
    expires_in = fields.Integer(metadata={"description": "access token lifetime in seconds"})
    user = fields.Nested(UserSchema)


class AccessTokenSchema(Schema):
    access_token = fields.String()
    expires_in = fields.Integer()


class ProfileUpdateSchema(Schema):
    """``PATCH /api/auth/profile``; a new ``password`` needs ``current_password``."""

    username = fields.String(validate=USERNAME)
    email = fields.Email(validate=validate.Length(max=254))
    full_name = fields.String(validate=validate.Length(max=120))
    timezone = fields.String(metadata={"pattern": TIMEZONE_PATTERN, "description": "an IANA time zone"})
    password = fields.String(load_only=True, validate=PASSWORD)
    current_password = fields.String(load_only=True, validate=validate.Length(max=128))

    @validates("timezone")
    def _timezone(self, value, **kwargs):
        if value not in _TIMEZONES:
            raise ValidationError("Unknown IANA time zone.")

    @validates_schema
    def _current_password(self, data, **kwargs):
        if "password" in data and not data.get("current_password"):
            raise ValidationError("Required to change the password.", "current_password")


class AdminUserUpdateSchema(Schema):
    """``PATCH /api/users/<id>`` (admin)."""

    role = fields.String(validate=validate.OneOf(ROLES))
    active = fields.Boolean()


class UserListArgsSchema(PageArgsSchema):
    """``GET /api/users`` filters."""

    q = fields.String(validate=validate.Length(max=100))
    role = fields.String(validate=validate.OneOf(ROLES))
    active = fields.Boolean()


user_schema = UserSchema()
users_schema = UserSchema(many=True)
public_user_schema = PublicUserSchema()
user_ref_schema = UserRefSchema()
