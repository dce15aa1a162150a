"""pytest fixtures (Flask tutorial style: ``app``, ``client``, ``runner``, ``auth``).

Every test runs against SQLite and against PostgreSQL (the ``database`` fixture
is parametrized). Outside CI a missing PostgreSQL skips its half with a reason;
with ``CI=true`` it fails the run. Each pytest run gets its own PostgreSQL
database (``tt_test_<random>``), so parallel runs do not collide.
"""

from __future__ import annotations

import gc
import os
import re
import uuid
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from flask import current_app

from tasktracker import create_app, register_migrations
from tasktracker.auth.schemas import UserSchema
from tasktracker.config import TestConfig
from tasktracker.core.db import import_all_models
from tasktracker.extensions import db
from tests.helpers import People, RealtimeCalls, TeamSetup, orm_user

IN_CI = os.environ.get("CI", "").lower() == "true"
POSTGRES_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
RABBITMQ_URL = os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


#: Modules whose tests share processes started by a module-scoped fixture: under
#: pytest-xdist each runs whole on one worker (:func:`pytest_xdist_make_scheduler`),
#: so its stack starts once. Any other test goes to whichever worker is free.
SHARED_PROCESS_MODULES = frozenset(f"tests/{name}.py" for name in (
    "test_deployment", "test_e2e_gunicorn", "test_faults", "test_flood", "test_http_limits",
    "test_readme_production", "test_realtime_processes", "test_split_deployment"))


def pytest_collection_modifyitems(config, items) -> None:
    """The tests that start processes first (a stable sort: each module's stay in their
    order): they mostly wait on their servers, so their waits overlap the CPU-bound
    in-process tests of the other xdist workers instead of ending the run on idle cores
    (alphabetically, ``test_webhooks_worker`` and ``test_worker_integration`` came last)."""
    items.sort(key=lambda item: item.get_closest_marker("integration") is None)


def pytest_xdist_make_scheduler(config, log):
    """``--dist loadgroup`` (the Makefile's) with :data:`SHARED_PROCESS_MODULES` as the
    groups: xdist's own loadgroup reads ``xdist_group`` marks by rewriting
    ``item._nodeid``, which pytest 9 no longer has, so every test was spread (and each
    worker started its own copy of a module's stack, once per test). The groups are
    handed out first, biggest first (xdist's ``--loadscope-reorder``)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SharedProcessModules(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if module in SHARED_PROCESS_MODULES else nodeid

    return SharedProcessModules(config, log)


def pytest_collection_finish(session) -> None:
    """Garbage collection tuned for a test process whose heap is mostly what collection
    built (the app's and the plugins' modules, the items): that part is moved out of
    the collector's reach (``gc.freeze``), and collections run less often (the young
    generation every 20,000 net allocations instead of 700, a full one every 400 young
    ones instead of 100). Measured in a ``make test-fast``: 4.1 s of GC per xdist
    worker before (3 of them in 13 full collections of ~650,000 objects), 1.8 s after;
    each worker's peak RSS 430 MB."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


def require_service(name: str, reason: str) -> None:
    """Fail under CI=true, skip otherwise: services needed by a test must exist in CI."""
    if IN_CI:
        pytest.fail(f"{name} is required under CI=true: {reason}")
    pytest.skip(f"{name} unavailable: {reason}")


def _create_postgres_database() -> tuple[str, callable]:
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"tt_test_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
            # a throwaway database: commits need not wait for the WAL flush (every
            # connection to it, the subprocess servers' too)
            conn.execute(sa.text(f'ALTER DATABASE "{name}" SET synchronous_commit = off'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        require_service("PostgreSQL", str(exc).splitlines()[0])
    url = sa.engine.make_url(POSTGRES_ADMIN_URL).set(database=name)

    def drop():
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return url.render_as_string(hide_password=False), drop


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(request, tmp_path_factory):
    """A fresh empty database URL for this run, one per backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"
        return
    url, drop = _create_postgres_database()
    yield url
    drop()


@pytest.fixture(scope="session")
def app(database_url, tmp_path_factory):
    """The app bound to the test database; tables created from the models."""
    app = create_app(TestConfig, {"SQLALCHEMY_DATABASE_URI": database_url,
                                  "UPLOAD_DIR": str(tmp_path_factory.mktemp("uploads")),
                                  "MAIL_FILE_DIR": str(tmp_path_factory.mktemp("mail"))})
    import_all_models()
    with app.app_context():
        db.create_all()
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def sio(app, client):
    """``sio(token=..., **auth)`` opens a test Socket.IO connection; all are closed after
    the test and in-memory presence is reset (user ids are reused between tests)."""
    from socketio.pubsub_manager import PubSubManager

    from tasktracker import realtime
    from tasktracker.extensions import socketio

    state = realtime.get_state(app)
    if state.server is not socketio.server or isinstance(socketio.server.manager, PubSubManager):
        realtime.init_socketio(app)  # another test bound the shared extension elsewhere
        state = realtime.get_state(app)
    opened = []

    def connect(token=None, auth=None, **extra):
        if auth is None:
            auth = {"token": token, **extra}
        conn = socketio.test_client(app, auth=auth, flask_test_client=client)
        opened.append(conn)
        return conn

    yield connect
    for conn in opened:
        if conn.is_connected():
            conn.disconnect()
    state.presence.clear()


@pytest.fixture
def smtp():
    """A real SMTP server (aiosmtpd, tests/mail_support.py) on a free port, for the test."""
    from tests.mail_support import SMTPServer

    server = SMTPServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def limited_apps():
    """``limited_apps(database_url, **overrides)``: an app with login rate limits on
    (TestConfig turns them off), built once per database and settings."""
    apps = {}

    def get(database_url: str, **overrides):
        key = (database_url, tuple(sorted(overrides.items())))
        if key not in apps:
            apps[key] = create_app(TestConfig, {
                "RATELIMIT_ENABLED": True,
                "RATELIMIT_STORAGE_URI": "memory://",
                "LOGIN_RATE_LIMIT_ACCOUNT": "3 per minute",
                "LOGIN_RATE_LIMIT_IP": "6 per minute",
                "SQLALCHEMY_DATABASE_URI": database_url,
                **overrides,
            })
        return apps[key]

    yield get
    for limited in apps.values():
        with limited.app_context():
            db.session.remove()
            db.engine.dispose()


@pytest.fixture
def rate_limited(app, database_url, limited_apps):
    """``rate_limited(**overrides)``: a test client of a rate-limited app on the test's
    database (:func:`limited_apps`), every limit's count at zero.

    Flask-Limiter 4.1's ``Limiter`` is one process-global object: ``init_app``
    on an app with ``RATELIMIT_ENABLED`` sets ``limiter.enabled`` for every app
    and gives it its storage (``memory://``). The flag is on, and the storage
    emptied (``limiter.reset()``), for the test; the old flag is restored after it
    so the shared ``app`` stays unlimited.
    """
    from tasktracker.extensions import limiter

    was_enabled = limiter.enabled

    def client(**overrides):
        limited = limited_apps(database_url, **overrides)
        limiter.enabled = True
        limiter.reset()
        return limited.test_client()

    yield client
    limiter.enabled = was_enabled


@pytest.fixture(autouse=True)
def _app_context_and_clean_db(request):
    """Each test runs in an app context and starts with empty tables."""
    if "app" not in request.fixturenames:
        yield
        return
    app = request.getfixturevalue("app")
    with app.app_context():
        yield
        db.session.remove()
        # processes that a test starts may write to the test's database too
        _truncate_all(everything=request.node.get_closest_marker("integration") is not None)


#: Tables that an INSERT of this process named since the last :func:`_truncate_all`
#: (every engine: the shared app's, the tests' own apps', their threads').
_INSERTED_INTO: set[str] = set()
_INSERT_INTO = re.compile(r'\bINSERT\s+(?:OR\s+\w+\s+)?INTO\s+"?(\w+)', re.IGNORECASE)


@sa.event.listens_for(sa.engine.Engine, "before_cursor_execute")
def _note_inserts(conn, cursor, statement, parameters, context, executemany) -> None:
    _INSERTED_INTO.update(_INSERT_INTO.findall(statement))


def _truncate_all(everything: bool = False) -> None:
    """Empty the tables that can hold rows (each one an INSERT named since the last call;
    ``everything``: all of them) and restart their ids at 1.

    DELETE + resetting the sequences is about 10x faster than PostgreSQL's
    TRUNCATE on these small tables (measured: 0.02 s vs 0.2-0.5 s per test); on
    PostgreSQL it is one round trip (one batch of statements, no parameters).
    Emptying only the tables written to (a test writes to a few of the 25) halves
    what this costs an ordinary test.
    """
    # the in-process real-time state remembers when it last wrote each user's
    # last_seen_at (realtime.emitter): those users' rows go now, and the ids come again
    realtime_state = current_app.extensions.get("tt_realtime")
    if realtime_state is not None:
        realtime_state.forget_touches()
    written = set(_INSERTED_INTO)
    _INSERTED_INTO.clear()
    tables = [table for table in reversed(db.metadata.sorted_tables) if everything or table.name in written]
    if not tables:
        return
    with db.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("; ".join(
                [f'DELETE FROM "{table.name}"' for table in tables]
                + [f"SELECT setval(pg_get_serial_sequence('\"{table.name}\"', '{column.name}'), 1, false)"
                   for table in tables for column in table.primary_key.columns if _is_serial(table, column)]))
            return
        for table in tables:
            conn.execute(table.delete())
        if conn.execute(sa.text("SELECT 1 FROM sqlite_master WHERE name='sqlite_sequence'")).first():
            conn.execute(sa.text("DELETE FROM sqlite_sequence"))


def _is_serial(table: sa.Table, column: sa.Column) -> bool:
    """Whether ``column`` of ``table`` is backed by a sequence (an autoincrement id)."""
    return column.autoincrement is True or (column.autoincrement == "auto" and len(table.primary_key.columns) == 1
                                            and isinstance(column.type, sa.Integer))


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@dataclass
class Session:
    """A logged-in user as a test sees it."""

    user: dict
    access_token: str
    refresh_token: str

    @property
    def id(self) -> int:
        return self.user["id"]

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.access_token}"}


_USER_SCHEMA = UserSchema()


class AuthActions:
    """Register and log in users through the real API."""

    def __init__(self, client):
        self._client = client
        self._n = 0

    def register(self, username: str | None = None, password: str = "correct-horse-9", **extra) -> dict:
        self._n += 1
        username = username or f"user{self._n}_{uuid.uuid4().hex[:6]}"
        body = {"username": username, "email": f"{username}@example.com", "password": password, **extra}
        response = self._client.post("/api/auth/register", json=body)
        assert response.status_code == 201, response.json
        return response.json

    def login(self, username: str, password: str = "correct-horse-9") -> Session:
        response = self._client.post("/api/auth/login", json={"username": username, "password": password})
        assert response.status_code == 200, response.json
        body = response.json
        return Session(body["user"], body["access_token"], body["refresh_token"])

    def user(self, username: str | None = None, *, admin: bool = False) -> Session:
        """A registered, logged-in user (a site admin when ``admin``), made as
        registration and login make one: the ``users`` row with the argon2 hash of the
        password ``correct-horse-9`` and a login session from ``issue_tokens``, and
        the user as the login response shows it. Without their two HTTP requests:
        this is most tests' setup (``register``/``login`` here, and tests/test_auth.py,
        go through the API)."""
        return self.users(username, admins={username} if admin else ())[0]

    def users(self, *usernames: str | None, admins=()) -> list[Session]:
        """:meth:`user` for each of ``usernames`` (site admins: those in ``admins``),
        made together: one flush of the rows and one commit of their sessions."""
        from tasktracker.auth.models import User
        from tasktracker.auth.tokens import issue_tokens
        from tests.factories import password_hash

        rows = []
        for asked in usernames:
            self._n += 1
            username = asked or f"user{self._n}_{uuid.uuid4().hex[:6]}"
            rows.append(User(username=username, email=f"{username}@example.com", password_hash=password_hash(),
                             role="admin" if asked in admins else "member"))
        db.session.add_all(rows)
        db.session.flush()
        made = [(issue_tokens(user), _USER_SCHEMA.dump(user)) for user in rows]
        db.session.commit()
        return [Session(shown, tokens["access_token"], tokens["refresh_token"]) for tokens, shown in made]


@pytest.fixture
def auth(client):
    return AuthActions(client)


@pytest.fixture
def sockets():
    """``sockets(name, **client_options)`` makes a real python-socketio client
    (:class:`tests.procs.SioClient`); all are closed after the test."""
    from tests.procs import SioClients

    made = SioClients()
    yield made
    made.close()


@pytest.fixture
def alice(auth):
    """One logged-in user (cheaper than ``people`` for single-user tests)."""
    return auth.user("alice")


@pytest.fixture
def people(auth) -> People:
    """Four logged-in users: owner, assignee, other (no relation), site admin."""
    return People(*auth.users("owner", "assignee", "other", "root", admins={"root"}))


@pytest.fixture
def team_setup(auth) -> TeamSetup:
    """A team owned by ``team_owner`` with an admin and a plain member; and an outsider."""
    from tests.factories import TeamFactory, add_member

    team_owner, team_admin, member, outsider = auth.users("towner", "tadmin", "tmember", "outsider")
    team = TeamFactory(owner=orm_user(team_owner), name="Core")
    add_member(team, orm_user(team_admin), "admin")
    add_member(team, orm_user(member), "member")
    return TeamSetup(team, team_owner, team_admin, member, outsider)


@pytest.fixture
def realtime_calls(monkeypatch) -> RealtimeCalls:
    """Record ``realtime.emit`` / ``realtime.sync_membership`` calls instead of sending."""
    from tasktracker import realtime

    calls = RealtimeCalls()
    monkeypatch.setattr(realtime, "emit", lambda event, data, rooms: calls.emits.append(
        (event, data, list(rooms))), raising=False)
    monkeypatch.setattr(realtime, "sync_membership", lambda user_id, team_id, joined: calls.memberships.append(
        (user_id, team_id, joined)), raising=False)
    return calls


@pytest.fixture
def held_fanout(app, monkeypatch) -> list[int]:
    """Disable the after-commit fan-out (the app's event consumer): committed events
    stay undispatched. The list collects the seqs that would have been enqueued."""
    held: list[int] = []
    monkeypatch.setitem(app.extensions, "tt_event_consumer", lambda seqs: held.extend(seqs))
    return held



# --------------------------------------------------------------------------- Celery worker processes
# (test_worker_integration.py, test_webhooks_worker.py, test_mail_worker.py)


@pytest.fixture
def rabbitmq():
    """The test RabbitMQ (fails under CI=true, skips otherwise, when it is down)."""
    from tests.procs import check_rabbitmq

    return check_rabbitmq()


@pytest.fixture
def postgres_only(database_url):
    """The PostgreSQL test database: worker processes run against production's database."""
    if not database_url.startswith("postgresql"):
        pytest.skip("worker-process integration runs against PostgreSQL, the production database")
    return database_url


@pytest.fixture
def queue_name(rabbitmq):
    """A Celery queue of this test only; deleted afterwards (with its exchange)."""
    from tests.procs import delete_queue

    name = f"tt-test-{uuid.uuid4().hex[:12]}"
    yield name
    delete_queue(name)


@pytest.fixture
def processes(postgres_only, queue_name, tmp_path):
    """Celery worker/beat processes of one test (:class:`tests.procs.Stack`) on its own queue."""
    from tests.procs import Stack, base_env

    stack = Stack(tmp_path, base_env(DATABASE_URL=postgres_only, CELERY_BROKER_URL=RABBITMQ_URL,
                                     CELERY_TASK_QUEUE=queue_name, SCAN_INTERVAL_SECONDS="1",
                                     OUTBOX_REDISPATCH_AFTER_SECONDS="2", SCAN_BATCH_SIZE="100"))
    yield stack
    stack.stop_all()


@pytest.fixture
def publisher(app, monkeypatch, queue_name, postgres_only):
    """The in-process app publishes its jobs to this test's queue (:func:`tests.procs.publish_to`)."""
    from tests.procs import publish_to

    old = app.extensions["celery"]
    publish_to(app, monkeypatch, RABBITMQ_URL, queue_name)
    yield
    old.set_default()



# --------------------------------------------------------------------------- migrations


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_app(request, tmp_path):
    """An app bound to a brand-new, empty database of each backend (no create_all: the
    migration tests build the schema with ``flask db upgrade``)."""
    if request.param == "sqlite":
        url, drop = f"sqlite:///{tmp_path / 'migrations.db'}", (lambda: None)
    else:
        url, drop = _create_postgres_database()
    app = create_app(TestConfig, {"SQLALCHEMY_DATABASE_URI": url, "UPLOAD_DIR": str(tmp_path / "up")})
    register_migrations(app)
    import_all_models()
    try:
        yield app
    finally:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
        drop()
