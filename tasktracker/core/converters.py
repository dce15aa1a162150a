"""URL converters."""

from __future__ import annotations

from flask import Flask
from werkzeug.routing import IntegerConverter

from tasktracker.core.db import MAX_ID


class BoundedIntConverter(IntegerConverter):
    """``<int:...>`` limited to the database's integer range: a larger id in a URL is a
    404 (no such route) instead of an overflow error inside the database driver."""

    def __init__(self, map, fixed_digits=0, min=None, max=MAX_ID, signed=False):  # noqa: A002
        super().__init__(map, fixed_digits=fixed_digits, min=min, max=max, signed=signed)


def register_converters(app: Flask) -> None:
    """Replace the default ``int`` converter; must run before blueprints are registered."""
    app.url_map.converters["int"] = BoundedIntConverter
