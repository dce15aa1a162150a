"""Recurrence rules of tasks (api-contract.md v1.1, "Recurring tasks"; RFC 5545 §3.3.10).

A recurring task carries ``{rule, from}``: ``rule`` is an RRULE value limited to
``FREQ`` (DAILY, WEEKLY, MONTHLY, YEARLY), ``INTERVAL``, ``BYDAY``,
``BYMONTHDAY``, ``BYMONTH``, ``COUNT`` and ``UNTIL``; ``from`` is ``due`` (the
next occurrence follows the old ``due_at``) or ``completion`` (it follows
``completed_at``). python-dateutil's :mod:`dateutil.rrule` does the calendar
arithmetic; it runs on wall-clock times of the task owner's timezone
(:mod:`zoneinfo`), so 09:00 Europe/Berlin stays 09:00 local across a DST change
(07:00Z in summer, 08:00Z in winter).

``COUNT`` counts the tasks of the series: each task knows its occurrence number
(``recurrence_index``, 1 for the first), and occurrences skipped because they
were already past count too, as they would in a calendar.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timezone
from zoneinfo import ZoneInfo

from dateutil.rrule import rrule, rrulestr

FREQUENCIES = ("DAILY", "WEEKLY", "MONTHLY", "YEARLY")
PARTS = ("FREQ", "INTERVAL", "BYDAY", "BYMONTHDAY", "BYMONTH", "COUNT", "UNTIL")
FROM_VALUES = ("due", "completion")
RULE_MAX = 500
#: An ``INTERVAL`` above this is refused (a typo rather than a plan).
INTERVAL_MAX = 1000
#: Past occurrences skipped at most when computing the next one (a daily rule
#: left for 27 years); beyond that the series is treated as exhausted.
SKIP_MAX = 10_000


class InvalidRule(ValueError):
    """The rule is not one the contract accepts; ``str()`` says why (for a 422)."""


@dataclass(frozen=True)
class Rule:
    """A parsed rule: ``text`` normalised (upper case, no spaces), ``count`` its
    ``COUNT`` (None if unbounded by count), ``until`` its ``UNTIL`` (aware UTC)."""

    text: str
    count: int | None
    until: datetime | None


def parse_rule(text: str) -> Rule:
    """Check an RRULE value against the contract's subset. Raises :class:`InvalidRule`.

    ``UNTIL`` must be a UTC date-time (``20271231T235959Z``, RFC 5545 §3.3.10: with
    a zoned ``DTSTART``, ``UNTIL`` is UTC); ``COUNT`` and ``UNTIL`` exclude each
    other (same section).
    """
    if not isinstance(text, str) or not text.strip():
        raise InvalidRule("The rule is empty.")
    normalised = "".join(text.split()).upper()
    if normalised.startswith("RRULE:"):
        normalised = normalised[len("RRULE:"):]
    if len(normalised) > RULE_MAX:
        raise InvalidRule(f"The rule is longer than {RULE_MAX} characters.")
    parts: dict[str, str] = {}
    for item in normalised.split(";"):
        name, sep, value = item.partition("=")
        if not sep or not value:
            raise InvalidRule(f"{item!r} is not NAME=VALUE.")
        if name not in PARTS:
            raise InvalidRule(f"{name} is not supported; use {', '.join(PARTS)}.")
        if name in parts:
            raise InvalidRule(f"{name} is given twice.")
        parts[name] = value
    if parts.get("FREQ") not in FREQUENCIES:
        raise InvalidRule(f"FREQ must be one of {', '.join(FREQUENCIES)}.")
    if "COUNT" in parts and "UNTIL" in parts:
        raise InvalidRule("COUNT and UNTIL cannot both be given.")
    count = _positive(parts, "COUNT", None)
    _positive(parts, "INTERVAL", INTERVAL_MAX)
    _number_list(parts, "BYMONTHDAY", 31, signed=True)
    _number_list(parts, "BYMONTH", 12, signed=False)
    until = None
    if "UNTIL" in parts:
        try:
            until = datetime.strptime(parts["UNTIL"], "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
        except ValueError:
            raise InvalidRule("UNTIL must be a UTC date-time such as 20271231T235959Z.") from None
    try:  # the values of BYDAY, BYMONTHDAY, BYMONTH: dateutil's parser is the judge
        rrulestr(normalised, dtstart=datetime(2000, 1, 1, tzinfo=timezone.utc))
    except (ValueError, TypeError) as exc:
        raise InvalidRule(f"Invalid rule: {exc}.") from None
    return Rule(text=normalised, count=count, until=until)


def _positive(parts: dict[str, str], name: str, maximum: int | None) -> int | None:
    if name not in parts:
        return None
    value = parts[name]
    if not value.isdigit() or int(value) < 1 or (maximum is not None and int(value) > maximum):
        bound = f" up to {maximum}" if maximum else ""
        raise InvalidRule(f"{name} must be a whole number from 1{bound}.")
    return int(value)


def _number_list(parts: dict[str, str], name: str, maximum: int, *, signed: bool) -> None:
    """``BYMONTHDAY`` (1..31 or -31..-1) and ``BYMONTH`` (1..12): dateutil accepts
    values out of range and silently yields no occurrence."""
    if name not in parts:
        return
    for value in parts[name].split(","):
        digits = value[1:] if signed and value[:1] in "+-" else value
        if not digits.isdigit() or not 1 <= int(digits) <= maximum:
            span = f"1..{maximum}" + (f" or -{maximum}..-1" if signed else "")
            raise InvalidRule(f"{name} values must be in {span}.")


def _expand(rule: Rule, dtstart: datetime) -> rrule:
    """The rule's occurrences from ``dtstart`` (aware, local), without COUNT (the
    series' count is kept by occurrence numbers instead)."""
    text = ";".join(p for p in rule.text.split(";") if not p.startswith("COUNT="))
    return rrulestr(text, dtstart=dtstart)


@dataclass(frozen=True)
class Occurrence:
    """The next task of a series: its ``due_at`` (aware UTC) and occurrence number."""

    due_at: datetime
    index: int


def next_occurrence(rule: Rule, mode: str, *, due_at: datetime, completed_at: datetime,
                    index: int, tz: str, now: datetime) -> Occurrence | None:
    """The occurrence that follows a task finished at ``completed_at``, or None
    when ``COUNT`` or ``UNTIL`` is exhausted.

    - ``mode == "due"``: the first occurrence after ``due_at`` that is not already
      past (``> now``); skipped ones still count towards ``COUNT``.
    - ``mode == "completion"``: the first occurrence after the day of
      ``completed_at``, at ``due_at``'s local time of day, counted from that day.

    All arguments are aware datetimes; ``tz`` is the owner's IANA timezone; the
    result is in UTC. ``index`` is the finished task's occurrence number.
    """
    zone = ZoneInfo(tz)
    local_due = due_at.astimezone(zone)
    if mode == "completion":
        day = completed_at.astimezone(zone).date()
        start = datetime.combine(day, time(local_due.hour, local_due.minute, local_due.second),
                                 tzinfo=zone)
        after, floor = start, completed_at
    else:
        start, after, floor = local_due, local_due, now
    occurrences = _expand(rule, start)
    candidate = occurrences.after(after, inc=False)
    steps = 1
    while candidate is not None and candidate <= floor:
        if steps >= SKIP_MAX:
            return None
        candidate = occurrences.after(candidate, inc=False)
        steps += 1
    if candidate is None:
        return None
    next_index = index + steps
    if rule.count is not None and next_index > rule.count:
        return None
    return Occurrence(due_at=candidate.astimezone(timezone.utc), index=next_index)
