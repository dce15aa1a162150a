"""Connections follow the login session and the access (api-contract.md v1.1, "Real
time: connections follow the session and the access"), in process with the
Flask-SocketIO test client; the cross-process half is in tests/test_split_deployment.py."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from flask_jwt_extended import create_access_token, decode_token
from flask_socketio import ConnectionRefusedError

from tasktracker import realtime
from tasktracker.extensions import db
from tasktracker.realtime import handlers
from tests.factories import TaskFactory, TeamFactory, add_member
from tests.procs import wait_for
from tests.test_realtime import events, model, rooms_of


def _closed_within(conn, seconds: float) -> float:
    """Seconds until ``conn`` was disconnected by the server; fails after ``seconds``."""
    started = time.monotonic()
    assert wait_for(lambda: not conn.is_connected(), timeout=seconds, interval=0.02), \
        f"still connected after {seconds} s"
    return time.monotonic() - started


def test_logout_closes_the_sessions_sockets_within_1s(client, auth, sio):
    alice = auth.user("alice")
    conn = sio(alice.access_token)
    other_session = auth.login("alice")
    other = sio(other_session.access_token)
    assert conn.is_connected() and other.is_connected()
    assert client.post("/api/auth/logout", headers=alice.headers).status_code == 204
    assert _closed_within(conn, 1.0) < 1.0
    time.sleep(0.2)
    assert other.is_connected()  # another login session of the same user stays
    assert realtime.get_state().live.get(handlers_sid(other)) is not None


def handlers_sid(conn) -> str:
    from tasktracker.extensions import socketio

    return socketio.server.manager.sid_from_eio_sid(conn.eio_sid, "/")


def test_password_change_closes_the_other_sessions_sockets(client, auth, sio):
    alice = auth.user("alice")
    mine = sio(alice.access_token)
    elsewhere = sio(auth.login("alice").access_token)
    r = client.patch("/api/auth/profile", headers=alice.headers,
                     json={"password": "another-horse-10", "current_password": "correct-horse-9"})
    assert r.status_code == 200, r.get_json()
    _closed_within(elsewhere, 1.0)
    time.sleep(0.2)
    assert mine.is_connected()  # the caller's own session is kept (contract: "other tokens")


def test_deactivation_closes_sockets_and_the_user_goes_offline(client, auth, sio):
    admin = auth.user("root", admin=True)
    alice = auth.user("alice")
    team = TeamFactory(owner=model(admin))
    add_member(team, model(alice))
    watcher = sio(admin.access_token)
    conn = sio(alice.access_token)
    assert client.get(f"/api/teams/{team.id}/presence", headers=admin.headers).get_json()
    r = client.patch(f"/api/users/{alice.id}", headers=admin.headers, json={"active": False})
    assert r.status_code == 200, r.get_json()
    _closed_within(conn, 1.0)
    seen = []  # the disconnect handler (presence) finishes just after the close
    assert wait_for(lambda: seen.extend(events(watcher, "presence:update")) or
                    ("presence:update", {"user_id": alice.id, "online": False}) in seen, timeout=1.0), seen
    presence = client.get(f"/api/teams/{team.id}/presence", headers=admin.headers).get_json()
    rows = presence if isinstance(presence, list) else presence.get("items", presence)
    assert {"user_id": alice.id, "online": False} in [{k: r[k] for k in ("user_id", "online")} for r in rows]


def test_the_socket_closes_when_its_access_token_expires(auth, sio):
    alice = auth.user("alice")
    claims = decode_token(alice.access_token)
    short = create_access_token(identity=str(alice.id), additional_claims={"sid": claims["sid"]},
                                expires_delta=timedelta(seconds=1))
    conn = sio(short)
    assert conn.is_connected()
    exp = decode_token(short)["exp"]
    assert wait_for(lambda: not conn.is_connected(), timeout=4, interval=0.05)
    assert time.time() - exp < 1.0  # closed within a second of the expiry


def test_an_expired_token_is_refused_with_token_expired(auth):
    alice = auth.user("alice")
    claims = decode_token(alice.access_token)
    expired = create_access_token(identity=str(alice.id), additional_claims={"sid": claims["sid"]},
                                  expires_delta=timedelta(seconds=-5))
    with pytest.raises(ConnectionRefusedError) as info:
        handlers.on_connect({"token": expired})
    assert info.value.error_args["data"]["code"] == "token_expired"


def test_client_emitted_connect_and_disconnect_are_ignored(client, auth, sio):
    alice = auth.user("alice")
    bob = auth.user("bob")
    team = TeamFactory(owner=model(alice))
    add_member(team, model(bob))
    watcher = sio(alice.access_token)
    conn = sio(bob.access_token)
    before = rooms_of(conn)
    conn.emit("disconnect")
    conn.emit("connect", {"token": alice.access_token})  # would join alice's rooms
    time.sleep(0.2)
    assert conn.is_connected()
    assert rooms_of(conn) == before
    presence = client.get(f"/api/teams/{team.id}/presence", headers=alice.headers).get_json()
    rows = presence if isinstance(presence, list) else presence.get("items", presence)
    assert {r["user_id"]: r["online"] for r in rows}[bob.id] is True
    assert ("presence:update", {"user_id": bob.id, "online": False}) not in events(watcher, "presence:update")


def _subscribed(conn, task_id: int) -> bool:
    ack = conn.emit("task:subscribe", {"task_id": task_id}, callback=True)
    return ack == {"ok": True}


def test_unassigning_ends_the_task_subscription(client, auth, sio):
    owner = auth.user("owner")
    bob = auth.user("bob")
    task = TaskFactory(owner=model(owner), assignee=model(bob))
    conn = sio(bob.access_token)
    assert _subscribed(conn, task.id) and f"task:{task.id}" in rooms_of(conn)
    r = client.patch(f"/api/tasks/{task.id}/assign", headers=owner.headers, json={"assignee_id": None})
    assert r.status_code == 200, r.get_json()
    assert wait_for(lambda: f"task:{task.id}" not in rooms_of(conn), timeout=1.0, interval=0.02)
    conn.get_received()
    client.patch(f"/api/tasks/{task.id}", headers=owner.headers, json={"title": "secret plans"})
    time.sleep(0.2)
    assert events(conn, "task:updated") == []  # nothing more about the task


def test_moving_a_task_out_of_the_team_ends_the_members_subscription(client, auth, sio):
    owner = auth.user("owner")
    bob = auth.user("bob")
    team = TeamFactory(owner=model(owner))
    add_member(team, model(bob))
    task = TaskFactory(owner=model(owner), team_id=team.id)
    conn = sio(bob.access_token)
    assert _subscribed(conn, task.id)
    r = client.patch(f"/api/tasks/{task.id}", headers=owner.headers, json={"team_id": None})
    assert r.status_code == 200, r.get_json()
    assert wait_for(lambda: f"task:{task.id}" not in rooms_of(conn), timeout=1.0, interval=0.02)


def test_a_demoted_site_admin_loses_foreign_task_subscriptions(client, auth, sio):
    root = auth.user("root", admin=True)
    former = auth.user("former", admin=True)
    owner = auth.user("owner")
    task = TaskFactory(owner=model(owner))
    conn = sio(former.access_token)
    assert _subscribed(conn, task.id)  # admins see every task
    r = client.patch(f"/api/users/{former.id}", headers=root.headers, json={"role": "member"})
    assert r.status_code == 200, r.get_json()
    assert wait_for(lambda: f"task:{task.id}" not in rooms_of(conn), timeout=1.0, interval=0.02)
    assert conn.is_connected()  # the session itself is still valid
    db.session.rollback()
