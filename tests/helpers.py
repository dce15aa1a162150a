"""Helpers shared by the tests (fixtures are in conftest.py): the contract's error shape,
leak checks, cases, one thread-race runner, and the rows/requests the task, notification,
fan-out and scan tests set up and read back."""

from __future__ import annotations

import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta

import sqlalchemy as sa

from tasktracker.auth.models import User
from tasktracker.core.types import utcnow
from tasktracker.events.models import Event
from tasktracker.extensions import db
from tasktracker.notifications.models import Notification
from tasktracker.tasks.models import Task
from tasktracker.teams.models import Team, TeamMember
from tests.factories import TaskFactory, add_member

USER_KEYS = {"id", "username", "email", "full_name", "role", "timezone", "active", "created_at"}
#: A string tests put into exceptions; it must never reach a response body.
SECRET = "s3cr3t-detail-/etc/passwd"
_LEAK_MARKERS = ("Traceback", 'File "', "site-packages", SECRET, "<html", "<!doctype")


@contextmanager
def recorded_statements(engine):
    """The SQL statements ``engine`` sends while the block runs (a list, filled as they go)."""
    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def assert_no_leak(response) -> None:
    """No stack trace, file path, HTML error page or :data:`SECRET` in the body."""
    text = response.get_data(as_text=True)
    for marker in _LEAK_MARKERS:
        assert marker.lower() not in text.lower(), (marker, text[:500])


def assert_error(response, status: int, code: str | None = None) -> dict:
    """The contract's error shape (api-contract.md "Errors"), JSON, with ``status``
    (and ``code`` when given), leaking nothing. Returns the ``error`` object."""
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    assert response.mimetype == "application/json", response.mimetype
    body = response.get_json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "details"}, error
    assert re.fullmatch(r"[a-z][a-z0-9_]*", error["code"]), error
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], dict)
    if code is not None:
        assert error["code"] == code, error
    assert_no_leak(response)
    return error


@contextmanager
def case(label):
    """Name the failing case of a loop in the assertion message."""
    try:
        yield
    except AssertionError as exc:
        raise AssertionError(f"[{label}] {exc}") from exc


def run_together(app, *calls, timeout: float = 60, context: str = "client") -> list:
    """Run the ``calls`` each in its own thread, released together by a barrier (the
    thread-race helper of every race test); returns their results, or the exception
    (any ``BaseException``, ``pytest.fail`` included) a thread raised, in order.

    ``context="client"``: each ``call(client)`` gets its own ``app.test_client()``;
    ``context="app"``: each ``call()`` runs in its own ``app.app_context()`` (services,
    scans). Fails if a thread is still running after ``timeout`` seconds."""
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def worker(i, call):
        try:
            if context == "client":
                with app.test_client() as client:
                    barrier.wait(timeout=30)
                    results[i] = call(client)
            else:
                with app.app_context():
                    barrier.wait(timeout=30)
                    results[i] = call()
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            results[i] = exc

    threads = [threading.Thread(target=worker, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads), "a request hung"
    return results


def raised(results: list) -> list[BaseException]:
    """The exceptions among :func:`run_together`'s results."""
    return [r for r in results if isinstance(r, BaseException)]


# --------------------------------------------------------------------------- rows and requests


def orm_user(session) -> User:
    """The ORM user behind a logged-in test session."""
    return db.session.get(User, session.id)


def error_code(response) -> str:
    return response.json["error"]["code"]


def create_task(client, session, status_code: int = 201, headers: dict | None = None, **body) -> dict:
    """POST /api/tasks as ``session`` (title defaults to "Task") and check the status."""
    body.setdefault("title", "Task")
    r = client.post("/api/tasks", json=body, headers={**session.headers, **(headers or {})})
    assert r.status_code == status_code, r.json
    return r.json


def api_task(client, session, **fields) -> dict:
    """``POST /api/tasks`` as ``session`` (title "A task" by default); returns the task body."""
    return create_task(client, session, **{"title": "A task", **fields})


def task_row(task_id: int) -> Task | None:
    db.session.expire_all()
    return db.session.get(Task, task_id)


def task_events(task_id: int) -> list[Event]:
    """Events of a task, oldest first (fresh from the database)."""
    db.session.expire_all()
    return list(db.session.scalars(sa.select(Event).where(Event.task_id == task_id).order_by(Event.seq)))


def events_of(type_: str) -> list[Event]:
    """Events of a type, oldest first (fresh from the database)."""
    db.session.expire_all()
    return list(db.session.scalars(sa.select(Event).where(Event.type == type_).order_by(Event.seq)))


def role_of(team_id: int, user_id: int) -> str | None:
    """A user's role in a team, or None (fresh from the database)."""
    db.session.expire_all()
    return db.session.scalar(sa.select(TeamMember.role).where(TeamMember.team_id == team_id,
                                                             TeamMember.user_id == user_id))


def notifications_for(user_id: int, type_: str | None = None) -> list[Notification]:
    query = sa.select(Notification).where(Notification.user_id == user_id)
    if type_:
        query = query.where(Notification.type == type_)
    db.session.expire_all()
    return list(db.session.scalars(query.order_by(Notification.id)))


def all_notifications() -> list[Notification]:
    db.session.expire_all()
    return list(db.session.scalars(sa.select(Notification).order_by(Notification.id)))


def add_event(type_: str = "task.updated", *, actor_id=None, task_id=None, team_id=None, payload=None,
              age_seconds: float = 0.0, dispatched: bool = False) -> Event:
    """An event row written directly (no after-commit fan-out), committed."""
    now = utcnow()
    event = Event(type=type_, actor_id=actor_id, task_id=task_id, team_id=team_id, payload=payload or {},
                  created_at=now - timedelta(seconds=age_seconds), dispatched_at=now if dispatched else None)
    db.session.add(event)
    db.session.commit()
    return event


def add_notification(user_id: int, *, actor_id=None, read: bool = False, age_seconds: float = 0.0,
                     type_: str = "task_updated", message: str = "something happened") -> Notification:
    """A notification (and its event) written directly, committed."""
    event = add_event(actor_id=actor_id, dispatched=True, age_seconds=age_seconds)
    now = utcnow()
    notification = Notification(user_id=user_id, event_seq=event.seq, type=type_, message=message,
                                actor_id=actor_id, data={"k": 1},
                                created_at=now - timedelta(seconds=age_seconds),
                                read_at=now if read else None)
    db.session.add(notification)
    db.session.commit()
    return notification


@dataclass
class RealtimeCalls:
    """What the fan-out sent to :mod:`tasktracker.realtime` (the ``realtime_calls`` fixture)."""

    emits: list[tuple[str, dict, list[str]]] = field(default_factory=list)
    memberships: list[tuple[int, int, bool]] = field(default_factory=list)

    def named(self, name: str) -> list[tuple[str, dict, list[str]]]:
        return [e for e in self.emits if e[0] == name]


@dataclass
class People:
    """The ``people`` fixture: owner, assignee, other (no relation), site admin."""

    owner: object
    assignee: object
    other: object
    admin: object


@dataclass
class TeamSetup:
    """The ``team_setup`` fixture: a team, its owner, an admin, a member; an outsider."""

    team: object
    team_owner: object
    team_admin: object
    member: object
    outsider: object


@dataclass
class World:
    """:func:`make_world`'s task and the people around it."""

    task: Task
    owner: object      # task owner (a team member)
    assignee: object   # task assignee (a team member)
    member: object     # another team member
    outsider: object
    root: object       # site admin


def make_world(client, auth) -> World:
    """A team task (owner's, assigned to ``assignee``) in a team of owner, assignee and
    member, plus an outsider and a site admin, all logged in."""
    owner, assignee, member = auth.user("owner"), auth.user("assignee"), auth.user("member")
    outsider, root = auth.user("outsider"), auth.user("root", admin=True)
    team = client.post("/api/teams", json={"name": "T"}, headers=owner.headers).json
    team_obj = db.session.get(Team, team["id"])
    for session in (assignee, member):
        add_member(team_obj, db.session.get(User, session.id))
    task = TaskFactory(owner=db.session.get(User, owner.id), assignee=db.session.get(User, assignee.id),
                       team_id=team["id"])
    return World(task, owner, assignee, member, outsider, root)


def from_ip(ip: str) -> dict:
    """Test-client keyword arguments of a request from client address ``ip``."""
    return {"environ_base": {"REMOTE_ADDR": ip}}


def assert_rate_limited(response) -> None:
    """429 ``rate_limited`` in the error shape, with a ``Retry-After`` of 1-60 s."""
    assert_error(response, 429, "rate_limited")
    retry_after = response.headers.get("Retry-After")
    assert retry_after is not None and retry_after.isdigit() and 0 < int(retry_after) <= 60, retry_after
