"""Socket.IO layer in-process (Flask-SocketIO test client): connect auth, rooms,
task subscriptions, emit() fan-out semantics, replay, presence, sync_membership."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from flask_jwt_extended import create_access_token, decode_token
from flask_socketio import ConnectionRefusedError

from tasktracker import realtime
from tasktracker.auth.models import User
from tasktracker.events.models import Event
from tasktracker.extensions import db, socketio
from tasktracker.notifications.models import Notification
from tasktracker.realtime import handlers
from tasktracker.teams.models import TeamMember
from tests.factories import TaskFactory, TeamFactory, add_member


def sid_of(conn) -> str:
    return socketio.server.manager.sid_from_eio_sid(conn.eio_sid, "/")


def rooms_of(conn) -> set[str]:
    return set(socketio.server.manager.get_rooms(sid_of(conn), "/")) - {sid_of(conn)}


def events(conn, name=None) -> list[tuple[str, dict]]:
    got = [(m["name"], m["args"][0] if m["args"] else None) for m in conn.get_received()]
    return [e for e in got if name is None or e[0] == name]


def model(session) -> User:
    return db.session.get(User, session.id)


# --- connect / auth ---------------------------------------------------------------------------

def test_connect_accepts_good_token_and_joins_user_and_team_rooms(auth, sio):
    alice = auth.user("alice")
    team1 = TeamFactory(owner=model(alice))
    other = auth.user("bob")
    team2 = TeamFactory(owner=model(other))
    add_member(team2, model(alice))
    foreign = TeamFactory(owner=model(other))

    conn = sio(alice.access_token)

    assert conn.is_connected()
    assert rooms_of(conn) == {f"user:{alice.id}", f"team:{team1.id}", f"team:{team2.id}"}
    assert f"team:{foreign.id}" not in rooms_of(conn)
    assert db.session.get(User, alice.id).last_seen_at is not None


@pytest.mark.parametrize("auth_payload", [None, {}, {"token": ""}, {"token": 42}, {"token": "garbage"},
                                          {"token": "a.b.c"}])
def test_connect_refused_without_a_valid_token(auth, sio, auth_payload):
    conn = sio(auth=auth_payload)
    assert not conn.is_connected()


def test_connect_refused_for_expired_token(app, auth, sio):
    alice = auth.user("alice")
    claims = decode_token(alice.access_token)
    expired = create_access_token(identity=str(alice.id), additional_claims={"sid": claims["sid"]},
                                  expires_delta=timedelta(seconds=-30))
    assert not sio(expired).is_connected()
    assert sio(alice.access_token).is_connected()  # the same session's fresh token is fine


def test_connect_refused_after_logout(client, auth, sio):
    alice = auth.user("alice")
    assert sio(alice.access_token).is_connected()
    assert client.post("/api/auth/logout", headers=alice.headers).status_code == 204
    assert not sio(alice.access_token).is_connected()


def test_connect_refused_for_refresh_token(auth, sio):
    alice = auth.user("alice")
    assert not sio(alice.refresh_token).is_connected()


def test_connect_refused_for_deactivated_user(auth, sio):
    alice = auth.user("alice")
    db.session.get(User, alice.id).active = False
    db.session.commit()
    assert not sio(alice.access_token).is_connected()


def test_connect_refusal_reasons(auth):
    """The connect handler refuses with ConnectionRefusedError(message, {"code"})."""
    alice = auth.user("alice")
    cases = [(None, "missing_token"), ({"token": "nope"}, "invalid_token"),
             ({"token": alice.refresh_token}, "invalid_token"),
             ({"token": alice.access_token, "last_seq": -1}, "invalid_last_seq"),
             ({"token": alice.access_token, "last_seq": "x"}, "invalid_last_seq"),
             ({"token": alice.access_token, "last_seq": True}, "invalid_last_seq")]
    for payload, code in cases:
        with pytest.raises(ConnectionRefusedError) as info:
            handlers.on_connect(payload)
        assert info.value.error_args["data"] == {"code": code}, payload


# --- task subscriptions -----------------------------------------------------------------------

def test_task_subscribe_visible_task_and_refused_for_outsider(auth, sio):
    owner, outsider = auth.user("owner"), auth.user("outsider")
    task = TaskFactory(owner=model(owner))
    owner_conn, outsider_conn = sio(owner.access_token), sio(outsider.access_token)

    assert owner_conn.emit("task:subscribe", {"task_id": task.id}, callback=True) == {"ok": True}
    assert f"task:{task.id}" in rooms_of(owner_conn)
    assert outsider_conn.emit("task:subscribe", {"task_id": task.id}, callback=True) == \
        {"ok": False, "error": "not_found"}
    assert outsider_conn.emit("task:subscribe", {"task_id": 999999}, callback=True) == \
        {"ok": False, "error": "not_found"}
    assert f"task:{task.id}" not in rooms_of(outsider_conn)

    assert owner_conn.emit("task:unsubscribe", {"task_id": task.id}, callback=True) == {"ok": True}
    assert f"task:{task.id}" not in rooms_of(owner_conn)


def test_task_subscribe_team_member_and_deleted_task(auth, sio):
    owner, member = auth.user("owner"), auth.user("member")
    team = TeamFactory(owner=model(owner))
    add_member(team, model(member))
    task = TaskFactory(owner=model(owner), team_id=team.id)
    conn = sio(member.access_token)
    assert conn.emit("task:subscribe", {"task_id": task.id}, callback=True) == {"ok": True}

    from tasktracker.core.types import utcnow
    gone = TaskFactory(owner=model(owner), team_id=team.id, deleted_at=utcnow())
    assert conn.emit("task:subscribe", {"task_id": gone.id}, callback=True) == \
        {"ok": False, "error": "not_found"}


@pytest.mark.parametrize("payload", [None, "7", [7], {}, {"task_id": "7"}, {"task_id": True},
                                     {"task_id": 0}, {"task_id": -3}, {"task_id": 1.5},
                                     {"task_id": 2**40}, {"task_id": None}])
def test_task_subscribe_bad_payloads_ack_invalid(auth, sio, payload):
    conn = sio(auth.user("alice").access_token)
    assert conn.emit("task:subscribe", payload, callback=True) == {"ok": False, "error": "invalid"}
    assert conn.emit("task:unsubscribe", payload, callback=True) == {"ok": False, "error": "invalid"}
    assert conn.is_connected()


def test_task_subscribe_without_arguments(auth, sio):
    conn = sio(auth.user("alice").access_token)
    assert conn.emit("task:subscribe", callback=True) == {"ok": False, "error": "invalid"}
    assert conn.emit("task:subscribe", {"task_id": 1}, "extra", callback=True) == \
        {"ok": False, "error": "not_found"}


# --- emit() ------------------------------------------------------------------------------------

def test_emit_reaches_each_target_connection_once_and_outsiders_never(auth, sio):
    owner, assignee, member, outsider = (auth.user(n) for n in ("owner", "assignee", "member", "outsider"))
    team = TeamFactory(owner=model(owner))
    add_member(team, model(member))
    add_member(team, model(assignee))
    TeamFactory(owner=model(outsider))
    task = TaskFactory(owner=model(owner), assignee=model(assignee), team_id=team.id)
    conns = {name: sio(s.access_token) for name, s in
             (("owner", owner), ("assignee", assignee), ("member", member), ("outsider", outsider))}
    owner_tab2 = sio(owner.access_token)
    for name in ("owner", "member"):
        assert conns[name].emit("task:subscribe", {"task_id": task.id}, callback=True) == {"ok": True}
    assert conns["outsider"].emit("task:subscribe", {"task_id": task.id}, callback=True)["ok"] is False
    for conn in [*conns.values(), owner_tab2]:
        conn.get_received()

    payload = {"id": task.id, "title": task.title, "actor_id": owner.id, "seq": 17}
    realtime.emit("task:updated", payload,
                  [f"task:{task.id}", f"team:{team.id}", f"user:{owner.id}", f"user:{assignee.id}"])

    # owner: in task, team and user rooms -> once; assignee: team + user -> once
    for name in ("owner", "assignee", "member"):
        assert events(conns[name]) == [("task:updated", payload)], name
    assert events(owner_tab2) == [("task:updated", payload)]
    assert events(conns["outsider"]) == []


def test_emit_with_no_rooms_sends_nothing(auth, sio):
    conn = sio(auth.user("alice").access_token)
    conn.get_received()
    realtime.emit("task:created", {"id": 1}, [])
    realtime.emit("task:created", {"id": 1}, [None, ""])
    assert events(conn) == []


def test_emit_never_raises(auth, sio, caplog):
    alice = auth.user("alice")
    sio(alice.access_token)
    with caplog.at_level(logging.ERROR, logger="tasktracker.realtime.emitter"):
        realtime.emit("task:updated", {"bad": object()}, [f"user:{alice.id}"])
    assert "emit 'task:updated'" in caplog.text


# --- replay ------------------------------------------------------------------------------------

def _notify(user_id: int, n: int, other_user_id: int) -> list[int]:
    seqs = []
    for i in range(n):
        event = Event(type="task.updated", payload={"i": i})
        db.session.add(event)
        db.session.flush()
        db.session.add(Notification(user_id=user_id, event_seq=event.seq, type="task_updated",
                                    message=f"update {i}", data={"i": i}))
        if i == 1:
            db.session.add(Notification(user_id=other_user_id, event_seq=event.seq, type="task_updated",
                                        message="not yours", data={}))
        seqs.append(event.seq)
    db.session.commit()
    return seqs


def test_last_seq_replays_missed_notifications_in_order(auth, sio):
    alice, bob = auth.user("alice"), auth.user("bob")
    seqs = _notify(alice.id, 4, bob.id)

    conn = sio(alice.access_token, last_seq=seqs[0])
    got = events(conn, "notification:new")
    assert [p["seq"] for _, p in got] == seqs[1:]
    assert [p["message"] for _, p in got] == ["update 1", "update 2", "update 3"]
    first = got[0][1]
    assert {"id", "type", "message", "task_id", "team_id", "actor", "actor_id", "data", "read_at",
            "created_at", "seq"} <= set(first)
    assert first["type"] == "task_updated" and first["created_at"].endswith("Z")

    assert events(sio(alice.access_token, last_seq=seqs[-1]), "notification:new") == []
    assert len(events(sio(alice.access_token, last_seq=0), "notification:new")) == 4
    assert events(sio(alice.access_token), "notification:new") == []  # no last_seq: no replay
    # replay goes to the reconnecting connection only
    other_tab = sio(alice.access_token)
    other_tab.get_received()
    sio(alice.access_token, last_seq=0)
    assert events(other_tab, "notification:new") == []


# --- presence ----------------------------------------------------------------------------------

def _presence(client, session, team_id):
    r = client.get(f"/api/teams/{team_id}/presence", headers=session.headers)
    assert r.status_code == 200, r.json
    return {item["user_id"]: item for item in r.json["items"]}


def test_presence_two_tabs(client, auth, sio):
    watcher, bob = auth.user("watcher"), auth.user("bob")
    team = TeamFactory(owner=model(watcher))
    add_member(team, model(bob))
    watcher_conn = sio(watcher.access_token)
    watcher_conn.get_received()
    assert _presence(client, watcher, team.id)[bob.id]["online"] is False
    assert _presence(client, watcher, team.id)[bob.id]["last_seen_at"] is None

    tab1 = sio(bob.access_token)
    assert events(watcher_conn, "presence:update") == [("presence:update",
                                                        {"user_id": bob.id, "online": True})]
    assert _presence(client, watcher, team.id)[bob.id]["online"] is True

    tab2 = sio(bob.access_token)
    assert events(watcher_conn, "presence:update") == []
    tab1.disconnect()
    assert events(watcher_conn, "presence:update") == []
    assert _presence(client, watcher, team.id)[bob.id]["online"] is True

    tab2.disconnect()
    assert events(watcher_conn, "presence:update") == [("presence:update",
                                                        {"user_id": bob.id, "online": False})]
    item = _presence(client, watcher, team.id)[bob.id]
    assert item["online"] is False and item["last_seen_at"].endswith("Z")
    assert _presence(client, watcher, team.id)[watcher.id]["online"] is True


def test_presence_endpoint_access_and_shape(client, auth, sio):
    owner, member, outsider = auth.user("owner"), auth.user("member"), auth.user("outsider")
    admin = auth.user("admin", admin=True)
    team = TeamFactory(owner=model(owner))
    add_member(team, model(member))

    r = client.get(f"/api/teams/{team.id}/presence", headers=member.headers)
    assert r.status_code == 200
    assert r.json["total"] == 2 and r.json["page"] == 1 and r.json["pages"] == 1
    assert [i["user_id"] for i in r.json["items"]] == sorted([owner.id, member.id])
    assert set(r.json["items"][0]) == {"user_id", "online", "last_seen_at"}
    assert client.get(f"/api/teams/{team.id}/presence", headers=admin.headers).status_code == 200

    r = client.get(f"/api/teams/{team.id}/presence", headers=outsider.headers)
    assert r.status_code == 404 and r.json["error"]["code"] == "team_not_found"
    assert client.get("/api/teams/999999/presence", headers=admin.headers).status_code == 404
    assert client.get(f"/api/teams/{team.id}/presence").status_code == 401
    r = client.get(f"/api/teams/{team.id}/presence?per_page=1&page=2", headers=owner.headers)
    assert r.status_code == 200 and len(r.json["items"]) == 1 and r.json["pages"] == 2
    assert client.get(f"/api/teams/{team.id}/presence?per_page=0", headers=owner.headers).status_code == 422


# --- sync_membership ---------------------------------------------------------------------------

def test_sync_membership_leave_and_join(auth, sio):
    owner, bob = auth.user("owner"), auth.user("bob")
    team = TeamFactory(owner=model(owner))
    add_member(team, model(bob))
    task = TaskFactory(owner=model(owner), team_id=team.id)
    own_task = TaskFactory(owner=model(bob))
    bob_conn, bob_tab2 = sio(bob.access_token), sio(bob.access_token)
    assert bob_conn.emit("task:subscribe", {"task_id": task.id}, callback=True) == {"ok": True}
    assert bob_conn.emit("task:subscribe", {"task_id": own_task.id}, callback=True) == {"ok": True}

    db.session.delete(db.session.get(TeamMember, (team.id, bob.id)))
    db.session.commit()
    realtime.sync_membership(bob.id, team.id, False)

    for conn in (bob_conn, bob_tab2):
        assert f"team:{team.id}" not in rooms_of(conn)
        conn.get_received()
    assert f"task:{task.id}" not in rooms_of(bob_conn)  # no longer visible
    assert f"task:{own_task.id}" in rooms_of(bob_conn)  # still visible: kept
    realtime.emit("task:updated", {"id": task.id}, [f"team:{team.id}", f"task:{task.id}"])
    assert events(bob_conn) == [] and events(bob_tab2) == []

    add_member(team, model(bob))
    realtime.sync_membership(bob.id, team.id, True)
    assert f"team:{team.id}" in rooms_of(bob_conn) and f"team:{team.id}" in rooms_of(bob_tab2)
    realtime.emit("task:updated", {"id": task.id}, [f"team:{team.id}"])
    assert events(bob_conn) == [("task:updated", {"id": task.id})]


def test_sync_membership_never_raises(caplog):
    realtime.sync_membership("x", 1, True)  # bad id: logged, not raised
    assert "sync_membership" in caplog.text
