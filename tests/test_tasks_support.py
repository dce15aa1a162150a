"""Helpers shared by the tests/test_tasks*.py files (no tests here)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import sqlalchemy as sa

from tasktracker.auth.models import User
from tasktracker.events.models import Event
from tasktracker.extensions import db
from tasktracker.tasks.models import Task
from tests.factories import TeamFactory, add_member


def orm_user(session) -> User:
    """The ORM user behind a logged-in test session."""
    return db.session.get(User, session.id)


def create_task(client, session, status_code: int = 201, headers: dict | None = None, **body) -> dict:
    """POST /api/tasks as ``session`` (title defaults to "Task") and check the status."""
    body.setdefault("title", "Task")
    r = client.post("/api/tasks", json=body, headers={**session.headers, **(headers or {})})
    assert r.status_code == status_code, r.json
    return r.json


def events_of(task_id: int) -> list[Event]:
    """Events of a task, oldest first (fresh from the database)."""
    db.session.expire_all()
    return list(db.session.scalars(sa.select(Event).where(Event.task_id == task_id).order_by(Event.seq)))


def task_row(task_id: int) -> Task | None:
    db.session.expire_all()
    return db.session.get(Task, task_id)


def error_code(response) -> str:
    return response.json["error"]["code"]


@dataclass
class People:
    owner: object
    assignee: object
    other: object
    admin: object


@pytest.fixture
def people(auth) -> People:
    """Four logged-in users: owner, assignee, other (no relation), site admin."""
    return People(auth.user("owner"), auth.user("assignee"), auth.user("other"),
                  auth.user("root", admin=True))


@dataclass
class TeamSetup:
    team: object
    team_owner: object
    team_admin: object
    member: object
    outsider: object


@pytest.fixture
def team_setup(auth) -> TeamSetup:
    """A team owned by ``team_owner`` with an admin and a plain member; and an outsider."""
    team_owner, team_admin, member = auth.user("towner"), auth.user("tadmin"), auth.user("tmember")
    outsider = auth.user("outsider")
    team = TeamFactory(owner=orm_user(team_owner), name="Core")
    add_member(team, orm_user(team_admin), "admin")
    add_member(team, orm_user(member), "member")
    return TeamSetup(team, team_owner, team_admin, member, outsider)


@pytest.fixture
def alice(auth):
    """One logged-in user (cheaper than ``people`` for single-user tests)."""
    return auth.user("alice")
