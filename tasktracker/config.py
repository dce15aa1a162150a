"""Configuration read from the environment (and a `.env` file, see `.env.example`).

Every setting has an embedded-mode default so `make run` works on a fresh machine.
Production mode (``TASKTRACKER_ENV=production``) is validated by
:func:`validate_production` at start-up and refuses unsafe values.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from dotenv import load_dotenv

from tasktracker.mail.config import env_settings as mail_env_settings

BASE_DIR = Path(__file__).resolve().parent.parent
load_dotenv(BASE_DIR / ".env")

DEV_JWT_SECRET = "dev-only-insecure-secret-change-me-0123456789"


def _bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


class Config:
    """Base settings: the embedded default (SQLite, in-process jobs, one process)."""

    ENV = os.environ.get("TASKTRACKER_ENV", "development")
    SECRET_KEY = os.environ.get("SECRET_KEY", DEV_JWT_SECRET)
    SQLALCHEMY_DATABASE_URI = os.environ.get(
        "DATABASE_URL", f"sqlite:///{BASE_DIR / 'instance' / 'tasktracker.db'}"
    )
    SQLALCHEMY_ENGINE_OPTIONS = {"pool_pre_ping": True}

    JWT_SECRET_KEY = os.environ.get("JWT_SECRET_KEY", DEV_JWT_SECRET)
    JWT_ACCESS_TOKEN_EXPIRES = timedelta(seconds=_int("JWT_ACCESS_TOKEN_EXPIRES", 900))
    JWT_REFRESH_TOKEN_EXPIRES = timedelta(seconds=_int("JWT_REFRESH_TOKEN_EXPIRES", 30 * 86400))
    JWT_TOKEN_LOCATION = ["headers"]
    JWT_ALGORITHM = "HS256"
    JWT_DECODE_ALGORITHMS = ["HS256"]

    # Flask-Limiter: memory:// in one process; redis:// in production (shared).
    RATELIMIT_STORAGE_URI = os.environ.get("RATELIMIT_STORAGE_URI", "memory://")
    RATELIMIT_ENABLED = _bool("RATELIMIT_ENABLED", True)
    RATELIMIT_HEADERS_ENABLED = True
    LOGIN_RATE_LIMIT_IP = os.environ.get("LOGIN_RATE_LIMIT_IP", "20 per minute")
    LOGIN_RATE_LIMIT_ACCOUNT = os.environ.get("LOGIN_RATE_LIMIT_ACCOUNT", "10 per minute")

    CORS_ORIGINS = [o for o in os.environ.get("CORS_ORIGINS", "").split(",") if o]
    # Reverse proxies in front of the app that append X-Forwarded-For/-Proto/-Host: with
    # N > 0 the client address (per-IP rate limits, logs), scheme and host come from
    # the N-th last entry (werkzeug ProxyFix); 0 trusts no such header (direct clients
    # could forge them).
    TRUSTED_PROXY_HOPS = _int("TRUSTED_PROXY_HOPS", 0)

    MAX_UPLOAD_BYTES = _int("MAX_UPLOAD_BYTES", 10 * 1024 * 1024)
    UPLOAD_DIR = os.environ.get("UPLOAD_DIR", str(BASE_DIR / "instance" / "uploads"))
    MAX_JSON_BYTES = _int("MAX_JSON_BYTES", 1024 * 1024)

    # Background work. Empty CELERY_BROKER_URL -> embedded mode: jobs run in place
    # and an in-process scheduler thread does the beat's work.
    CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "")
    SOCKETIO_MESSAGE_QUEUE = os.environ.get("SOCKETIO_MESSAGE_QUEUE", "")
    # Which process this is (README, "Production"): "all" (embedded: REST + Socket.IO on
    # one address), "api" (REST API only, no Socket.IO endpoint) or "gateway" (Socket.IO).
    TASKTRACKER_ROLE = os.environ.get("TASKTRACKER_ROLE", "all")
    # gevent: one greenlet per connection, so idle sockets never take the threads REST
    # needs; threading (simple-websocket): a thread per websocket (GUNICORN_THREADS).
    SOCKETIO_ASYNC_MODE = os.environ.get("SOCKETIO_ASYNC_MODE", "gevent")
    # Engine.IO connections without an authenticated Socket.IO connect after this many
    # seconds are closed; at most this many open connections per client address.
    SOCKETIO_CONNECT_TIMEOUT_SECONDS = _float("SOCKETIO_CONNECT_TIMEOUT_SECONDS", 10.0)
    SOCKETIO_MAX_CONNECTIONS_PER_IP = _int("SOCKETIO_MAX_CONNECTIONS_PER_IP", 50)
    # Engine.IO transports accepted (comma list, see socketio_transports): "websocket"
    # alone lets one host run several gunicorn workers (gunicorn.conf.py, GUNICORN_WORKERS).
    SOCKETIO_TRANSPORTS = os.environ.get("SOCKETIO_TRANSPORTS", "polling,websocket")
    REDIS_URL = os.environ.get("REDIS_URL", "")
    # SQLite only (the embedded default): PRAGMA synchronous. FULL (SQLite's default): a
    # commit survives a power loss; NORMAL (with WAL): may lose the last commits then.
    SQLITE_SYNCHRONOUS = os.environ.get("SQLITE_SYNCHRONOUS", "FULL")
    # Socket.IO (tasktracker/realtime): the pub/sub channel (kombu exchange / Redis channel)
    # shared by every server and emitter of one deployment; presence keys in Redis and
    # their liveness (each server refreshes its heartbeat key every HEARTBEAT seconds;
    # entries of a server whose key expired after SERVER_TTL seconds are pruned).
    SOCKETIO_CHANNEL = os.environ.get("SOCKETIO_CHANNEL", "flask-socketio")
    PRESENCE_KEY_PREFIX = os.environ.get("PRESENCE_KEY_PREFIX", "tasktracker:presence")
    PRESENCE_HEARTBEAT_SECONDS = _float("PRESENCE_HEARTBEAT_SECONDS", 10.0)
    PRESENCE_SERVER_TTL_SECONDS = _int("PRESENCE_SERVER_TTL_SECONDS", 30)
    REALTIME_REPLAY_LIMIT = _int("REALTIME_REPLAY_LIMIT", 500)
    # Read cache of GET /api/tasks and /api/tasks/search (tasktracker/tasks/cache.py):
    # seconds a rendered page is kept (0: no server-side cache; ETag/304 still work),
    # in Redis when REDIS_URL is set (under LIST_CACHE_KEY_PREFIX), else in an
    # in-process LRU of LIST_CACHE_MAX_ENTRIES pages.
    LIST_CACHE_TTL_SECONDS = _int("LIST_CACHE_TTL_SECONDS", 60)
    LIST_CACHE_MAX_ENTRIES = _int("LIST_CACHE_MAX_ENTRIES", 256)
    LIST_CACHE_KEY_PREFIX = os.environ.get("LIST_CACHE_KEY_PREFIX", "tasktracker:lists")
    # Hot-path cache (tasktracker/core/hotcache.py): login sessions and the list data
    # version kept in process, dropped in every process by a Redis broadcast
    # (HOT_CACHE_CHANNEL) after each commit that changes them; TTL seconds is the bound
    # while that broadcast is down (0: off, every request reads the database).
    HOT_CACHE_TTL_SECONDS = _float("HOT_CACHE_TTL_SECONDS", 3.0)
    HOT_CACHE_CHANNEL = os.environ.get("HOT_CACHE_CHANNEL", "tasktracker:hotcache")
    SCAN_INTERVAL_SECONDS = _float("SCAN_INTERVAL_SECONDS", 60.0)
    OUTBOX_REDISPATCH_AFTER_SECONDS = _float("OUTBOX_REDISPATCH_AFTER_SECONDS", 30.0)
    SCHEDULER_ENABLED = _bool("SCHEDULER_ENABLED", True)
    # Celery queue of this deployment (tests use a unique one per run), publish
    # timeout of the API's fan-out hand-off, rows claimed per scan transaction,
    # and JOBS_INLINE: run fan-out synchronously after commit (tests, no threads).
    CELERY_TASK_QUEUE = os.environ.get("CELERY_TASK_QUEUE", "tasktracker")
    BROKER_PUBLISH_TIMEOUT_SECONDS = _float("BROKER_PUBLISH_TIMEOUT_SECONDS", 2.0)
    SCAN_BATCH_SIZE = _int("SCAN_BATCH_SIZE", 500)
    JOBS_INLINE = _bool("JOBS_INLINE", False)

    # Integrations (api-contract.md v1.1): webhook targets resolving to loopback,
    # private, link-local or multicast addresses are refused unless this is on (tests,
    # local receivers); PUBLIC_BASE_URL is the address clients reach the API at (the
    # calendar feed's URL and its UIDs' host).
    WEBHOOK_ALLOW_PRIVATE_TARGETS = _bool("WEBHOOK_ALLOW_PRIVATE_TARGETS", False)
    WEBHOOK_SCAN_INTERVAL_SECONDS = _float("WEBHOOK_SCAN_INTERVAL_SECONDS", 10.0)
    PUBLIC_BASE_URL = os.environ.get("PUBLIC_BASE_URL", "http://localhost:8000").rstrip("/")

    # argon2id cost of password hashes (argon2-cffi's RFC 9106 low-memory profile by
    # default: 3 passes over 64 MiB, 4 lanes). Existing hashes of another cost are
    # re-hashed at the next login. Tests lower it (TestConfig, tests/procs.py).
    PASSWORD_HASH_TIME_COST = _int("PASSWORD_HASH_TIME_COST", 3)
    PASSWORD_HASH_MEMORY_COST = _int("PASSWORD_HASH_MEMORY_COST", 65536)  # KiB
    PASSWORD_HASH_PARALLELISM = _int("PASSWORD_HASH_PARALLELISM", 4)

    IDEMPOTENCY_TTL = timedelta(hours=24)
    INVITATION_TTL = timedelta(days=7)
    LOG_JSON = _bool("LOG_JSON", False)

    # Email (contract v1.1 "Email"; tasktracker/mail/config.py DEFAULTS): every MAIL_*
    # setting, PUBLIC_BASE_URL and INVITATIONS_REQUIRE_VERIFIED_EMAIL, from the environment.
    vars().update(mail_env_settings())


SOCKETIO_TRANSPORT_CHOICES = ("polling", "websocket")


def socketio_transports(value: str | list[str] | tuple[str, ...]) -> list[str]:
    """``SOCKETIO_TRANSPORTS`` as python-engineio's ``transports=`` list.

    ``value`` is the setting: a comma-separated string (``"polling,websocket"``,
    ``"websocket"``; spaces and case ignored) or a list of names. Returns the names
    in order without duplicates. Raises ``ValueError`` when it is empty or names
    anything but ``polling`` and ``websocket`` (python-engineio would silently drop
    an unknown name).
    """
    items = value.split(",") if isinstance(value, str) else list(value)
    names = [str(item).strip().lower() for item in items if str(item).strip()]
    unknown = [name for name in names if name not in SOCKETIO_TRANSPORT_CHOICES]
    if unknown or not names:
        raise ValueError(f"SOCKETIO_TRANSPORTS must be a comma-separated list of "
                         f"{' and '.join(SOCKETIO_TRANSPORT_CHOICES)} (e.g. 'websocket' or "
                         f"'polling,websocket'), not {value!r}")
    return list(dict.fromkeys(names))


def celery_settings(broker_url: str) -> dict:
    """Celery settings (Flask's Celery pattern reads them from ``app.config["CELERY"]``)."""
    return {
        "broker_url": broker_url or "memory://",
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "broker_connection_retry_on_startup": True,
        "task_always_eager": not broker_url,
        "timezone": "UTC",
        "enable_utc": True,
    }


#: Default PostgreSQL pool per process and role: (pool size, overflow). REST API: a
#: little above granian's 8 blocking threads; gateway: bounded, since thousands of
#: greenlets may connect at once (they queue for a connection; 40 per gateway
#: exhausted PostgreSQL's 100 connections in the 10,000-socket bench); others
#: (workers, beat, CLI, single gunicorn): as before.
_POOL_BY_ROLE = {"api": (10, 5), "gateway": (10, 0)}
_POOL_DEFAULT = _POOL_BY_ROLE.get(os.environ.get("TASKTRACKER_ROLE", "all"), (20, 20))


class ProductionConfig(Config):
    """Production: PostgreSQL, RabbitMQ, Redis; validated by :func:`validate_production`."""

    ENV = "production"
    # PostgreSQL pool sized for the concurrent requests: a pool smaller than them opens and
    # closes a connection per request (bench/, py-spy); larger ones add up over processes.
    SQLALCHEMY_ENGINE_OPTIONS = {
        "pool_pre_ping": True,
        "pool_size": _int("DB_POOL_SIZE", _POOL_DEFAULT[0]),
        "max_overflow": _int("DB_MAX_OVERFLOW", _POOL_DEFAULT[1]),
        # seconds a request waits for a free connection before its 503 (core/errors.py)
        "pool_timeout": _float("DB_POOL_TIMEOUT", 30.0),
    }
    SCHEDULER_ENABLED = False  # the Celery beat process does the scans
    LOG_JSON = _bool("LOG_JSON", True)


class TestConfig(Config):
    """pytest: a throwaway database given by the test fixtures, fast scans, no scheduler."""

    TESTING = True
    SQLITE_SYNCHRONOUS = "OFF"  # throwaway databases: no fsync per commit
    ENV = "testing"
    SOCKETIO_ASYNC_MODE = "threading"  # in-process test clients, no monkey-patching
    SQLALCHEMY_DATABASE_URI = "sqlite://"
    # No liveness ping per pool checkout (one round trip each, a tenth of the suite's):
    # the tests' databases never restart under an in-process app; the process tests
    # (test_faults.py restarts PostgreSQL) run production's config, ping included.
    SQLALCHEMY_ENGINE_OPTIONS: dict = {}
    RATELIMIT_ENABLED = False
    SCHEDULER_ENABLED = False
    JOBS_INLINE = True
    CELERY_BROKER_URL = ""
    SOCKETIO_MESSAGE_QUEUE = ""
    REDIS_URL = ""
    # Tests insert rows without events (factories), which the list cache cannot see:
    # it is off unless a test turns it on (tests/test_list_cache.py).
    LIST_CACHE_TTL_SECONDS = 0
    # Same algorithm (argon2id), cheapest parameters: registrations and logins are most tests.
    PASSWORD_HASH_TIME_COST = 1
    PASSWORD_HASH_MEMORY_COST = 1024
    PASSWORD_HASH_PARALLELISM = 1


class ConfigError(RuntimeError):
    """Raised at start-up when production settings are unsafe or incomplete."""


def validate_production(config: dict) -> None:
    """Refuse to start production with unsafe settings.

    Raises :class:`ConfigError` naming every problem: a default or short
    (< 32 chars) ``JWT_SECRET_KEY``, a SQLite ``DATABASE_URL``, a missing
    ``CELERY_BROKER_URL``, a missing ``SOCKETIO_MESSAGE_QUEUE`` (the workers' live
    events would reach no client), a missing ``REDIS_URL`` (presence and the list
    cache would be per process), a ``CELERY_TASK_QUEUE`` equal to ``SOCKETIO_CHANNEL``.
    """
    problems = []
    secret = config.get("JWT_SECRET_KEY") or ""
    if secret == DEV_JWT_SECRET or len(secret) < 32:
        problems.append("JWT_SECRET_KEY must be set to a random value of at least 32 characters")
    if str(config.get("SQLALCHEMY_DATABASE_URI", "")).startswith("sqlite"):
        problems.append("DATABASE_URL must point at PostgreSQL in production, not SQLite")
    if not config.get("CELERY_BROKER_URL"):
        problems.append("CELERY_BROKER_URL (RabbitMQ) is required in production")
    if not config.get("SOCKETIO_MESSAGE_QUEUE"):
        problems.append("SOCKETIO_MESSAGE_QUEUE is required in production (the Celery workers push live "
                        "events through it; without it they reach no client), e.g. the broker's amqp:// URL")
    if not config.get("REDIS_URL"):
        problems.append("REDIS_URL is required in production (presence and the list cache shared by "
                        "every process)")
    if config.get("CELERY_TASK_QUEUE") == config.get("SOCKETIO_CHANNEL"):
        problems.append("CELERY_TASK_QUEUE and SOCKETIO_CHANNEL must differ (RabbitMQ refuses "
                        "a queue and a fanout exchange of the same name)")
    if problems:
        raise ConfigError("Refusing to start in production: " + "; ".join(problems))
