"""Rendering the Jinja2 templates under ``tasktracker/templates/email/``: each message
has ``<name>.txt`` (plain text, no escaping) and ``<name>.html`` (autoescaped).

Times are shown in the recipient's time zone (``zoneinfo``; an unknown zone name
falls back to UTC) by :func:`local_time`, e.g. ``Tue 1 Dec 2026, 09:00 CET``.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "templates" / "email"

#: Template names (each with a .txt and a .html file).
NOTIFICATION_BATCH = "notification_batch"
DIGEST = "digest"
PASSWORD_RESET = "password_reset"
VERIFY_EMAIL = "verify_email"


def user_zone(name: str | None) -> ZoneInfo:
    """``ZoneInfo(name)``; UTC when ``name`` is empty or not a known IANA zone."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def local_time(value: datetime | None, zone: ZoneInfo) -> str:
    """``value`` (aware) as wall-clock time in ``zone``: ``Tue 1 Dec 2026, 09:00 CET``;
    empty for None. Raises ``ValueError`` for a naive datetime."""
    if value is None:
        return ""
    if value.tzinfo is None:
        raise ValueError("naive datetime: times must be timezone-aware")
    local = value.astimezone(zone)
    return f"{local:%a} {local.day} {local:%b %Y, %H:%M} {local.tzname()}"


@lru_cache(maxsize=1)
def environment() -> Environment:
    """The Jinja2 environment: autoescape for ``.html`` templates only, undefined
    variables are errors (a missing value never renders as an empty string). Each
    template is compiled once per process and not re-checked on disk (no
    ``auto_reload``: a changed template needs a restart, like the code)."""
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATE_DIR)),
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False, default=False),
        undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
        auto_reload=False,
    )
    return env


def render(name: str, context: dict) -> tuple[str, str]:
    """``(text, html)`` of template ``name`` rendered with ``context``. Raises
    ``jinja2.TemplateNotFound`` / ``jinja2.UndefinedError`` for a missing template or
    value."""
    env = environment()
    return env.get_template(f"{name}.txt").render(context), env.get_template(f"{name}.html").render(context)
