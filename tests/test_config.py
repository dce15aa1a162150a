"""Production refuses unsafe settings at start-up, with a message naming each problem."""

import pytest

from tasktracker import create_app
from tasktracker.config import DEV_JWT_SECRET, ConfigError, ProductionConfig

GOOD = {
    "JWT_SECRET_KEY": "x" * 40,
    "SQLALCHEMY_DATABASE_URI": "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "CELERY_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672//",
    "SOCKETIO_MESSAGE_QUEUE": "amqp://guest:guest@127.0.0.1:5672//",
    "REDIS_URL": "redis://127.0.0.1:6379/15",
    "LOG_JSON": False,  # keep the test session's log handlers
}


def test_production_starts_with_safe_settings():
    app = create_app(ProductionConfig, GOOD)
    assert app.config["ENV"] == "production" and app.config["SCHEDULER_ENABLED"] is False


@pytest.mark.parametrize("override, words", [
    ({"JWT_SECRET_KEY": DEV_JWT_SECRET}, "JWT_SECRET_KEY"),
    ({"JWT_SECRET_KEY": "short-secret"}, "JWT_SECRET_KEY"),
    ({"SQLALCHEMY_DATABASE_URI": "sqlite:///prod.db"}, "SQLite"),
    ({"CELERY_BROKER_URL": ""}, "CELERY_BROKER_URL"),
    ({"SOCKETIO_MESSAGE_QUEUE": ""}, "SOCKETIO_MESSAGE_QUEUE"),
    ({"REDIS_URL": ""}, "REDIS_URL"),
    ({"CELERY_TASK_QUEUE": "same", "SOCKETIO_CHANNEL": "same"}, "must differ"),
])
def test_production_refuses_unsafe_settings(override, words):
    with pytest.raises(ConfigError, match=words):
        create_app(ProductionConfig, {**GOOD, **override})


def test_every_problem_is_named_at_once():
    with pytest.raises(ConfigError) as info:
        create_app(ProductionConfig, {"JWT_SECRET_KEY": "", "SQLALCHEMY_DATABASE_URI": "sqlite://",
                                      "CELERY_BROKER_URL": ""})
    message = str(info.value)
    assert "JWT_SECRET_KEY" in message and "SQLite" in message and "CELERY_BROKER_URL" in message


@pytest.mark.parametrize("setting, expected", [(None, 2), ("normal", 1), ("OFF", 0)])
def test_sqlite_synchronous_follows_the_setting(tmp_path, setting, expected):
    """PRAGMA synchronous on every connection of the app's SQLite engine: FULL (2) unless
    SQLITE_SYNCHRONOUS says otherwise (the tests' own config uses OFF)."""
    from tasktracker.config import Config
    from tasktracker.extensions import db

    overrides = {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 's.db'}", "TESTING": True,
                 "SCHEDULER_ENABLED": False}
    if setting is not None:
        overrides["SQLITE_SYNCHRONOUS"] = setting
    app = create_app(Config, overrides)
    with app.app_context():
        with db.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == expected
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        db.engine.dispose()


def test_sqlite_synchronous_refuses_unknown_values(tmp_path):
    from tasktracker.config import Config

    with pytest.raises(ValueError, match="SQLITE_SYNCHRONOUS"):
        create_app(Config, {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 's.db'}",
                            "SQLITE_SYNCHRONOUS": "sometimes", "SCHEDULER_ENABLED": False})
