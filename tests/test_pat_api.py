"""Personal access tokens through the API (api-contract.md v1.1, "Personal access
tokens"): create/list/delete, use as a bearer on REST and Socket.IO, the ``read``
scope's 403 ``insufficient_scope`` on writes, the routes no token may call, refusal at
once after delete, expiry and deactivation, ``last_used_at`` at most once a minute.
SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
import time_machine

from tasktracker.core.types import utcnow
from tasktracker.extensions import db
from tasktracker.tokens.models import PersonalAccessToken
from tests.helpers import assert_error, bearer
from tests.procs import wait_for


def make_token(client, who, scopes=("read", "write"), **extra) -> dict:
    response = client.post("/api/auth/tokens", json={"name": "ci", "scopes": list(scopes), **extra},
                           headers=who.headers)
    assert response.status_code == 201, response.json
    return response.json


def test_create_list_and_use(client, auth):
    alice = auth.user("alice")
    made = make_token(client, alice)
    assert set(made) == {"id", "name", "scopes", "token", "created_at", "expires_at", "last_used_at"}
    assert made["token"].startswith("tt_pat_") and len(made["token"]) >= 40
    assert made["scopes"] == ["read", "write"] and made["last_used_at"] is None
    row = db.session.get(PersonalAccessToken, made["id"])
    assert made["token"] not in (row.token_hash, row.token_prefix)  # stored hashed
    listed = client.get("/api/auth/tokens", headers=alice.headers).json
    assert [t["id"] for t in listed] == [made["id"]] and "token" not in listed[0]

    pat = bearer(made["token"])
    profile = client.get("/api/auth/profile", headers=pat)
    assert profile.status_code == 200 and profile.json["id"] == alice.id
    created = client.post("/api/tasks", json={"title": "via PAT"}, headers=pat)
    assert created.status_code == 201 and created.json["owner"]["id"] == alice.id
    assert client.get("/api/tasks", headers=pat).json["total"] == 1
    # the scheme is case-insensitive like for JWTs
    assert client.get("/api/tasks", headers={"Authorization": "bearer " + made["token"]}).status_code == 200


def test_read_scope_gets_403_insufficient_scope_on_writes(client, auth):
    alice = auth.user("alice")
    pat = bearer(make_token(client, alice, ["read"])["token"])
    assert client.get("/api/tasks", headers=pat).status_code == 200
    assert client.head("/api/tasks", headers=pat).status_code == 200
    task = client.post("/api/tasks", json={"title": "t"}, headers=alice.headers).json
    for method, path, body in (("post", "/api/tasks", {"title": "x"}),
                               ("patch", f"/api/tasks/{task['id']}", {"title": "y"}),
                               ("delete", f"/api/tasks/{task['id']}", None),
                               ("post", "/api/teams", {"name": "T"}),
                               ("post", "/api/notifications/read-all", None)):
        response = getattr(client, method)(path, json=body, headers=pat)
        assert_error(response, 403, "insufficient_scope")
        assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]
    assert client.get(f"/api/tasks/{task['id']}", headers=pat).json["title"] == "t"


def test_no_token_may_manage_tokens_profile_or_logout(client, auth):
    alice = auth.user("alice")
    made = make_token(client, alice)
    pat = bearer(made["token"])
    for method, path, body in (("post", "/api/auth/tokens", {"name": "n", "scopes": ["read"]}),
                               ("delete", f"/api/auth/tokens/{made['id']}", None),
                               ("patch", "/api/auth/profile", {"full_name": "X"}),
                               ("patch", "/api/auth/profile", {"password": "new-password-1", "current_password": "correct-horse-9"}),
                               ("post", "/api/auth/logout", None),
                               ("post", "/api/auth/calendar-feed", None),
                               ("delete", "/api/auth/calendar-feed", None)):
        assert_error(getattr(client, method)(path, json=body, headers=pat), 403, "insufficient_scope")
    assert client.get("/api/auth/tokens", headers=pat).status_code == 200
    assert_error(client.post("/api/auth/refresh", headers=pat), 401)
    assert client.get("/api/auth/profile", headers=pat).status_code == 200  # nothing above logged it out


def test_refused_at_once_after_delete_expiry_and_deactivation(client, auth):
    alice, root = auth.user("alice"), auth.user("root", admin=True)
    made = make_token(client, alice)
    pat = bearer(made["token"])
    assert client.get("/api/tasks", headers=pat).status_code == 200  # now in the hot cache
    assert client.delete(f"/api/auth/tokens/{made['id']}", headers=alice.headers).status_code == 204
    assert_error(client.get("/api/tasks", headers=pat), 401)
    assert_error(client.delete(f"/api/auth/tokens/{made['id']}", headers=alice.headers), 404)
    assert client.get("/api/auth/tokens", headers=alice.headers).json == []

    short = make_token(client, alice, expires_at=(utcnow() + timedelta(seconds=2)).isoformat())
    assert client.get("/api/tasks", headers=bearer(short["token"])).status_code == 200  # in the hot cache
    with time_machine.travel(utcnow() + timedelta(seconds=2.1), tick=False):
        assert_error(client.get("/api/tasks", headers=bearer(short["token"])), 401)

    live = bearer(make_token(client, alice)["token"])
    assert client.get("/api/tasks", headers=live).status_code == 200
    assert client.patch(f"/api/users/{alice.id}", json={"active": False}, headers=root.headers).status_code == 200
    assert_error(client.get("/api/tasks", headers=live), 401)
    # a PAT of a site admin passes admin_required
    root_pat = bearer(make_token(client, root, ["read"])["token"])
    assert client.get("/api/users", headers=root_pat).status_code == 200


def test_bad_tokens_and_bodies(client, auth):
    alice = auth.user("alice")
    for raw in ("tt_pat_", "tt_pat_" + "A" * 43, "tt_pat_" + "A" * 500, "tt_pat_\u00e9" * 8):
        assert_error(client.get("/api/tasks", headers={"Authorization": "Bearer " + raw}), 401)
    h = alice.headers
    future = (utcnow() + timedelta(days=400)).isoformat()
    for body in ({"name": "x", "scopes": ["write"]}, {"name": "x", "scopes": []}, {"name": "x", "scopes": ["admin"]},
                 {"name": "", "scopes": ["read"]}, {"scopes": ["read"]}, {"name": "x"},
                 {"name": "x", "scopes": ["read"], "expires_at": future},
                 {"name": "x", "scopes": ["read"], "expires_at": "2020-01-01T00:00:00Z"},
                 {"name": "x", "scopes": ["read"], "expires_at": "2030-01-01T00:00:00"}):
        assert_error(client.post("/api/auth/tokens", json=body, headers=h), 422)
    other = auth.user("bob")
    bobs = make_token(client, other)
    assert_error(client.delete(f"/api/auth/tokens/{bobs['id']}", headers=h), 404)  # not alice's


def test_last_used_at_is_written_at_most_once_a_minute(client, auth):
    from tasktracker.tokens import services

    services._touched.clear()  # the process-wide memo is keyed by id; ids restart per test
    alice = auth.user("alice")
    made = make_token(client, alice)
    pat = bearer(made["token"])
    for _ in range(5):
        assert client.get("/api/tasks", headers=pat).status_code == 200
    db.session.expire_all()
    first = db.session.get(PersonalAccessToken, made["id"]).last_used_at
    assert first is not None and utcnow() - first < timedelta(seconds=30)
    # another process's minute-old write: the memo of this process says "wait", the
    # database says "old": a request a minute later writes again
    t = PersonalAccessToken.__table__
    services._touched.clear()
    db.session.execute(sa.update(t).where(t.c.id == made["id"]).values(last_used_at=first - timedelta(seconds=61)))
    db.session.commit()
    assert client.get("/api/tasks", headers=pat).status_code == 200
    db.session.expire_all()
    second = db.session.get(PersonalAccessToken, made["id"]).last_used_at
    assert second >= first
    assert client.get("/api/tasks", headers=pat).status_code == 200
    db.session.expire_all()
    assert db.session.get(PersonalAccessToken, made["id"]).last_used_at == second
    listed = client.get("/api/auth/tokens", headers=alice.headers).json
    assert listed[0]["last_used_at"] is not None


def test_socketio_with_a_pat_closed_when_the_token_is_deleted(client, auth, sio):
    alice = auth.user("alice")
    made = make_token(client, alice, ["read"])
    conn = sio(made["token"])
    assert conn.is_connected()
    assert not sio("tt_pat_" + "B" * 43).is_connected()
    assert client.delete(f"/api/auth/tokens/{made['id']}", headers=alice.headers).status_code == 204
    assert wait_for(lambda: not conn.is_connected(), timeout=2, interval=0.02)
    assert not sio(made["token"]).is_connected()
