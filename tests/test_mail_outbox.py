"""The mail outbox against a real SMTP server (aiosmtpd on 127.0.0.1): what arrives
(headers, both parts, links), coalescing, and the faults: server down then up, 451
then 250, 550, a crash between SMTP's 250 and the mark, a worker SIGKILLed
mid-batch, two workers at once. SQLite and PostgreSQL (the ``app`` fixture)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import traceback
from datetime import datetime, timedelta, timezone

import pytest
from flask import current_app
import sqlalchemy as sa

from tasktracker.extensions import db
from tasktracker.mail import outbox, settings
from tasktracker.mail.models import EmailStatus, OutgoingEmail, OutgoingEmailNotification
from tasktracker.mail.unsubscribe import read_token
from tests.factories import TaskFactory, UserFactory
from tests.helpers import recorded_statements
from tests.mail_support import SMTPServer, add_notification, free_port, link_token, mail_config, parts

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc)


def _rows() -> list[OutgoingEmail]:
    db.session.rollback()
    return list(db.session.scalars(sa.select(OutgoingEmail).order_by(OutgoingEmail.id)
                                   .execution_options(populate_existing=True)))


def _assigned(user, task, at, text=None):
    n = add_notification(user, "task_assigned", text or f'bob assigned you "{task.title}"', created_at=at, task=task)
    ids = outbox.enqueue_for_notifications([n], at, config=mail_config(current_app, None))
    db.session.commit()
    return n, ids


@pytest.fixture
def alice():
    return UserFactory(username="alice", email="alice@example.com", full_name="Alice Liddell",
                       timezone="Europe/Paris")


# --------------------------------------------------------------------------- content


def test_notification_mail_headers_parts_and_unsubscribe_link(app, smtp, alice):
    task = TaskFactory(title="Ship <v2> & celebrate", owner=alice,
                       due_at=datetime(2026, 12, 3, 16, 30, tzinfo=timezone.utc))
    n, ids = _assigned(alice, task, T0)
    config = mail_config(app, smtp.port)
    # not before the 60 s batching window
    assert outbox.deliver_due(T0 + timedelta(seconds=59), config=config).sent == 0
    run = outbox.deliver_due(T0 + timedelta(seconds=60), config=config)
    assert run.sent == 1
    [message] = smtp.wait_for(1)
    mail_from, rcpts, _ = smtp.handler.received[0]
    assert mail_from == "no-reply@tasktracker.test" and rcpts == ["alice@example.com"]
    assert message["From"] == "TaskTracker <no-reply@tasktracker.test>"
    assert message["To"].addresses[0].addr_spec == "alice@example.com"
    assert message["Subject"] == 'bob assigned you "Ship <v2> & celebrate"'
    assert message["Message-ID"] == f"<tasktracker.outbox.{ids[0]}@tasktracker.test>"
    assert message["Date"].datetime == T0 + timedelta(seconds=60)
    assert message.get_content_type() == "multipart/alternative"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    header = str(message["List-Unsubscribe"])
    assert header.startswith("<https://tasks.example.com/api/email/unsubscribe?token=") and header.endswith(">")
    token = link_token(header.strip("<>"), "/api/email/unsubscribe")
    assert read_token(app.config["SECRET_KEY"], token) == (alice.id, ["task_assigned"])
    text, html = parts(message)
    # the task is named; times in the recipient's zone (Paris, CET in December)
    assert 'task "Ship <v2> & celebrate"' in text and "Tue 1 Dec 2026, 09:00 CET" in text
    assert "Due: Thu 3 Dec 2026, 17:30 CET" in text
    assert "Ship &lt;v2&gt; &amp; celebrate" in html and "<v2>" not in html  # autoescaped
    assert "Thu 3 Dec 2026, 17:30 CET" in html
    [row] = _rows()
    assert row.status == EmailStatus.SENT and row.sent_at == T0 + timedelta(seconds=60)
    assert row.attempts == 1 and row.claimed_until is None and row.notification_ids == [n.id]
    # once sent, nothing more to do
    assert outbox.deliver_due(T0 + timedelta(hours=1), config=config).sent == 0
    assert len(smtp.handler.received) == 1


def test_notifications_within_60s_go_out_in_one_message(app, smtp, alice):
    config = mail_config(app, smtp.port)
    t1, t2 = TaskFactory(title="Alpha", owner=alice), TaskFactory(title="Beta", owner=alice)
    n1, ids1 = _assigned(alice, t1, T0)
    n2, ids2 = _assigned(alice, t2, T0 + timedelta(seconds=30))
    n3 = add_notification(alice, "deadline_reminder", 'Reminder: "Alpha" is due soon',
                          created_at=T0 + timedelta(seconds=45), task=t1)
    ids3 = outbox.enqueue_for_notifications([n3], T0, config=config)
    db.session.commit()
    assert ids1 == ids2 == ids3  # joined the open batch
    assert outbox.deliver_due(T0 + timedelta(seconds=61), config=config).sent == 1
    [message] = smtp.wait_for(1)
    assert message["Subject"] == "3 new notifications"
    text, _ = parts(message)
    assert '"Alpha"' in text and '"Beta"' in text and "Reminder" in text
    token = link_token(str(message["List-Unsubscribe"]).strip("<>"), "/api/email/unsubscribe")
    assert read_token(app.config["SECRET_KEY"], token)[1] == ["deadline_reminder", "task_assigned"]
    # after the batch was claimed, a new notification starts a new message
    n4, ids4 = _assigned(alice, t2, T0 + timedelta(seconds=62))
    assert ids4 != ids1
    # a redelivered fan-out (the same notification again) adds nothing anywhere
    assert outbox.enqueue_for_notifications([n4, n1], T0, config=config) == []
    db.session.commit()
    links = db.session.scalars(sa.select(OutgoingEmailNotification.notification_id)).all()
    assert sorted(links) == sorted([n1.id, n2.id, n3.id, n4.id])


def test_settings_decide_who_gets_mail(app, alice):
    config = mail_config(app, None)
    bob = UserFactory(username="bob")
    carol = UserFactory(username="carol", active=False)
    task = TaskFactory(owner=bob)
    # comment_added is off by default; task_assigned on; bob turned task_assigned off
    settings.update_settings(bob.id, {"email": {"task_assigned": False, "comment_added": True}})
    db.session.commit()
    notes = [add_notification(u, t, "x", created_at=T0, task=task)
             for u, t in [(alice, "comment_added"), (alice, "task_assigned"), (bob, "task_assigned"),
                          (bob, "comment_added"), (carol, "task_assigned")]]
    outbox.enqueue_for_notifications(notes, T0, config=config)
    db.session.commit()
    rows = _rows()
    assert {r.user_id: r.notification_ids for r in rows} == {alice.id: [notes[1].id], bob.id: [notes[3].id]}


def test_concurrent_fan_outs_to_the_same_recipients_wait_instead_of_deadlocking(app):
    """Two transactions adding notifications of the same two users to their open batches
    at once, each in its own order of notification ids: the batch upserts go in user
    order, so one waits for the other. In id order they deadlocked (PostgreSQL aborts
    one of two transactions that wait on each other, and the fan-out left its events to
    the outbox scan: the reminders' concurrent-dispatch test lost 4 of 240 notifications
    in 4 runs of 8). Here one transaction writes ann's batch row and stays open while
    the other starts with ben's, then writes ben's."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("row locks on the open-batch index: SQLite serialises writers")
    from tests.procs import wait_for

    config = mail_config(app, None)
    ann, ben = UserFactory(username="ann"), UserFactory(username="ben")
    task = TaskFactory(owner=ann)
    other = [add_notification(u, "task_assigned", "other", created_at=T0, task=task) for u in (ben, ann)]
    mine = [add_notification(u, "task_assigned", "mine", created_at=T0, task=task) for u in (ann, ben)]
    errors: list[BaseException] = []
    # plain rows for the thread: ORM objects of this thread's session would load through it
    other_rows = [{"id": n.id, "user_id": n.user_id, "type": n.type, "created_at": n.created_at} for n in other]

    def other_fan_out():
        with app.app_context():
            try:
                outbox.enqueue_for_notifications(other_rows, T0, config=config)
                db.session.commit()
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                errors.append(exc)
                db.session.rollback()
            finally:
                db.session.remove()

    outbox.enqueue_for_notifications(mine[:1], T0, config=config)  # ann's batch row, uncommitted
    thread = threading.Thread(target=other_fan_out)
    thread.start()
    with db.engine.connect() as watcher:
        def waiting() -> bool:
            return watcher.execute(sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock'")).scalar() > 0

        wait_for(lambda: not thread.is_alive() or waiting(), timeout=20)
        stack = "".join(traceback.format_stack(sys._current_frames().get(thread.ident))) if thread.is_alive() else ""
        assert waiting(), (f"the other transaction never waited (finished: {not thread.is_alive()}, {errors}; "
                           f"pool: {db.engine.pool.status()}):\n{stack}")
    try:
        outbox.enqueue_for_notifications(mine[1:], T0, config=config)
        db.session.commit()
    except BaseException as exc:  # noqa: BLE001
        errors.append(exc)
        db.session.rollback()
    thread.join(15)
    assert not thread.is_alive() and not errors, errors
    rows = _rows()
    assert {r.user_id: sorted(r.notification_ids) for r in rows} == {
        ann.id: sorted([other[1].id, mine[0].id]), ben.id: sorted([other[0].id, mine[1].id])}


def test_password_reset_mail_link_and_token(app, smtp, alice):
    from tasktracker.mail.models import TokenPurpose
    from tasktracker.mail.tokens import consume_token

    config = mail_config(app, smtp.port)
    assert outbox.enqueue_password_reset("nobody@example.com", "req-0", T0) is None
    email_id = outbox.enqueue_password_reset("ALICE@example.com", "req-1", T0)
    assert outbox.enqueue_password_reset("alice@example.com", "req-1", T0) is None  # job redelivered
    db.session.commit()
    assert outbox.deliver_now([email_id], T0, config=config).sent == 1
    [message] = smtp.wait_for(1)
    assert message["Subject"] == "Reset your TaskTracker password"
    text, html = parts(message)
    token = link_token(text, "/reset-password")
    assert link_token(html, "/reset-password") == token
    assert "Tue 1 Dec 2026, 10:00 CET" in text  # expires in 1 h, Paris time
    [row] = _rows()
    assert row.status == EmailStatus.SENT and row.text_body is None and row.html_body is None
    assert token not in str(db.session.execute(sa.text("SELECT * FROM user_tokens")).all())  # hashed
    assert consume_token(token, TokenPurpose.PASSWORD_RESET, T0 + timedelta(minutes=5)).user_id == alice.id


# --------------------------------------------------------------------------- faults


def test_server_down_then_up_every_message_arrives_once(app, alice):
    port = free_port()
    config = mail_config(app, port)
    users = [alice] + [UserFactory() for _ in range(4)]
    for u in users:
        _assigned(u, TaskFactory(owner=u), T0)
    due = T0 + timedelta(seconds=60)
    run = outbox.deliver_due(due, config=config)  # connection refused
    assert run.sent == 0 and run.retry == 1 and run.released == 4
    rows = _rows()
    assert all(r.status == EmailStatus.PENDING and r.claimed_until is None for r in rows)
    assert "ConnectionRefusedError" in rows[0].error
    assert [r.attempts for r in rows] == [1, 0, 0, 0, 0]
    server = SMTPServer(port).start()
    try:
        # not before the backoff (30 s)
        assert outbox.deliver_due(due + timedelta(seconds=29), config=config).sent == 0
        assert outbox.deliver_due(due + timedelta(seconds=30), config=config).sent == 5
        assert outbox.deliver_due(due + timedelta(hours=2), config=config).sent == 0
        messages = server.wait_for(5)
        assert sorted(m["To"].addresses[0].addr_spec for m in messages) == sorted(u.email for u in users)
        assert len({m["Message-ID"] for m in messages}) == 5
        assert all(r.status == EmailStatus.SENT for r in _rows())
    finally:
        server.stop()


def test_451_then_250_arrives_once(app, smtp, alice):
    config = mail_config(app, smtp.port)
    _assigned(alice, TaskFactory(owner=alice), T0)
    smtp.handler.replies = ["451 4.3.0 Try again later", "451 4.3.0 Try again later"]
    due = T0 + timedelta(seconds=60)
    assert outbox.deliver_due(due, config=config).retry == 1
    [row] = _rows()
    assert row.error.startswith("SMTPDataError: 451") and row.next_attempt_at == due + timedelta(seconds=30)
    assert outbox.deliver_due(due + timedelta(seconds=30), config=config).retry == 1
    [row] = _rows()
    assert row.next_attempt_at == due + timedelta(seconds=30 + 60)  # backoff doubles
    assert outbox.deliver_due(due + timedelta(seconds=90), config=config).sent == 1
    assert outbox.deliver_due(due + timedelta(hours=3), config=config).sent == 0
    assert smtp.handler.answered == ["451 4.3.0 Try again later"] * 2 + ["250 OK"]
    [message] = smtp.wait_for(1)
    [row] = _rows()
    assert row.status == EmailStatus.SENT and row.attempts == 3 and row.error is None
    assert message["Message-ID"] == row.message_id


def test_550_marks_failed_and_is_not_retried(app, smtp, alice, caplog):
    config = mail_config(app, smtp.port)
    _assigned(alice, TaskFactory(owner=alice), T0)
    smtp.handler.replies = ["550 5.1.1 No such user"]
    with caplog.at_level("WARNING", logger="tasktracker.mail.outbox"):
        assert outbox.deliver_due(T0 + timedelta(seconds=60), config=config).failed == 1
    [row] = _rows()
    assert row.status == EmailStatus.FAILED and "550 5.1.1 No such user" in row.error
    assert any("rejected for good" in r.message and "550" in r.message for r in caplog.records)
    assert outbox.deliver_due(T0 + timedelta(days=2), config=config).results == []
    assert smtp.handler.answered == ["550 5.1.1 No such user"] and smtp.handler.received == []


def test_temporary_failures_give_up_after_max_attempts(app, smtp, alice):
    config = mail_config(app, smtp.port, MAIL_MAX_ATTEMPTS=2)
    _assigned(alice, TaskFactory(owner=alice), T0)
    smtp.handler.replies = ["451 busy"] * 5
    assert outbox.deliver_due(T0 + timedelta(seconds=60), config=config).retry == 1
    assert outbox.deliver_due(T0 + timedelta(hours=1), config=config).failed == 1
    [row] = _rows()
    assert row.status == EmailStatus.FAILED and row.error.startswith("gave up after 2 attempts")


def test_crash_after_250_before_mark_resends_same_message_after_lease(app, smtp, alice, monkeypatch):
    """The one window the design leaves: the process dies between the server's 250 and
    the ``sent`` UPDATE. The lease expires, the row is sent again with the same
    Message-ID (and the same bytes): the receiver sees one duplicate it can drop."""
    config = mail_config(app, smtp.port)
    _assigned(alice, TaskFactory(owner=alice), T0)
    due = T0 + timedelta(seconds=60)
    real_finish = outbox._finish

    def die_before_mark(email_id, values, *connection):
        if values.get("status") == "sent":
            raise SystemExit("killed between SMTP 250 and the mark")
        return real_finish(email_id, values, *connection)

    monkeypatch.setattr(outbox, "_finish", die_before_mark)
    with pytest.raises(SystemExit):
        outbox.deliver_due(due, config=config)
    monkeypatch.setattr(outbox, "_finish", real_finish)
    db.session.rollback()
    # while the lease holds, nobody else takes it
    assert outbox.deliver_due(due + timedelta(seconds=299), config=config).results == []
    assert outbox.deliver_due(due + timedelta(seconds=301), config=config).sent == 1
    first, second = smtp.wait_for(2)
    assert first["Message-ID"] == second["Message-ID"]
    assert smtp.handler.received[0][2] == smtp.handler.received[1][2]  # byte-identical
    assert _rows()[0].attempts == 2


def test_a_batch_is_rendered_from_a_few_selects_whatever_its_size(app, smtp):
    """A claimed batch's rows, users, notifications and tasks are read with one SELECT
    per table (compose.Sources), not per message; then each message costs its one
    committed mark (an UPDATE), sent before the next message goes out."""
    config = mail_config(app, smtp.port)
    due = T0 + timedelta(seconds=60)
    counts = []
    for n in (3, 12):
        for u in [UserFactory() for _ in range(n)]:
            _assigned(u, TaskFactory(owner=u, title=f"Task of {u.username}"), T0)
        with recorded_statements(db.engine) as statements:
            assert outbox.deliver_due(due, config=config).sent == n
        verbs = [s.lstrip().split(None, 1)[0].upper() for s in statements]
        counts.append((verbs.count("SELECT"), verbs.count("UPDATE")))
    (small_selects, small_updates), (big_selects, big_updates) = counts
    assert big_selects == small_selects <= 6, counts
    assert big_updates - small_updates == 12 - 3, counts
    messages = smtp.wait_for(15)
    assert len({m["Message-ID"] for m in messages}) == 15
    assert all(f'"Task of {m["To"].addresses[0].addr_spec.split("@")[0]}' in parts(m)[0]
               for m in messages if m["To"].addresses[0].addr_spec.startswith("user"))


def test_a_render_failure_is_retried_and_the_rest_of_the_batch_goes_out(app, smtp, monkeypatch):
    from tasktracker.mail import compose

    config = mail_config(app, smtp.port)
    users = [UserFactory() for _ in range(3)]
    for u in users:
        _assigned(u, TaskFactory(owner=u), T0)
    real_compose = compose.compose

    def broken_for_the_second(email, *args, **kwargs):
        if email.user_id == users[1].id:
            raise RuntimeError("template blew up")
        return real_compose(email, *args, **kwargs)

    monkeypatch.setattr(compose, "compose", broken_for_the_second)
    run = outbox.deliver_due(T0 + timedelta(seconds=60), config=config)
    assert (run.sent, run.retry, run.failed) == (2, 1, 0)
    rows = {r.user_id: r for r in _rows()}
    broken = rows[users[1].id]
    assert broken.status == EmailStatus.PENDING and broken.message_id is None
    assert broken.error.startswith("render: template blew up")
    assert {r.status for uid, r in rows.items() if uid != users[1].id} == {EmailStatus.SENT}
    monkeypatch.setattr(compose, "compose", real_compose)
    assert outbox.deliver_due(T0 + timedelta(hours=1), config=config).sent == 1  # after the backoff
    assert len(smtp.wait_for(3)) == 3


def test_a_message_that_cannot_be_built_fails_without_retry_and_the_batch_goes_on(app, smtp):
    config = mail_config(app, smtp.port)
    bad = UserFactory(email="not an address@@example.com", full_name="Bad Address")
    good = UserFactory(full_name="Good Address")
    for u in (bad, good):
        _assigned(u, TaskFactory(owner=u), T0)
    run = outbox.deliver_due(T0 + timedelta(seconds=60), config=config)
    assert (run.sent, run.retry, run.failed) == (1, 0, 1)
    [message] = smtp.wait_for(1)
    assert message["To"].addresses[0].addr_spec == good.email
    rows = {r.user_id: r for r in _rows()}
    assert rows[bad.id].status == EmailStatus.FAILED
    assert rows[bad.id].error.startswith("cannot build the message")
    assert outbox.deliver_due(T0 + timedelta(days=1), config=config).results == []


def test_two_workers_at_once_send_each_message_once(app, smtp):
    config = mail_config(app, smtp.port)
    users = [UserFactory() for _ in range(30)]
    for u in users:
        _assigned(u, TaskFactory(owner=u), T0)
    smtp.handler.delay = 0.005
    errors = []

    def worker():
        try:
            with app.app_context():
                outbox.deliver_due(T0 + timedelta(seconds=60), batch=5, config=config)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    messages = smtp.wait_for(30)
    assert sorted(m["To"].addresses[0].addr_spec for m in messages) == sorted(u.email for u in users)
    assert all(r.status == EmailStatus.SENT and r.attempts == 1 for r in _rows())


WORKER = textwrap.dedent("""
    import sys
    from datetime import datetime, timedelta, timezone
    from tasktracker import create_app
    from tasktracker.config import TestConfig
    from tasktracker.mail import outbox
    from tasktracker.mail.config import MailConfig
    app = create_app(TestConfig, {"SQLALCHEMY_DATABASE_URI": sys.argv[1]})
    with app.app_context():
        config = MailConfig.from_mapping({**app.config, "MAIL_SERVER": "127.0.0.1", "MAIL_PORT": int(sys.argv[2]),
                                          "MAIL_DEFAULT_SENDER": "no-reply@tasktracker.test"})
        print("ready", flush=True)
        outbox.deliver_due(datetime.fromisoformat(sys.argv[3]), batch=10, config=config)
""")


@pytest.mark.integration
def test_worker_sigkilled_mid_batch_nothing_sent_twice_but_the_one_in_flight(app, smtp, database_url):
    users = [UserFactory() for _ in range(40)]
    for u in users:
        _assigned(u, TaskFactory(owner=u), T0)
    db.session.commit()
    smtp.handler.delay = 0.03
    due = T0 + timedelta(seconds=60)
    proc = subprocess.Popen([sys.executable, "-c", WORKER, database_url, str(smtp.port), due.isoformat()],
                            cwd=os.getcwd(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while len(smtp.handler.received) < 12 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.005)
        assert proc.poll() is None, proc.stderr.read().decode()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
    before = len(smtp.handler.received)
    assert 12 <= before < 40
    smtp.handler.delay = 0
    # the killed worker's claims expire after the lease; the next run finishes the work
    run = outbox.deliver_due(due + timedelta(seconds=301), config=mail_config(app, smtp.port))
    messages = smtp.wait_for(40)
    ids = [m["Message-ID"] for m in messages]
    assert len(set(ids)) == 40  # every message arrived
    duplicates = len(ids) - len(set(ids))
    # at most the message in flight when the worker died (SMTP said 250, the mark never
    # committed) arrives twice, with the same Message-ID
    assert duplicates <= 1, ids
    assert run.sent == 40 - before + duplicates
    assert all(r.status == EmailStatus.SENT for r in _rows())


def test_file_transport_writes_eml_under_instance_mail(app, alice, tmp_path, caplog):
    import email as email_pkg
    from email.policy import default

    config = mail_config(app, None, MAIL_FILE_DIR=str(tmp_path / "mail"))
    email_id = outbox.enqueue_password_reset("alice@example.com", "req-x", T0)
    db.session.commit()
    with caplog.at_level("INFO", logger="tasktracker.mail.transport"):
        assert outbox.deliver_now([email_id], T0, config=config).sent == 1
    [path] = list((tmp_path / "mail").glob("*.eml"))
    assert path.name.endswith(f"-tasktracker.outbox.{email_id}.eml")
    message = email_pkg.message_from_bytes(path.read_bytes(), policy=default)
    assert message["Subject"] == "Reset your TaskTracker password"
    assert link_token(parts(message)[0], "/reset-password")
    assert [r for r in caplog.records if "wrote" in r.message and str(path) in r.message]
