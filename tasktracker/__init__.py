"""TaskTracker: a task-tracking backend for teams (Flask application factory).

The ``register_*`` steps import the domains they bind inside the function, on
purpose: this module is the package's ``__init__``, run by every ``import
tasktracker.<x>`` (a model in a migration, a test factory, a worker's task
module); importing the domains here would load the whole app (every domain,
Celery, Socket.IO) for each of them.
"""

from __future__ import annotations

import logging
import os

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from tasktracker.config import Config, ProductionConfig, celery_settings, validate_production
from tasktracker.core import hotcache
from tasktracker.core.db import register_sqlite_pragmas
from tasktracker.core.errors import register_error_handlers as _register_error_handlers
from tasktracker.core.logging import configure_logging
from tasktracker.extensions import cors, db, jwt, limiter, socketio


def create_app(config: type | None = None, overrides: dict | None = None) -> Flask:
    """Build the app.

    ``config`` is a config class; by default the one chosen by
    ``TASKTRACKER_ENV`` (``production`` -> :class:`ProductionConfig`, else
    :class:`Config`). ``overrides`` are applied on top. Production settings are
    validated (:func:`validate_production` raises ``ConfigError``).
    """
    app = Flask(__name__, instance_relative_config=True)
    if config is None:
        config = ProductionConfig if os.environ.get("TASKTRACKER_ENV") == "production" else Config
    app.config.from_object(config)
    app.config.update(overrides or {})
    app.config.setdefault("CELERY", celery_settings(app.config["CELERY_BROKER_URL"]))
    app.config["MAX_CONTENT_LENGTH"] = max(app.config["MAX_UPLOAD_BYTES"] + 64 * 1024,
                                           app.config["MAX_JSON_BYTES"])
    if app.config["ENV"] == "production":
        validate_production(app.config)

    register_logging(app)
    register_extensions(app)
    register_error_handlers(app)
    register_blueprints(app)
    register_cli(app)
    register_jobs(app)
    register_proxy_fix(app)  # outermost: Socket.IO's middleware sees the client too
    return app


def register_logging(app: Flask) -> None:
    configure_logging(app)
    # The embedded default's mail (no MAIL_SERVER) logs one INFO line per .eml file it
    # writes (contract v1.1 "Email"): without LOG_JSON nothing else configures logging,
    # and Python's last-resort handler shows warnings only.
    mail_log = logging.getLogger("tasktracker.mail")
    if not app.config.get("LOG_JSON") and not logging.getLogger().handlers and not mail_log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"))
        mail_log.addHandler(handler)
        mail_log.setLevel(logging.INFO)


def register_proxy_fix(app: Flask) -> None:
    """Behind ``TRUSTED_PROXY_HOPS`` reverse proxies, take the client's address, scheme
    and host from their ``X-Forwarded-*`` headers (werkzeug ``ProxyFix``): otherwise every
    client shares the proxy's address, and so its per-IP login limit."""
    hops = app.config["TRUSTED_PROXY_HOPS"]
    if hops > 0:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)


def register_extensions(app: Flask) -> None:
    from tasktracker import realtime
    from tasktracker.auth import tokens
    from tasktracker.events.services import register_event_hooks
    from tasktracker.jobs import enqueue_fanout, enqueue_mail_job
    from tasktracker.mail.dispatch import register_dispatcher
    from tasktracker.notifications.services import redispatch, register_realtime
    from tasktracker.events.services import register_event_writer
    from tasktracker.jobs import enqueue_deliveries
    from tasktracker.webhooks.services import deliveries_for_event, register_delivery_hooks

    db.init_app(app)
    jwt.init_app(app)
    tokens.register_jwt_callbacks(jwt)
    app.before_request(tokens.normalize_bearer_scheme)
    limiter.init_app(app)
    # The only limits are decorated ones (login), which check themselves in their
    # wrapper; with no default, application or blueprint limits, Flask-Limiter's
    # per-request before_request check has nothing to do but costs ~8% of a cached read.
    hooks = app.before_request_funcs[None]
    if limiter._check_request_limit in hooks:  # absent when RATELIMIT_ENABLED is off
        hooks.remove(limiter._check_request_limit)
    cors.init_app(app, resources={r"/api/*": {"origins": app.config["CORS_ORIGINS"]}},
                  expose_headers=["ETag", "Location", "Retry-After"])
    register_sqlite_pragmas(app)
    # The factory wires the layers that must not import each other: events/ hands
    # committed events to jobs/ (fast path) and to the fan-out (outbox scan), and
    # the fan-out pushes through realtime/.
    register_event_hooks(app, enqueue_fanout, redispatch)
    register_realtime(app, realtime)
    # webhook deliveries: outbox rows written in the change's transaction, handed to
    # the jobs layer after the commit (events/ and webhooks/ import no jobs/)
    register_event_writer(app, deliveries_for_event)
    register_delivery_hooks(app, enqueue_deliveries)
    register_dispatcher(app, enqueue_mail_job)  # mail/ endpoints -> jobs/ (password reset, verification)
    hotcache.init_hotcache(app)
    hotcache.register_invalidation_hooks()
    tokens.register_invalidation()
    realtime.init_socketio(app)


def register_error_handlers(app: Flask) -> None:
    _register_error_handlers(app)


def register_blueprints(app: Flask) -> None:
    from tasktracker.attachments.resources import bp as attachments_bp
    from tasktracker.auth.resources import bp as auth_bp
    from tasktracker.comments.resources import bp as comments_bp
    from tasktracker.mail.resources import bp as mail_bp
    from tasktracker.notifications.resources import bp as notifications_bp
    from tasktracker.ops import bp as ops_bp
    from tasktracker.tasks.resources import bp as tasks_bp
    from tasktracker.teams.resources import bp as teams_bp
    from tasktracker.openapi import bp as openapi_bp
    from tasktracker.feeds.resources import bp as feeds_bp
    from tasktracker.webhooks.resources import bp as webhooks_bp

    for bp in (ops_bp, auth_bp, feeds_bp, tasks_bp, teams_bp, comments_bp, attachments_bp,
               notifications_bp, webhooks_bp, mail_bp, openapi_bp):
        app.register_blueprint(bp)
    from tasktracker.realtime.resources import bp as realtime_bp

    app.register_blueprint(realtime_bp)


def register_cli(app: Flask) -> None:
    from tasktracker.cli import register_commands

    register_commands(app)
    if _loaded_by_flask_cli():
        register_migrations(app)


#: Alembic's revisions (``flask db ...``).
MIGRATIONS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "migrations")


def register_migrations(app: Flask) -> None:
    """Flask-Migrate on ``app``: ``app.extensions["migrate"]`` (which ``migrations/env.py``
    reads) and the ``flask db`` command group. :func:`create_app` does it only when the
    ``flask`` command loads the app; code that migrates in-process calls it itself
    (the tests). Flask-Migrate imports Alembic: 0.11 s of the 1.1 s that a server or
    worker process takes to import the app (``python -X importtime -c "import wsgi"``)."""
    from flask_migrate import Migrate

    Migrate(app, db, directory=MIGRATIONS_DIR)


def _loaded_by_flask_cli() -> bool:
    """Whether the ``flask`` command (Flask's ``FlaskGroup``) is loading the app, as for
    ``flask db upgrade`` (not gunicorn, granian or Celery's own command line)."""
    import click
    from flask.cli import FlaskGroup

    ctx = click.get_current_context(silent=True)
    return ctx is not None and isinstance(ctx.find_root().command, FlaskGroup)


def register_jobs(app: Flask) -> None:
    from tasktracker.jobs.setup import init_jobs

    init_jobs(app)
