"""Binding background work to the app (Celery in production, in place when embedded)."""

from flask import Flask


def init_jobs(app: Flask) -> None:
    """Placeholder until the real-time issue: nothing to bind yet."""
    return None
