"""Accounts API: register, login (and its rate limits), refresh, logout, profile.

api-contract.md, "Auth and users". Every test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import re

import pytest
import sqlalchemy as sa

from tasktracker.auth.models import AuthSession, User
from tasktracker.extensions import db
from tests.helpers import USER_KEYS, assert_error, assert_rate_limited, bearer, case, from_ip, run_together
from tests.factories import PASSWORD, UserFactory

def login(client, password: str = PASSWORD, **ident):
    return client.post("/api/auth/login", json={**ident, "password": password})


def user_count() -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(User))


# --------------------------------------------------------------------------- register


def register_body(**overrides) -> dict:
    return {"username": "alice", "email": "Alice@Example.COM", "password": "s3cret-pass",
            "full_name": "Alice Liddell", **overrides}


def test_register_returns_user_without_secrets(client, app):
    r = client.post("/api/auth/register", json=register_body())
    assert r.status_code == 201, r.json
    user = r.json
    assert set(user) == USER_KEYS
    assert user["username"] == "alice"
    assert user["email"] == "alice@example.com"  # stored lower-cased
    assert user["full_name"] == "Alice Liddell"
    assert user["role"] == "member" and user["active"] is True and user["timezone"] == "UTC"
    assert isinstance(user["id"], int)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", user["created_at"])
    text = r.get_data(as_text=True)
    assert "s3cret-pass" not in text and "argon2" not in text and "password" not in text
    stored = db.session.get(User, user["id"])
    assert stored.password_hash.startswith("$argon2id$") and "s3cret-pass" not in stored.password_hash


def test_register_full_name_is_optional(client):
    r = client.post("/api/auth/register", json={"username": "bob", "email": "bob@example.com",
                                                "password": "12345678"})  # exactly 8: allowed
    assert r.status_code == 201, r.json
    assert r.json["full_name"] == ""


def test_register_rejects_invalid_fields(client):
    for field, value in [
        ("password", "1234567"),           # 7 chars
        ("password", "x" * 129),           # absurdly long (hashing DoS guard)
        ("password", None),
        ("email", "not-an-email"),
        ("email", "a@"),
        ("email", "a" * 250 + "@example.com"),
        ("username", "ab"),                # too short
        ("username", "has space"),
        ("username", "x" * 33),
        ("username", 12345),               # wrong type
        ("full_name", None),
        ("full_name", "x" * 121),
    ]:
        with case(f"{field}={value!r:.40}"):
            r = client.post("/api/auth/register", json=register_body(**{field: value}))
            error = assert_error(r, 422, "validation_error")
            assert field in error["details"] and isinstance(error["details"][field], list)
    assert user_count() == 0


def test_register_requires_fields(client):
    error = assert_error(client.post("/api/auth/register", json={}), 422, "validation_error")
    assert {"username", "email", "password"} <= set(error["details"])


def test_register_duplicate_email_is_case_insensitive(client):
    assert client.post("/api/auth/register", json=register_body()).status_code == 201
    r = client.post("/api/auth/register",
                    json=register_body(username="alice2", email="ALICE@example.com"))
    error = assert_error(r, 409, "duplicate_email")
    assert "email" in error["details"]
    assert user_count() == 1


def test_register_duplicate_username_is_case_insensitive(client):
    assert client.post("/api/auth/register", json=register_body()).status_code == 201
    r = client.post("/api/auth/register", json=register_body(username="ALICE", email="other@example.com"))
    error = assert_error(r, 409, "duplicate_username")
    assert "username" in error["details"]
    assert user_count() == 1


def _twin_unseen_at_first_look(auth_services):
    """``_ensure_unique`` as when the twin is not committed yet at the first check
    (a concurrent registration), and is when the failed write is explained."""
    real, calls = auth_services._ensure_unique, []

    def check(*args, **kwargs):
        calls.append(args)
        if len(calls) > 1:
            real(*args, **kwargs)

    return check


@pytest.mark.parametrize("field, second", [
    ("username", {"username": "ALICE", "email": "other@example.com"}),
    ("email", {"username": "alice2", "email": "ALICE@example.com"}),
])
def test_register_duplicate_missed_by_the_check_is_409_from_the_database(client, monkeypatch, field, second):
    """A concurrent twin the check cannot see yet (simulated: the check passes):
    the database's unique index on lower(username) / lower(email) refuses it, and
    the answer is the sequential one (409 ``duplicate_<field>``)."""
    from tasktracker.auth import services as auth_services

    assert client.post("/api/auth/register", json=register_body()).status_code == 201
    monkeypatch.setattr(auth_services, "_ensure_unique", _twin_unseen_at_first_look(auth_services))
    r = client.post("/api/auth/register", json=register_body(**second))
    error = assert_error(r, 409, f"duplicate_{field}")
    assert field in error["details"]
    assert user_count() == 1


@pytest.mark.parametrize("field, body", [("username", {"username": "BOB"}), ("email", {"email": "Bob@Example.com"})])
def test_profile_duplicate_missed_by_the_check_is_409_from_the_database(client, auth, monkeypatch, field, body):
    from tasktracker.auth import services as auth_services

    auth.user("bob")
    s = auth.user("alice")
    monkeypatch.setattr(auth_services, "_ensure_unique", _twin_unseen_at_first_look(auth_services))
    error = assert_error(client.patch("/api/auth/profile", headers=s.headers, json=body),
                         409, f"duplicate_{field}")
    assert field in error["details"]
    db.session.expire_all()
    assert db.session.get(User, s.id).username == "alice"
    assert db.session.get(User, s.id).email == "alice@example.com"


def test_concurrent_registrations_differing_in_case_create_one_user(app):
    names = ["foo", "FOO", "Foo", "fOO"] * 3
    results = run_together(app, *[
        (lambda i, n: lambda c: c.post("/api/auth/register", json=register_body(
            username=n, email=f"foo{i}@example.com")))(i, n) for i, n in enumerate(names)])
    statuses = sorted(r.status_code for r in results)
    assert statuses == [201] + [409] * (len(names) - 1), [(r.status_code, r.json) for r in results]
    assert {r.json["error"]["code"] for r in results if r.status_code == 409} == {"duplicate_username"}
    emails = ["same@example.com", "SAME@example.com", "Same@Example.COM"] * 4
    results = run_together(app, *[
        (lambda i, e: lambda c: c.post("/api/auth/register", json=register_body(
            username=f"same{i}", email=e)))(i, e) for i, e in enumerate(emails)])
    statuses = sorted(r.status_code for r in results)
    assert statuses == [201] + [409] * (len(emails) - 1), [(r.status_code, r.json) for r in results]
    assert {r.json["error"]["code"] for r in results if r.status_code == 409} == {"duplicate_email"}
    db.session.expire_all()
    assert db.session.scalar(sa.select(sa.func.count()).where(sa.func.lower(User.username) == "foo")) == 1
    assert db.session.scalar(sa.select(sa.func.count()).where(sa.func.lower(User.email) == "same@example.com")) == 1


def test_concurrent_renames_differing_in_case(app, auth):
    for round_ in range(5):
        sessions = [auth.user(f"r{round_}u{i}") for i in range(4)]
        target = f"Taken{round_}"
        results = run_together(app, *[
            (lambda s, n: lambda c: c.patch("/api/auth/profile", headers=s.headers, json={"username": n}))(
                s, target if i % 2 else target.upper()) for i, s in enumerate(sessions)])
        statuses = sorted(r.status_code for r in results)
        assert statuses == [200, 409, 409, 409], [(r.status_code, r.json) for r in results]
        assert {r.json["error"]["code"] for r in results if r.status_code == 409} == {"duplicate_username"}
        db.session.expire_all()
        assert db.session.scalar(sa.select(sa.func.count()).where(
            sa.func.lower(User.username) == target.lower())) == 1


def test_register_refuses_unknown_fields_and_never_creates_admin(client):
    for extra in ({"role": "admin"}, {"role": "member"}, {"active": False}, {"id": 99},
                  {"password_hash": "x"}, {"role": "admin", "is_admin": True}):
        with case(extra):
            r = client.post("/api/auth/register", json={**register_body(), **extra})
            error = assert_error(r, 422, "validation_error")
            assert set(error["details"]) == set(extra)
    assert user_count() == 0
    # The same body without the extra field registers a plain member.
    r = client.post("/api/auth/register", json=register_body())
    assert r.status_code == 201 and r.json["role"] == "member"
    assert db.session.scalar(sa.select(User).where(User.role == "admin")) is None


def test_register_malformed_json_is_400(client):
    r = client.post("/api/auth/register", data='{"username": "alice",', content_type="application/json")
    assert_error(r, 400)


def test_register_non_object_json_is_400(client):
    for body in ("[]", json.dumps([register_body()]), '"alice"', "42", "null", "true"):
        with case(body):
            r = client.post("/api/auth/register", data=body, content_type="application/json")
            assert_error(r, 400, "malformed_json")
    assert user_count() == 0


def test_register_invalid_utf8_is_400(client):
    r = client.post("/api/auth/register", data=b'{"username": "\xff\xfe"}', content_type="application/json")
    assert_error(r, 400)


def test_register_deeply_nested_json_is_400_not_500(client):
    r = client.post("/api/auth/register", data="[" * 100_000, content_type="application/json")
    assert_error(r, 400)


def test_register_wrong_content_type_is_415(client):
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "text/json", None):
        with case(content_type):
            kwargs = {"data": json.dumps(register_body())}
            if content_type:
                kwargs["content_type"] = content_type
            r = client.post("/api/auth/register", **kwargs)
            assert_error(r, 415, "unsupported_media_type")
    assert user_count() == 0


def test_register_accepts_json_with_charset(client):
    r = client.post("/api/auth/register", data=json.dumps(register_body()),
                    content_type="application/json; charset=utf-8")
    assert r.status_code == 201, r.json


def test_register_nul_character_is_rejected_not_500(client):
    """PostgreSQL cannot store NUL in text: refused up front on both databases."""
    for field, value in (("full_name", "Al\x00ice"), ("email", "al\x00ice@example.com"),
                         ("password", "pass\x00word-1"), ("username", "al\x00ice")):
        with case(field):
            r = client.post("/api/auth/register", json=register_body(**{field: value}))
            error = assert_error(r, 422, "validation_error")
            assert field in error["details"]
    assert user_count() == 0


# --------------------------------------------------------------------------- login


def test_login_by_email_and_by_username(client, app):
    client.post("/api/auth/register", json=register_body())
    expected_expiry = int(app.config["JWT_ACCESS_TOKEN_EXPIRES"].total_seconds())
    sessions = []
    for ident in ({"email": "alice@example.com"}, {"email": "  ALICE@example.com "},
                  {"username": "alice"}, {"username": "ALICE"}):
        r = login(client, "s3cret-pass", **ident)
        assert r.status_code == 200, (ident, r.json)
        body = r.json
        assert set(body) == {"access_token", "refresh_token", "token_type", "expires_in", "user"}
        assert body["token_type"] == "Bearer"
        assert body["expires_in"] == expected_expiry > 0
        assert set(body["user"]) == USER_KEYS and body["user"]["username"] == "alice"
        assert body["access_token"] != body["refresh_token"]
        profile = client.get("/api/auth/profile", headers=bearer(body["access_token"]))
        assert profile.status_code == 200 and profile.json["email"] == "alice@example.com"
        sessions.append(body["access_token"])
    assert len(set(sessions)) == 4  # one session per login
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AuthSession)) == 4


def test_login_failures_are_indistinguishable(client):
    UserFactory(username="alice", email="alice@example.com")
    UserFactory(username="sleepy", email="sleepy@example.com", active=False)
    failures = [
        login(client, "wrong-password", email="alice@example.com"),
        login(client, "wrong-password", username="alice"),
        login(client, PASSWORD, email="nobody@example.com"),
        login(client, PASSWORD, username="nobody"),
        login(client, PASSWORD, username="sleepy"),  # right password, deactivated
        login(client, PASSWORD, email="sleepy@example.com"),
        login(client, "", username="alice"),
    ]
    errors = [assert_error(r, 401) for r in failures]
    assert all(e == errors[0] for e in errors), errors
    assert errors[0]["code"] == "invalid_credentials"
    assert all(r.headers.get("WWW-Authenticate", "").startswith("Bearer") for r in failures)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AuthSession)) == 0


def test_login_validation(client):
    UserFactory(username="alice", email="alice@example.com")
    for body, field in [
        ({"password": PASSWORD}, "email"),
        ({"email": "alice@example.com"}, "password"),
        ({"username": "alice"}, "password"),
        ({"email": "", "username": "", "password": PASSWORD}, "email"),
        ({"email": ["alice@example.com"], "password": PASSWORD}, "email"),
        ({"username": {"$ne": ""}, "password": PASSWORD}, "username"),
        ({"username": "alice", "password": None}, "password"),
        ({"username": "alice", "password": "x" * 129}, "password"),
        ({"username": "alice", "password": PASSWORD, "role": "admin"}, "role"),
        ({"username": "ali\x00ce", "password": PASSWORD}, "username"),
    ]:
        with case(body):
            error = assert_error(client.post("/api/auth/login", json=body), 422, "validation_error")
            assert field in error["details"]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AuthSession)) == 0


def test_login_bad_bodies(client):
    assert_error(client.post("/api/auth/login", data="{", content_type="application/json"), 400)
    assert_error(client.post("/api/auth/login", data="[]", content_type="application/json"), 400)
    assert_error(client.post("/api/auth/login", data="username=a&password=b",
                             content_type="application/x-www-form-urlencoded"), 415)


# --------------------------------------------------------------------------- login rate limits


@pytest.fixture
def limited_client(rate_limited):
    return rate_limited()


@pytest.fixture
def proxied_client(rate_limited):
    """The same, behind one trusted reverse proxy (``TRUSTED_PROXY_HOPS=1``)."""
    return rate_limited(TRUSTED_PROXY_HOPS=1)


def test_login_rate_limited_per_account(limited_client):
    UserFactory(username="alice", email="alice@example.com")
    UserFactory(username="bob", email="bob@example.com")
    # Three attempts on alice's account from three different addresses...
    for i in range(3):
        r = limited_client.post("/api/auth/login", json={"email": "alice@example.com", "password": "nope-nope"},
                                **from_ip(f"10.0.0.{i + 1}"))
        assert_error(r, 401, "invalid_credentials")
    # ...then the account is locked for a while, even with the right password and a fresh address,
    # and whether it is named by email (any case) or by username.
    for ident in ({"email": "alice@example.com"}, {"email": "ALICE@example.com"}, {"username": "alice"}):
        r = limited_client.post("/api/auth/login", json={**ident, "password": PASSWORD}, **from_ip("10.0.0.9"))
        assert_rate_limited(r)
    # Another account from an address already used is not affected.
    r = limited_client.post("/api/auth/login", json={"username": "bob", "password": PASSWORD},
                            **from_ip("10.0.0.1"))
    assert r.status_code == 200, r.json


def test_login_rate_limit_counts_username_and_email_of_one_account_together(limited_client):
    UserFactory(username="alice", email="alice@example.com")
    for ident in ({"email": "alice@example.com"}, {"username": "alice"}, {"username": "ALICE"}):
        r = limited_client.post("/api/auth/login", json={**ident, "password": "nope-nope"})
        assert_error(r, 401)
    assert_rate_limited(limited_client.post("/api/auth/login",
                                            json={"email": "alice@example.com", "password": PASSWORD}))


def test_login_rate_limited_per_unknown_account(limited_client):
    for i in range(3):
        r = limited_client.post("/api/auth/login", json={"username": "ghost", "password": "nope-nope"},
                                **from_ip(f"10.1.0.{i}"))
        assert_error(r, 401)
    assert_rate_limited(limited_client.post("/api/auth/login",
                                            json={"username": "ghost", "password": "nope-nope"},
                                            **from_ip("10.1.0.9")))


def test_login_rate_limited_per_ip(limited_client):
    users = UserFactory.create_batch(7)
    for user in users[:6]:  # six different accounts, one address
        r = limited_client.post("/api/auth/login", json={"username": user.username, "password": PASSWORD},
                                **from_ip("192.0.2.7"))
        assert r.status_code == 200, r.json
    r = limited_client.post("/api/auth/login", json={"username": users[6].username, "password": PASSWORD},
                            **from_ip("192.0.2.7"))
    assert_rate_limited(r)
    # The same account from another address still logs in.
    r = limited_client.post("/api/auth/login", json={"username": users[6].username, "password": PASSWORD},
                            **from_ip("192.0.2.8"))
    assert r.status_code == 200, r.json


def test_behind_a_trusted_proxy_the_ip_limit_is_per_forwarded_client(proxied_client):
    users = UserFactory.create_batch(8)

    def login(user, client_ip: str):
        return proxied_client.post("/api/auth/login", json={"username": user.username, "password": PASSWORD},
                                   headers={"X-Forwarded-For": client_ip}, **from_ip("10.0.0.2"))  # the proxy

    for user in users[:6]:  # six accounts from one client, all through the proxy
        assert login(user, "198.51.100.1").status_code == 200
    assert_rate_limited(login(users[6], "198.51.100.1"))
    # another client behind the same proxy has its own limit
    r = login(users[7], "198.51.100.2")
    assert r.status_code == 200, r.json


def test_without_trusted_proxies_a_forged_forwarded_for_is_ignored(limited_client):
    users = UserFactory.create_batch(7)
    for i, user in enumerate(users[:6]):  # a new forged address each time, one real address
        r = limited_client.post("/api/auth/login", json={"username": user.username, "password": PASSWORD},
                                headers={"X-Forwarded-For": f"203.0.113.{i}"}, **from_ip("192.0.2.9"))
        assert r.status_code == 200, r.json
    r = limited_client.post("/api/auth/login", json={"username": users[6].username, "password": PASSWORD},
                            headers={"X-Forwarded-For": "203.0.113.99"}, **from_ip("192.0.2.9"))
    assert_rate_limited(r)


def test_rate_limits_of_one_app_do_not_leak_into_another(limited_client, client, app):
    """The shared test app (RATELIMIT_ENABLED=False) stays unlimited while a limited app exists."""
    UserFactory(username="alice", email="alice@example.com")
    attempts = 5 + max(int(app.config[key].split()[0]) for key in ("LOGIN_RATE_LIMIT_ACCOUNT", "LOGIN_RATE_LIMIT_IP"))
    for _ in range(attempts):
        assert login(client, "nope-nope", username="alice").status_code == 401
    assert login(client, username="alice").status_code == 200


# --------------------------------------------------------------------------- unstorable text in rate-limited and keyed paths

#: JSON texts with an unpaired UTF-16 surrogate (or NUL): no driver, cache or
#: rate-limit storage can encode them.
UNSTORABLE = ['"\\ud800"', '"a\\udfffb@example.com"', '"x\\u0000y"']


def _raw_post(client, url: str, body: str, **kwargs):
    return client.post(url, data=body, content_type="application/json", **kwargs)


@pytest.mark.parametrize("field", ["email", "username", "password"])
@pytest.mark.parametrize("raw", UNSTORABLE)
def test_unstorable_login_identifier_is_422_with_rate_limits_on(limited_client, field, raw):
    """The per-account key function runs before the body is validated: text the
    database cannot take (``"\\ud800"``) must not reach it there (it answered 500)."""
    UserFactory(username="alice", email="alice@example.com")
    ident = {} if field in ("email", "username") else {"email": '"alice@example.com"'}
    body = {**ident, "password": '"x"', field: raw}
    body = "{" + ", ".join(f'"{k}": {v}' for k, v in body.items()) + "}"
    r = _raw_post(limited_client, "/api/auth/login", body)
    assert_error(r, 422, "validation_error")
    assert field in r.json["error"]["details"]
    # such bodies share one bucket (never a key of their own) and still count against the IP limit
    for _ in range(2):
        assert _raw_post(limited_client, "/api/auth/login", body).status_code == 422
    assert_rate_limited(_raw_post(limited_client, "/api/auth/login", body))


@pytest.mark.parametrize("raw", UNSTORABLE)
def test_unstorable_login_identifier_is_422_without_rate_limits(client, raw):
    assert_error(_raw_post(client, "/api/auth/login", '{"email": ' + raw + ', "password": "x"}'), 422)
    assert_error(_raw_post(client, "/api/auth/login", '{"username": ' + raw + ', "password": "x"}'), 422)


@pytest.mark.parametrize("field", ["username", "email", "password", "full_name"])
def test_unstorable_registration_is_422_with_rate_limits_on(limited_client, field):
    body = {"username": '"alice"', "email": '"alice@example.com"', "password": '"long-enough-1"',
            field: '"\\ud800"'}
    body = "{" + ", ".join(f'"{k}": {v}' for k, v in body.items()) + "}"
    r = _raw_post(limited_client, "/api/auth/register", body)
    assert_error(r, 422, "validation_error")
    assert field in r.json["error"]["details"]
    assert user_count() == 0


def test_refresh_with_unstorable_body_or_token_never_500(limited_client, auth):
    s = auth.user("alice")
    r = _raw_post(limited_client, "/api/auth/refresh", '{"email": "\\ud800"}', headers=bearer(s.refresh_token))
    assert r.status_code == 200, r.json  # the body of a refresh is not read
    # a token made of bytes that decode to no text is simply not a token
    r = limited_client.post("/api/auth/refresh", headers={"Authorization": "Bearer \xed\xa0\x80"})
    assert_error(r, 401)


def test_idempotency_key_path_with_unstorable_text_is_422(limited_client, auth):
    """POST /api/tasks keys on ``Idempotency-Key`` and hashes the body: an unstorable
    body is refused before either, and a non-ASCII key is a 422 on the header."""
    from tasktracker.tasks.models import IdempotencyKey, Task

    s = auth.user("alice")
    r = _raw_post(limited_client, "/api/tasks", '{"title": "\\ud800"}',
                  headers={**s.headers, "Idempotency-Key": "k-1"})
    assert_error(r, 422, "validation_error")
    assert "title" in r.json["error"]["details"]
    r = _raw_post(limited_client, "/api/tasks", '{"title": "ok"}',
                  headers={**s.headers, "Idempotency-Key": "\xed\xa0\x80"})
    assert_error(r, 422, "validation_error")
    assert "Idempotency-Key" in r.json["error"]["details"]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Task)) == 0
    assert db.session.scalar(sa.select(sa.func.count()).select_from(IdempotencyKey)) == 0


# --------------------------------------------------------------------------- refresh


def test_refresh_gives_a_working_access_token(client, auth, app):
    s = auth.user("alice")
    r = client.post("/api/auth/refresh", headers=bearer(s.refresh_token))
    assert r.status_code == 200, r.json
    assert set(r.json) == {"access_token", "expires_in"}
    assert r.json["expires_in"] == int(app.config["JWT_ACCESS_TOKEN_EXPIRES"].total_seconds())
    profile = client.get("/api/auth/profile", headers=bearer(r.json["access_token"]))
    assert profile.status_code == 200 and profile.json["id"] == s.id
    # The new access token belongs to the same session: logging out with it revokes the refresh token.
    assert client.post("/api/auth/logout", headers=bearer(r.json["access_token"])).status_code == 204
    assert_error(client.post("/api/auth/refresh", headers=bearer(s.refresh_token)), 401)
    assert_error(client.get("/api/auth/profile", headers=s.headers), 401)


def test_access_token_cannot_refresh(client, auth):
    s = auth.user("alice")
    r = client.post("/api/auth/refresh", headers=bearer(s.access_token))
    assert_error(r, 401)
    assert "WWW-Authenticate" in r.headers


def test_refresh_token_is_not_an_access_token(client, auth):
    s = auth.user("alice")
    for method, path in (("get", "/api/auth/profile"), ("patch", "/api/auth/profile"),
                         ("post", "/api/auth/logout")):
        r = getattr(client, method)(path, headers=bearer(s.refresh_token), json={"full_name": "Mallory"})
        assert_error(r, 401)
    assert client.get("/api/auth/profile", headers=s.headers).json["full_name"] == ""


def test_refresh_without_token_is_401(client):
    assert_error(client.post("/api/auth/refresh"), 401)


# --------------------------------------------------------------------------- logout


def test_logout_revokes_access_and_refresh_tokens_of_that_session_only(client, auth):
    s = auth.user("alice")
    other = auth.login("alice")
    r = client.post("/api/auth/logout", headers=s.headers)
    assert r.status_code == 204 and r.get_data() == b""
    assert_error(client.get("/api/auth/profile", headers=s.headers), 401, "token_revoked")
    assert_error(client.post("/api/auth/refresh", headers=bearer(s.refresh_token)), 401, "token_revoked")
    assert_error(client.post("/api/auth/logout", headers=s.headers), 401, "token_revoked")
    # The user's other session is untouched.
    assert client.get("/api/auth/profile", headers=other.headers).status_code == 200
    assert client.post("/api/auth/refresh", headers=bearer(other.refresh_token)).status_code == 200
    # And a fresh login works.
    assert client.get("/api/auth/profile", headers=auth.login("alice").headers).status_code == 200


def test_logout_requires_a_token(client):
    assert_error(client.post("/api/auth/logout"), 401)


# --------------------------------------------------------------------------- profile


def test_profile_get(client, auth):
    s = auth.user("alice")
    r = client.get("/api/auth/profile", headers=s.headers)
    assert r.status_code == 200
    assert set(r.json) == USER_KEYS
    assert r.json == s.user


def test_profile_requires_a_token(client):
    assert_error(client.get("/api/auth/profile"), 401)
    assert_error(client.patch("/api/auth/profile", json={"full_name": "x"}), 401)


def test_profile_update_fields(client, auth):
    s = auth.user("alice")
    r = client.patch("/api/auth/profile", headers=s.headers, json={
        "username": "alice_l", "email": "Alice.L@Example.com", "full_name": "Alice L.",
        "timezone": "Europe/Paris"})
    assert r.status_code == 200, r.json
    assert r.json["username"] == "alice_l" and r.json["email"] == "alice.l@example.com"
    assert r.json["full_name"] == "Alice L." and r.json["timezone"] == "Europe/Paris"
    assert client.get("/api/auth/profile", headers=s.headers).json == r.json
    assert login(client, "correct-horse-9", username="alice_l").status_code == 200
    assert login(client, "correct-horse-9", email="alice.l@example.com").status_code == 200
    assert login(client, "correct-horse-9", username="alice").status_code == 401


def test_profile_partial_update_keeps_other_fields(client, auth):
    s = auth.user("alice")
    r = client.patch("/api/auth/profile", headers=s.headers, json={"timezone": "America/New_York"})
    assert r.status_code == 200
    assert {**s.user, "timezone": "America/New_York"} == r.json


def test_profile_can_change_case_of_own_username(client, auth):
    s = auth.user("alice")
    r = client.patch("/api/auth/profile", headers=s.headers, json={"username": "Alice", "email": s.user["email"]})
    assert r.status_code == 200, r.json
    assert r.json["username"] == "Alice"


def test_profile_update_validation(client, auth):
    s = auth.user("alice")
    for body, field in [
        ({"timezone": "Mars/Olympus_Mons"}, "timezone"),
        ({"timezone": ""}, "timezone"),
        ({"timezone": None}, "timezone"),
        ({"username": "a b"}, "username"),
        ({"email": "nope"}, "email"),
        ({"full_name": "x" * 121}, "full_name"),
        ({"role": "admin"}, "role"),
        ({"active": False}, "active"),
        ({"password": "short", "current_password": "correct-horse-9"}, "password"),
    ]:
        with case(body):
            error = assert_error(client.patch("/api/auth/profile", headers=s.headers, json=body),
                                 422, "validation_error")
            assert field in error["details"]
    assert client.get("/api/auth/profile", headers=s.headers).json == s.user


def test_profile_duplicates_are_409(client, auth):
    auth.user("bob")
    s = auth.user("alice")
    error = assert_error(client.patch("/api/auth/profile", headers=s.headers, json={"username": "BOB"}),
                         409, "duplicate_username")
    assert "username" in error["details"]
    assert_error(client.patch("/api/auth/profile", headers=s.headers, json={"email": "BOB@example.com"}),
                 409, "duplicate_email")
    assert client.get("/api/auth/profile", headers=s.headers).json == s.user


def test_profile_bad_bodies(client, auth):
    s = auth.user("alice")
    assert_error(client.patch("/api/auth/profile", headers=s.headers, data="{",
                              content_type="application/json"), 400)
    assert_error(client.patch("/api/auth/profile", headers=s.headers, data="x",
                              content_type="text/plain"), 415)


def test_password_change_needs_current_password(client, auth):
    s = auth.user("alice")
    other = auth.login("alice")
    error = assert_error(client.patch("/api/auth/profile", headers=s.headers,
                                      json={"password": "brand-new-pass"}), 422)
    assert "current_password" in error["details"]
    error = assert_error(client.patch("/api/auth/profile", headers=s.headers,
                                      json={"password": "brand-new-pass", "current_password": "guess-guess"}), 422)
    assert "current_password" in error["details"]
    # Nothing changed: the old password works, the new does not, other sessions live on.
    assert login(client, "correct-horse-9", username="alice").status_code == 200
    assert login(client, "brand-new-pass", username="alice").status_code == 401
    assert client.get("/api/auth/profile", headers=other.headers).status_code == 200


def test_password_change_revokes_other_sessions_only(client, auth):
    s = auth.user("alice")
    others = [auth.login("alice"), auth.login("alice")]
    bob = auth.user("bob")
    r = client.patch("/api/auth/profile", headers=s.headers,
                     json={"password": "brand-new-pass", "current_password": "correct-horse-9"})
    assert r.status_code == 200, r.json
    for other in others:
        assert_error(client.get("/api/auth/profile", headers=other.headers), 401, "token_revoked")
        assert_error(client.post("/api/auth/refresh", headers=bearer(other.refresh_token)), 401)
    # The caller's session keeps working, access and refresh.
    assert client.get("/api/auth/profile", headers=s.headers).status_code == 200
    assert client.post("/api/auth/refresh", headers=bearer(s.refresh_token)).status_code == 200
    # Other users are untouched.
    assert client.get("/api/auth/profile", headers=bob.headers).status_code == 200
    # New password logs in, the old one does not.
    assert login(client, "brand-new-pass", username="alice").status_code == 200
    assert_error(login(client, "correct-horse-9", username="alice"), 401, "invalid_credentials")


def test_failed_profile_update_changes_nothing(client, auth):
    """A password change in a request that fails (duplicate username) is not applied."""
    auth.user("bob")
    s = auth.user("alice")
    other = auth.login("alice")
    r = client.patch("/api/auth/profile", headers=s.headers, json={
        "username": "bob", "password": "brand-new-pass", "current_password": "correct-horse-9"})
    assert_error(r, 409, "duplicate_username")
    assert client.get("/api/auth/profile", headers=other.headers).status_code == 200
    assert login(client, "correct-horse-9", username="alice").status_code == 200
    assert login(client, "brand-new-pass", username="alice").status_code == 401
