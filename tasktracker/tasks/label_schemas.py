"""marshmallow schemas of labels (api-contract.md v1.1, "Labels")."""

from __future__ import annotations

from marshmallow import RAISE, Schema, ValidationError, fields, post_load, validate

NAME_MAX = 50
#: ``#rrggbb``, either case on input; stored and returned lower-cased.
COLOR_PATTERN = r"^#[0-9a-fA-F]{6}$"


def _not_blank(value: str) -> None:
    if not value.strip():
        raise ValidationError("Must not be blank.")


class LabelSchema(Schema):
    """A label: ``{id, name, color, team_id}`` (``team_id`` null: a personal label)."""

    id = fields.Integer(dump_only=True)
    name = fields.String(dump_only=True)
    color = fields.String(dump_only=True, metadata={"pattern": COLOR_PATTERN, "example": "#d73a4a"})
    team_id = fields.Integer(dump_only=True, allow_none=True)


class LabelRefSchema(Schema):
    """A label as tasks carry it: ``{id, name, color}``."""

    id = fields.Integer(dump_only=True)
    name = fields.String(dump_only=True)
    color = fields.String(dump_only=True)


class LabelCreateSchema(Schema):
    """``POST /api/labels`` and ``POST /api/teams/<id>/labels``: ``name`` 1..50
    characters (trimmed, not blank), ``color`` ``#rrggbb`` (default grey)."""

    class Meta:
        unknown = RAISE

    name = fields.String(required=True, validate=[validate.Length(min=1, max=NAME_MAX), _not_blank])
    color = fields.String(validate=validate.Regexp(COLOR_PATTERN, error="Must be #rrggbb."),
                          metadata={"pattern": COLOR_PATTERN})

    @post_load
    def _normalise(self, data, **kwargs):
        if "name" in data:
            data["name"] = data["name"].strip()
        if "color" in data:
            data["color"] = data["color"].lower()
        return data


class LabelPatchSchema(LabelCreateSchema):
    """``PATCH /api/labels/<id>``: rename and/or recolour."""

    name = fields.String(validate=[validate.Length(min=1, max=NAME_MAX), _not_blank])


label_schema = LabelSchema()
labels_schema = LabelSchema(many=True)
