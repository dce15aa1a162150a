"""factory_boy factories for test data (persisted through the Flask-SQLAlchemy session)."""

from __future__ import annotations

import itertools

import factory
import sqlalchemy as sa
from factory.alchemy import SQLAlchemyModelFactory

from tasktracker.auth.models import User
from tasktracker.auth.services import hash_password
from tasktracker.extensions import db
from tasktracker.tasks.models import Task
from tasktracker.teams.models import Team, TeamMember

PASSWORD = "correct-horse-9"
_PASSWORD_HASH = None


def password_hash() -> str:
    """The argon2 hash of :data:`PASSWORD` (computed once per process): for users
    inserted without the factories."""
    global _PASSWORD_HASH
    if _PASSWORD_HASH is None:
        _PASSWORD_HASH = hash_password(PASSWORD)
    return _PASSWORD_HASH


class BaseFactory(SQLAlchemyModelFactory):
    class Meta:
        abstract = True
        sqlalchemy_session_factory = lambda: db.session  # noqa: E731
        sqlalchemy_session_persistence = "commit"


class UserFactory(BaseFactory):
    class Meta:
        model = User

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda o: f"{o.username}@example.com")
    full_name = factory.Faker("name")
    password_hash = factory.LazyFunction(password_hash)
    role = "member"
    active = True


class TeamFactory(BaseFactory):
    class Meta:
        model = Team

    name = factory.Sequence(lambda n: f"Team {n}")
    description = ""
    owner = factory.SubFactory(UserFactory)

    @factory.post_generation
    def owner_membership(obj, create, extracted, **kwargs):
        if create:
            db.session.add(TeamMember(team_id=obj.id, user_id=obj.owner_id, role="owner"))
            db.session.commit()


class TaskFactory(BaseFactory):
    class Meta:
        model = Task

    title = factory.Sequence(lambda n: f"Task {n}")
    description = ""
    owner = factory.SubFactory(UserFactory)
    status = "todo"
    priority = "medium"


def add_member(team: Team, user: User, role: str = "member") -> TeamMember:
    """Make ``user`` a member of ``team`` with ``role`` (committed)."""
    member = TeamMember(team_id=team.id, user_id=user.id, role=role)
    db.session.add(member)
    db.session.commit()
    return member


def insert_rows(model, rows: list[dict]) -> list:
    """Insert ``rows`` (column values, by column name) of ``model``, a Core INSERT of its
    table with the columns' defaults, not committed; their primary keys in the order
    given. One statement for each run of rows that name the same columns (an
    executemany needs one set). For data built many times per run: no unit of work,
    no objects to expire, and not the ORM's bulk path either (measured: 9 % fewer
    Python calls in the permission matrix, which builds 526 worlds of a dozen calls)."""
    table = model.__table__
    stmt = sa.insert(table).returning(table.primary_key.columns[0], sort_by_parameter_order=True)
    ids: list = []
    for _, run in itertools.groupby(rows, key=lambda row: tuple(row)):
        ids += db.session.scalars(stmt, list(run))
    return ids
