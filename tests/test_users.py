"""User administration and profiles: ``/api/users`` and ``/api/users/<id>``.

api-contract.md, "Auth and users". Every test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from tasktracker.auth.models import User
from tasktracker.extensions import db
from tests.helpers import USER_KEYS, assert_error, bearer, case, run_together
from tests.factories import PASSWORD, TeamFactory, UserFactory, add_member

def db_user(user_id: int) -> User:
    db.session.expire_all()
    return db.session.get(User, user_id)


# --------------------------------------------------------------------------- GET /api/users


def test_list_users_needs_admin(client, auth):
    assert_error(client.get("/api/users"), 401)
    member = auth.user("member")
    assert_error(client.get("/api/users", headers=member.headers), 403, "admin_required")


def test_list_users_paginates(client, auth):
    admin = auth.user("admin", admin=True)
    UserFactory.create_batch(24)
    r = client.get("/api/users", headers=admin.headers)
    assert r.status_code == 200, r.json
    assert set(r.json) == {"items", "page", "per_page", "total", "pages"}
    assert (r.json["page"], r.json["per_page"], r.json["total"], r.json["pages"]) == (1, 20, 25, 2)
    assert len(r.json["items"]) == 20
    assert all(set(item) == USER_KEYS for item in r.json["items"])
    assert "password" not in r.get_data(as_text=True) and "argon2" not in r.get_data(as_text=True)

    seen = []
    for page in (1, 2, 3):
        r = client.get(f"/api/users?page={page}&per_page=10", headers=admin.headers)
        assert r.status_code == 200
        assert (r.json["page"], r.json["per_page"], r.json["total"], r.json["pages"]) == (page, 10, 25, 3)
        seen += [item["id"] for item in r.json["items"]]
    assert len(seen) == 25 and seen == sorted(set(seen))  # ordered by id, no repeats, nothing missing

    r = client.get("/api/users?page=9&per_page=10", headers=admin.headers)
    assert r.status_code == 200 and r.json["items"] == [] and r.json["total"] == 25
    r = client.get("/api/users?per_page=100", headers=admin.headers)
    assert r.status_code == 200 and len(r.json["items"]) == 25


def test_list_users_filters(client, auth):
    admin = auth.user("root_admin", admin=True)
    UserFactory(username="alice", email="alice@example.com", full_name="Alice Liddell")
    UserFactory(username="bob", email="bob@wonderland.org", full_name="Robert Smith")
    UserFactory(username="carol", email="carol@example.com", full_name="Carol Alison", active=False)
    UserFactory(username="dave_admin", email="dave@example.com", full_name="Dave", role="admin")

    def names(query: str) -> list[str]:
        r = client.get(f"/api/users?{query}", headers=admin.headers)
        assert r.status_code == 200, (query, r.json)
        assert r.json["total"] == len(r.json["items"])
        return sorted(item["username"] for item in r.json["items"])

    assert names("q=ALI") == ["alice", "carol"]           # username, full_name; case-insensitive
    assert names("q=wonderland") == ["bob"]               # email
    assert names("q=robert") == ["bob"]                   # full name
    assert names("q=nobody-at-all") == []
    assert names("role=admin") == ["dave_admin", "root_admin"]
    assert names("role=member") == ["alice", "bob", "carol"]
    assert names("active=false") == ["carol"]
    assert names("active=true") == ["alice", "bob", "dave_admin", "root_admin"]
    assert names("role=member&active=true&q=example.com") == ["alice"]
    # LIKE wildcards are searched literally.
    assert names("q=_") == ["dave_admin", "root_admin"]
    assert names("q=%25") == []


def test_list_users_bad_arguments_are_422(client, auth):
    admin = auth.user("admin", admin=True)
    for query, field in [
        ("role=superuser", "role"),
        ("role=", "role"),
        ("role=ADMIN", "role"),
        ("active=maybe", "active"),
        ("per_page=101", "per_page"),
        ("per_page=0", "per_page"),
        ("per_page=-5", "per_page"),
        ("page=0", "page"),
        ("page=abc", "page"),
        ("page=" + "9" * 5000, "page"),
        ("q=" + "x" * 101, "q"),
        ("q=a%00b", "q"),
    ]:
        with case(query[:40]):
            error = assert_error(client.get(f"/api/users?{query}", headers=admin.headers),
                                 422, "validation_error")
            assert field in error["details"]


# --------------------------------------------------------------------------- GET /api/users/<id>


def test_admin_and_self_see_the_full_user(client, auth):
    admin = auth.user("admin", admin=True)
    alice = auth.user("alice")
    for viewer in (admin, alice):
        r = client.get(f"/api/users/{alice.id}", headers=viewer.headers)
        assert r.status_code == 200, r.json
        assert set(r.json) == USER_KEYS
        assert r.json["email"] == "alice@example.com"
        assert r.json == alice.user


def test_teammate_sees_public_profile_without_email(client, auth):
    alice = auth.user("alice")
    bob = auth.user("bob")
    team = TeamFactory(owner=db.session.get(User, alice.id))
    add_member(team, db.session.get(User, bob.id))
    for viewer, target in ((bob, alice), (alice, bob)):
        r = client.get(f"/api/users/{target.id}", headers=viewer.headers)
        assert r.status_code == 200, r.json
        assert "email" not in r.json
        assert "@" not in r.get_data(as_text=True)
        assert r.json["id"] == target.id and r.json["username"] == target.user["username"]
        assert {"id", "username", "full_name"} <= set(r.json) <= USER_KEYS - {"email"}


def test_stranger_and_missing_user_are_the_same_404(client, auth):
    alice = auth.user("alice")
    stranger = auth.user("stranger")
    # Being in *some* team with others does not make alice visible.
    other_team = TeamFactory(owner=db.session.get(User, stranger.id))
    add_member(other_team, UserFactory())
    hidden = assert_error(client.get(f"/api/users/{alice.id}", headers=stranger.headers), 404, "not_found")
    missing = assert_error(client.get("/api/users/999999", headers=stranger.headers), 404, "not_found")
    assert hidden == missing


def test_odd_user_ids_are_404(client, auth):
    admin = auth.user("admin", admin=True)
    for path in ("/api/users/0", "/api/users/-1", "/api/users/abc", "/api/users/1.5",
                 "/api/users/99999999999999999999999", "/api/users/2147483648",
                 "/api/users/9223372036854775808"):
        with case(path):
            assert_error(client.get(path, headers=admin.headers), 404)
            assert_error(client.patch(path, headers=admin.headers, json={"role": "admin"}), 404)


def test_user_detail_needs_a_token(client, auth):
    alice = auth.user("alice")
    assert_error(client.get(f"/api/users/{alice.id}"), 401)


# --------------------------------------------------------------------------- PATCH /api/users/<id>


def test_admin_changes_role(client, auth):
    admin = auth.user("admin", admin=True)
    alice = auth.user("alice")
    assert_error(client.get("/api/users", headers=alice.headers), 403)
    r = client.patch(f"/api/users/{alice.id}", headers=admin.headers, json={"role": "admin"})
    assert r.status_code == 200, r.json
    assert set(r.json) == USER_KEYS and r.json["role"] == "admin" and r.json["active"] is True
    assert db_user(alice.id).role == "admin"
    # The promotion applies to alice's existing token at once.
    assert client.get("/api/users", headers=alice.headers).status_code == 200
    r = client.patch(f"/api/users/{alice.id}", headers=admin.headers, json={"role": "member"})
    assert r.status_code == 200 and r.json["role"] == "member"
    assert_error(client.get("/api/users", headers=alice.headers), 403)


def test_deactivation_kills_tokens_and_login(client, auth):
    admin = auth.user("admin", admin=True)
    alice = auth.user("alice")
    second = auth.login("alice")
    r = client.patch(f"/api/users/{alice.id}", headers=admin.headers, json={"active": False})
    assert r.status_code == 200, r.json
    assert r.json["active"] is False
    for session in (alice, second):
        assert_error(client.get("/api/auth/profile", headers=session.headers), 401)
        assert_error(client.post("/api/auth/refresh", headers=bearer(session.refresh_token)), 401)
    r = client.post("/api/auth/login", json={"username": "alice", "password": "correct-horse-9"})
    assert_error(r, 401, "invalid_credentials")
    # The admin's own session is unaffected; the deactivated user shows up under active=false.
    r = client.get("/api/users?active=false", headers=admin.headers)
    assert [u["id"] for u in r.json["items"]] == [alice.id]

    # Reactivation allows a new login, but the old tokens stay dead.
    r = client.patch(f"/api/users/{alice.id}", headers=admin.headers, json={"active": True})
    assert r.status_code == 200 and r.json["active"] is True
    fresh = auth.login("alice")
    assert client.get("/api/auth/profile", headers=fresh.headers).status_code == 200
    assert_error(client.get("/api/auth/profile", headers=alice.headers), 401)


def test_empty_patch_changes_nothing(client, auth):
    admin = auth.user("admin", admin=True)
    target = UserFactory()
    r = client.patch(f"/api/users/{target.id}", headers=admin.headers, json={})
    assert r.status_code == 200
    assert r.json["role"] == "member" and r.json["active"] is True


def test_admin_patch_validation(client, auth):
    admin = auth.user("admin", admin=True)
    target = UserFactory(email="target@example.com")
    for body, field in [
        ({"role": "owner"}, "role"),
        ({"role": "ADMIN"}, "role"),
        ({"role": None}, "role"),
        ({"active": "banana"}, "active"),
        ({"active": None}, "active"),
        ({"email": "x@example.com"}, "email"),
        ({"password": "new-password-1"}, "password"),
        ({"role": "admin", "username": "hijack"}, "username"),
    ]:
        with case(body):
            error = assert_error(client.patch(f"/api/users/{target.id}", headers=admin.headers, json=body),
                                 422, "validation_error")
            assert field in error["details"]
    user = db_user(target.id)
    assert (user.role, user.active, user.email) == ("member", True, "target@example.com")


def test_admin_patch_bad_bodies(client, auth):
    admin = auth.user("admin", admin=True)
    target = UserFactory()
    url = f"/api/users/{target.id}"
    assert_error(client.patch(url, headers=admin.headers, data="{", content_type="application/json"), 400)
    assert_error(client.patch(url, headers=admin.headers, data="[]", content_type="application/json"), 400)
    assert_error(client.patch(url, headers=admin.headers, data="role=admin",
                              content_type="application/x-www-form-urlencoded"), 415)


def test_only_admins_patch_users(client, auth):
    alice = auth.user("alice")
    bob = auth.user("bob")
    for session, target in ((alice, bob), (alice, alice)):
        assert_error(client.patch(f"/api/users/{target.id}", headers=session.headers, json={"role": "admin"}),
                     403, "admin_required")
    assert_error(client.patch(f"/api/users/{bob.id}", json={"role": "admin"}), 401)
    assert db_user(alice.id).role == "member" and db_user(bob.id).role == "member"


def test_factory_users_can_log_in(client):
    """Sanity check of the test data used above: factory users share one known password."""
    user = UserFactory()
    r = client.post("/api/auth/login", json={"email": user.email, "password": PASSWORD})
    assert r.status_code == 200, r.json


# --------------------------------------------------------------------------- the last active admin


def active_admins() -> int:
    db.session.expire_all()
    return db.session.scalar(sa.select(sa.func.count()).select_from(User).where(
        User.role == "admin", User.active.is_(True)))


def test_last_active_admin_cannot_be_demoted_or_deactivated(client, auth):
    root = auth.user("root", admin=True)
    UserFactory(username="dormant", role="admin", active=False)  # an inactive admin does not count
    for body in ({"role": "member"}, {"active": False}, {"role": "member", "active": False}):
        with case(body):
            error = assert_error(client.patch(f"/api/users/{root.id}", headers=root.headers, json=body),
                                 409, "last_admin")
            assert "admin" in error["message"]
    user = db_user(root.id)
    assert (user.role, user.active) == ("admin", True)
    # a no-op and other fields stay allowed
    assert client.patch(f"/api/users/{root.id}", headers=root.headers, json={"role": "admin"}).status_code == 200
    assert client.patch(f"/api/users/{root.id}", headers=root.headers, json={"active": True}).status_code == 200

    # with a second active admin, either may step down; then the other is the last one
    other = auth.user("other", admin=True)
    r = client.patch(f"/api/users/{root.id}", headers=other.headers, json={"role": "member"})
    assert r.status_code == 200, r.json
    assert_error(client.patch(f"/api/users/{other.id}", headers=other.headers, json={"active": False}),
                 409, "last_admin")
    assert active_admins() == 1
    # demoting an inactive admin or deactivating a member never removes an active admin
    dormant = db.session.scalar(sa.select(User).where(User.username == "dormant"))
    assert client.patch(f"/api/users/{dormant.id}", headers=other.headers, json={"role": "member"}).status_code == 200
    assert client.patch(f"/api/users/{root.id}", headers=other.headers, json={"active": False}).status_code == 200


def test_admin_demoted_meanwhile_cannot_demote_the_last_one(app, client, auth, monkeypatch):
    """A demotes B; before A's change is written, B demotes A (and commits). A's
    change would leave no admin: 409, decided after the write, under the database's
    lock (PostgreSQL: the active admins are locked FOR UPDATE before counting)."""
    from tasktracker.auth import services as auth_services

    a, b = auth.user("admin_a", admin=True), auth.user("admin_b", admin=True)
    real_get_user = auth_services.get_user
    other, started = [], []

    def get_user_then_b_demotes_a(user_id):
        target = real_get_user(user_id)
        if not started:  # A's request (B's own goes straight through)
            started.append(True)

            def b_demotes_a():
                with app.test_client() as c:
                    other.append(c.patch(f"/api/users/{a.id}", headers=b.headers, json={"role": "member"}))
            thread = threading.Thread(target=b_demotes_a)
            thread.start()
            thread.join(30)
            assert other and other[0].status_code == 200, other
        return target

    monkeypatch.setattr(auth_services, "get_user", get_user_then_b_demotes_a)
    r = client.patch(f"/api/users/{b.id}", headers=a.headers, json={"role": "member"})
    assert_error(r, 409, "last_admin")
    assert active_admins() == 1 and db_user(b.id).role == "admin"


@pytest.mark.parametrize("body", [{"role": "member"}, {"active": False}])
def test_two_admins_demoting_each_other_concurrently_leave_one(app, auth, body):
    for round_ in range(8):
        a, b = auth.user(f"admin_a{round_}", admin=True), auth.user(f"admin_b{round_}", admin=True)
        # the admins of earlier rounds step aside (directly): only a and b are active admins
        for user in db.session.scalars(sa.select(User).where(User.role == "admin")):
            if user.id not in (a.id, b.id):
                user.role = "member"
        db.session.commit()
        results = run_together(app, lambda c: c.patch(f"/api/users/{b.id}", headers=a.headers, json=body),
                               lambda c: c.patch(f"/api/users/{a.id}", headers=b.headers, json=body))
        statuses = sorted(r.status_code for r in results)
        assert statuses in ([200, 403], [200, 401], [200, 409]), [(r.status_code, r.json) for r in results]
        assert active_admins() == 1, f"round {round_}: {[(r.status_code, r.json) for r in results]}"
