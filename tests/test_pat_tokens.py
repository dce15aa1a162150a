"""Personal access token foundations (issue 13; api-contract.md v1.1, "Personal access
tokens"): format, hash-only storage, the 422 rules, refusal at once after delete /
expiry / deactivation (through the hot cache), last_used_at at most once a minute,
scopes (RFC 6750 insufficient_scope). SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from tasktracker.core.errors import NotFound, Unprocessable
from tasktracker.core.hotcache import SESSIONS, hot_state
from tasktracker.extensions import db
from tasktracker.tokens import services as pats
from tasktracker.tokens.models import PersonalAccessToken
from tasktracker.tokens.schemas import new_token_schema, tokens_schema
from tests.factories import UserFactory

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)


@pytest.fixture
def user(app):
    return UserFactory()


@pytest.fixture(autouse=True)
def _fresh_memo():
    pats._touched.clear()
    yield
    pats._touched.clear()


def test_generate_format_and_hash():
    tokens = {pats.generate() for _ in range(200)}
    assert len({t for t, _ in tokens}) == 200
    for raw, digest in tokens:
        assert re.fullmatch(r"tt_pat_[A-Za-z0-9_-]{43}", raw)
        assert digest == hashlib.sha256(raw.encode()).hexdigest()


def test_create_stores_only_the_hash(user):
    row, raw = pats.create_token(user.id, "CI", ["read", "write"], now=NOW)
    assert row.expires_at == NOW + timedelta(days=90) and row.scopes == ["read", "write"]
    stored = db.session.execute(sa.select(PersonalAccessToken.__table__)).one()._mapping
    assert raw not in [str(v) for v in stored.values()]
    assert stored["token_hash"] == pats.hash_token(raw) and stored["token_prefix"] == raw[:11]
    body = new_token_schema.dump({**{c: getattr(row, c) for c in
                                    ("id", "name", "scopes", "created_at", "expires_at", "last_used_at")},
                                  "token": raw})
    assert set(body) == {"id", "name", "scopes", "token", "created_at", "expires_at", "last_used_at"}
    assert body["expires_at"] == "2027-03-01T09:00:00Z"
    assert "token" not in tokens_schema.dump(pats.list_tokens(user.id))[0]


@pytest.mark.parametrize("kwargs, field", [
    ({"name": " "}, "name"),
    ({"name": "x" * 101}, "name"),
    ({"scopes": ["write"]}, "scopes"),
    ({"scopes": []}, "scopes"),
    ({"scopes": ["read", "admin"]}, "scopes"),
    ({"expires_at": NOW - timedelta(seconds=1)}, "expires_at"),
    ({"expires_at": NOW + timedelta(days=366)}, "expires_at"),
    ({"expires_at": datetime(2027, 1, 1)}, "expires_at"),
])
def test_create_422_rules(user, kwargs, field):
    args = {"name": "CI", "scopes": ["read"], **kwargs}
    with pytest.raises(Unprocessable) as exc:
        pats.create_token(user.id, args.pop("name"), args.pop("scopes"), now=NOW, **args)
    assert field in exc.value.details
    assert db.session.scalar(sa.select(sa.func.count()).select_from(PersonalAccessToken)) == 0


def test_create_accepts_one_year_and_read_only(user):
    row, _ = pats.create_token(user.id, "a", ["read"], NOW + timedelta(days=365), now=NOW)
    assert row.scopes == ["read"] and row.expires_at == NOW + timedelta(days=365)


def test_authenticate(user):
    row, raw = pats.create_token(user.id, "CI", ["read"], now=NOW)
    identity, who = pats.authenticate(raw, now=NOW + timedelta(minutes=1))
    assert (identity.token_id, identity.user_id, identity.scopes) == (row.id, user.id, ("read",))
    assert who.id == user.id and who.username == user.username
    wrong = raw[:-1] + ("A" if raw[-1] != "A" else "B")
    for bad in (wrong, raw + "x", raw[7:], "", None, "Bearer " + raw, pats.generate()[0]):
        assert pats.authenticate(bad, now=NOW) is None


def test_refused_at_once_after_delete_even_when_cached(user):
    assert hot_state().cache.enabled
    row, raw = pats.create_token(user.id, "CI", ["read", "write"], now=NOW)
    assert pats.authenticate(raw, now=NOW) is not None
    assert hot_state().cache.get(SESSIONS, ("pat", pats.hash_token(raw)))["token"]["token_id"] == row.id
    pats.delete_token(user.id, row.id, now=NOW)
    assert pats.authenticate(raw, now=NOW) is None
    assert pats.list_tokens(user.id) == []
    with pytest.raises(NotFound):
        pats.delete_token(user.id, row.id)


def test_refused_after_expiry(user):
    _, raw = pats.create_token(user.id, "CI", ["read"], NOW + timedelta(hours=1), now=NOW)
    assert pats.authenticate(raw, now=NOW + timedelta(minutes=59)) is not None
    assert pats.authenticate(raw, now=NOW + timedelta(hours=1)) is None


def test_refused_at_once_after_deactivation_even_when_cached(user):
    _, raw = pats.create_token(user.id, "CI", ["read"], now=NOW)
    assert pats.authenticate(raw, now=NOW) is not None  # cached now
    db.session.expire_all()
    from tasktracker.auth.models import User
    db.session.get(User, user.id).active = False
    db.session.commit()  # the users' flush hook drops the SESSIONS namespace everywhere
    assert pats.authenticate(raw, now=NOW) is None
    db.session.get(User, user.id).active = True
    db.session.commit()
    assert pats.authenticate(raw, now=NOW) is not None


def test_another_users_token_cannot_be_deleted(user):
    row, raw = pats.create_token(user.id, "CI", ["read"], now=NOW)
    other = UserFactory()
    with pytest.raises(NotFound):
        pats.delete_token(other.id, row.id)
    assert pats.authenticate(raw, now=NOW) is not None


def test_last_used_at_at_most_once_a_minute(user):
    row, _ = pats.create_token(user.id, "CI", ["read"], now=NOW)

    def last_used():
        db.session.expire_all()
        return db.session.get(PersonalAccessToken, row.id).last_used_at

    assert pats.touch_last_used(row.id, now=NOW) is True and last_used() == NOW
    assert pats.touch_last_used(row.id, now=NOW + timedelta(seconds=30)) is False
    assert last_used() == NOW
    # another process (no memo): the conditional UPDATE still refuses within the minute
    pats._touched.clear()
    assert pats.touch_last_used(row.id, now=NOW + timedelta(seconds=59)) is False
    # ... and that process looks again 5 s later, not on every request
    assert pats.touch_last_used(row.id, now=NOW + timedelta(seconds=63)) is False
    assert pats.touch_last_used(row.id, now=NOW + timedelta(seconds=64)) is True
    assert last_used() == NOW + timedelta(seconds=64)
    assert pats.touch_last_used(row.id, now=NOW + timedelta(seconds=100)) is False


def test_scopes():
    for method in ("GET", "HEAD", "OPTIONS", "get"):
        assert pats.scope_allows(["read"], method)
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        assert not pats.scope_allows(["read"], method)
        assert pats.scope_allows(["read", "write"], method)
        with pytest.raises(pats.InsufficientScope) as exc:
            pats.require_scope(("read",), method)
        assert (exc.value.status, exc.value.code) == (403, "insufficient_scope")
        assert exc.value.headers["WWW-Authenticate"] == 'Bearer error="insufficient_scope", scope="write"'
    pats.require_scope(["read", "write"], "DELETE")


def test_routes_no_pat_may_call():
    for method, path in [("POST", "/api/auth/tokens"), ("DELETE", "/api/auth/tokens/3"),
                         ("PATCH", "/api/auth/profile"), ("PATCH", "/api/auth/profile/notification-settings"),
                         ("POST", "/api/auth/logout"), ("POST", "/api/auth/tokens/")]:
        assert pats.pat_forbidden_route(method, path), (method, path)
    for method, path in [("GET", "/api/auth/tokens"), ("GET", "/api/auth/profile"),
                         ("POST", "/api/tasks"), ("DELETE", "/api/tasks/3"), ("POST", "/api/auth/tokensx")]:
        assert not pats.pat_forbidden_route(method, path), (method, path)


def test_list_newest_first_without_deleted(user):
    a, _ = pats.create_token(user.id, "a", ["read"], now=NOW)
    b, _ = pats.create_token(user.id, "b", ["read"], now=NOW + timedelta(seconds=1))
    c, _ = pats.create_token(user.id, "c", ["read"], now=NOW + timedelta(seconds=2))
    pats.delete_token(user.id, b.id)
    assert [t.id for t in pats.list_tokens(user.id)] == [c.id, a.id]
    assert pats.list_tokens(UserFactory().id) == []
