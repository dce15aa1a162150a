"""Upgrading a database that holds v1 data: nothing already stored is lost.

The v1.1 revision re-creates ``tasks`` on SQLite (batch mode: SQLite cannot add a
foreign key to an existing table). This checks, on both databases, that the
rows of ``tasks`` and of every table referencing it survive the upgrade and the
downgrade, and that SQLite's ``tasks`` keeps ``AUTOINCREMENT`` (ids of purged
tasks are never reused: events keep them as history).
"""

from __future__ import annotations

from pathlib import Path

import flask_migrate
import pytest
import sqlalchemy as sa

from tasktracker.extensions import db

MIGRATIONS_DIR = str(Path(__file__).resolve().parent.parent / "migrations")
V1 = "cd7d71d7c6c6"

V1_ROWS = [
    "INSERT INTO users (id, username, email, password_hash, full_name, role, timezone, active,"
    " created_at, updated_at) VALUES (1, 'ann', 'ann@example.com', 'x', '', 'member', 'UTC',"
    " true, '2026-01-01 00:00:00+00', '2026-01-01 00:00:00+00')",
    "INSERT INTO tasks (id, title, description, status, priority, owner_id, created_at,"
    " updated_at, version) VALUES (7, 'keep me', '', 'todo', 'low', 1,"
    " '2026-01-01 00:00:00+00', '2026-01-01 00:00:00+00', 3)",
    "INSERT INTO reminders (task_id, remind_at, created_at) VALUES (7, '2026-01-02 00:00:00+00',"
    " '2026-01-01 00:00:00+00')",
    "INSERT INTO comments (task_id, author_id, body, created_at, updated_at) VALUES (7, 1, 'hi',"
    " '2026-01-01 00:00:00+00', '2026-01-01 00:00:00+00')",
]
COUNTS = "SELECT (SELECT count(*) FROM tasks), (SELECT count(*) FROM reminders), " \
         "(SELECT count(*) FROM comments)"


@pytest.fixture
def v1_app(fresh_app):
    """A fresh database at the v1 revision, holding :data:`V1_ROWS`."""
    with fresh_app.app_context():
        flask_migrate.upgrade(MIGRATIONS_DIR, revision=V1)
        with db.engine.begin() as conn:
            for statement in V1_ROWS:
                conn.exec_driver_sql(statement)
        yield fresh_app


def _counts() -> tuple:
    with db.engine.connect() as conn:
        return tuple(conn.exec_driver_sql(COUNTS).one())


def test_upgrade_and_downgrade_keep_v1_rows(v1_app):
    with v1_app.app_context():
        flask_migrate.upgrade(MIGRATIONS_DIR)
        assert _counts() == (1, 1, 1)
        with db.engine.connect() as conn:
            row = conn.exec_driver_sql(
                "SELECT title, version, recurrence_index, recurrence_of FROM tasks").one()
        assert tuple(row) == ("keep me", 3, 1, None)
        if db.engine.dialect.name == "sqlite":
            with db.engine.connect() as conn:
                ddl = conn.exec_driver_sql(
                    "SELECT sql FROM sqlite_master WHERE name = 'tasks'").scalar_one()
                fk_on = conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one()
            assert "AUTOINCREMENT" in ddl
            assert fk_on == 1  # the pool's connections get foreign keys back
        flask_migrate.downgrade(MIGRATIONS_DIR, revision=V1)
        assert _counts() == (1, 1, 1)
        assert "labels" not in sa.inspect(db.engine).get_table_names()
