"""Shared helpers and fixtures of the notification / fan-out / scan tests (no tests here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import pytest
import sqlalchemy as sa

from tasktracker.core.types import utcnow
from tasktracker.events.models import Event
from tasktracker.extensions import db
from tasktracker.notifications.models import Notification


@dataclass
class RealtimeCalls:
    """What the fan-out sent to :mod:`tasktracker.realtime`."""

    emits: list[tuple[str, dict, list[str]]] = field(default_factory=list)
    memberships: list[tuple[int, int, bool]] = field(default_factory=list)

    def named(self, name: str) -> list[tuple[str, dict, list[str]]]:
        return [e for e in self.emits if e[0] == name]


@pytest.fixture
def realtime_calls(monkeypatch) -> RealtimeCalls:
    """Record ``realtime.emit`` / ``realtime.sync_membership`` calls instead of sending."""
    from tasktracker import realtime

    calls = RealtimeCalls()
    monkeypatch.setattr(realtime, "emit", lambda event, data, rooms: calls.emits.append(
        (event, data, list(rooms))), raising=False)
    monkeypatch.setattr(realtime, "sync_membership", lambda user_id, team_id, joined: calls.memberships.append(
        (user_id, team_id, joined)), raising=False)
    return calls


@pytest.fixture
def held_fanout(app, monkeypatch) -> list[int]:
    """Disable the after-commit fan-out (the app's event consumer): committed events
    stay undispatched. The list collects the seqs that would have been enqueued."""
    held: list[int] = []
    monkeypatch.setitem(app.extensions, "tt_event_consumer", lambda seqs: held.extend(seqs))
    return held


def notifications_for(user_id: int, type_: str | None = None) -> list[Notification]:
    query = sa.select(Notification).where(Notification.user_id == user_id)
    if type_:
        query = query.where(Notification.type == type_)
    db.session.expire_all()
    return list(db.session.scalars(query.order_by(Notification.id)))


def all_notifications() -> list[Notification]:
    db.session.expire_all()
    return list(db.session.scalars(sa.select(Notification).order_by(Notification.id)))


def events_of(type_: str) -> list[Event]:
    db.session.expire_all()
    return list(db.session.scalars(sa.select(Event).where(Event.type == type_).order_by(Event.seq)))


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


def api_task(client, session, **fields) -> dict:
    """``POST /api/tasks`` as ``session``; returns the task body."""
    r = client.post("/api/tasks", json={"title": "A task", **fields}, headers=session.headers)
    assert r.status_code == 201, r.json
    return r.json
