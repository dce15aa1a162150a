"""Fan-out of events: notification rows per event type and recipient (never the actor,
never twice), Socket.IO emits after the commit, membership sync, concurrency."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
import sqlalchemy as sa

from tasktracker import realtime
from tasktracker.auth.models import User
from tasktracker.events.models import Event
from tasktracker.extensions import db, socketio
from tasktracker.notifications.services import fanout as services
from tasktracker.notifications.services import recipients
from tasktracker.notifications.models import Notification
from tasktracker.notifications.services import fan_out
from tests.factories import TeamFactory, add_member
from tests.helpers import (
    add_event, all_notifications, api_task, events_of, notifications_for, raised, run_together,
)


def orm(session) -> User:
    return db.session.get(User, session.id)


def types_of(session) -> list[str]:
    return [n.type for n in notifications_for(session.id)]


def patch(client, session, url, body):
    r = client.patch(url, json=body, headers=session.headers)
    assert r.status_code == 200, r.json
    return r.json


# --------------------------------------------------------------------------- per event type (REST flows)


def test_task_lifecycle_notifies_owner_and_assignee_never_the_actor(client, auth):
    alice, bob, carol = auth.user("alice"), auth.user("bob"), auth.user("carol")
    task = api_task(client, alice, title="Quarterly report", assignee_id=bob.id)
    url = f"/api/tasks/{task['id']}"
    assert types_of(bob) == ["task_assigned"] and types_of(alice) == []

    patch(client, bob, url, {"title": "Quarterly report v2"})            # by the assignee
    assert types_of(alice) == ["task_updated"] and types_of(bob) == ["task_assigned"]
    updated = notifications_for(alice.id)[0]
    assert updated.actor_id == bob.id and updated.task_id == task["id"]
    assert updated.data["changes"]["title"] == ["Quarterly report", "Quarterly report v2"]

    patch(client, alice, url + "/status", {"status": "in_progress"})      # by the owner
    assert types_of(bob) == ["task_assigned", "task_status_changed"] and types_of(alice) == ["task_updated"]
    assert "in_progress" in notifications_for(bob.id, "task_status_changed")[0].message

    patch(client, alice, url + "/assign", {"assignee_id": carol.id})      # to the new assignee only
    assert types_of(carol) == ["task_assigned"]
    assert types_of(bob) == ["task_assigned", "task_status_changed"]

    r = client.post(url + "/comments", json={"body": "Numbers are in."}, headers=carol.headers)
    assert r.status_code == 201
    assert types_of(alice) == ["task_updated", "comment_added"] and types_of(carol) == ["task_assigned"]
    assert notifications_for(alice.id, "comment_added")[0].data["excerpt"] == "Numbers are in."

    assert client.delete(url, headers=alice.headers).status_code == 204
    assert types_of(carol) == ["task_assigned", "task_deleted"]
    assert types_of(alice) == ["task_updated", "comment_added"]
    assert types_of(bob) == ["task_assigned", "task_status_changed"]
    # every event is dispatched exactly once, one notification per (event, recipient)
    events = list(db.session.scalars(sa.select(Event).where(Event.task_id == task["id"])))
    assert events and all(e.dispatched_at is not None for e in events)
    pairs = [(n.event_seq, n.user_id) for n in all_notifications()]
    assert len(pairs) == len(set(pairs)) == 6


def test_acting_on_own_task_notifies_nobody(client, auth):
    alice = auth.user("alice")
    task = api_task(client, alice, assignee_id=alice.id)
    patch(client, alice, f"/api/tasks/{task['id']}", {"title": "Mine"})
    patch(client, alice, f"/api/tasks/{task['id']}/status", {"status": "done"})
    assert all_notifications() == []


def test_comment_notifies_earlier_commenters_who_still_see_the_task(client, auth):
    alice, bob, dave, erin = (auth.user(n) for n in ("alice", "bob", "dave", "erin"))
    team = TeamFactory(owner=orm(alice))
    add_member(team, orm(bob))
    add_member(team, orm(dave))
    add_member(team, orm(erin))
    task = api_task(client, alice, team_id=team.id, assignee_id=bob.id)
    comments = f"/api/tasks/{task['id']}/comments"

    assert client.post(comments, json={"body": "first"}, headers=dave.headers).status_code == 201
    assert client.post(comments, json={"body": "second"}, headers=erin.headers).status_code == 201
    # erin leaves the team: she no longer sees the task, so she is not told about later comments
    assert client.delete(f"/api/teams/{team.id}/members/{erin.id}", headers=erin.headers).status_code == 204
    assert client.post(comments, json={"body": "third"}, headers=bob.headers).status_code == 201

    third = [n for n in all_notifications() if n.data.get("excerpt") == "third"]
    assert sorted(n.user_id for n in third) == sorted([alice.id, dave.id])
    second = [n for n in all_notifications() if n.data.get("excerpt") == "second"]
    assert sorted(n.user_id for n in second) == sorted([alice.id, bob.id, dave.id])
    assert all(n.team_id == team.id and n.type == "comment_added" for n in third + second)


def test_invitation_created_and_accepted(client, auth, realtime_calls):
    alice, dave = auth.user("alice"), auth.user("dave")
    r = client.post("/api/teams", json={"name": "Core"}, headers=alice.headers)
    assert r.status_code == 201
    team_id = r.json["id"]
    r = client.post(f"/api/teams/{team_id}/invitations", json={"email": "dave@example.com"},
                    headers=alice.headers)
    assert r.status_code == 201
    invitation_id = r.json["id"]
    r = client.post(f"/api/teams/{team_id}/invitations", json={"email": "nobody@example.com"},
                    headers=alice.headers)
    assert r.status_code == 201  # not registered: nobody to notify

    [invite] = notifications_for(dave.id)
    assert invite.type == "team_invitation" and invite.team_id == team_id and invite.actor_id == alice.id
    assert invite.data["invitation_id"] == invitation_id and "Core" in invite.message
    assert notifications_for(alice.id) == []

    r = client.post(f"/api/invitations/{invitation_id}/accept", headers=dave.headers)
    assert r.status_code == 200, r.json
    [accepted] = notifications_for(alice.id)  # inviter == team owner: one notification
    assert accepted.type == "invitation_accepted" and accepted.actor_id == dave.id
    assert accepted.data["user_id"] == dave.id
    assert types_of(dave) == ["team_invitation"]
    assert (dave.id, team_id, True) in realtime_calls.memberships

    r = client.delete(f"/api/teams/{team_id}/members/{dave.id}", headers=alice.headers)
    assert r.status_code == 204
    assert realtime_calls.memberships[-1] == (dave.id, team_id, False)


def test_invitation_accepted_notifies_inviter_and_team_owner(auth):
    from tasktracker.teams.models import Invitation

    owner, admin, dave = (auth.user(n) for n in ("owner", "admin", "dave"))
    team = TeamFactory(owner=orm(owner), name="Ops")
    add_member(team, orm(admin), "admin")
    add_member(team, orm(dave))
    invitation = Invitation(team_id=team.id, email="dave@example.com", invited_by_id=admin.id,
                            status="accepted", expires_at=team.created_at)
    db.session.add(invitation)
    db.session.commit()
    event = add_event("invitation.accepted", actor_id=dave.id, team_id=team.id,
                      payload={"invitation": {"id": invitation.id, "team": {"id": team.id, "name": "Ops"}},
                               "user_id": dave.id})
    assert fan_out(event.seq).claimed
    got = sorted((n.user_id, n.type) for n in all_notifications())
    assert got == sorted([(owner.id, "invitation_accepted"), (admin.id, "invitation_accepted")])


# --------------------------------------------------------------------------- exactly once


def test_fan_out_twice_creates_nothing_twice(client, auth, held_fanout, realtime_calls):
    alice, bob = auth.user("alice"), auth.user("bob")
    task = api_task(client, alice, assignee_id=bob.id)
    patch(client, bob, f"/api/tasks/{task['id']}", {"title": "again"})
    assert len(held_fanout) == 2 and all_notifications() == []  # held back: nothing yet

    first = [fan_out(seq) for seq in held_fanout]
    assert all(r.claimed for r in first)
    assert sorted((n.user_id, n.type) for n in all_notifications()) == sorted(
        [(bob.id, "task_assigned"), (alice.id, "task_updated")])
    emitted = len(realtime_calls.emits)
    assert emitted == 4  # task:created, task:updated and one notification:new each

    second = [fan_out(seq) for seq in held_fanout]
    assert not any(r.claimed for r in second)
    assert len(all_notifications()) == 2 and len(realtime_calls.emits) == emitted

    # even if an event were un-marked, the unique (event_seq, user_id) keeps it at one row
    db.session.execute(sa.update(Event).values(dispatched_at=None))
    db.session.commit()
    third = [fan_out(seq) for seq in held_fanout]
    assert all(r.claimed and r.notification_ids == [] for r in third)
    assert len(all_notifications()) == 2
    assert realtime_calls.named("notification:new") == realtime_calls.named("notification:new")[:2]


def test_concurrent_fan_out_of_the_same_events_claims_each_once(app, client, auth, held_fanout):
    alice, bob = auth.user("alice"), auth.user("bob")
    for i in range(8):
        api_task(client, alice, title=f"t{i}", assignee_id=bob.id)
    seqs = list(held_fanout)
    assert len(seqs) == 8
    claimed: list[tuple[int, bool]] = []

    def worker():
        for seq in seqs:
            claimed.append((seq, fan_out(seq).claimed))

    errors = raised(run_together(app, worker, worker, timeout=30, context="app"))
    assert not errors, errors
    wins = Counter(seq for seq, ok in claimed if ok)
    assert len(claimed) == 16 and wins == Counter({seq: 1 for seq in seqs})
    notes = notifications_for(bob.id, "task_assigned")
    assert len(notes) == 8 and len({n.event_seq for n in notes}) == 8


# --------------------------------------------------------------------------- Socket.IO emits


def test_emits_resource_and_notification_events_to_the_right_rooms(client, auth, realtime_calls):
    alice, bob = auth.user("alice"), auth.user("bob")
    team = TeamFactory(owner=orm(alice))
    add_member(team, orm(bob))
    task = api_task(client, alice, team_id=team.id, assignee_id=bob.id)
    created = realtime_calls.named("task:created")
    assert len(created) == 1
    _, data, rooms = created[0]
    assert set(rooms) == {f"task:{task['id']}", f"team:{team.id}", f"user:{alice.id}", f"user:{bob.id}"}
    seq = events_of("task.created")[0].seq
    assert data == {**task, "actor_id": alice.id, "seq": seq}

    realtime_calls.emits.clear()
    body = patch(client, bob, f"/api/tasks/{task['id']}", {"description": "details"})
    [(name, data, rooms)] = realtime_calls.named("task:updated")
    assert data == {**body, "actor_id": bob.id, "seq": events_of("task.updated")[0].seq}
    assert set(rooms) == {f"task:{task['id']}", f"team:{team.id}", f"user:{alice.id}", f"user:{bob.id}"}
    [(name, note, rooms)] = realtime_calls.named("notification:new")
    assert rooms == [f"user:{alice.id}"]
    listed = client.get("/api/notifications", headers=alice.headers).json["items"][0]
    assert note == listed and note["seq"] == data["seq"] and note["type"] == "task_updated"
    assert note["actor_id"] == bob.id == note["actor"]["id"]

    realtime_calls.emits.clear()
    patch(client, alice, f"/api/tasks/{task['id']}/assign", {"assignee_id": None})
    [(name, data, rooms)] = realtime_calls.named("task:assigned")
    assert f"user:{bob.id}" in rooms and data["assignee"] is None  # the previous assignee hears of it
    assert realtime_calls.named("notification:new") == []  # unassigning notifies nobody

    realtime_calls.emits.clear()
    r = client.post(f"/api/tasks/{task['id']}/comments", json={"body": "hi"}, headers=bob.headers)
    [(name, data, rooms)] = realtime_calls.named("comment:created")
    assert data == {**r.json, "actor_id": bob.id, "seq": events_of("comment.created")[0].seq}
    assert f"task:{task['id']}" in rooms and f"team:{team.id}" in rooms

    realtime_calls.emits.clear()
    assert client.delete(f"/api/tasks/{task['id']}", headers=alice.headers).status_code == 204
    assert [e[0] for e in realtime_calls.emits] == ["task:deleted"]
    r = client.patch(f"/api/tasks/{task['id']}/restore", headers=alice.headers)
    assert r.status_code == 200
    assert [e[0] for e in realtime_calls.emits] == ["task:deleted", "task:restored"]
    assert realtime_calls.emits[-1][1]["deleted_at"] is None


def test_live_socket_client_receives_the_fanned_out_events(app, client, auth):
    """Through the real realtime layer: bob's Socket.IO connection gets task:created and
    notification:new when alice assigns him a task over REST."""
    from socketio.pubsub_manager import PubSubManager

    if app.extensions.get("socketio") is not socketio or isinstance(socketio.server.manager, PubSubManager):
        realtime.init_socketio(app)
    alice, bob = auth.user("alice"), auth.user("bob")
    conn = socketio.test_client(app, auth={"token": bob.access_token}, flask_test_client=client)
    try:
        conn.get_received()
        task = api_task(client, alice, title="Live", assignee_id=bob.id)
        got = {m["name"]: m["args"][0] for m in conn.get_received()}
        assert got["task:created"]["id"] == task["id"] and got["task:created"]["actor_id"] == alice.id
        assert got["notification:new"]["type"] == "task_assigned"
        assert got["notification:new"]["seq"] == got["task:created"]["seq"]
    finally:
        conn.disconnect()
        realtime.get_state(app).presence.clear()


def test_realtime_failures_never_undo_the_notifications(client, auth, monkeypatch):
    def boom(*args):
        raise RuntimeError("socket layer down")

    monkeypatch.setattr(realtime, "emit", boom)
    alice, bob = auth.user("alice"), auth.user("bob")
    api_task(client, alice, assignee_id=bob.id)
    assert types_of(bob) == ["task_assigned"]
    assert all(e.dispatched_at is not None for e in events_of("task.created"))


# --------------------------------------------------------------------------- edge cases


def test_event_of_a_purged_task_creates_and_emits_nothing(auth, realtime_calls):
    alice, bob = auth.user("alice"), auth.user("bob")
    task = {"id": 987654, "title": "gone", "owner": {"id": alice.id}, "assignee": {"id": bob.id},
            "team_id": None}
    event = add_event("task.updated", actor_id=alice.id, task_id=987654, payload={"task": task, "changes": {}})
    result = fan_out(event.seq)
    assert result.claimed and result.notification_ids == [] and realtime_calls.emits == []
    db.session.expire_all()
    assert db.session.get(Event, event.seq).dispatched_at is not None


def test_recipients_whose_account_is_gone_are_skipped(auth):
    from tests.factories import TaskFactory

    alice, bob = auth.user("alice"), auth.user("bob")
    task = TaskFactory(owner=orm(alice), assignee=orm(bob))
    payload = {"task": {"id": task.id, "title": task.title, "owner": {"id": alice.id},
                        "assignee": {"id": 424242}, "team_id": None}}
    event = add_event("task.overdue", task_id=task.id, payload=payload)
    assert fan_out(event.seq).claimed
    assert [(n.user_id, n.type, n.actor) for n in all_notifications()] == [(alice.id, "task_overdue", None)]


def test_events_without_notifications_are_still_marked_dispatched(client, auth, realtime_calls):
    alice = auth.user("alice")
    r = client.post("/api/teams", json={"name": "Solo"}, headers=alice.headers)
    assert r.status_code == 201
    assert r.json["id"] and all_notifications() == []
    assert [e.dispatched_at is not None for e in events_of("team.created")] == [True]
    assert realtime_calls.emits == []


def test_database_failure_rolls_back_and_leaves_the_event_undispatched(auth, monkeypatch):
    alice, bob = auth.user("alice"), auth.user("bob")
    event = add_event("invitation.created", actor_id=alice.id,
                      payload={"invitation": {"id": 1, "team": {"name": "X"}}, "invitee_user_id": bob.id})

    def fail(*args, **kwargs):
        raise sa.exc.OperationalError("INSERT", {}, Exception("database went away"))

    monkeypatch.setattr(services, "_insert_notifications", fail)
    with pytest.raises(sa.exc.OperationalError):
        fan_out(event.seq)
    db.session.expire_all()
    assert db.session.get(Event, event.seq).dispatched_at is None
    monkeypatch.undo()
    assert fan_out(event.seq).claimed
    assert [n.type for n in notifications_for(bob.id)] == ["team_invitation"]


def test_message_and_data_are_bounded(auth):
    alice, bob = auth.user("alice"), auth.user("bob")
    from tests.factories import TaskFactory

    task = TaskFactory(owner=orm(alice), assignee=orm(bob))
    body = "x" * 10000
    payload = {"task": {"id": task.id, "title": "T" * 200, "owner": {"id": alice.id},
                        "assignee": {"id": bob.id}, "team_id": None},
               "comment": {"id": 1, "body": body}}
    event = add_event("comment.created", actor_id=alice.id, task_id=task.id, payload=payload)
    assert fan_out(event.seq).claimed
    [n] = notifications_for(bob.id)
    assert n.type == "comment_added" and len(n.message) <= 500 and len(n.data["excerpt"]) <= 141
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Notification)) == 1


# --------------------------------------------------------------------------- batches


def _overdue_event(task_id: int, owner_id: int) -> Event:
    return add_event("task.overdue", task_id=task_id,
                     payload={"task": {"id": task_id, "title": "t", "owner": {"id": owner_id}}})


def test_fan_out_many_isolates_a_failing_event(auth, monkeypatch):
    from tests.factories import TaskFactory

    alice = auth.user("alice")
    task = TaskFactory(owner=orm(alice))
    seqs = [_overdue_event(task.id, alice.id).seq for _ in range(3)]
    poison = seqs[1]
    real_plan = recipients.plan_notifications

    def plan(event):
        if event.seq == poison:
            raise sa.exc.OperationalError("SELECT", {}, Exception("flaky"))
        return real_plan(event)

    monkeypatch.setattr(recipients, "plan_notifications", plan)
    results = services.fan_out_many(seqs)
    assert [(r.seq, r.claimed, r.failed) for r in results] == [
        (seqs[0], True, False), (poison, False, True), (seqs[2], True, False)]
    assert sorted(n.event_seq for n in notifications_for(alice.id)) == [seqs[0], seqs[2]]
    db.session.expire_all()
    assert db.session.get(Event, poison).dispatched_at is None  # left for the outbox scan

    monkeypatch.setattr(recipients, "plan_notifications", real_plan)
    assert [r.claimed for r in services.fan_out_many(seqs)] == [False, True, False]
    assert len(notifications_for(alice.id)) == 3


def test_fan_out_many_chunks_and_orders(auth, monkeypatch, realtime_calls):
    from tests.factories import TaskFactory

    monkeypatch.setattr(services, "FANOUT_CHUNK", 4)
    alice = auth.user("alice")
    task = TaskFactory(owner=orm(alice))
    seqs = [_overdue_event(task.id, alice.id).seq for _ in range(10)]
    results = services.fan_out_many(list(reversed(seqs)) + seqs[:3])  # duplicates, any order
    assert [r.seq for r in results] == seqs and all(r.claimed for r in results)
    assert [d["seq"] for _, d, _ in realtime_calls.named("notification:new")] == seqs


def test_postgresql_skips_an_event_being_fanned_out_elsewhere(app, auth):
    if db.engine.dialect.name != "postgresql":
        pytest.skip("FOR UPDATE SKIP LOCKED is PostgreSQL-only (SQLite serialises writers)")
    from tests.factories import TaskFactory

    alice = auth.user("alice")
    task = TaskFactory(owner=orm(alice))
    busy, free = _overdue_event(task.id, alice.id).seq, _overdue_event(task.id, alice.id).seq
    result: list = []
    with db.engine.connect() as other:  # another worker's open transaction on `busy`
        other.execute(sa.select(Event.seq).where(Event.seq == busy).with_for_update())

        def run():
            with app.app_context():
                result.extend(services.fan_out_many([busy, free]))

        t = threading.Thread(target=run)
        t.start()
        t.join(15)
        assert not t.is_alive(), "the fan-out waited for the locked event instead of skipping it"
        other.rollback()
    assert [(r.seq, r.claimed) for r in result] == [(busy, False), (free, True)]
    assert [n.event_seq for n in notifications_for(alice.id)] == [free]
    assert fan_out(busy).claimed  # once the other transaction is gone (the outbox scan's job)


def test_fan_out_job_catches_up_with_newer_events_only(auth, monkeypatch, realtime_calls):
    """A burst leaves one queued job per event: the first job to run also takes the
    newer undispatched events (a chunk per transaction), the jobs behind it find theirs
    claimed, nothing is sent twice, and older leftovers stay with the outbox scan."""
    from tests.factories import TaskFactory

    monkeypatch.setattr(services, "FANOUT_CHUNK", 3)
    alice = auth.user("alice")
    task = TaskFactory(owner=orm(alice))
    older, mine, *newer = [_overdue_event(task.id, alice.id).seq for _ in range(6)]

    assert services.fan_out_job([mine]) == 4  # its own event + one chunk of the newer ones
    db.session.expire_all()
    dispatched = {seq: db.session.get(Event, seq).dispatched_at is not None
                  for seq in [older, mine, *newer]}
    assert dispatched == {older: False, mine: True, newer[0]: True, newer[1]: True, newer[2]: True,
                          newer[3]: False}
    assert services.fan_out_job([newer[0]]) == 1  # its job: claimed already; catches up newer[3]
    assert services.fan_out_job([newer[3]]) == 0
    sent = [d["seq"] for _, d, _ in realtime_calls.named("notification:new")]
    assert sent == [mine, *newer]  # once each, in order; `older` is the outbox's
    assert sorted(n.event_seq for n in notifications_for(alice.id)) == [mine, *newer]
