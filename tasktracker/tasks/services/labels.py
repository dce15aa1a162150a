"""Labels (api-contract.md v1.1, "Labels"): the label CRUD and the labels of tasks.

Who may do what:

| action                      | personal label | team label                                  |
|-----------------------------|----------------|---------------------------------------------|
| list, create                | the user       | team members (site admins: any team)        |
| rename, recolour, delete    | its user       | team owner/admins, site admins (members 403)|
| put on a task               | the task owner's own labels on a personal task; the team's labels on a team task |

A label the caller may not see is missing (404 ``label_not_found``). Names are
unique per scope case-insensitively; the unique indexes settle concurrent
creates and renames (409 ``label_name_taken``). Deleting a label takes it off
every task, each task's version grows and its activity records the change
(``task.updated`` with ``changes.labels``).
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa

from tasktracker.auth.models import User
from tasktracker.core.db import refused_as, valid_id
from tasktracker.core.errors import Conflict, Forbidden, LabelNotFound, TeamNotFound, Unprocessable
from tasktracker.core.types import utcnow
from tasktracker.events.services import record_event
from tasktracker.extensions import db
from tasktracker.tasks.schemas import label_schema
from tasktracker.tasks.models import LABEL_DEFAULT_COLOR, Label, Task, TaskLabel
from tasktracker.tasks.permissions import TEAM_MANAGER_ROLES, team_role
from tasktracker.tasks.services.payload import record_task_event
from tasktracker.teams.models import Team

#: How labels are ordered wherever they are listed (on tasks too).
LABEL_ORDER = (sa.func.lower(Label.name), Label.id)


def _name_taken() -> Conflict:
    return Conflict("A label with this name already exists here.", code="label_name_taken",
                    details={"name": ["Already used by another label of this scope."]})


def _commit_label_change() -> None:
    """Commit; a unique index refusing the name (a concurrent twin) gives 409."""
    with refused_as(_name_taken):
        db.session.commit()


def _record_label(type_: str, actor: User, label: Label, **payload) -> None:
    # Every change that can alter a task list writes an event (the list cache's data
    # version, tasktracker.tasks.cache); label events notify nobody.
    record_event(type_, actor_id=actor.id, team_id=label.team_id,
                 payload={"label": label_schema.dump(label), **payload})


# --------------------------------------------------------------------------- reads


def _team_role(user: User, team_id: int) -> str:
    """The caller's role in the team (``owner|admin|member``; ``admin`` for a site
    admin who is not a member); 404 ``team_not_found`` if the team is not theirs."""
    role = team_role(user.id, team_id) if valid_id(team_id) else None
    if role is None and user.is_admin and db.session.get(Team, team_id) is not None:
        return "admin"
    if role is None:
        raise TeamNotFound()
    return role


def personal_labels_query(user: User) -> sa.Select:
    """``GET /api/labels``: the caller's personal labels, by name."""
    return (sa.select(Label).where(Label.team_id.is_(None), Label.user_id == user.id)
            .order_by(*LABEL_ORDER))


def team_labels_query(user: User, team_id: int) -> sa.Select:
    """``GET /api/teams/<id>/labels``: the team's labels, by name (404 for non-members)."""
    _team_role(user, team_id)
    return sa.select(Label).where(Label.team_id == team_id).order_by(*LABEL_ORDER)


def _editable_label(user: User, label_id: int) -> Label:
    label = db.session.get(Label, label_id) if valid_id(label_id) else None
    if label is None or (label.team_id is None and label.user_id != user.id):
        raise LabelNotFound()
    if label.team_id is None:
        return label
    try:
        role = _team_role(user, label.team_id)
    except TeamNotFound:
        raise LabelNotFound() from None
    if role not in TEAM_MANAGER_ROLES:
        raise Forbidden("Only the team's owner or admins may change its labels.")
    return label


# --------------------------------------------------------------------------- writes


def create_label(user: User, data: dict, *, team_id: int | None = None) -> Label:
    """``POST /api/labels`` (``team_id`` None: a personal label of ``user``) or
    ``POST /api/teams/<id>/labels`` (any member; 404 for others). ``data`` is a
    loaded :class:`~tasktracker.labels.schemas.LabelCreateSchema` body. 409
    ``label_name_taken`` if the scope has the name already (case-insensitively)."""
    if team_id is not None:
        _team_role(user, team_id)
    label = Label(name=data["name"], color=data.get("color", LABEL_DEFAULT_COLOR), team_id=team_id,
                  user_id=None if team_id is not None else user.id)
    db.session.add(label)
    with refused_as(_name_taken):
        db.session.flush()
    _record_label("label.created", user, label)
    _commit_label_change()
    return label


def update_label(user: User, label_id: int, data: dict) -> Label:
    """``PATCH /api/labels/<id>``: rename and/or recolour (404 / 403 / 409 as above).
    Tasks carrying the label show the new name and colour at once."""
    label = _editable_label(user, label_id)
    before = label_schema.dump(label)
    for field in ("name", "color"):
        if field in data:
            setattr(label, field, data[field])
    if label_schema.dump(label) == before:
        return label
    with refused_as(_name_taken):
        db.session.flush()
    _record_label("label.updated", user, label, previous=before)
    _commit_label_change()
    return label


def delete_label(user: User, label_id: int) -> None:
    """``DELETE /api/labels/<id>``: the label leaves every task (live or in the trash),
    then goes. Each of those tasks gets a new ``version`` and ``updated_at`` and a
    ``task.updated`` event with ``changes.labels`` = ``[old ids, new ids]``, so its
    activity shows the removal and watchers of ``task:<id>`` get ``task:updated``."""
    label = _editable_label(user, label_id)
    task_ids = list(db.session.scalars(
        sa.select(TaskLabel.task_id).where(TaskLabel.label_id == label.id)))
    before = {task_id: [] for task_id in task_ids}
    for task_id, other in db.session.execute(
            sa.select(TaskLabel.task_id, TaskLabel.label_id).where(TaskLabel.task_id.in_(task_ids))):
        before[task_id].append(other)
    if task_ids:
        # one atomic version bump per task (a concurrent editor holding the old
        # version gets 412 / 409 concurrent_update, as for any other change)
        db.session.execute(sa.update(Task).where(Task.id.in_(task_ids))
                           .values(version=Task.version + 1, updated_at=utcnow())
                           .execution_options(synchronize_session=False))
        db.session.execute(sa.delete(TaskLabel).where(TaskLabel.label_id == label.id))
        tasks = db.session.scalars(sa.select(Task).where(Task.id.in_(task_ids))
                                   .execution_options(populate_existing=True)).all()
        for task in tasks:
            old = sorted(before[task.id])
            record_task_event("task.updated", task, actor_id=user.id,
                              changes={"labels": [old, [i for i in old if i != label.id]]})
    _record_label("label.deleted", user, label)
    db.session.delete(label)
    db.session.commit()


# --------------------------------------------------------------------------- tasks


def labels_for_task(owner_id: int, team_id: int | None, label_ids: Iterable[int]) -> list[Label]:
    """The labels named by ``label_ids`` (a task's ``label_ids``), checked against the
    task's scope: a team task takes only its team's labels, a personal task only its
    owner's personal labels. Anything else (unknown, another scope) is a 422 on
    ``label_ids`` naming the offending ids; duplicates are merged."""
    wanted = sorted(set(label_ids))
    if not wanted:
        return []
    scope = (Label.team_id == team_id if team_id is not None
             else sa.and_(Label.team_id.is_(None), Label.user_id == owner_id))
    labels = list(db.session.scalars(
        sa.select(Label).where(Label.id.in_(wanted), scope).order_by(*LABEL_ORDER)))
    missing = sorted(set(wanted) - {label.id for label in labels})
    if missing:
        where = "this task's team" if team_id is not None else "the task owner's personal labels"
        raise Unprocessable(details={"label_ids": [
            f"Unknown label ids, or not labels of {where}: {missing}."]})
    return labels


def labels_in_scope(current: Iterable[Label], owner_id: int, team_id: int | None) -> list[Label]:
    """The labels of ``current`` that a task of this owner and team may carry (a task
    that changes team keeps only those: the old team's labels leave with it)."""
    if team_id is not None:
        return [label for label in current if label.team_id == team_id]
    return [label for label in current if label.team_id is None and label.user_id == owner_id]



def has_labels_condition(task_id_column, label_ids: list[int]):
    """SQL condition: the task carries every label of ``label_ids`` (``?label_id=``
    repeated: AND). One ``EXISTS`` per label, each served by the primary key."""
    return sa.and_(*(
        sa.exists().where(TaskLabel.task_id == task_id_column, TaskLabel.label_id == label_id)
        for label_id in sorted(set(label_ids))))

