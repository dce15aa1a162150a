"""The migrations in ``migrations/`` build exactly the schema the models declare.

On a fresh database per backend (a SQLite file and a fresh PostgreSQL database)
``flask db upgrade`` is run programmatically, then alembic's autogenerate
comparison must find no difference between the database and ``db.metadata``
(so models and migrations never drift), and a downgrade to base must remove
every table again.
"""

from __future__ import annotations

from pathlib import Path

import flask_migrate
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from tasktracker.extensions import db

MIGRATIONS_DIR = str(Path(__file__).resolve().parent.parent / "migrations")


def _schema_diff() -> list:
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(context, db.metadata)


def _tables() -> set[str]:
    return set(sa.inspect(db.engine).get_table_names())


def test_single_head():
    """One linear history: the lead regenerates a single initial revision."""
    script = ScriptDirectory.from_config(_alembic_config())
    assert len(script.get_heads()) == 1
    assert script.get_revision(script.get_current_head()) is not None


def _alembic_config():
    from alembic.config import Config

    cfg = Config(str(Path(MIGRATIONS_DIR) / "alembic.ini"))
    cfg.set_main_option("script_location", MIGRATIONS_DIR)
    return cfg


def test_upgrade_matches_models_and_downgrade_to_base(fresh_app):
    with fresh_app.app_context():
        assert _tables() == set()
        flask_migrate.upgrade(directory=MIGRATIONS_DIR)

        model_tables = {t.name for t in db.metadata.sorted_tables}
        assert model_tables <= _tables(), f"missing tables: {model_tables - _tables()}"
        with db.engine.connect() as conn:
            version = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()
        script = ScriptDirectory.from_config(_alembic_config())
        assert version == script.get_current_head()

        diff = _schema_diff()
        assert diff == [], f"models and migrations differ (run `make migration`): {diff}"

        flask_migrate.downgrade(directory=MIGRATIONS_DIR, revision="base")
        assert _tables() - {"alembic_version"} == set()

        # And back up again: the round trip leaves the same schema.
        flask_migrate.upgrade(directory=MIGRATIONS_DIR)
        assert _schema_diff() == []


def test_migrated_schema_is_usable(fresh_app):
    """Rows written through the models into the migrated schema round-trip (timestamps aware)."""
    from tasktracker.auth.models import User
    from tasktracker.tasks.models import Task

    with fresh_app.app_context():
        flask_migrate.upgrade(directory=MIGRATIONS_DIR)
        user = User(username="mig", email="mig@example.com", password_hash="x")
        db.session.add(user)
        db.session.flush()
        task = Task(title="t", owner_id=user.id)
        db.session.add(task)
        db.session.commit()
        db.session.expire_all()
        stored = db.session.get(Task, task.id)
        assert stored.version == 1
        assert stored.created_at.tzinfo is not None
        assert stored.owner.username == "mig"
        db.session.remove()


def _index_names() -> set[str]:
    with db.engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            sql = "SELECT name FROM sqlite_master WHERE type = 'index'"
        else:
            sql = "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
        return set(conn.execute(sa.text(sql)).scalars())


def test_expression_indexes_are_migrated(fresh_app):
    """Indexes on expressions (``lower(email)``...) and partial ones: alembic cannot
    compare them on SQLite (it cannot reflect them), so the drift check above would
    not notice them missing there; each must exist after ``upgrade`` on both backends."""
    with fresh_app.app_context():
        flask_migrate.upgrade(directory=MIGRATIONS_DIR)
        expression_indexes = {index.name for table in db.metadata.sorted_tables for index in table.indexes
                              if any(not isinstance(e, sa.Column) for e in index.expressions)}
        assert expression_indexes, "expected the lower(...) unique indexes of the models"
        assert expression_indexes <= _index_names(), expression_indexes - _index_names()
