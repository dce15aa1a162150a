"""The CSV export body (api-contract.md v1.1, "CSV export"): the stdlib ``csv``
module, streamed as bytes, in constant memory.

Header: ``id, title, description, status, priority, due_at, owner, assignee,
team_id, labels, created_at, updated_at, completed_at``. ``owner``/``assignee`` are
usernames, ``labels`` the label names joined with ``", "``, times ISO 8601 UTC with
``Z``, a missing value an empty cell. RFC 4180 dialect (``csv.excel``: comma,
``"`` quoting when needed, CRLF row ends), UTF-8 without BOM.

CSV injection (OWASP "CSV Injection"): a cell whose text starts with ``=``, ``+``,
``-``, ``@``, tab or carriage return would be read as a formula by a spreadsheet,
so it is prefixed with ``'``. The export is meant for people; the JSON API is the
exact one.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timezone
from typing import Any

HEADER = ("id", "title", "description", "status", "priority", "due_at", "owner", "assignee",
          "team_id", "labels", "created_at", "updated_at", "completed_at")
CONTENT_TYPE = "text/csv; charset=utf-8"
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
#: Bytes gathered before a chunk is yielded (fewer, larger writes to the socket).
CHUNK_BYTES = 64 * 1024


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, Mapping) else getattr(obj, key, None)


def neutralise(text: str) -> str:
    """``text`` with a leading ``'`` when a spreadsheet would take it for a formula."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _time(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime refused: export times must be timezone-aware")
        return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    return str(value)


def _user(value: Any) -> str:
    if value is None:
        return ""
    return str(_get(value, "username") or "") if not isinstance(value, str) else value


def _labels(value: Any) -> str:
    if not value:
        return ""
    return ", ".join(v if isinstance(v, str) else str(_get(v, "name")) for v in value)


def row_values(task: Any) -> list[str]:
    """One task (a dict as the API returns it, or a Task row with ``owner``/``assignee``
    loaded) as the export's cells, injection-neutralised."""
    status, priority = _get(task, "status"), _get(task, "priority")
    team_id = _get(task, "team_id")
    cells = [
        str(_get(task, "id")),
        _get(task, "title") or "",
        _get(task, "description") or "",
        str(status) if status is not None else "",
        str(priority) if priority is not None else "",
        _time(_get(task, "due_at")),
        _user(_get(task, "owner")),
        _user(_get(task, "assignee")),
        "" if team_id is None else str(team_id),
        _labels(_get(task, "labels")),
        _time(_get(task, "created_at")),
        _time(_get(task, "updated_at")),
        _time(_get(task, "completed_at")),
    ]
    return [neutralise(c) for c in cells]


class _Sink:
    """A write target for ``csv.writer`` that keeps what was written until taken."""

    def __init__(self):
        self.parts: list[str] = []
        self.size = 0

    def write(self, text: str) -> int:
        self.parts.append(text)
        self.size += len(text)
        return len(text)

    def take(self) -> bytes:
        data = "".join(self.parts).encode("utf-8")
        self.parts.clear()
        self.size = 0
        return data


def stream_csv(tasks: Iterable[Any], *, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """The export as a generator of UTF-8 byte chunks: the header, then one row per
    task, in the order ``tasks`` gives them.

    Memory stays constant whatever the number of tasks, provided ``tasks`` is itself
    lazy (e.g. ``db.session.scalars(query.execution_options(yield_per=500))``): at
    most ``chunk_bytes`` (plus one row) are held. For a Flask response:
    ``Response(stream_with_context(stream_csv(rows)), mimetype=...)``."""
    sink = _Sink()
    writer = csv.writer(sink, dialect="excel")
    writer.writerow(HEADER)
    for task in tasks:
        writer.writerow(row_values(task))
        if sink.size >= chunk_bytes:
            yield sink.take()
    if sink.size:
        yield sink.take()
