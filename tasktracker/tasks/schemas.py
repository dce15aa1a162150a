"""marshmallow schemas of tasks (api-contract.md, "Tasks").

Output: :class:`TaskSchema` (``task_schema``/``tasks_schema``), the page
envelopes, the activity entries, labels and checklist items (v1.1). Input:
create / replace (PUT) / patch bodies, ``{status}``, ``{assignee_id}``, labels,
checklist items and the query strings of the list, search and delete endpoints. Every input schema refuses unknown fields (422)
and naive times (422).
"""

from __future__ import annotations

from marshmallow import RAISE, Schema, ValidationError, fields, post_load, validate, validates

from tasktracker.auth.schemas import UserRefSchema
from tasktracker.core.db import MAX_ID
from tasktracker.core.fields import NOT_BLANK_TEXT_PATTERN, UTCDateTime, iso_utc
from tasktracker.core.pagination import PageArgsSchema, page_envelope_schema
from tasktracker.tasks.models import PRIORITIES, STATUSES
from tasktracker.tasks.recurrence import FROM_VALUES, PARTS, RULE_MAX

MAX_REMINDERS = 20
MAX_LABELS = 50
LABEL_NAME_MAX = 50
CHECKLIST_TEXT_MAX = 500
#: ``#rrggbb`` (either case on input; stored and returned lower-cased).
COLOR_PATTERN = r"^#[0-9a-fA-F]{6}$"
#: An RRULE's shape for OpenAPI: ``NAME=VALUE`` parts of :data:`PARTS` (the values and
#: the combination are checked by the server: 422 on ``recurrence``).
_RULE_PART = "(?:" + "|".join(PARTS) + ")=[A-Za-z0-9,+-]+"
RULE_PATTERN = f"^(?:RRULE:)?{_RULE_PART}(?:;{_RULE_PART})*$"
SORT_KEYS = ("created_at", "updated_at", "due_at", "priority", "status", "title")
DEFAULT_SORT = "-created_at"
_SORT_KEYS = "(?:" + "|".join(SORT_KEYS) + ")"
#: ``sort`` for OpenAPI: a comma list of keys with an optional ``-``, none twice.
SORT_PATTERN = (rf"^(?!.*\b({_SORT_KEYS})\b.*\b\1\b)"
                rf"[ ]*-?{_SORT_KEYS}[ ]*(?:,[ ]*-?{_SORT_KEYS}[ ]*)*$")

_ID = validate.Range(min=1, max=MAX_ID)


class Title(fields.String):
    """A task title: surrounding whitespace stripped, then 1..200 characters."""

    def _deserialize(self, value, attr, data, **kwargs):
        return super()._deserialize(value, attr, data, **kwargs).strip()


class UserIdOrMe(fields.String):
    """Query value: a user id (positive integer) or ``me`` (the caller).

    Loads to an ``int`` or the string ``"me"``.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("metadata", {"description": 'a user id or "me"', "anyOf": [
            {"type": "integer", "minimum": 1, "maximum": MAX_ID},
            {"type": "string", "enum": ["me"]}]})
        super().__init__(**kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        value = super()._deserialize(value, attr, data, **kwargs).strip()
        if value.lower() == "me":
            return "me"
        if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= MAX_ID:
            raise ValidationError('Must be a user id or "me".')
        return int(value)


class SortSpec(fields.String):
    """``sort`` query value: comma list of keys, ``-`` prefix for descending.

    Loads to a list of ``(key, descending)`` tuples. Unknown or repeated keys
    are a validation error (422).
    """

    def _deserialize(self, value, attr, data, **kwargs):
        value = super()._deserialize(value, attr, data, **kwargs)
        result, seen = [], set()
        for part in value.split(","):
            part = part.strip()
            desc = part.startswith("-")
            key = part[1:] if desc else part
            if key not in SORT_KEYS:
                raise ValidationError(f"Unknown sort key {part!r}; use {', '.join(SORT_KEYS)} "
                                      "with an optional '-' prefix.")
            if key in seen:
                raise ValidationError(f"Sort key {key!r} given twice.")
            seen.add(key)
            result.append((key, desc))
        return result


# --------------------------------------------------------------------------- output


class TaskReminderSchema(Schema):
    """A reminder of a task: ``{id, remind_at, sent_at}`` (``sent_at`` null until sent)."""

    id = fields.Integer(dump_only=True)
    remind_at = UTCDateTime(dump_only=True)
    sent_at = UTCDateTime(dump_only=True, allow_none=True)


class LabelRefSchema(Schema):
    """A label as a task carries it: ``{id, name, color}``."""

    id = fields.Integer(dump_only=True)
    name = fields.String(dump_only=True)
    color = fields.String(dump_only=True, metadata={"example": "#d73a4a"})


class LabelSchema(LabelRefSchema):
    """A label: ``{id, name, color, team_id}`` (``team_id`` null: a personal label)."""

    team_id = fields.Integer(dump_only=True, allow_none=True)


class ChecklistItemSchema(Schema):
    """A checklist item: ``{id, text, done, position}`` (``position`` from 0)."""

    id = fields.Integer(dump_only=True)
    text = fields.String(dump_only=True)
    done = fields.Boolean(dump_only=True)
    position = fields.Integer(dump_only=True)


class RecurrenceSchema(Schema):
    """A task's ``recurrence``: ``{rule, from}`` (api-contract.md v1.1, "Recurring tasks")."""

    rule = fields.String(dump_only=True, metadata={"example": "FREQ=WEEKLY;BYDAY=MO,TH"})
    from_ = fields.String(dump_only=True, data_key="from", attribute="from",
                          metadata={"enum": list(FROM_VALUES)})


class RecurrenceInputSchema(Schema):
    """``recurrence`` in a task body: ``{rule, from}``. ``rule`` is an RFC 5545 RRULE
    with FREQ (DAILY, WEEKLY, MONTHLY, YEARLY), INTERVAL, BYDAY, BYMONTHDAY,
    BYMONTH, COUNT and UNTIL (a UTC date-time); ``from`` is ``due`` (the next
    occurrence follows the due date) or ``completion``. The rule is checked with
    the task's ``due_at`` (422 on ``recurrence``)."""

    class Meta:
        unknown = RAISE

    rule = fields.String(required=True, validate=validate.Length(min=1, max=RULE_MAX),
                         metadata={"example": "FREQ=WEEKLY;BYDAY=MO,TH",
                                   "pattern": RULE_PATTERN})
    from_ = fields.String(data_key="from", attribute="from", required=True,
                          validate=validate.OneOf(FROM_VALUES))


class TaskSchema(Schema):
    """A task as the API returns it. Times are UTC with a ``Z`` suffix."""

    id = fields.Integer(dump_only=True)
    title = fields.String(dump_only=True)
    description = fields.String(dump_only=True)
    status = fields.String(dump_only=True, metadata={"enum": list(STATUSES)})
    priority = fields.String(dump_only=True, metadata={"enum": list(PRIORITIES)})
    due_at = UTCDateTime(dump_only=True, allow_none=True)
    owner = fields.Nested(UserRefSchema, dump_only=True)
    assignee = fields.Nested(UserRefSchema, dump_only=True, allow_none=True)
    team_id = fields.Integer(dump_only=True, allow_none=True)
    reminders = fields.List(fields.Nested(TaskReminderSchema), dump_only=True)
    labels = fields.List(fields.Nested(LabelRefSchema), dump_only=True)
    checklist = fields.List(fields.Nested(ChecklistItemSchema), dump_only=True)
    recurrence = fields.Nested(RecurrenceSchema, dump_only=True, allow_none=True)
    recurrence_of = fields.Integer(dump_only=True, allow_none=True, metadata={
        "description": "the finished task this one is the next occurrence of"})
    created_at = UTCDateTime(dump_only=True)
    updated_at = UTCDateTime(dump_only=True)
    completed_at = UTCDateTime(dump_only=True, allow_none=True)
    deleted_at = UTCDateTime(dump_only=True, allow_none=True)
    version = fields.Integer(dump_only=True, metadata={
        "description": 'Grows on every change; sent as ETag: "<version>".'})


def task_item(row, owner: dict, assignee: dict | None, reminders: list, labels, checklist) -> dict:
    """What :class:`TaskSchema` dumps, built straight from a row of task columns
    (the list endpoints' fast path: no ORM objects, no per-field dispatch).

    ``row`` has the task's columns as attributes; ``owner``/``assignee`` are
    ``{id, username, full_name}``; ``reminders`` are ``{id, remind_at, sent_at}``
    (JSON-ready); ``labels`` (``{id, name, color}``) and ``checklist`` (``{id, text,
    done, position}``) are JSON arrays already (``orjson.Fragment``), each in
    :class:`TaskSchema`'s order.
    tests/test_tasks_list.py checks that list items equal the task's own ``GET
    /api/tasks/<id>`` body.
    """
    return {
        "id": row.id,
        "title": row.title,
        "description": row.description,
        "status": row.status,
        "priority": row.priority,
        "due_at": iso_utc(row.due_at),
        "owner": owner,
        "assignee": assignee,
        "team_id": row.team_id,
        "reminders": reminders,
        "labels": labels,
        "checklist": checklist,
        "recurrence": (None if row.recurrence_rule is None
                       else {"rule": row.recurrence_rule, "from": row.recurrence_from}),
        "recurrence_of": row.recurrence_of,
        "created_at": iso_utc(row.created_at),
        "updated_at": iso_utc(row.updated_at),
        "completed_at": iso_utc(row.completed_at),
        "deleted_at": iso_utc(row.deleted_at),
        "version": row.version,
    }


#: A page of tasks (``GET /api/tasks``, ``GET /api/tasks/search``).
TaskPageSchema = page_envelope_schema(TaskSchema, "TaskPageSchema")


class _Changes(fields.Dict):
    """The ``changes`` of an event payload (``{field: [old, new]}``; ``{}`` if none)."""

    def _serialize(self, value, attr, obj, **kwargs):
        changes = (value or {}).get("changes") or {}
        return super()._serialize(changes, attr, obj, **kwargs)


class TaskActivitySchema(Schema):
    """One entry of a task's history: an event of the task (newest first)."""

    id = fields.Integer(attribute="seq", dump_only=True, metadata={"description": "event seq"})
    type = fields.String(dump_only=True, metadata={"example": "task.updated"})
    actor = fields.Nested(UserRefSchema, dump_only=True, allow_none=True)
    changes = _Changes(attribute="payload", dump_only=True, keys=fields.String(),
                       values=fields.List(fields.Raw()),
                       metadata={"description": "{field: [old, new]}"})
    created_at = UTCDateTime(dump_only=True)


#: A page of a task's history.
TaskActivityPageSchema = page_envelope_schema(TaskActivitySchema, "TaskActivityPageSchema")


# --------------------------------------------------------------------------- input


class TaskCreateSchema(Schema):
    """``POST /api/tasks``. Omitted fields take their defaults (priority ``medium``,
    status ``todo``, no due date, unassigned, personal task, no reminders)."""

    class Meta:
        unknown = RAISE

    title = Title(required=True, validate=validate.Length(min=1, max=200),
                  metadata={"pattern": NOT_BLANK_TEXT_PATTERN})
    description = fields.String(load_default="", validate=validate.Length(max=20000))
    status = fields.String(load_default="todo", validate=validate.OneOf(STATUSES))
    priority = fields.String(load_default="medium", validate=validate.OneOf(PRIORITIES))
    due_at = UTCDateTime(load_default=None, allow_none=True)
    assignee_id = fields.Integer(strict=True, load_default=None, allow_none=True, validate=_ID)
    team_id = fields.Integer(strict=True, load_default=None, allow_none=True, validate=_ID)
    reminders = fields.List(UTCDateTime(), load_default=list,
                            validate=validate.Length(max=MAX_REMINDERS),
                            metadata={"description": "remind_at times; replace the unsent reminders"})
    label_ids = fields.List(fields.Integer(strict=True, validate=_ID), load_default=list,
                            validate=validate.Length(max=MAX_LABELS), metadata={
                                "description": "labels of the task's scope: its team's labels on a "
                                               "team task, its owner's personal labels otherwise "
                                               "(else 422)"})
    recurrence = fields.Nested(RecurrenceInputSchema, load_default=None, allow_none=True,
                               metadata={"description": "null: not recurring; needs a due_at"})


class TaskReplaceSchema(TaskCreateSchema):
    """``PUT /api/tasks/<id>``: the full set of editable fields. ``title`` is
    required; an omitted field is reset to its default (see TaskCreate), e.g.
    an omitted ``assignee_id`` unassigns the task and an omitted ``status``
    means ``todo`` (subject to the transition rules)."""


class TaskPatchSchema(TaskCreateSchema):
    """``PATCH /api/tasks/<id>``: the create schema with ``partial=True``: only the
    given fields change (nothing is required, no defaults are filled in)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("partial", True)
        super().__init__(**kwargs)


class TaskStatusUpdateSchema(Schema):
    """``PATCH /api/tasks/<id>/status``."""

    class Meta:
        unknown = RAISE

    status = fields.String(required=True, validate=validate.OneOf(STATUSES))


class TaskAssignSchema(Schema):
    """``PATCH /api/tasks/<id>/assign``: a user id, or null to unassign."""

    class Meta:
        unknown = RAISE

    assignee_id = fields.Integer(strict=True, required=True, allow_none=True, validate=_ID)


def _not_blank(value: str) -> None:
    if not value.strip():
        raise ValidationError("Must not be blank.")


class LabelCreateSchema(Schema):
    """``POST /api/labels`` and ``POST /api/teams/<id>/labels``: ``name`` 1..50
    characters (trimmed, not blank), ``color`` ``#rrggbb`` (default grey)."""

    class Meta:
        unknown = RAISE

    name = fields.String(required=True, validate=[validate.Length(min=1, max=LABEL_NAME_MAX), _not_blank],
                         metadata={"pattern": NOT_BLANK_TEXT_PATTERN})
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
    """``PATCH /api/labels/<id>``: rename and/or recolour (the create schema, partial)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("partial", True)
        super().__init__(**kwargs)


class ChecklistItemCreateSchema(Schema):
    """``POST /api/tasks/<id>/checklist``: ``{text, position?}``; ``text`` 1..500
    characters, not blank; ``position`` from 0 (default: the end; larger: the end)."""

    class Meta:
        unknown = RAISE

    text = fields.String(required=True, validate=[validate.Length(min=1, max=CHECKLIST_TEXT_MAX), _not_blank],
                         metadata={"pattern": NOT_BLANK_TEXT_PATTERN})
    position = fields.Integer(strict=True, validate=validate.Range(min=0, max=MAX_ID))


class ChecklistItemPatchSchema(ChecklistItemCreateSchema):
    """``PATCH /api/checklist-items/<id>``: ``{text?, done?, position?}``."""

    done = fields.Boolean(truthy={True}, falsy={False})  # JSON true/false only, not "yes"

    def __init__(self, **kwargs):
        kwargs.setdefault("partial", True)
        super().__init__(**kwargs)


class TaskFilterArgsSchema(PageArgsSchema):
    """Filters shared by ``GET /api/tasks`` and ``GET /api/tasks/search``.

    Unknown query parameters and unknown values are a 422.
    """

    class Meta:
        unknown = RAISE

    status = fields.List(fields.String(validate=validate.OneOf(STATUSES)),
                         metadata={"description": "repeatable: ?status=todo&status=done"})
    priority = fields.String(validate=validate.OneOf(PRIORITIES))
    assignee_id = UserIdOrMe()
    owner_id = UserIdOrMe()
    team_id = fields.Integer(validate=_ID)
    due_before = UTCDateTime(metadata={"description": "due_at < this (offset required)"})
    due_after = UTCDateTime(metadata={"description": "due_at >= this (offset required)"})
    overdue = fields.Boolean(metadata={
        "description": "true: due_at in the past and status not done; false: the others"})
    q = fields.String(validate=validate.Length(min=1, max=200), metadata={
        "description": "case-insensitive substring of the title or the description",
        "pattern": NOT_BLANK_TEXT_PATTERN})
    deleted = fields.String(validate=validate.OneOf(["only"]), metadata={
        "description": "only: the caller's trash (soft-deleted tasks the caller may restore)"})
    label_id = fields.List(fields.Integer(validate=_ID), metadata={
        "description": "repeatable: tasks carrying every one of these labels"})
    watching = fields.Boolean(metadata={
        "description": "true: only tasks the caller watches; false: only the others"})

    @validates("q")
    def _q_not_blank(self, value, **kwargs):
        if not value.strip():
            raise ValidationError("Must not be blank.")


class TaskListArgsSchema(TaskFilterArgsSchema):
    """``GET /api/tasks`` query string: filters, ``sort`` and pagination."""

    sort = SortSpec(load_default=lambda: [("created_at", True)], metadata={
        "description": "comma list of " + ", ".join(SORT_KEYS) + "; '-' prefix = descending; "
                       "default -created_at; id is the final tiebreaker; each key at most once",
        "example": "-priority,due_at", "pattern": SORT_PATTERN})


class TaskSearchArgsSchema(TaskFilterArgsSchema):
    """``GET /api/tasks/search`` query string: ``q`` is required; results are
    ranked (title equal to q, title starting with q, title containing q,
    description only), then newest first."""

    q = fields.String(required=True, validate=validate.Length(min=1, max=200),
                      metadata={"description": "search text (case-insensitive substring)",
                                "pattern": NOT_BLANK_TEXT_PATTERN})


class TaskDeleteArgsSchema(Schema):
    """``DELETE /api/tasks/<id>`` query string."""

    class Meta:
        unknown = RAISE

    permanent = fields.Boolean(load_default=False, metadata={
        "description": "true: delete a task already in the trash for good"})


#: A page of labels / of watchers.
LabelPageSchema = page_envelope_schema(LabelSchema, "LabelPageSchema")

task_schema = TaskSchema()
tasks_schema = TaskSchema(many=True)
activity_schema = TaskActivitySchema(many=True)
label_schema = LabelSchema()
labels_schema = LabelSchema(many=True)
checklist_item_schema = ChecklistItemSchema()
