"""The README's run mode for real: one gunicorn process on SQLite, jobs and the
scheduler in-process. A reminder fires with no request at all after boot."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from tasktracker.core.types import utcnow
from tests.procs import Web, base_env, migrate, wait_for

pytestmark = pytest.mark.integration


def test_embedded_server_sends_a_due_reminder_without_any_request(tmp_path, database_url):
    if not database_url.startswith("sqlite"):
        pytest.skip("the embedded mode is SQLite; the PostgreSQL half has nothing to add")
    url = f"sqlite:///{tmp_path / 'embedded.db'}"
    env = base_env(DATABASE_URL=url, SCHEDULER_ENABLED="true", SCAN_INTERVAL_SECONDS="0.5",
                   SOCKETIO_ASYNC_MODE="gevent",  # the embedded default
                   UPLOAD_DIR=str(tmp_path / "uploads"))
    migrate(url, tmp_path, env)
    engine = sa.create_engine(url)
    now = utcnow().replace(tzinfo=None)
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO users (username, email, password_hash, full_name, role, timezone, active,"
            " created_at, updated_at) VALUES ('ann', 'ann@example.com', 'x', '', 'member', 'UTC', 1, :t, :t)"),
            {"t": now})
        conn.execute(sa.text(
            "INSERT INTO tasks (title, description, status, priority, owner_id, created_at, updated_at,"
            " version) VALUES ('t', '', 'todo', 'medium', 1, :t, :t, 1)"), {"t": now})
        conn.execute(sa.text("INSERT INTO reminders (task_id, remind_at, created_at) VALUES (1, :r, :t)"),
                     {"r": now - timedelta(seconds=1), "t": now})
    web = Web("embedded", env, tmp_path)
    try:
        def notified():
            with engine.connect() as conn:
                return conn.execute(sa.text(
                    "SELECT count(*) FROM notifications WHERE type = 'deadline_reminder'")).scalar()
        assert wait_for(notified, timeout=20), web.log_tail()
        assert notified() == 1
    finally:
        web.stop()
        engine.dispose()
