"""The ``flask`` CLI groups: ``users``, ``seed``, ``reminders``."""

from flask import Flask


def register_commands(app: Flask) -> None:
    """Attach the CLI groups to ``app``."""
    return None
