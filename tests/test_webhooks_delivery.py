"""Webhook foundations (issue 13; api-contract.md v1.1, "Webhooks"): the outbox rows,
the sender against a real HTTP receiver on 127.0.0.1, backoff with a moved clock,
``failed``, auto-disable, redeliver, ping, rotate-secret, filters, team scoping,
outage then recovery, and a crash between claim and result. SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import random
import socket
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import sqlalchemy as sa

from tasktracker.core.errors import NotFound, Unprocessable
from tasktracker.events.models import Event
from tasktracker.extensions import db
from tasktracker.webhooks import delivery, services, signing
from tasktracker.webhooks.models import DeliveryStatus, Webhook, WebhookDelivery
from tests.factories import TeamFactory, UserFactory
from tests.webhook_receiver import Receiver


class Clock:
    """A clock the test moves."""

    def __init__(self):
        self.now = datetime.now(timezone.utc).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float = 0, **kw) -> datetime:
        self.now += timedelta(seconds=seconds, **kw)
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture(autouse=True)
def held_handoff(app):
    """These tests drive the attempts themselves with a moved clock: the app's
    after-commit hand-off (inline attempts under JOBS_INLINE) only records the ids."""
    handed: list[int] = []
    key = "tt_webhook_delivery_consumer"
    saved = app.extensions[key]
    app.extensions[key] = handed.extend
    yield handed
    app.extensions[key] = saved  # the app is shared by the session's other tests


@pytest.fixture
def receiver(clock):
    r = Receiver(clock=clock).start()
    yield r
    r.stop()


@pytest.fixture
def http():
    with delivery.make_client() as c:
        yield c


@pytest.fixture
def team(app):
    return TeamFactory()


def add_hook(team, receiver, path="/hook", events=None, **kw) -> Webhook:
    hook = services.create_webhook(team.id, url=receiver.url(path), events=events,
                                   allow_private=True, created_by_id=team.owner_id, **kw)
    receiver.secrets[path] = hook.secret
    return hook


def emit(team_id, type_="task.created", *, actor_id=None, payload=None, clock=None):
    """An events row and its deliveries, committed together (what record_event + the
    lead's wiring will do in the change's transaction)."""
    event = Event(type=type_, actor_id=actor_id, task_id=1, team_id=team_id,
                  payload=payload if payload is not None else {"task": {"id": 1, "title": "Write docs"}},
                  created_at=clock() if clock else None)
    db.session.add(event)
    rows = services.deliveries_for_event(event, now=clock() if clock else None)
    db.session.commit()
    return event, [r.id for r in rows]


def attempt(did, clock, http, **kw):
    return delivery.attempt(did, now=clock(), client=http, allow_private=True, **kw)


def row(did) -> WebhookDelivery:
    db.session.expire_all()
    return db.session.get(WebhookDelivery, did)


# ---------------------------------------------------------------------- happy path

def test_delivery_is_signed_and_shaped_per_contract(team, receiver, clock, http):
    hook = add_hook(team, receiver)
    event, [did] = emit(team.id, actor_id=team.owner_id, clock=clock)

    out = attempt(did, clock, http)

    assert out.status == DeliveryStatus.SUCCEEDED
    [got] = receiver.received
    assert got.verified and got.answered == 200
    h = got.headers
    assert h["Content-Type"] == "application/json"
    assert h["User-Agent"] == "TaskTracker-Webhook/1"
    assert h["X-TaskTracker-Event"] == "task.created"
    assert h["X-TaskTracker-Delivery"] == str(did)
    assert h["X-TaskTracker-Timestamp"] == str(int(clock().timestamp()))
    assert h["Host"] == f"127.0.0.1:{receiver.port}"
    body = json.loads(got.body)
    assert body == {"id": did, "event": "task.created",
                    "created_at": clock().isoformat().replace("+00:00", "Z"),
                    "team_id": team.id, "actor_id": team.owner_id, "seq": event.seq,
                    "data": {"id": 1, "title": "Write docs"}}
    r = row(did)
    assert got.body == r.body  # the exact stored bytes were sent (and signed)
    assert (r.status, r.attempts, r.response_status, r.error) == ("succeeded", 1, 200, None)
    assert r.delivered_at == clock() and r.duration_ms is not None and r.claimed_until is None
    assert db.session.get(Webhook, hook.id).consecutive_failures == 0


def test_nothing_is_sent_before_commit(team, receiver, clock, http):
    add_hook(team, receiver)
    event = Event(type="task.created", actor_id=None, team_id=team.id, payload={"task": {"id": 1}})
    db.session.add(event)
    rows = services.deliveries_for_event(event, now=clock())
    db.session.rollback()  # the change failed: its deliveries go with it
    assert rows and db.session.scalar(sa.select(sa.func.count()).select_from(WebhookDelivery)) == 0
    assert delivery.due_deliveries(clock()) == []
    assert receiver.received == []


# ---------------------------------------------------------------------- retries

def test_backoff_with_a_moved_clock_then_success(team, receiver, clock, http):
    add_hook(team, receiver)
    _, [did] = emit(team.id, clock=clock)
    receiver.fail_next = 3
    expected = delivery.BACKOFF_SECONDS
    for n in range(3):
        started = clock()
        out = attempt(did, clock, http, rng=random.Random(n))
        assert out.status == DeliveryStatus.PENDING and out.response_status == 500
        wait = (out.next_attempt_at - started).total_seconds()
        assert expected[n] * 0.9 <= wait <= expected[n] * 1.1
        r = row(did)
        assert (r.attempts, r.error, r.next_attempt_at) == (n + 1, "HTTP 500", out.next_attempt_at)
        # not due yet: nothing is claimed, nothing sent
        clock.now = out.next_attempt_at - timedelta(seconds=1)
        assert attempt(did, clock, http).status is None
        assert delivery.due_deliveries(clock()) == []
        clock.now = out.next_attempt_at
        assert delivery.due_deliveries(clock()) == [did]

    out = attempt(did, clock, http)
    assert out.status == DeliveryStatus.SUCCEEDED and row(did).attempts == 4
    # every attempt carried the same delivery id and the same bytes, each signed afresh
    assert [r.headers["X-TaskTracker-Delivery"] for r in receiver.received] == [str(did)] * 4
    assert len({r.body for r in receiver.received}) == 1
    assert all(r.verified for r in receiver.received)
    assert len({r.headers["X-TaskTracker-Timestamp"] for r in receiver.received}) == 4


def test_failed_after_the_last_attempt(team, receiver, clock, http):
    add_hook(team, receiver)
    _, [did] = emit(team.id, clock=clock)
    receiver.status = 503
    for n in range(1, delivery.MAX_ATTEMPTS + 1):
        out = attempt(did, clock, http)
        assert out.attempt == n
        if n < delivery.MAX_ATTEMPTS:
            assert out.status == DeliveryStatus.PENDING
            clock.now = out.next_attempt_at
    assert out.status == DeliveryStatus.FAILED and out.next_attempt_at is None
    r = row(did)
    assert (r.status, r.attempts, r.response_status, r.next_attempt_at) == ("failed", 7, 503, None)
    clock.advance(days=10)
    assert attempt(did, clock, http).status is None and delivery.due_deliveries(clock()) == []
    assert len(receiver.received) == 7


def test_timeout_connection_error_and_redirect_are_failures(team, receiver, clock, http):
    add_hook(team, receiver)
    _, [a] = emit(team.id, clock=clock)
    _, [b] = emit(team.id, clock=clock)
    receiver.delay = 0.6
    with httpx.Client(timeout=httpx.Timeout(0.2), follow_redirects=False, trust_env=False) as slow:
        out = delivery.attempt(a, now=clock(), client=slow, allow_private=True)
    assert out.status == DeliveryStatus.PENDING and out.error.startswith("timeout")
    receiver.delay = 0
    receiver.status = 302
    out = attempt(b, clock, http)
    assert out.status == DeliveryStatus.PENDING and out.error == "HTTP 302"
    assert not any(r.path == "/elsewhere" for r in receiver.received)
    receiver.stop()
    clock.now = out.next_attempt_at
    out = attempt(b, clock, http)
    assert out.status == DeliveryStatus.PENDING and out.error.startswith("connection error")
    assert row(b).response_status is None


# ---------------------------------------------------------------------- auto-disable

def test_auto_disable_after_24_hours_of_failures(team, receiver, clock, http):
    hook = add_hook(team, receiver)
    receiver.status = 500
    notified = []
    t0 = clock()
    _, [first] = emit(team.id, clock=clock)
    assert attempt(first, clock, http, on_disabled=notified.append).disabled is None

    clock.now = t0 + timedelta(hours=23, minutes=59)
    _, [second] = emit(team.id, clock=clock)
    assert attempt(second, clock, http, on_disabled=notified.append).disabled is None
    assert db.session.get(Webhook, hook.id).active is True

    clock.now = t0 + timedelta(hours=24)
    _, [third] = emit(team.id, clock=clock)
    out = attempt(third, clock, http, on_disabled=notified.append)
    assert out.disabled is not None and notified == [out.disabled]
    info = out.disabled
    assert (info.webhook_id, info.team_id, info.failing_since, info.consecutive_failures) == \
        (hook.id, team.id, t0, 3)
    db.session.expire_all()
    hook = db.session.get(Webhook, hook.id)
    assert hook.active is False and "24 hours" in hook.disabled_reason

    # inactive: no new deliveries, pending ones wait (not claimed), no second notification
    assert emit(team.id, clock=clock)[1] == []
    clock.now = row(first).next_attempt_at + timedelta(days=2)
    assert attempt(first, clock, http, on_disabled=notified.append).status is None
    assert delivery.due_deliveries(clock()) == []
    assert notified == [info]
    # a ping still goes out (to check the receiver before re-enabling)
    receiver.status = 200
    ping = services.ping(hook.id, {team.id}, actor_id=team.owner_id, now=clock())
    assert attempt(ping.id, clock, http).status == DeliveryStatus.SUCCEEDED
    # re-enabled: failure run cleared, the paused deliveries resume
    services.update_webhook(hook.id, {team.id}, active=True, now=clock())
    hook = db.session.get(Webhook, hook.id)
    assert (hook.active, hook.disabled_reason, hook.consecutive_failures) == (True, None, 0)
    assert set(delivery.due_deliveries(clock())) == {first, second, third}


def test_a_success_resets_the_failure_run(team, receiver, clock, http):
    hook = add_hook(team, receiver)
    receiver.fail_next = 1
    t0 = clock()
    _, [a] = emit(team.id, clock=clock)
    attempt(a, clock, http)
    clock.advance(hours=1)
    _, [b] = emit(team.id, clock=clock)
    assert attempt(b, clock, http).status == DeliveryStatus.SUCCEEDED
    db.session.expire_all()
    assert (db.session.get(Webhook, hook.id).consecutive_failures,
            db.session.get(Webhook, hook.id).first_failure_at) == (0, None)
    receiver.status = 500
    clock.now = t0 + timedelta(hours=25)
    _, [c] = emit(team.id, clock=clock)
    assert attempt(c, clock, http).disabled is None  # the run restarted now (after the success), not 25 h ago


# ---------------------------------------------------------------------- redeliver, ping, rotate

def test_redeliver_sends_the_same_payload_again(team, receiver, clock, http):
    hook = add_hook(team, receiver)
    _, [did] = emit(team.id, clock=clock)
    attempt(did, clock, http)
    clock.advance(3600)
    d = services.redeliver(did, {team.id}, now=clock())
    assert (d.id, d.status, d.next_attempt_at) == (did, "pending", clock())
    assert attempt(did, clock, http).status == DeliveryStatus.SUCCEEDED
    first, again = receiver.received
    assert first.body == again.body and again.verified
    assert first.headers["X-TaskTracker-Delivery"] == again.headers["X-TaskTracker-Delivery"] == str(did)
    assert row(did).attempts == 2
    assert db.session.scalar(sa.select(sa.func.count()).select_from(WebhookDelivery)) == 1
    with pytest.raises(NotFound):
        services.redeliver(did, {team.id + 1})
    with pytest.raises(NotFound):
        services.redeliver(99999, {team.id})
    assert hook.id


def test_ping(team, receiver, clock, http):
    hook = add_hook(team, receiver)
    p1 = services.ping(hook.id, {team.id}, actor_id=team.owner_id, now=clock())
    p2 = services.ping(hook.id, {team.id}, actor_id=team.owner_id, now=clock())
    assert p1.id != p2.id and p1.event_seq is None and p2.event_seq is None
    assert attempt(p1.id, clock, http).status == DeliveryStatus.SUCCEEDED
    [got] = receiver.received
    body = json.loads(got.body)
    assert got.headers["X-TaskTracker-Event"] == "ping" and body["event"] == "ping"
    assert body["id"] == p1.id and body["seq"] is None and body["team_id"] == team.id
    assert body["data"]["id"] == hook.id and "secret" not in body["data"]
    with pytest.raises(NotFound):
        services.ping(hook.id, {team.id + 1}, actor_id=None)


def test_rotate_secret(team, receiver, clock, http):
    hook = add_hook(team, receiver)
    old = hook.secret
    new = services.rotate_secret(hook.id, {team.id})
    assert new != old and new.startswith("whsec_") and len(new) == 6 + 43
    _, [did] = emit(team.id, clock=clock)
    attempt(did, clock, http)
    [got] = receiver.received
    assert not got.verified and got.answered == 401  # the receiver still holds the old secret
    ts, sig = got.headers["X-TaskTracker-Timestamp"], got.headers["X-TaskTracker-Signature"]
    assert signing.verify(new, ts, got.body, sig, now=clock())
    assert not signing.verify(old, ts, got.body, sig, now=clock())
    receiver.secrets["/hook"] = new
    clock.now = row(did).next_attempt_at
    assert attempt(did, clock, http).status == DeliveryStatus.SUCCEEDED


# ---------------------------------------------------------------------- filters and scoping

def test_event_filters(team, receiver, clock):
    created_only = add_hook(team, receiver, "/a", events=["task.created"])
    everything = add_hook(team, receiver, "/b")
    comments = add_hook(team, receiver, "/c", events=["comment.created", "member.joined"])
    assert everything.events == ["*"]

    def hooks_of(type_, payload=None):
        _, ids = emit(team.id, type_, payload=payload, clock=clock)
        return {(db.session.get(WebhookDelivery, i).webhook_id, db.session.get(WebhookDelivery, i).event)
                for i in ids}

    assert hooks_of("task.created") == {(created_only.id, "task.created"), (everything.id, "task.created")}
    assert hooks_of("comment.created", {"comment": {"id": 5}, "task": {"id": 1}}) == \
        {(everything.id, "comment.created"), (comments.id, "comment.created")}
    assert hooks_of("member.added", {"user_id": 7, "role": "member"}) == \
        {(everything.id, "member.joined"), (comments.id, "member.joined")}
    assert hooks_of("member.removed", {"user_id": 7, "role": "member"}) == {(everything.id, "member.left")}
    assert hooks_of("task.purged") == set() and hooks_of("invitation.created") == set()
    d = db.session.scalars(sa.select(WebhookDelivery).where(WebhookDelivery.event == "comment.created")).first()
    assert json.loads(d.body)["data"] == {"id": 5}
    d = db.session.scalars(sa.select(WebhookDelivery).where(WebhookDelivery.event == "member.left")).first()
    assert json.loads(d.body)["data"] == {"team_id": team.id, "user_id": 7, "role": "member"}


def test_a_team_event_reaches_only_that_teams_webhooks(team, receiver, clock):
    other = TeamFactory()
    mine = add_hook(team, receiver, "/mine")
    add_hook(other, receiver, "/theirs")
    off = add_hook(team, receiver, "/off", active=False)
    _, ids = emit(team.id, clock=clock)
    assert [db.session.get(WebhookDelivery, i).webhook_id for i in ids] == [mine.id]
    assert emit(None, clock=clock)[1] == []  # a personal task: no team, no webhook
    assert off.id


def test_one_delivery_per_webhook_and_event(team, receiver, clock):
    add_hook(team, receiver, "/a")
    add_hook(team, receiver, "/b")
    event, ids = emit(team.id, clock=clock)
    assert len(ids) == 2
    # the fan-out runs again (redelivered job): nothing new
    assert services.deliveries_for_event(event, now=clock()) == []
    db.session.commit()
    # and a concurrent second writer is stopped by the unique constraint
    hook_id = db.session.get(WebhookDelivery, ids[0]).webhook_id
    db.session.add(WebhookDelivery(webhook_id=hook_id, event="task.created", event_seq=event.seq, body=b"{}"))
    with pytest.raises(sa.exc.IntegrityError):
        db.session.commit()
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(WebhookDelivery)) == 2


# ---------------------------------------------------------------------- outage, crash

def test_receiver_down_then_up_everything_arrives_once(team, receiver, clock, http):
    add_hook(team, receiver, "/a")
    add_hook(team, receiver, "/b", events=["task.updated"])
    receiver.stop()
    ids = []
    for n in range(10):
        ids += emit(team.id, "task.created" if n % 2 else "task.updated", clock=clock)[1]
    assert len(ids) == 15
    while True:
        outcomes = delivery.run_due(clock=clock, client=http, allow_private=True)
        if not outcomes:
            break
        assert all(o.status == DeliveryStatus.PENDING and o.error.startswith("connection error")
                   for o in outcomes)
    assert receiver.received == []
    clock.advance(hours=1, minutes=30)  # two retries' worth of down time
    receiver.start()  # back, same port
    for _ in range(20):
        clock.advance(hours=2)
        delivery.run_due(clock=clock, client=http, allow_private=True)
    assert sorted(receiver.delivery_ids()) == sorted(ids)  # all of them, none twice
    assert all(r.verified for r in receiver.received)
    statuses = db.session.scalars(sa.select(WebhookDelivery.status)).all()
    assert statuses == ["succeeded"] * 15


def test_a_worker_killed_between_claim_and_result(team, receiver, clock, http):
    add_hook(team, receiver)
    event, [did] = emit(team.id, clock=clock)
    # the worker claims, POSTs, and dies before recording the result
    claimed = delivery.claim(did, now=clock())
    db.session.commit()
    assert claimed is not None
    assert delivery.send(claimed, now=clock(), client=http, allow_private=True).ok
    # while its lease lives, nobody else takes the delivery
    clock.advance(delivery.LEASE_SECONDS - 1)
    assert delivery.claim(did, now=clock()) is None and delivery.due_deliveries(clock()) == []
    db.session.rollback()
    # the lease runs out: the repeat carries the same delivery id (and bytes)
    clock.advance(2)
    assert attempt(did, clock, http).status == DeliveryStatus.SUCCEEDED
    first, repeat = receiver.received
    assert first.headers["X-TaskTracker-Delivery"] == repeat.headers["X-TaskTracker-Delivery"] == str(did)
    assert first.body == repeat.body
    # the dead worker's late result changes nothing
    late = delivery.record_result(claimed, delivery.SendResult(500, "HTTP 500", 5), now=clock())
    db.session.commit()
    assert late.stale and row(did).status == "succeeded" and row(did).attempts == 2
    count = db.session.scalar(sa.select(sa.func.count()).select_from(WebhookDelivery)
                              .where(WebhookDelivery.event_seq == event.seq))
    assert count == 1


def test_two_claimers_one_winner_and_batches_are_disjoint(team, receiver, clock):
    add_hook(team, receiver)
    ids = [emit(team.id, clock=clock)[1][0] for _ in range(5)]
    a = delivery.claim(ids[0], now=clock())
    b = delivery.claim(ids[0], now=clock())
    db.session.commit()
    assert a is not None and b is None
    batch = delivery.claim_due(clock(), limit=3)
    db.session.commit()
    rest = delivery.claim_due(clock(), limit=10)
    db.session.commit()
    assert [c.delivery_id for c in batch] == ids[1:4] and [c.delivery_id for c in rest] == ids[4:]
    assert delivery.claim_due(clock(), limit=10) == []
    assert all(c.attempt == 1 for c in batch + rest)


# ---------------------------------------------------------------------- batches

def test_a_commits_deliveries_go_as_one_batch_sent_concurrently(team, receiver, clock, http):
    hooks = [add_hook(team, receiver, f"/h{i}") for i in range(4)]
    _, ids = emit(team.id, clock=clock)
    assert len(ids) == 4
    receiver.delay = 0.3
    started = time.monotonic()
    outcomes = delivery.attempt_many(ids + ids[:1], now=clock(), client=http, allow_private=True)
    elapsed = time.monotonic() - started
    assert [o.delivery_id for o in outcomes] == sorted(ids)  # a repeated id is one attempt
    assert all(o.status == DeliveryStatus.SUCCEEDED and o.attempt == 1 for o in outcomes)
    assert elapsed < 4 * receiver.delay  # concurrently, not one after another
    assert sorted(receiver.delivery_ids()) == sorted(ids)
    for did, hook in zip(ids, hooks):
        r = row(did)
        assert (r.webhook_id, r.status, r.attempts, r.response_status, r.claimed_until) == \
            (hook.id, "succeeded", 1, 200, None)
        assert r.delivered_at == clock()
    # done: a second run of the same message claims nothing and sends nothing
    assert [o.status for o in delivery.attempt_many(ids, now=clock(), client=http, allow_private=True)] == \
        [None] * 4
    assert len(receiver.received) == 4


def test_each_row_of_a_batch_gets_its_own_result(team, receiver, clock, http):
    down = Receiver(clock=clock, status=500).start()
    try:
        good = add_hook(team, receiver, "/good")
        bad = add_hook(team, down, "/bad")
        _, [g, b] = emit(team.id, clock=clock)
        outcomes = {o.delivery_id: o for o in delivery.attempt_many([g, b], now=clock(), client=http,
                                                                   allow_private=True)}
        assert outcomes[g].status == DeliveryStatus.SUCCEEDED
        assert (outcomes[b].status, outcomes[b].error, outcomes[b].response_status) == \
            (DeliveryStatus.PENDING, "HTTP 500", 500)
        assert outcomes[b].next_attempt_at > clock() + timedelta(seconds=26)
        rg, rb = row(g), row(b)
        assert (rg.status, rg.response_status, rg.error) == ("succeeded", 200, None)
        assert (rb.status, rb.response_status, rb.error, rb.delivered_at) == ("pending", 500, "HTTP 500", None)
        assert rb.next_attempt_at == outcomes[b].next_attempt_at and rb.attempts == 1
        assert db.session.get(Webhook, good.id).consecutive_failures == 0
        bad = db.session.get(Webhook, bad.id)
        assert (bad.consecutive_failures, bad.first_failure_at) == (1, clock())
        # the retry goes on from that row's own schedule
        clock.now = rb.next_attempt_at
        down.status = 200
        assert delivery.attempt(b, now=clock(), client=http, allow_private=True).status == "succeeded"
        assert row(b).attempts == 2 and db.session.get(Webhook, bad.id).consecutive_failures == 0
    finally:
        down.stop()


def test_a_success_in_a_batch_resets_its_webhooks_failure_run(team, receiver, clock, http):
    hook = add_hook(team, receiver)
    ids = [emit(team.id, clock=clock)[1][0] for _ in range(3)]
    receiver.fail_next = 1
    outcomes = delivery.attempt_many(ids, now=clock(), client=http, allow_private=True)
    assert sorted(str(o.status) for o in outcomes) == ["pending", "succeeded", "succeeded"]
    hook = db.session.get(Webhook, hook.id)
    assert (hook.consecutive_failures, hook.first_failure_at) == (0, None)


def test_a_row_whose_lease_changed_mid_batch_is_left_alone(team, receiver, clock, http):
    add_hook(team, receiver, "/a")
    add_hook(team, receiver, "/b")
    _, [a, b] = emit(team.id, clock=clock)
    claims = delivery.claim_many([a, b], now=clock())
    db.session.commit()
    assert [c.delivery_id for c in claims] == [a, b] and claims[0].lease == claims[1].lease
    assert delivery.claim_many([a, b], now=clock()) == []  # leased: nobody else takes them
    results = delivery.send_all(claims, now=clock(), client=http, allow_private=True)
    services.redeliver(b, {team.id}, now=clock())  # drops b's lease while the batch is in flight
    outcomes = delivery.record_results(list(zip(claims, results)), now=clock())
    db.session.commit()
    assert outcomes[0].status == DeliveryStatus.SUCCEEDED and not outcomes[0].stale
    assert outcomes[1].stale and outcomes[1].status is None
    assert row(a).status == "succeeded"
    assert (row(b).status, row(b).claimed_until, row(b).delivered_at) == ("pending", None, None)


def test_sends_reuse_the_connection(team, clock, http):
    """A short answer is read to its end, so the next POST to the same receiver goes
    over the same (keep-alive) connection."""
    peers = []

    class KeepAlive(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            peers.append(self.client_address)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), KeepAlive)
    server.daemon_threads = True
    # a short poll: shutdown() returns within it
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    try:
        services.create_webhook(team.id, url=f"http://127.0.0.1:{server.server_address[1]}/k",
                                allow_private=True)
        for _ in range(3):
            _, [did] = emit(team.id, clock=clock)
            assert delivery.attempt(did, now=clock(), client=http, allow_private=True).status == "succeeded"
    finally:
        server.shutdown()
        server.server_close()
    assert len(peers) == 3 and len(set(peers)) == 1


# ---------------------------------------------------------------------- SSRF, validation

def test_create_refuses_private_targets_unless_allowed(team):
    for url in ("http://127.0.0.1/x", "http://10.0.0.5/x", "http://169.254.169.254/latest",
                "http://[::1]/x", "http://224.0.0.1/x", "http://[::ffff:10.0.0.1]/x",
                "http://localhost:8080/x", "ftp://93.184.216.34/x", "http://user:pw@93.184.216.34/x",
                "not a url"):
        with pytest.raises(Unprocessable) as exc:
            services.create_webhook(team.id, url=url)
        assert list(exc.value.details) == ["url"], url
    hook = services.create_webhook(team.id, url="http://127.0.0.1:9/x", allow_private=True)
    assert hook.url == "http://127.0.0.1:9/x"
    public = services.create_webhook(team.id, url="https://93.184.216.34/hook")
    assert public.active and public.events == ["*"]
    with pytest.raises(Unprocessable) as exc:
        services.update_webhook(public.id, {team.id}, url="http://10.1.1.1/")
    assert "url" in exc.value.details
    with pytest.raises(Unprocessable) as exc:
        services.create_webhook(team.id, url="https://93.184.216.34/", events=["task.exploded"])
    assert "events" in exc.value.details
    with pytest.raises(Unprocessable):
        services.create_webhook(team.id, url="https://93.184.216.34/", events=[])


def test_send_time_check_catches_dns_rebinding(team, receiver, clock, http, monkeypatch):
    public = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", 80))]
    hook = services.create_webhook(team.id, url=f"http://hooks.example:{receiver.port}/hook",
                                   resolver=lambda *a, **k: public)
    _, [did] = emit(team.id, clock=clock)
    real = socket.getaddrinfo

    def rebound(host, *args, **kwargs):
        if host == "hooks.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", receiver.port))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebound)
    out = delivery.attempt(did, now=clock(), client=http, allow_private=False)
    assert out.status == DeliveryStatus.PENDING and out.error.startswith("refused target")
    assert "127.0.0.1" in out.error and receiver.received == []
    # allowed (local use): it connects to the checked address and names the host
    clock.now = out.next_attempt_at
    receiver.secrets["/hook"] = hook.secret
    assert delivery.attempt(did, now=clock(), client=http, allow_private=True).status == "succeeded"
    assert receiver.received[0].headers["Host"] == f"hooks.example:{receiver.port}"


# ---------------------------------------------------------------------- reads

def test_get_list_and_deliveries_pages(team, receiver, clock, http):
    hook = add_hook(team, receiver)
    other = TeamFactory()
    with pytest.raises(NotFound):
        services.get_webhook(hook.id, {other.id})
    assert services.list_webhooks(team.id) == [hook] and services.list_webhooks(other.id) == []
    ids = []
    for _ in range(3):
        ids += emit(team.id, clock=clock)[1]
        clock.advance(1)
    attempt(ids[0], clock, http)
    page = services.list_deliveries(hook.id, {team.id}, page=1, per_page=2)
    assert (page["total"], page["pages"]) == (3, 2)
    assert [i["id"] for i in page["items"]] == [ids[2], ids[1]]
    last = services.list_deliveries(hook.id, {team.id}, page=2, per_page=2)["items"]
    assert last[0]["id"] == ids[0] and last[0]["status"] == "succeeded"
    assert set(last[0]) == {"id", "event", "status", "attempts", "response_status", "error",
                            "duration_ms", "created_at", "next_attempt_at", "delivered_at"}
    with pytest.raises(NotFound):
        services.list_deliveries(hook.id, {other.id})
    services.delete_webhook(hook.id, {team.id})
    assert db.session.scalar(sa.select(sa.func.count()).select_from(WebhookDelivery)) == 0


def test_after_commit_hand_off(app, team, receiver, clock):
    got = []
    services.register_delivery_hooks(app, got.append)
    try:
        add_hook(team, receiver)
        _, ids = emit(team.id, clock=clock)
        assert got == [ids]
        event = Event(type="task.created", team_id=team.id, payload={"task": {}})
        db.session.add(event)
        services.deliveries_for_event(event)
        db.session.rollback()
        assert got == [ids]  # rolled back: nothing handed over
    finally:
        app.extensions.pop("tt_webhook_delivery_consumer", None)


def test_signing_and_verify():
    now = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)
    ts = int(now.timestamp())
    body = signing.body_bytes({"id": 1, "data": {"title": "Café ✓"}})
    assert body == '{"id":1,"data":{"title":"Café ✓"}}'.encode()
    sig = signing.sign("s3cret", ts, body)
    assert sig.startswith("sha256=") and len(sig) == 7 + 64
    assert signing.verify("s3cret", str(ts), body, sig, now=now)
    assert not signing.verify("s3cret", str(ts), body + b" ", sig, now=now)
    assert not signing.verify("other", str(ts), body, sig, now=now)
    assert not signing.verify("s3cret", str(ts), body, sig, now=now + timedelta(seconds=301))
    assert signing.verify("s3cret", str(ts), body, sig, now=now - timedelta(seconds=300))
    assert not signing.verify("s3cret", "soon", body, sig, now=now)
    assert not signing.verify("s3cret", str(ts), body, "sha256=é", now=now)
    # the README's few lines give the same answer
    import hashlib
    import hmac
    mac = hmac.new(b"s3cret", str(ts).encode() + b"." + body, hashlib.sha256).hexdigest()
    assert sig == "sha256=" + mac
    assert UserFactory  # factories import cleanly without an app


def test_the_scan_holds_what_it_enqueued(team, receiver, clock, http):
    """queue_due (the beat's scan): a due delivery is held under a token for the one
    message that carries it; later scans skip it until the hold runs out; only the
    holder (or anyone after the hold) can claim it."""
    add_hook(team, receiver)
    _, [did] = emit(team.id, clock=clock)
    assert delivery.queue_due(clock(), 10)[0] == []  # fresh: the after-commit hand-off's for 5 s
    clock.advance(6)
    ids, token = delivery.queue_due(clock(), 10)
    db.session.commit()
    assert ids == [did]
    assert delivery.queue_due(clock(), 10)[0] == []  # held
    assert delivery.claim(did, now=clock()) is None  # not without the token
    db.session.rollback()
    c = delivery.claim(did, now=clock(), queued=token)
    assert c is not None and c.attempt == 1
    db.session.rollback()  # as if that worker died before committing its claim
    clock.advance(delivery.QUEUE_HOLD_SECONDS + 1)
    ids2, token2 = delivery.queue_due(clock(), 10)
    db.session.commit()
    assert ids2 == [did] and token2 != token
    assert delivery.claim(did, now=clock(), queued=token) is None  # the old message's token is stale
    db.session.rollback()
    assert attempt(did, clock, http, queued=token2).status == DeliveryStatus.SUCCEEDED
    assert receiver.delivery_ids() == [did]
