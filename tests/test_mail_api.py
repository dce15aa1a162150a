"""The contract's v1.1 "Email" section through the HTTP API, end to end: the real
fan-out path (a task assigned through ``POST /api/tasks``) writes the mail rows in
its transaction, the mail scan (the workers' job, :func:`run_all_scans`) sends them to
a real SMTP server (aiosmtpd on 127.0.0.1), and the tests read what arrived: headers,
both parts, links and their tokens, which are then used against the API. Password
reset, address verification, notification settings, one-click unsubscribe, and the
security cases of issue 14. SQLite and PostgreSQL (the ``app`` fixture)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
import time_machine

from tasktracker.auth.models import AuthSession, User
from tasktracker.core.types import utcnow
from tasktracker.extensions import db
from tasktracker.jobs.scans import run_all_scans
from tasktracker.mail.models import EmailStatus, OutgoingEmail, UserToken
from tests.helpers import api_task, assert_error, assert_rate_limited, bearer, from_ip
from tests.mail_support import link_token, parts


@pytest.fixture
def mail_on(app, smtp, monkeypatch):
    """The app's mail pointed at the test's real SMTP server."""
    for key, value in {"MAIL_SERVER": "127.0.0.1", "MAIL_PORT": smtp.port, "MAIL_TIMEOUT_SECONDS": 5.0,
                       "MAIL_DEFAULT_SENDER": "TaskTracker <no-reply@tasktracker.test>",
                       "PUBLIC_BASE_URL": "https://tasks.example.com"}.items():
        monkeypatch.setitem(app.config, key, value)
    return smtp


def _rows() -> list[OutgoingEmail]:
    db.session.rollback()
    return list(db.session.scalars(sa.select(OutgoingEmail).order_by(OutgoingEmail.id)
                                   .execution_options(populate_existing=True)))


def _scan(app, later: float = 61.0) -> dict:
    """The workers' scan pass, ``later`` seconds from now (the 60 s batching window)."""
    return run_all_scans(app, now=utcnow() + timedelta(seconds=later))["mail"]


def _reset_token(client, smtp, address: str, count: int = 1) -> str:
    response = client.post("/api/auth/password-reset", json={"email": address})
    assert response.status_code == 202 and response.get_data() == b""
    message = smtp.wait_for(count)[count - 1]
    assert message["To"].addresses[0].addr_spec == address
    text, html = parts(message)
    return link_token(text, "/reset-password")


# --------------------------------------------------------------------------- notifications by mail


def test_assignment_is_mailed_once_through_the_fanout_after_its_window(app, client, auth, mail_on):
    alice, bob = auth.user("alice"), auth.user("bob")
    client.patch("/api/auth/profile", headers=bob.headers, json={"timezone": "America/New_York"})
    task = api_task(client, alice, title="Quarterly report", assignee_id=bob.id,
                    due_at="2026-12-03T16:30:00Z")
    rows = _rows()
    assert [(r.user_id, r.kind, r.status) for r in rows] == [(bob.id, "notification", EmailStatus.PENDING)]
    assert _scan(app, later=5)["mail_sent"] == 0          # within the 60 s window: not yet
    assert mail_on.handler.received == []
    assert _scan(app)["mail_sent"] == 1
    [message] = mail_on.wait_for(1)
    assert message["To"].addresses[0].addr_spec == "bob@example.com"
    assert "Quarterly report" in message["Subject"] or "Quarterly report" in parts(message)[0]
    text, html = parts(message)
    assert "Quarterly report" in text and "Quarterly report" in html
    assert "11:30" in text  # 16:30 UTC shown in the recipient's zone (New York, EST)
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "/api/email/unsubscribe?token=" in message["List-Unsubscribe"]
    assert _scan(app, later=3600)["mail_sent"] == 0       # never twice
    assert len(mail_on.handler.received) == 1
    assert task["assignee"]["id"] == bob.id


def test_a_type_turned_off_is_not_mailed_and_digest_settings_round_trip(app, client, auth, mail_on):
    alice, bob = auth.user("alice"), auth.user("bob")
    got = client.get("/api/auth/profile/notification-settings", headers=bob.headers)
    assert got.status_code == 200
    assert got.json["email"]["task_assigned"] is True and got.json["email"]["comment_added"] is False
    assert got.json["digest"] == "off" and got.json["digest_hour"] == 8
    # the scan runs tomorrow at 10:00 UTC (bob's zone), before his digest hour: none is due
    hour, scan_at = 22, (utcnow() + timedelta(days=1)).replace(hour=10, minute=0, second=0, microsecond=0)
    patched = client.patch("/api/auth/profile/notification-settings", headers=bob.headers,
                           json={"email": {"task_assigned": False}, "digest": "daily", "digest_hour": hour})
    assert patched.status_code == 200, patched.json
    assert patched.json["email"]["task_assigned"] is False and patched.json["digest_hour"] == hour
    assert client.get("/api/auth/profile/notification-settings", headers=bob.headers).json == patched.json
    api_task(client, alice, title="Quiet", assignee_id=bob.id)
    assert _rows() == []
    run_all_scans(app, now=scan_at)
    assert mail_on.handler.received == []


@pytest.mark.parametrize("body, field", [
    ({"email": {"no_such_type": True}}, "email"), ({"email": {"task_assigned": "yes"}}, "email"),
    ({"email": []}, "email"), ({"digest": "weekly"}, "digest"), ({"digest_hour": 24}, "digest_hour"),
    ({"digest_hour": -1}, "digest_hour"), ({"digest_hour": "8"}, "digest_hour"),
    ({"digest_hour": True}, "digest_hour"), ({"surprise": 1}, "surprise"),
])
def test_settings_bad_input_is_422_with_the_field(client, auth, body, field):
    bob = auth.user("bob")
    error = assert_error(client.patch("/api/auth/profile/notification-settings", headers=bob.headers, json=body),
                         422)
    assert field in error["details"], error
    assert client.get("/api/auth/profile/notification-settings", headers=bob.headers).json["digest"] == "off"


def test_one_click_unsubscribe_from_a_received_message(app, client, auth, mail_on):
    alice, bob = auth.user("alice"), auth.user("bob")
    api_task(client, alice, title="First", assignee_id=bob.id)
    _scan(app)
    [message] = mail_on.wait_for(1)
    url = message["List-Unsubscribe"].strip("<>")
    token = url.split("token=", 1)[1]
    # RFC 8058: the client POSTs List-Unsubscribe=One-Click as a form, without login
    response = client.post(f"/api/email/unsubscribe?token={token}", data="List-Unsubscribe=One-Click",
                           content_type="application/x-www-form-urlencoded")
    assert response.status_code == 204, response.get_data(as_text=True)
    assert client.post(f"/api/email/unsubscribe?token={token}").status_code == 204   # idempotent
    assert client.get("/api/auth/profile/notification-settings",
                      headers=bob.headers).json["email"]["task_assigned"] is False
    api_task(client, alice, title="Second", assignee_id=bob.id)
    _scan(app)
    assert len(mail_on.handler.received) == 1


@pytest.mark.parametrize("mangle", [
    lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),     # signature changed
    lambda t: "x" + t,                                       # payload changed
    lambda t: "",                                             # empty
    lambda t: "not-a-token",
])
def test_tampered_unsubscribe_token_is_422_and_changes_nothing(app, client, auth, mail_on, mangle):
    alice, bob = auth.user("alice"), auth.user("bob")
    api_task(client, alice, title="First", assignee_id=bob.id)
    _scan(app)
    token = mail_on.wait_for(1)[0]["List-Unsubscribe"].strip("<>").split("token=", 1)[1]
    response = client.post("/api/email/unsubscribe", query_string={"token": mangle(token)})
    assert_error(response, 422, None if mangle(token) == "" else "invalid_unsubscribe_token")
    assert client.get("/api/auth/profile/notification-settings",
                      headers=bob.headers).json["email"]["task_assigned"] is True


def test_unsubscribe_token_signed_with_another_key_is_refused(app, client, auth):
    from tasktracker.mail.unsubscribe import make_token

    bob = auth.user("bob")
    forged = make_token("some-other-secret", bob.id, ["*"])
    assert_error(client.post("/api/email/unsubscribe", query_string={"token": forged}), 422,
                 "invalid_unsubscribe_token")
    assert_error(client.post("/api/email/unsubscribe"), 422)


# --------------------------------------------------------------------------- password reset


def test_password_reset_end_to_end_revokes_every_session(app, client, auth, mail_on):
    bob = auth.user("bob")
    second = auth.login("bob")
    token = _reset_token(client, mail_on, "bob@example.com")
    message = mail_on.handler.messages[0]
    assert message["List-Unsubscribe"] and message["Auto-Submitted"]
    assert db.session.scalar(sa.select(UserToken.token_hash)) != token   # stored hashed
    response = client.post("/api/auth/password-reset/confirm", json={"token": token, "password": "brand-new-pass-1"})
    assert response.status_code == 204, response.get_data(as_text=True)
    for session in (bob, second):
        assert_error(client.get("/api/auth/profile", headers=session.headers), 401)
        assert_error(client.post("/api/auth/refresh", headers=bearer(session.refresh_token)), 401)
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AuthSession)
                             .where(AuthSession.revoked_at.is_(None))) == 0
    assert client.post("/api/auth/login", json={"username": "bob", "password": "correct-horse-9"}).status_code == 401
    assert client.post("/api/auth/login", json={"username": "bob", "password": "brand-new-pass-1"}).status_code == 200
    # the raw token is gone from the outbox row once sent
    [row] = _rows()
    assert row.status == EmailStatus.SENT and token not in (row.text_body or "") + (row.html_body or "")


def test_reset_token_used_twice_is_422(client, auth, mail_on):
    auth.user("bob")
    token = _reset_token(client, mail_on, "bob@example.com")
    body = {"token": token, "password": "brand-new-pass-1"}
    assert client.post("/api/auth/password-reset/confirm", json=body).status_code == 204
    assert_error(client.post("/api/auth/password-reset/confirm", json={**body, "password": "another-pass-2"}),
                 422, "invalid_reset_token")
    assert client.post("/api/auth/login", json={"username": "bob", "password": "brand-new-pass-1"}).status_code == 200


def test_reset_token_expires_after_one_hour(client, auth, mail_on):
    auth.user("bob")
    token = _reset_token(client, mail_on, "bob@example.com")
    with time_machine.travel(utcnow() + timedelta(hours=1, seconds=1), tick=False):
        assert_error(client.post("/api/auth/password-reset/confirm",
                                 json={"token": token, "password": "brand-new-pass-1"}), 422, "invalid_reset_token")
    assert client.post("/api/auth/login", json={"username": "bob", "password": "correct-horse-9"}).status_code == 200


def test_a_newer_reset_voids_the_older_link_once_used_and_unknown_tokens_fail(client, auth, mail_on):
    auth.user("bob")
    first = _reset_token(client, mail_on, "bob@example.com", 1)
    second = _reset_token(client, mail_on, "bob@example.com", 2)
    assert first != second
    assert client.post("/api/auth/password-reset/confirm",
                       json={"token": second, "password": "brand-new-pass-1"}).status_code == 204
    for token in (first, "A" * 43, first[:-1]):
        assert_error(client.post("/api/auth/password-reset/confirm",
                                 json={"token": token, "password": "brand-new-pass-2"}), 422, "invalid_reset_token")


def test_unknown_address_gets_the_same_answer_and_no_mail(client, auth, mail_on):
    auth.user("bob")
    known = client.post("/api/auth/password-reset", json={"email": "bob@example.com"})
    unknown = client.post("/api/auth/password-reset", json={"email": "nobody@example.com"})
    assert (known.status_code, known.get_data(), sorted(known.headers.keys())) == \
        (unknown.status_code, unknown.get_data(), sorted(unknown.headers.keys()))
    assert known.status_code == 202
    mail_on.wait_for(1)
    assert [m["To"].addresses[0].addr_spec for m in mail_on.handler.messages] == ["bob@example.com"]
    assert [r.to_address for r in _rows()] == ["bob@example.com"]


def test_reset_request_does_no_database_work_in_the_request(app, client, auth, monkeypatch):
    """Timing tells nothing: the request only queues a job (no statement at all)."""
    from tasktracker.mail import dispatch

    queued = []
    monkeypatch.setitem(app.extensions, dispatch._KEY, lambda name, args: queued.append((name, args)))
    statements = []
    listener = lambda *a, **k: statements.append(a[2])  # noqa: E731
    sa.event.listen(db.engine, "before_cursor_execute", listener)
    try:
        for address in ("bob@example.com", "nobody@example.com"):
            assert client.post("/api/auth/password-reset", json={"email": address}).status_code == 202
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", listener)
    assert statements == []
    assert [(n, a[0]) for n, a in queued] == [("password_reset", "bob@example.com"),
                                              ("password_reset", "nobody@example.com")]
    assert queued[0][1][1] != queued[1][1][1]   # a fresh request id each


def test_reset_for_an_inactive_account_sends_nothing(client, auth, mail_on):
    bob = auth.user("bob")
    db.session.get(User, bob.id).active = False
    db.session.commit()
    assert client.post("/api/auth/password-reset", json={"email": "BOB@example.com"}).status_code == 202
    assert _rows() == []


@pytest.mark.parametrize("body", [{}, {"email": ""}, {"email": 5}, {"email": "x" * 300}, {"email": "a\u0000b"}])
def test_reset_request_bad_input_is_422(client, body):
    assert_error(client.post("/api/auth/password-reset", json=body), 422)


@pytest.mark.parametrize("body", [{}, {"token": "t"}, {"token": "t", "password": "short"},
                                  {"token": "", "password": "long-enough-1"}, {"token": 5, "password": "long-enough-1"},
                                  {"token": "x" * 500, "password": "long-enough-1"}])
def test_reset_confirm_bad_input_is_422(client, body):
    assert_error(client.post("/api/auth/password-reset/confirm", json=body), 422)


def test_reset_request_is_rate_limited_like_login(app, rate_limited, monkeypatch):
    """Per address (``LOGIN_RATE_LIMIT_ACCOUNT``, any case) and per client address
    (``LOGIN_RATE_LIMIT_IP``), as login; 429 with ``Retry-After``."""
    monkeypatch.setitem(app.config, "JOBS_INLINE", True)
    client = rate_limited(MAIL_FILE_DIR=app.config["MAIL_FILE_DIR"])
    for i in range(3):
        assert client.post("/api/auth/password-reset", json={"email": "Limit@example.com"},
                           **from_ip(f"10.0.1.{i}")).status_code == 202
    assert_rate_limited(client.post("/api/auth/password-reset", json={"email": "limit@EXAMPLE.com"},
                                    **from_ip("10.0.1.9")))
    # a known address is limited the same way as an unknown one; another is not limited
    assert client.post("/api/auth/password-reset", json={"email": "other@example.com"},
                       **from_ip("10.0.2.1")).status_code == 202
    for i in range(6):  # LOGIN_RATE_LIMIT_IP: 6 per minute
        client.post("/api/auth/password-reset", json={"email": f"x{i}@example.com"}, **from_ip("10.0.3.1"))
    assert_rate_limited(client.post("/api/auth/password-reset", json={"email": "y@example.com"},
                                    **from_ip("10.0.3.1")))


def test_a_reset_closes_every_socket_of_the_user_within_1s(app, client, auth, mail_on, sio):
    from tests.test_realtime_sessions import _closed_within

    bob = auth.user("bob")
    carol = auth.user("carol")
    connections = [sio(bob.access_token), sio(auth.login("bob").access_token)]
    bystander = sio(carol.access_token)
    assert all(c.is_connected() for c in connections)
    token = _reset_token(client, mail_on, "bob@example.com")
    assert client.post("/api/auth/password-reset/confirm",
                       json={"token": token, "password": "brand-new-pass-1"}).status_code == 204
    for conn in connections:
        _closed_within(conn, 1.0)
    assert bystander.is_connected()


# --------------------------------------------------------------------------- email verification


def test_verify_email_end_to_end_and_email_change_resets_it(client, auth, mail_on):
    bob = auth.user("bob")
    assert client.post("/api/auth/verify-email/request", headers=bob.headers).status_code == 202
    [message] = mail_on.wait_for(1)
    assert message["To"].addresses[0].addr_spec == "bob@example.com"
    token = link_token(parts(message)[0], "/verify-email")
    assert link_token(parts(message)[1], "/verify-email") == token
    assert client.post("/api/auth/verify-email", json={"token": token}).status_code == 204   # no login needed
    db.session.rollback()
    assert db.session.get(User, bob.id).email_verified is True
    assert_error(client.post("/api/auth/verify-email", json={"token": token}), 422, "invalid_verification_token")
    changed = client.patch("/api/auth/profile", headers=bob.headers, json={"email": "robert@example.com"})
    assert changed.status_code == 200
    db.session.rollback()
    assert db.session.get(User, bob.id).email_verified is False


def test_verification_link_for_an_old_address_or_someone_else_is_refused(client, auth, mail_on):
    bob, carol = auth.user("bob"), auth.user("carol")
    client.post("/api/auth/verify-email/request", headers=bob.headers)
    token = link_token(parts(mail_on.wait_for(1)[0])[0], "/verify-email")
    # the token belongs to bob: carol, logged in, cannot use it
    assert_error(client.post("/api/auth/verify-email", headers=carol.headers, json={"token": token}), 422,
                 "invalid_verification_token")
    # bob changes his address: the link for the old one is void
    client.patch("/api/auth/profile", headers=bob.headers, json={"email": "bob2@example.com"})
    assert_error(client.post("/api/auth/verify-email", headers=bob.headers, json={"token": token}), 422,
                 "invalid_verification_token")
    db.session.rollback()
    assert db.session.get(User, bob.id).email_verified is False
    assert db.session.get(User, carol.id).email_verified is False


def test_verify_email_needs_a_valid_token_when_one_is_sent(client, auth):
    assert_error(client.post("/api/auth/verify-email/request"), 401)
    assert_error(client.post("/api/auth/verify-email", headers=bearer("nope"), json={"token": "x"}), 401)
    assert_error(client.post("/api/auth/verify-email", json={}), 422)


def test_a_reset_token_does_not_verify_and_a_verification_token_does_not_reset(client, auth, mail_on):
    bob = auth.user("bob")
    reset = _reset_token(client, mail_on, "bob@example.com", 1)
    client.post("/api/auth/verify-email/request", headers=bob.headers)
    verify = link_token(parts(mail_on.wait_for(2)[1])[0], "/verify-email")
    assert_error(client.post("/api/auth/verify-email", json={"token": reset}), 422, "invalid_verification_token")
    assert_error(client.post("/api/auth/password-reset/confirm", json={"token": verify, "password": "new-pass-123"}),
                 422, "invalid_reset_token")


# --------------------------------------------------------------------------- invitations


@pytest.mark.parametrize("required", [False, True])
def test_invitations_require_a_verified_address_when_configured(app, client, auth, mail_on, monkeypatch, required):
    monkeypatch.setitem(app.config, "INVITATIONS_REQUIRE_VERIFIED_EMAIL", required)
    owner, bob = auth.user("owner"), auth.user("bob")
    team = client.post("/api/teams", headers=owner.headers, json={"name": "Crew"}).json
    invitation = client.post(f"/api/teams/{team['id']}/invitations", headers=owner.headers,
                             json={"email": "bob@example.com"}).json
    url = f"/api/invitations/{invitation['id']}/accept"
    if required:
        assert_error(client.post(url, headers=bob.headers), 409, "email_unverified")
        client.post("/api/auth/verify-email/request", headers=bob.headers)
        token = link_token(parts(mail_on.wait_for(1)[0])[0], "/verify-email")
        assert client.post("/api/auth/verify-email", headers=bob.headers, json={"token": token}).status_code == 204
    response = client.post(url, headers=bob.headers)
    assert response.status_code == 200, response.get_data(as_text=True)


# --------------------------------------------------------------------------- faults and the digest, through the scan


def test_smtp_down_then_up_through_the_scan_the_message_arrives_once(app, client, auth, mail_on):
    alice, bob = auth.user("alice"), auth.user("bob")
    api_task(client, alice, title="While the server is down", assignee_id=bob.id)
    mail_on.stop()
    assert _scan(app)["mail_retry"] == 1
    [row] = _rows()
    assert row.status == EmailStatus.PENDING and row.attempts == 1 and row.error
    mail_on.start()
    assert _scan(app, later=61 + 5)["mail_sent"] == 0           # not before its backoff (30 s)
    assert _scan(app, later=61 + 31)["mail_sent"] == 1
    assert _scan(app, later=61 + 3600)["mail_sent"] == 0
    assert len(mail_on.wait_for(1)) == 1


def test_451_then_250_arrives_once_and_550_fails_without_retry(app, client, auth, mail_on):
    alice, bob, carol = auth.user("alice"), auth.user("bob"), auth.user("carol")
    mail_on.handler.replies = ["451 4.3.0 try again later"]
    api_task(client, alice, title="Greylisted", assignee_id=bob.id)
    assert _scan(app)["mail_retry"] == 1
    assert _scan(app, later=61 + 31)["mail_sent"] == 1
    assert len(mail_on.wait_for(1)) == 1
    mail_on.handler.replies = ["550 5.1.1 no such mailbox"]
    api_task(client, alice, title="Bounced", assignee_id=carol.id)
    assert _scan(app)["mail_failed"] == 1
    failed = [r for r in _rows() if r.user_id == carol.id]
    assert [r.status for r in failed] == [EmailStatus.FAILED] and "550" in failed[0].error
    assert _scan(app, later=7200)["mail_sent"] == 0
    assert mail_on.handler.answered == ["451 4.3.0 try again later", "250 OK", "550 5.1.1 no such mailbox"]


def test_daily_digest_at_digest_hour_in_the_users_zone_once(app, client, auth, mail_on):
    from datetime import datetime, timezone

    with time_machine.travel(datetime(2026, 12, 2, 6, 0, tzinfo=timezone.utc), tick=False) as clock:
        alice, bob = auth.user("alice"), auth.user("bob")
        client.patch("/api/auth/profile", headers=bob.headers, json={"timezone": "Europe/Paris"})
        client.patch("/api/auth/profile/notification-settings", headers=bob.headers,
                     json={"digest": "daily", "digest_hour": 8, "email": {"task_assigned": False}})
        api_task(client, alice, title="Due today", assignee_id=bob.id, due_at="2026-12-02T15:00:00Z")

        def digests():
            return [m for m in mail_on.handler.messages if "digest" in m["Subject"].lower()]

        clock.move_to(datetime(2026, 12, 2, 6, 59, tzinfo=timezone.utc))     # 07:59 in Paris
        run_all_scans(app)
        assert digests() == []
        clock.move_to(datetime(2026, 12, 2, 7, 0, 30, tzinfo=timezone.utc))  # 08:00 in Paris
        run_all_scans(app)
        [digest] = mail_on.wait_for(1) and digests()
        text, html = parts(digest)
        assert "Due today" in text and "Due today" in html and "16:00" in text   # 15:00 UTC in Paris
        clock.move_to(datetime(2026, 12, 2, 7, 40, tzinfo=timezone.utc))
        run_all_scans(app)
        assert len(digests()) == 1                                              # never two for one day
