"""Read cache and conditional GET of GET /api/tasks and /api/tasks/search.

The cache is off in TestConfig (factories insert rows without events); the
``cache_on`` fixture turns the in-process LRU on for one test, the Redis tests
build their own app instances.
"""

from __future__ import annotations

import time
import uuid
from contextlib import contextmanager
from datetime import timedelta

import pytest
import sqlalchemy as sa

from tasktracker import create_app
from tasktracker.config import TestConfig
from tasktracker.core.types import utcnow
from tasktracker.events.models import Event
from tasktracker.extensions import db
from tasktracker.tasks.services import reminders
from tasktracker.notifications.models import Notification
from tasktracker.tasks import cache as list_cache
from tests.procs import wait_for
from tests.conftest import REDIS_URL, require_service
from tests.helpers import create_task, recorded_statements

LIST = "/api/tasks"


@pytest.fixture
def cache_on(app):
    """The in-process list cache, on for this test only (fresh and empty)."""
    old_ttl = app.config["LIST_CACHE_TTL_SECONDS"]
    app.config["LIST_CACHE_TTL_SECONDS"] = 60
    store = list_cache.LocalStore(60, 64)
    app.extensions["tasktracker_list_cache"] = store
    yield store
    app.config["LIST_CACHE_TTL_SECONDS"] = old_ttl
    app.extensions.pop("tasktracker_list_cache", None)


def _touches_tasks(statements: list[str]) -> list[str]:
    return [s for s in statements if "FROM tasks" in s or "JOIN tasks" in s]


def get(client, session, url=LIST, etag=None):
    headers = dict(session.headers)
    if etag is not None:
        headers["If-None-Match"] = etag
    return client.get(url, headers=headers)


def fresh(client, session, old_etag, url=LIST):
    """The list after a write: the old tag no longer matches (200 with a new tag)."""
    r = get(client, session, url, old_etag)
    assert r.status_code == 200, (r.status_code, r.json)
    assert r.headers["ETag"] != old_etag
    return r


# --------------------------------------------------------------------------- conditional GET


@pytest.mark.parametrize("url", [LIST, f"{LIST}?status=todo&sort=title", f"{LIST}/search?q=ta"])
def test_if_none_match_gives_304_with_the_etag(client, people, cache_on, url):
    create_task(client, people.owner, title="Task one")
    r = get(client, people.owner, url)
    assert r.status_code == 200 and r.json["total"] == 1
    etag = r.headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"') and not etag.startswith("W/")
    assert r.headers["Cache-Control"] == "private, no-cache"

    r304 = get(client, people.owner, url, etag)
    assert r304.status_code == 304 and r304.data == b""
    assert r304.headers["ETag"] == etag
    # a list of tags, a weak form of it, and * match too (weak comparison, RFC 7232 §3.2)
    for header in (f'"nope", {etag}', f"W/{etag}", "*"):
        assert get(client, people.owner, url, header).status_code == 304
    # a stale or malformed tag does not
    for header in ('"Lnope"', "garbage", ""):
        r = get(client, people.owner, url, header)
        assert r.status_code == 200 and r.headers["ETag"] == etag and r.json["total"] == 1


def test_equivalent_query_strings_share_a_tag(client, people):
    create_task(client, people.owner)
    a = get(client, people.owner, f"{LIST}?page=1&per_page=20&sort=-created_at").headers["ETag"]
    b = get(client, people.owner, LIST).headers["ETag"]
    c = get(client, people.owner, f"{LIST}?per_page=21").headers["ETag"]
    assert a == b != c


def test_etag_changes_after_every_write(client, people, cache_on):
    owner, assignee = people.owner, people.assignee
    r = get(client, owner)
    etag = r.headers["ETag"]
    assert r.json["items"] == []

    task = create_task(client, owner, title="Write me")
    r = fresh(client, owner, etag)
    assert [t["title"] for t in r.json["items"]] == ["Write me"]
    etag = r.headers["ETag"]

    tid = task["id"]
    steps = [
        ("patch", f"/api/tasks/{tid}", {"title": "Renamed"}, lambda t: t["title"] == "Renamed"),
        ("put", f"/api/tasks/{tid}", {"title": "Replaced", "priority": "high"},
         lambda t: t["title"] == "Replaced" and t["priority"] == "high"),
        ("patch", f"/api/tasks/{tid}/status", {"status": "in_progress"},
         lambda t: t["status"] == "in_progress"),
        ("patch", f"/api/tasks/{tid}/assign", {"assignee_id": assignee.id},
         lambda t: t["assignee"]["id"] == assignee.id),
    ]
    for method, url, body, check in steps:
        w = getattr(client, method)(url, json=body, headers=owner.headers)
        assert w.status_code == 200, w.json
        r = fresh(client, owner, etag)
        assert check(r.json["items"][0]), (url, r.json["items"][0])
        etag = r.headers["ETag"]

    # a comment does not change the task, but the version moves anyway (harmless)
    w = client.post(f"/api/tasks/{tid}/comments", json={"body": "hi"}, headers=owner.headers)
    assert w.status_code == 201, w.json
    etag = fresh(client, owner, etag).headers["ETag"]

    assert client.delete(f"/api/tasks/{tid}", headers=owner.headers).status_code == 204
    r = fresh(client, owner, etag)
    assert r.json["items"] == []
    trash = get(client, owner, f"{LIST}?deleted=only")
    assert [t["id"] for t in trash.json["items"]] == [tid]

    assert client.patch(f"/api/tasks/{tid}/restore", headers=owner.headers).status_code == 200
    r = fresh(client, owner, r.headers["ETag"])
    assert [t["id"] for t in r.json["items"]] == [tid]
    assert fresh(client, owner, trash.headers["ETag"], f"{LIST}?deleted=only").json["items"] == []


def test_membership_changes_move_visibility(client, people, cache_on, auth):
    lead, newcomer = people.owner, people.other
    team = client.post("/api/teams", json={"name": "Crew"}, headers=lead.headers).json
    create_task(client, lead, title="Team work", team_id=team["id"])
    r = get(client, newcomer)
    assert r.json["items"] == []
    etag = r.headers["ETag"]

    email = newcomer.user["email"]
    inv = client.post(f"/api/teams/{team['id']}/invitations", json={"email": email}, headers=lead.headers)
    assert inv.status_code == 201, inv.json
    acc = client.post(f"/api/invitations/{inv.json['id']}/accept", headers=newcomer.headers)
    assert acc.status_code == 200, acc.json
    r = fresh(client, newcomer, etag)
    assert [t["title"] for t in r.json["items"]] == ["Team work"]

    gone = client.delete(f"/api/teams/{team['id']}/members/{newcomer.id}", headers=lead.headers)
    assert gone.status_code == 204, gone.json
    assert fresh(client, newcomer, r.headers["ETag"]).json["items"] == []


def test_owner_rename_shows_in_the_cached_list(client, people, cache_on):
    owner, assignee = people.owner, people.assignee
    create_task(client, owner, title="Shared", assignee_id=assignee.id)
    r = get(client, assignee)
    assert r.json["items"][0]["owner"]["username"] == owner.user["username"]
    assert get(client, assignee).headers["ETag"] == r.headers["ETag"]  # served from the cache
    assert len(cache_on) >= 1

    w = client.patch("/api/auth/profile", json={"username": "renamed_owner", "full_name": "R. O."},
                     headers=owner.headers)
    assert w.status_code == 200, w.json
    r2 = fresh(client, assignee, r.headers["ETag"])
    assert r2.json["items"][0]["owner"] == {"id": owner.id, "username": "renamed_owner",
                                            "full_name": "R. O."}
    db.session.expire_all()
    ev = db.session.scalars(sa.select(Event).where(Event.type == "user.updated")).one()
    assert ev.task_id is None and ev.payload["changes"]["username"][1] == "renamed_owner"
    # the fan-out ignores it (dispatched, no notification)
    assert ev.dispatched_at is not None
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Notification)
                             .where(Notification.event_seq == ev.seq)) == 0

    # an email-only change does not touch what lists show: no event
    w = client.patch("/api/auth/profile", json={"email": "new-owner@example.com"}, headers=owner.headers)
    assert w.status_code == 200
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Event)
                             .where(Event.type == "user.updated")) == 1


def test_promotion_to_admin_changes_what_the_user_sees(client, people, cache_on):
    create_task(client, people.owner, title="Private")
    r = get(client, people.other)
    assert r.json["items"] == []
    w = client.patch(f"/api/users/{people.other.id}", json={"role": "admin"}, headers=people.admin.headers)
    assert w.status_code == 200, w.json
    r2 = fresh(client, people.other, r.headers["ETag"])
    assert [t["title"] for t in r2.json["items"]] == ["Private"]
    db.session.expire_all()
    ev = db.session.scalars(sa.select(Event).where(Event.type == "user.updated")).one()
    assert ev.actor_id == people.admin.id and ev.payload["changes"]["role"] == ["member", "admin"]


def test_two_users_never_share_an_entry(client, people, cache_on):
    create_task(client, people.owner, title="Mine")
    create_task(client, people.other, title="Theirs")
    a = get(client, people.owner)
    b = get(client, people.other)
    assert a.headers["ETag"] != b.headers["ETag"]
    assert [t["title"] for t in a.json["items"]] == ["Mine"]
    assert [t["title"] for t in b.json["items"]] == ["Theirs"]
    # again, now both from the cache: still each their own
    assert [t["title"] for t in get(client, people.owner).json["items"]] == ["Mine"]
    assert [t["title"] for t in get(client, people.other).json["items"]] == ["Theirs"]
    # someone else's tag is no 304
    r = get(client, people.other, etag=a.headers["ETag"])
    assert r.status_code == 200 and [t["title"] for t in r.json["items"]] == ["Theirs"]
    # an admin with the same query sees both, under yet another tag
    c = get(client, people.admin)
    assert len(c.json["items"]) == 2 and c.headers["ETag"] not in (a.headers["ETag"], b.headers["ETag"])


def test_a_hit_skips_the_list_queries(client, people, cache_on):
    for n in range(5):
        create_task(client, people.owner, title=f"T{n}", reminders=[
            (utcnow() + timedelta(days=1)).isoformat()])
    with recorded_statements(db.engine) as miss:
        r1 = get(client, people.owner, f"{LIST}/search?q=t")
    with recorded_statements(db.engine) as hit:
        r2 = get(client, people.owner, f"{LIST}/search?q=t")
    assert r1.status_code == r2.status_code == 200
    assert r1.json == r2.json and r1.headers["ETag"] == r2.headers["ETag"]
    assert len(_touches_tasks(miss)) >= 2  # count + page (+ reminders)
    assert _touches_tasks(hit) == [], hit
    assert len(hit) < len(miss)
    # login session and data version come from the hot cache: no statement at all
    assert hit == [], hit
    with recorded_statements(db.engine) as not_modified:
        r3 = get(client, people.owner, f"{LIST}/search?q=t", r1.headers["ETag"])
    assert r3.status_code == 304 and not_modified == [], not_modified


def test_cache_disabled_still_answers_304(client, people):
    create_task(client, people.owner)
    assert isinstance(list_cache.get_store(), list_cache.NullStore)  # TestConfig: TTL 0
    r = get(client, people.owner)
    with recorded_statements(db.engine) as again:
        assert get(client, people.owner).json == r.json
    assert _touches_tasks(again)  # recomputed
    assert get(client, people.owner, etag=r.headers["ETag"]).status_code == 304


def test_overdue_queries_are_never_cached(client, people, cache_on):
    soon = utcnow() + timedelta(seconds=1)
    create_task(client, people.owner, title="Soon", due_at=soon.isoformat())
    r = get(client, people.owner, f"{LIST}?overdue=true")
    assert r.status_code == 200 and "ETag" not in r.headers
    assert get(client, people.owner, f"{LIST}?overdue=true", "*").status_code == 200
    with recorded_statements(db.engine) as again:
        get(client, people.owner, f"{LIST}?overdue=true")
    assert _touches_tasks(again)


def test_skipped_reminders_move_the_version(client, people, cache_on):
    """Reminders of done tasks are marked sent without a reminder.due; their
    ``sent_at`` is in the task JSON, so the version must still move."""
    task = create_task(client, people.owner, title="Done already", status="done",
                       reminders=[(utcnow() + timedelta(minutes=5)).isoformat()])
    r = get(client, people.owner)
    assert r.json["items"][0]["reminders"][0]["sent_at"] is None
    assert reminders.dispatch_due_reminders(utcnow() + timedelta(minutes=10)) == {"sent": 0, "skipped": 1}
    r2 = fresh(client, people.owner, r.headers["ETag"])
    assert r2.json["items"][0]["reminders"][0]["sent_at"] is not None
    db.session.expire_all()
    ev = db.session.scalars(sa.select(Event).where(Event.type == "reminder.skipped")).one()
    assert ev.task_id is None and ev.payload["task_ids"] == [task["id"]]


def test_local_store_is_a_bounded_lru_with_ttl(monkeypatch):
    store = list_cache.LocalStore(ttl=60, max_entries=2)
    store.set("a", b"1")
    store.set("b", b"2")
    assert store.get("a") == b"1"  # a is now the most recent
    store.set("c", b"3")
    assert store.get("b") is None and store.get("a") == b"1" and store.get("c") == b"3"
    assert len(store) == 2
    now = list_cache.time.monotonic()
    monkeypatch.setattr(list_cache.time, "monotonic", lambda: now + 61)
    assert store.get("a") is None and store.get("c") is None


# --------------------------------------------------------------------------- Redis


def _redis_or_skip():
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        require_service("Redis", str(exc))
    return client


@contextmanager
def instance(app, **overrides):
    """Another app instance on the same database (another web process)."""
    other = create_app(TestConfig, {"SQLALCHEMY_DATABASE_URI": app.config["SQLALCHEMY_DATABASE_URI"],
                                    "UPLOAD_DIR": app.config["UPLOAD_DIR"],
                                    "LIST_CACHE_TTL_SECONDS": 60, **overrides})
    try:
        yield other
    finally:
        with other.app_context():
            db.session.remove()
            db.engine.dispose()


def _engine_of(flask_app):
    with flask_app.app_context():
        return db.engine


def test_redis_cache_is_shared_between_instances(app, client, people):
    redis_client = _redis_or_skip()
    prefix = f"tt-test-lists-{uuid.uuid4().hex[:8]}"
    create_task(client, people.owner, title="Shared cache")
    try:
        with instance(app, REDIS_URL=REDIS_URL, LIST_CACHE_KEY_PREFIX=prefix) as one, \
                instance(app, REDIS_URL=REDIS_URL, LIST_CACHE_KEY_PREFIX=prefix) as two:
            first = get(one.test_client(), people.owner)
            assert first.status_code == 200 and first.json["items"][0]["title"] == "Shared cache"
            etag = first.headers["ETag"]
            keys = redis_client.keys(f"{prefix}:*")
            assert [k.decode() for k in keys] == [f"{prefix}:{etag}"]
            assert 0 < redis_client.ttl(keys[0]) <= 60
            with recorded_statements(_engine_of(two)) as hit:
                second = get(two.test_client(), people.owner)
            assert second.json == first.json and second.headers["ETag"] == etag
            assert _touches_tasks(hit) == [], hit
            # a write through one instance is seen by the other (new version, new key) once
            # the hot-cache broadcast arrives (milliseconds; asynchronous across processes)
            create_task(two.test_client(), people.owner, title="Newer")
            assert wait_for(lambda: get(one.test_client(), people.owner, LIST, etag).status_code == 200,
                            timeout=1.0, interval=0.01)
            r = fresh(one.test_client(), people.owner, etag)
            assert [t["title"] for t in r.json["items"]] == ["Newer", "Shared cache"]
    finally:
        for key in redis_client.scan_iter(f"{prefix}:*"):
            redis_client.delete(key)


def test_unreachable_redis_still_answers(app, client, people):
    create_task(client, people.owner, title="No cache")
    with instance(app, REDIS_URL="redis://127.0.0.1:1/0") as broken:
        store = None
        c = broken.test_client()
        for _ in range(2):
            started = time.monotonic()
            r = get(c, people.owner)
            # the first lookup does not wait for a subscription that has already failed
            assert time.monotonic() - started < 0.5
            assert r.status_code == 200 and [t["title"] for t in r.json["items"]] == ["No cache"]
            assert get(c, people.owner, etag=r.headers["ETag"]).status_code == 304
        with broken.app_context():
            store = list_cache.get_store()
        assert isinstance(store, list_cache.TieredStore) and isinstance(store.shared, list_cache.RedisStore)
        assert not store.shared._available()


def test_version_sees_an_event_committed_out_of_seq_order(app):
    """PostgreSQL takes ``seq`` at INSERT: a transaction can commit seq N after N+1
    is visible. The version read in between must differ from the one after."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite serialises writers: seq order is commit order")
    slow = db.engine.connect()
    try:
        tx = slow.begin()
        slow.execute(sa.insert(Event).values(type="test.slow", payload={}))  # takes seq 1, uncommitted
        db.session.add(Event(type="test.fast", payload={}))  # seq 2, committed first
        db.session.commit()
        between = list_cache.read_data_version()
        db.session.commit()
        tx.commit()
        after = list_cache.read_data_version()
        assert between.split("/")[0] == after.split("/")[0]  # same newest event...
        assert between != after  # ...but the in-progress writer is gone: a new version
        assert list_cache.read_data_version() == after  # and stable once nothing is in flight
    finally:
        slow.close()


def test_version_ignores_writers_of_other_databases(app):
    """A transaction writing in another database of the same server (another app, a
    parallel test run) must not change this database's version: it would turn
    every cached read into a miss."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only: one SQLite file is one database")
    from tests.conftest import POSTGRES_ADMIN_URL

    db.session.add(Event(type="test.version", payload={}))
    db.session.commit()
    before = list_cache.read_data_version()
    db.session.commit()
    other = sa.create_engine(POSTGRES_ADMIN_URL)  # the server's `test` database
    try:
        with other.connect() as conn:
            conn.execute(sa.text("SELECT pg_current_xact_id()"))  # takes an xid, writes nothing
            assert list_cache.read_data_version() == before
            db.session.commit()
            # the same in this database does change it (test above: the out-of-order case)
            mine = db.engine.connect()
            try:
                mine.execute(sa.text("SELECT pg_current_xact_id()"))
                assert list_cache.read_data_version() != before
                db.session.commit()
            finally:
                mine.close()
            conn.rollback()
    finally:
        other.dispose()
    assert list_cache.read_data_version() == before
