"""The recurrence arithmetic (tasktracker.tasks.recurrence): RFC 5545 rules through
dateutil, in the owner's timezone. The API's recurring tasks are tested in
tests/test_recurring_tasks.py."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from tasktracker.tasks.recurrence import InvalidRule, next_occurrence, parse_rule

UTC = timezone.utc


def at(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_weekly_0900_berlin_keeps_local_time_across_the_october_dst_change():
    # Thursday 2026-10-22 09:00 CEST (07:00Z); DST ends on Sunday 2026-10-25
    rule = parse_rule("FREQ=WEEKLY;BYDAY=TH")
    due = at(2026, 10, 22, 7, 0)
    nxt = next_occurrence(rule, "due", due_at=due, completed_at=due, index=1,
                          tz="Europe/Berlin", now=at(2026, 10, 22, 8))
    assert nxt.due_at == at(2026, 10, 29, 8, 0)  # 09:00 CET
    assert nxt.index == 2


def test_from_completion_counts_from_the_day_of_completion_at_the_due_time_of_day():
    rule = parse_rule("FREQ=DAILY;INTERVAL=3")
    due = at(2026, 10, 1, 7, 0)  # 09:00 Berlin
    done = at(2026, 11, 1, 15, 0)  # a month late
    nxt = next_occurrence(rule, "completion", due_at=due, completed_at=done, index=1,
                          tz="Europe/Berlin", now=done)
    assert nxt.due_at == at(2026, 11, 4, 8, 0)  # 3 days after, 09:00 CET


def test_from_due_skips_occurrences_already_past_and_they_count():
    rule = parse_rule("FREQ=DAILY;COUNT=5")
    due = at(2026, 12, 1, 9)
    nxt = next_occurrence(rule, "due", due_at=due, completed_at=due, index=1, tz="UTC",
                          now=at(2026, 12, 3, 12))
    assert nxt.due_at == at(2026, 12, 4, 9)
    assert nxt.index == 4  # 2nd and 3rd were past


def test_count_exhaustion_ends_the_series():
    rule = parse_rule("FREQ=DAILY;COUNT=3")
    due = at(2026, 12, 3, 9)
    assert next_occurrence(rule, "due", due_at=due, completed_at=due, index=2, tz="UTC",
                           now=at(2026, 12, 3, 10)).index == 3
    assert next_occurrence(rule, "due", due_at=due, completed_at=due, index=3, tz="UTC",
                           now=at(2026, 12, 3, 10)) is None
    # skipping past the end exhausts it too
    assert next_occurrence(rule, "due", due_at=due, completed_at=due, index=2, tz="UTC",
                           now=at(2026, 12, 9)) is None


def test_until_exhaustion_ends_the_series():
    rule = parse_rule("FREQ=WEEKLY;UNTIL=20261210T000000Z")
    due = at(2026, 12, 1, 9)
    assert next_occurrence(rule, "due", due_at=due, completed_at=due, index=1, tz="UTC",
                           now=due).due_at == at(2026, 12, 8, 9)
    assert next_occurrence(rule, "due", due_at=at(2026, 12, 8, 9), completed_at=due, index=2,
                           tz="UTC", now=due) is None


def test_monthly_on_the_31st_skips_short_months():
    rule = parse_rule("FREQ=MONTHLY;BYMONTHDAY=31")
    due = at(2027, 1, 31, 12)
    assert next_occurrence(rule, "due", due_at=due, completed_at=due, index=1, tz="UTC",
                           now=due).due_at == at(2027, 3, 31, 12)


def test_rules_are_normalised():
    assert parse_rule(" rrule:freq=weekly; byday=mo,th ").text == "FREQ=WEEKLY;BYDAY=MO,TH"


@pytest.mark.parametrize("text", [
    "FREQ=SECONDLY", "FREQ=HOURLY", "garbage", "", "   ", "FREQ=DAILY;BYHOUR=9",
    "FREQ=DAILY;COUNT=0", "FREQ=DAILY;COUNT=x", "FREQ=DAILY;INTERVAL=0", "FREQ=DAILY;INTERVAL=5000",
    "FREQ=DAILY;UNTIL=2027", "FREQ=DAILY;UNTIL=20270101T000000", "FREQ=WEEKLY;BYDAY=XX",
    "FREQ=DAILY;COUNT=2;UNTIL=20270101T000000Z", "FREQ=DAILY;FREQ=WEEKLY", "FREQ=DAILY;=3",
    "FREQ=MONTHLY;BYMONTHDAY=32", "FREQ=YEARLY;BYMONTH=13", "FREQ=DAILY;" + "X" * 600,
])
def test_invalid_rules_are_refused_with_a_reason(text):
    with pytest.raises(InvalidRule) as info:
        parse_rule(text)
    assert str(info.value)
