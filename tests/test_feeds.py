"""Calendar feed and CSV export foundations (issue 13; api-contract.md v1.1,
"Calendar feed", "CSV export"): the feed parsed back with icalendar, its token
rotation (SQLite and PostgreSQL), the CSV parsed back with csv, injection
prefixing, and constant memory for 100,000 rows."""

from __future__ import annotations

import csv
import io
import time
import tracemalloc
from datetime import datetime, timedelta, timezone

import icalendar
import pytest

from tasktracker.feeds import calendar as cal
from tasktracker.feeds import csv_export
from tests.factories import UserFactory

UTC = timezone.utc
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def task(id_, **kw):
    base = {"id": id_, "title": f"Task {id_}", "description": "", "status": "todo", "priority": "medium",
            "due_at": T0 + timedelta(days=id_), "owner": {"id": 1, "username": "ann", "full_name": "Ann"},
            "assignee": None, "team_id": None, "labels": [], "reminders": [],
            "created_at": T0 - timedelta(days=1), "updated_at": T0 - timedelta(hours=1),
            "completed_at": None, "version": 1}
    return {**base, **kw}


# ---------------------------------------------------------------------- calendar

def parse(body: bytes):
    return icalendar.Calendar.from_ical(body)


def test_feed_parses_back_with_stable_uids_and_utc_times():
    paris = timezone(timedelta(hours=1))
    tasks = [task(2, due_at=datetime(2026, 12, 3, 10, 30, tzinfo=paris), description="Line 1\nLine, 2; ok",
                  status="in_progress", version=4),
             task(1, title="Ship it", status="done"),
             task(3, due_at=None)]
    body = cal.build_feed(tasks, host="tasks.example.com", task_url="https://tasks.example.com/t/{id}")
    feed = parse(body)
    assert str(feed["VERSION"]) == "2.0" and str(feed["PRODID"]) == cal.PRODID
    events = list(feed.walk("VEVENT"))
    assert [str(e["UID"]) for e in events] == ["task-1@tasks.example.com", "task-2@tasks.example.com"]
    second = events[1]
    assert second.decoded("DTSTART") == datetime(2026, 12, 3, 9, 30, tzinfo=UTC)
    assert b"DTSTART:20261203T093000Z" in body  # written in UTC, not with a TZID
    assert str(second["SUMMARY"]) == "Task 2" and str(second["DESCRIPTION"]) == "Line 1\nLine, 2; ok"
    assert str(second["STATUS"]) == "CONFIRMED" and str(second["X-TASKTRACKER-STATUS"]) == "in_progress"
    assert second.decoded("DTSTAMP") == T0 - timedelta(hours=1) and int(second["SEQUENCE"]) == 3
    assert str(second["URL"]) == "https://tasks.example.com/t/2"
    assert str(events[0]["SUMMARY"]) == "\u2713 Ship it"
    assert all(line.endswith(b"\r") or not line for line in body.split(b"\n"))
    # the same tasks give the same bytes (UIDs and ETag stable across polls)
    assert cal.build_feed(list(reversed(tasks)), host="tasks.example.com",
                          task_url="https://tasks.example.com/t/{id}") == body


def test_one_valarm_per_unsent_reminder():
    due = T0 + timedelta(days=1)
    t = task(1, reminders=[
        {"id": 1, "remind_at": due - timedelta(hours=1), "sent_at": None},
        {"id": 2, "remind_at": due - timedelta(days=1), "sent_at": T0},
        {"id": 3, "remind_at": (due - timedelta(minutes=15)).isoformat().replace("+00:00", "Z"), "sent_at": None},
    ])
    [event] = parse(cal.build_feed([t], host="h")).walk("VEVENT")
    alarms = list(event.walk("VALARM"))
    assert [a.decoded("TRIGGER") for a in alarms] == [timedelta(hours=-1), timedelta(minutes=-15)]
    assert all(str(a["ACTION"]) == "DISPLAY" and str(a["DESCRIPTION"]) == "Reminder: Task 1" for a in alarms)
    [plain] = parse(cal.build_feed([task(1)], host="h")).walk("VEVENT")
    assert list(plain.walk("VALARM")) == []


def test_naive_times_are_refused():
    with pytest.raises(ValueError):
        cal.build_feed([task(1, due_at=datetime(2026, 12, 1, 9))], host="h")


def test_etag_and_conditional_get():
    body = cal.build_feed([task(1)], host="h")
    tag = cal.etag(body)
    assert tag.startswith('"') and len(tag) == 34
    assert cal.not_modified(tag, tag) and cal.not_modified(f'"x", W/{tag}', tag) and cal.not_modified("*", tag)
    assert not cal.not_modified(None, tag) and not cal.not_modified('"other"', tag)
    changed = cal.build_feed([task(1, title="Renamed", updated_at=T0)], host="h")
    assert cal.etag(changed) != tag


def test_feed_token_rotation(app):
    user = UserFactory()
    first = cal.rotate_feed_token(user.id)
    assert cal.feed_user_id(first) == user.id
    assert cal.feed_url("https://t.example/", first) == f"https://t.example/api/calendar/{first}.ics"
    second = cal.rotate_feed_token(user.id)
    assert second != first
    assert cal.feed_user_id(first) is None  # the old URL: 404 at once
    assert cal.feed_user_id(second) == user.id
    other = UserFactory()
    theirs = cal.rotate_feed_token(other.id)
    assert cal.feed_user_id(theirs) == other.id and cal.feed_user_id(second) == user.id
    assert cal.delete_feed_token(user.id) is True
    assert cal.feed_user_id(second) is None and cal.delete_feed_token(user.id) is False
    for bad in (None, "", "x" * 43, "short", "y" * 500):
        assert cal.feed_user_id(bad) is None


# ---------------------------------------------------------------------- CSV

def read_csv(chunks) -> list[list[str]]:
    return list(csv.reader(io.StringIO(b"".join(chunks).decode("utf-8"), newline="")))


def test_csv_header_and_rows_parse_back():
    tasks = [task(1, description='Two\nlines, "quoted"', assignee={"id": 2, "username": "bob"}, team_id=7,
                  labels=[{"id": 1, "name": "ops"}, {"id": 2, "name": "café"}], completed_at=T0,
                  status="done", priority="urgent"),
             task(2, due_at=None)]
    rows = read_csv(csv_export.stream_csv(tasks))
    assert rows[0] == list(csv_export.HEADER) == [
        "id", "title", "description", "status", "priority", "due_at", "owner", "assignee", "team_id",
        "labels", "created_at", "updated_at", "completed_at"]
    assert rows[1] == ["1", "Task 1", 'Two\nlines, "quoted"', "done", "urgent", "2026-12-02T09:00:00Z", "ann",
                       "bob", "7", "ops, café", "2026-11-30T09:00:00Z", "2026-12-01T08:00:00Z",
                       "2026-12-01T09:00:00Z"]
    assert rows[2][5] == "" and rows[2][7] == "" and rows[2][8] == "" and len(rows) == 3
    assert b"".join(csv_export.stream_csv([])) == (",".join(csv_export.HEADER) + "\r\n").encode()


@pytest.mark.parametrize("text", ["=SUM(A1:A2)", "+1", "-2+3", "@cmd", "\tx", "\rx", "=HYPERLINK(\"x\")"])
def test_csv_injection_is_neutralised(text):
    [_, row] = read_csv(csv_export.stream_csv([task(1, title=text, description=text,
                                                    labels=[{"name": text}])]))
    assert row[1] == row[2] == row[9] == "'" + text


def test_harmless_cells_are_untouched():
    [_, row] = read_csv(csv_export.stream_csv([task(1, title="a=b", description=" =x")]))
    assert (row[1], row[2]) == ("a=b", " =x")


def test_csv_export_streams_in_constant_memory():
    # 7,000 rows of about 1 KB: 7 MiB, over three times what the bound could hold (a streamed
    # export's own buffer peaks at about 0.4 MiB under tracemalloc); the 100,000-task
    # export over HTTP is measured by bench/integrations.py (docs/benchmarks.md)
    n, bound_mb = 7_000, 2

    def rows():
        for i in range(1, n + 1):
            yield task(i, description="Some words about the task " * 36,
                       labels=[{"name": "ops"}], assignee={"username": "bob"})

    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    started = time.perf_counter()
    total = lines = 0
    for chunk in csv_export.stream_csv(rows()):
        total += len(chunk)
        lines += chunk.count(b"\r\n")
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    growth_mb = (peak - base) / 2**20
    print(f"\nCSV export: {n} rows, {total / 2**20:.1f} MiB in {elapsed:.2f} s "
          f"(under tracemalloc), peak growth {growth_mb:.2f} MiB")
    assert lines == n + 1
    assert total > 3 * bound_mb * 2**20  # more output than the memory bound allows to hold
    assert growth_mb < bound_mb
