"""Database helpers: the session, engine tweaks, the id bounds, the dialect question,
and the one mapping of a refused write to an API error (:func:`refused_as`)."""

from __future__ import annotations

import importlib
import pkgutil
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from flask import Flask, current_app
from sqlalchemy import Select, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import scoped_session as ScopedSession

#: The largest id: id columns are ``INTEGER`` (PostgreSQL's int4). A larger value can
#: never name a row, and PostgreSQL raises on it: callers treat it as "not found".
MAX_ID = 2**31 - 1
#: The largest id of a ``BIGINT`` column (events' ``seq``, notifications' ``id``).
MAX_BIGINT_ID = 2**63 - 1


def valid_id(value: int, *, bound: int = MAX_ID) -> bool:
    """True if ``value`` can be an id (1..``bound``); larger ids cannot exist."""
    return 0 < value <= bound


def scoped_session() -> ScopedSession:
    """The current app's Flask-SQLAlchemy session (``db.session``), found through the
    app (``app.extensions["sqlalchemy"]``): ``core/`` never imports
    ``tasktracker.extensions``, which imports ``core/``."""
    return current_app.extensions["sqlalchemy"].session


def is_postgresql() -> bool:
    """Whether the current app's database session talks to PostgreSQL (else SQLite)."""
    return scoped_session().get_bind().dialect.name == "postgresql"


def skip_locked(select: Select) -> Select:
    """``select`` (the rows a claim takes) ``FOR UPDATE SKIP LOCKED`` on PostgreSQL: two
    concurrent claims get different rows. SQLite serialises writers instead (and
    the claim's ``... IS NULL`` re-check makes the later one take nothing)."""
    return select.with_for_update(skip_locked=True) if is_postgresql() else select


def dialect_insert(table):
    """``INSERT`` of the current database's dialect (PostgreSQL or SQLite, the only two
    supported), which offers ``.on_conflict_do_nothing()`` / ``.on_conflict_do_update()``:
    a write that a unique key settles, instead of a check-then-insert."""
    from sqlalchemy.dialects import postgresql, sqlite

    return (postgresql.insert if is_postgresql() else sqlite.insert)(table)


def scan_batch_size(batch: int | None = None) -> int:
    """``batch``, else ``SCAN_BATCH_SIZE``: how many rows a scan claims per transaction."""
    return int(batch or current_app.config["SCAN_BATCH_SIZE"])


@contextmanager
def refused_as(error: Callable[[], Exception], *, on: type[Exception] = IntegrityError) -> Iterator[None]:
    """Turn a write the database refuses inside the block into an API error.

    On ``on`` (default ``IntegrityError``: a unique index or a foreign key refused
    the write, typically because of a concurrent request; ``StaleDataError`` for a
    version mismatch) the session is rolled back and ``error()`` is raised: a
    callable, so that it may read the database again after the rollback to say
    what happened (e.g. which field a concurrent twin took).
    """
    try:
        yield
    except on:
        scoped_session().rollback()
        raise error()


def _sqlite_pragmas(dbapi_connection, connection_record):
    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.close()


def register_sqlite_pragmas(app: Flask) -> None:
    """Enforce foreign keys (ON DELETE CASCADE) and use WAL on SQLite connections; and
    set ``PRAGMA synchronous`` to ``SQLITE_SYNCHRONOUS`` on this app's SQLite engines
    (default ``FULL``, SQLite's own: a commit survives a power loss; the test suite
    uses ``OFF``, since its throwaway databases need no durability)."""
    if not event.contains(Engine, "connect", _sqlite_pragmas):
        event.listen(Engine, "connect", _sqlite_pragmas)
    synchronous = str(app.config.get("SQLITE_SYNCHRONOUS", "FULL")).upper()
    if synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
        raise ValueError(f"SQLITE_SYNCHRONOUS must be OFF, NORMAL, FULL or EXTRA, not {synchronous!r}")
    if synchronous == "FULL":
        return

    def set_synchronous(dbapi_connection, connection_record):
        if isinstance(dbapi_connection, sqlite3.Connection):
            dbapi_connection.execute(f"PRAGMA synchronous={synchronous}")

    with app.app_context():
        for engine in app.extensions["sqlalchemy"].engines.values():
            if engine.dialect.name == "sqlite":
                event.listen(engine, "connect", set_synchronous)


def commit_keeping_loaded() -> None:
    """Commit without expiring the session's objects (``expire_on_commit`` off for
    this one commit).

    For a write whose response renders the rows it just wrote: they hold what
    this transaction committed, so reloading them after the commit (a SELECT per
    object, plus its relationships) only costs time (bench/cpu_cost.py: about a
    third of ``POST /api/tasks``). Not for code that goes on to read rows that
    other transactions may change: it would see them as loaded before.
    """
    session = scoped_session()()
    session.expire_on_commit = False
    try:
        session.commit()
    finally:
        session.expire_on_commit = True


def import_all_models() -> None:
    """Import every ``tasktracker.<domain>.models`` so the metadata holds all tables
    (for ``create_all`` in tests and Alembic's autogenerate)."""
    # the package's folder, found without importing the package root (the app factory):
    # core/ imports no domain (.importlinter)
    root = str(Path(__file__).resolve().parent.parent)
    for module in pkgutil.walk_packages([root], "tasktracker."):
        if module.name.endswith(".models"):
            importlib.import_module(module.name)
