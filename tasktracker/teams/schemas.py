"""marshmallow schemas of teams, memberships and invitations (api-contract.md, "Teams")."""

from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, post_load, validate

from tasktracker.auth.schemas import UserRefSchema
from tasktracker.core.fields import NOT_BLANK_TEXT_PATTERN, UTCDateTime
from tasktracker.core.pagination import page_envelope_schema
from tasktracker.core.types import utcnow

#: Roles a client may give through the API; ``owner`` is only ever the creator.
ASSIGNABLE_ROLES = ("admin", "member")
NAME_MAX = 100
DESCRIPTION_MAX = 2000


def _not_blank(value: str) -> None:
    if not value.strip():
        raise ValidationError("Must not be blank.")


class TeamSchema(Schema):
    """``{id, name, description, owner: UserRef, member_count, created_at}``.

    ``member_count`` is attached to the instance by the services
    (:func:`tasktracker.teams.services.with_member_counts`).
    """

    id = fields.Integer(dump_only=True)
    name = fields.String()
    description = fields.String()
    owner = fields.Nested(UserRefSchema)
    member_count = fields.Integer(metadata={"description": "number of members, owner included"})
    created_at = UTCDateTime(dump_only=True)


class TeamMemberSchema(Schema):
    """A membership: ``{user: UserRef, role: owner|admin|member, joined_at}``."""

    user = fields.Nested(UserRefSchema)
    role = fields.String(metadata={"enum": ["owner", "admin", "member"]})
    joined_at = UTCDateTime()


class TeamDetailSchema(TeamSchema):
    """A team with its whole member list (``GET /api/teams/<id>``), owner first,
    then admins, then members, each group by join time."""

    members = fields.List(fields.Nested(TeamMemberSchema), attribute="member_list")


class TeamCreateSchema(Schema):
    """``POST /api/teams``: ``name`` 1..100 characters (trimmed, not blank),
    ``description`` up to 2000 characters."""

    name = fields.String(required=True, validate=[validate.Length(min=1, max=NAME_MAX), _not_blank],
                         metadata={"pattern": NOT_BLANK_TEXT_PATTERN})
    description = fields.String(load_default="", validate=validate.Length(max=DESCRIPTION_MAX))

    @post_load
    def _strip(self, data, **kwargs):
        if "name" in data:
            data["name"] = data["name"].strip()
        return data


class TeamUpdateSchema(TeamCreateSchema):
    """``PATCH /api/teams/<id>``: any of ``name``, ``description``."""

    name = fields.String(validate=[validate.Length(min=1, max=NAME_MAX), _not_blank],
                         metadata={"pattern": NOT_BLANK_TEXT_PATTERN})
    description = fields.String(validate=validate.Length(max=DESCRIPTION_MAX))


class MemberRoleSchema(Schema):
    """``PATCH /api/teams/<id>/members/<user_id>``: ``{role: admin|member}``
    (``owner`` cannot be given: 422)."""

    role = fields.String(required=True, validate=validate.OneOf(ASSIGNABLE_ROLES))


class TrimmedEmail(fields.Email):
    """An email address; surrounding whitespace is ignored."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str):
            value = value.strip()
        return super()._deserialize(value, attr, data, **kwargs)


class InvitationCreateSchema(Schema):
    """``POST /api/teams/<id>/invitations``: ``{email, role?: admin|member}`` (default member).
    The email is matched case-insensitively and stored lower-cased."""

    email = TrimmedEmail(required=True, validate=validate.Length(max=254))
    role = fields.String(load_default="member", validate=validate.OneOf(ASSIGNABLE_ROLES))


class InvitationTeamSchema(Schema):
    """The team of an invitation: ``{id, name}``."""

    id = fields.Integer()
    name = fields.String()


class InvitationSchema(Schema):
    """``{id, team: {id, name}, email, role, status, expires_at, created_at}``.

    ``status`` is ``pending | accepted | declined | revoked | expired``; ``expired``
    is a pending invitation whose ``expires_at`` has passed (it can no longer be
    accepted or declined); ``revoked`` one a team manager withdrew.
    """

    id = fields.Integer()
    team = fields.Nested(InvitationTeamSchema)
    email = fields.String()
    role = fields.String(metadata={"enum": list(ASSIGNABLE_ROLES)})
    status = fields.Method("_status", metadata={"type": "string", "enum": ["pending", "accepted", "declined", "revoked", "expired"]})
    expires_at = UTCDateTime()
    created_at = UTCDateTime()

    def _status(self, invitation) -> str:
        if invitation.status == "pending" and invitation.expires_at <= utcnow():
            return "expired"
        return invitation.status


#: A page of teams.
TeamPageSchema = page_envelope_schema(TeamSchema, "TeamPageSchema")


#: A page of memberships.
TeamMemberPageSchema = page_envelope_schema(TeamMemberSchema, "TeamMemberPageSchema")


#: A page of invitations.
InvitationPageSchema = page_envelope_schema(InvitationSchema, "InvitationPageSchema")


team_schema = TeamSchema()
teams_schema = TeamSchema(many=True)
team_detail_schema = TeamDetailSchema()
team_member_schema = TeamMemberSchema()
team_members_schema = TeamMemberSchema(many=True)
invitation_schema = InvitationSchema()
invitations_schema = InvitationSchema(many=True)
