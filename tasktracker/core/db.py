"""Database helpers: engine tweaks, the id bound, the dialect question."""

from __future__ import annotations

from flask import Flask
from sqlalchemy import event
from sqlalchemy.engine import Engine


#: The largest id: id columns are ``INTEGER`` (PostgreSQL's int4). A larger value can
#: never name a row, and PostgreSQL raises on it: callers treat it as "not found".
MAX_ID = 2**31 - 1


def is_postgresql() -> bool:
    """Whether the current app's database session talks to PostgreSQL (else SQLite)."""
    from tasktracker.extensions import db

    return db.session.get_bind().dialect.name == "postgresql"


def _sqlite_pragmas(dbapi_connection, connection_record):
    import sqlite3

    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.close()


def register_sqlite_pragmas(app: Flask) -> None:
    """Enforce foreign keys (ON DELETE CASCADE) and use WAL on SQLite connections."""
    if not event.contains(Engine, "connect", _sqlite_pragmas):
        event.listen(Engine, "connect", _sqlite_pragmas)


def commit_keeping_loaded() -> None:
    """Commit without expiring the session's objects (``expire_on_commit`` off for
    this one commit).

    For a write whose response renders the rows it just wrote: they hold what
    this transaction committed, so reloading them after the commit (a SELECT per
    object, plus its relationships) only costs time (bench/cpu_cost.py: about a
    third of ``POST /api/tasks``). Not for code that goes on to read rows that
    other transactions may change: it would see them as loaded before.
    """
    from tasktracker.extensions import db

    session = db.session()
    session.expire_on_commit = False
    try:
        session.commit()
    finally:
        session.expire_on_commit = True


def import_all_models() -> None:
    """Import every ``tasktracker.<domain>.models`` so the metadata holds all tables
    (for ``create_all`` in tests and Alembic's autogenerate)."""
    import importlib
    import pkgutil
    from pathlib import Path

    # the package's folder, found without importing the package root (the app factory):
    # core/ imports no domain (.importlinter)
    root = str(Path(__file__).resolve().parent.parent)
    for module in pkgutil.walk_packages([root], "tasktracker."):
        if module.name.endswith(".models"):
            importlib.import_module(module.name)
