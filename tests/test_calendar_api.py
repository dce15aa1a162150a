"""The calendar feed through the API (api-contract.md v1.1, "Calendar feed"), parsed
back with ``icalendar``: create/rotate/delete, no bearer on the feed, stable UIDs,
UTC times, one VALARM per unsent reminder, only visible not deleted tasks with a due
date, ETag/304, old URL 404 at once after a rotation. SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

import icalendar
import sqlalchemy as sa

from tasktracker.extensions import db
from tasktracker.tasks.models import Reminder
from tests.helpers import assert_error


def feed_path(url: str) -> str:
    return urlsplit(url).path


def parse(body: bytes) -> dict[str, icalendar.Event]:
    cal = icalendar.Calendar.from_ical(body)
    return {str(e["SUMMARY"]): e for e in cal.walk("VEVENT")}


def test_feed_lifecycle_and_content(client, auth, app):
    alice, bob = auth.user("alice"), auth.user("bob")
    due = datetime(2031, 3, 1, 9, 30, tzinfo=timezone(timedelta(hours=2)))
    body = {"title": "Ship", "description": "the release", "due_at": due.isoformat(),
            "reminders": [(due - timedelta(hours=1)).isoformat(), (due - timedelta(days=1)).isoformat()]}
    ship = client.post("/api/tasks", json=body, headers=alice.headers).json
    client.post("/api/tasks", json={"title": "No date"}, headers=alice.headers)
    gone = client.post("/api/tasks", json={"title": "Trashed", "due_at": due.isoformat()}, headers=alice.headers).json
    client.delete(f"/api/tasks/{gone['id']}", headers=alice.headers)
    client.post("/api/tasks", json={"title": "Bob's", "due_at": due.isoformat()}, headers=bob.headers)
    assigned = client.post("/api/tasks", json={"title": "For alice", "due_at": due.isoformat(),
                                               "assignee_id": alice.id}, headers=bob.headers).json
    # one reminder already sent: no alarm for it
    first = db.session.scalars(sa.select(Reminder).where(Reminder.task_id == ship["id"])
                               .order_by(Reminder.remind_at)).first()
    first.sent_at = datetime.now(timezone.utc)
    db.session.commit()

    made = client.post("/api/auth/calendar-feed", headers=alice.headers)
    assert made.status_code == 201 and set(made.json) == {"url", "token"}
    assert made.json["url"].startswith(app.config["PUBLIC_BASE_URL"] + "/api/calendar/")
    path = feed_path(made.json["url"])
    got = client.get(path)  # no bearer
    assert got.status_code == 200 and got.mimetype == "text/calendar"
    events = parse(got.data)
    assert set(events) == {"Ship", "For alice"}
    ev = events["Ship"]
    host = urlsplit(app.config["PUBLIC_BASE_URL"]).hostname
    assert str(ev["UID"]) == f"task-{ship['id']}@{host}"
    start = ev.decoded("DTSTART")
    assert start == due and start.utcoffset() == timedelta(0) and b"DTSTART:20310301T073000Z" in got.data
    assert str(ev["DESCRIPTION"]) == "the release" and str(ev["STATUS"]) == "CONFIRMED"
    alarms = ev.walk("VALARM")
    assert len(alarms) == 1 and alarms[0].decoded("TRIGGER") == -timedelta(hours=1)
    assert str(events["For alice"]["UID"]) == f"task-{assigned['id']}@{host}"

    # ETag / 304, and the same bytes while nothing changed
    tag = got.headers["ETag"]
    assert client.get(path, headers={"If-None-Match": tag}).status_code == 304
    again = client.get(path)
    assert again.data == got.data and again.headers["ETag"] == tag
    client.patch(f"/api/tasks/{ship['id']}", json={"title": "Ship it"}, headers=alice.headers)
    changed = client.get(path, headers={"If-None-Match": tag})
    assert changed.status_code == 200 and changed.headers["ETag"] != tag
    assert str(parse(changed.data)["Ship it"]["UID"]) == str(ev["UID"])  # stable UID

    # rotation: the old URL is 404 at once
    rotated = client.post("/api/auth/calendar-feed", headers=alice.headers).json
    assert rotated["token"] != made.json["token"]
    assert_error(client.get(path), 404)
    assert client.get(feed_path(rotated["url"])).status_code == 200
    # delete: 404; deleting again is still 204
    assert client.delete("/api/auth/calendar-feed", headers=alice.headers).status_code == 204
    assert_error(client.get(feed_path(rotated["url"])), 404)
    assert client.delete("/api/auth/calendar-feed", headers=alice.headers).status_code == 204


def test_unknown_tokens_and_inactive_users_are_404(client, auth):
    alice, root = auth.user("alice"), auth.user("root", admin=True)
    for token in ("x", "A" * 43, "A" * 300, "%00" * 20, "..%2f..%2fetc"):
        assert_error(client.get(f"/api/calendar/{token}.ics"), 404)
    path = feed_path(client.post("/api/auth/calendar-feed", headers=alice.headers).json["url"])
    assert client.get(path).status_code == 200
    client.patch(f"/api/users/{alice.id}", json={"active": False}, headers=root.headers)
    assert_error(client.get(path), 404)
    assert_error(client.post("/api/auth/calendar-feed"), 401)


def test_feed_tokens_are_redacted_from_logs(app):
    import logging
    import runpy
    from types import SimpleNamespace

    from tasktracker.core.logging import JsonFormatter

    secret = "SeCrEt" * 7
    with app.test_request_context(f"/api/calendar/{secret}.ics"):
        line = JsonFormatter().format(logging.LogRecord("t", logging.INFO, __file__, 1, "hit", None, None))
    assert secret not in line and "/api/calendar/[redacted].ics" in line
    # gunicorn's access log (gunicorn.conf.py's logger_class)
    from pathlib import Path

    conf = runpy.run_path(str(Path(__file__).resolve().parent.parent / "gunicorn.conf.py"))
    logger = conf["logger_class"](_GunicornCfg())
    req = SimpleNamespace(headers=[], method="GET", path=f"/api/calendar/{secret}.ics", query="",
                          version=(1, 1), uri=f"/api/calendar/{secret}.ics")
    resp = SimpleNamespace(status="200 OK", headers=[], sent=10, response_length=10)
    environ = {"REQUEST_METHOD": "GET", "RAW_URI": f"/api/calendar/{secret}.ics", "PATH_INFO": f"/api/calendar/{secret}.ics",
               "QUERY_STRING": "", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1"}
    from datetime import timedelta

    atoms = logger.atoms(resp, req, environ, timedelta(milliseconds=3))
    assert secret not in atoms["r"] and "[redacted]" in atoms["r"] and secret not in atoms["U"]


class _GunicornCfg:
    """The few settings gunicorn's Logger reads."""

    def __getattr__(self, name):
        return {"errorlog": "-", "loglevel": "info", "accesslog": None, "syslog": False, "capture_output": False,
                "logconfig": None, "logconfig_dict": {}, "logconfig_json": None, "access_log_format": "%(r)s",
                "disable_redirect_access_to_syslog": False, "statsd_host": None, "dogstatsd_tags": "",
                "statsd_prefix": "", "user": None, "group": None, "umask": 0}.get(name)
