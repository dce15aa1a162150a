"""Helpers for tests that run the real deployment as subprocesses: gunicorn web
servers (``gunicorn -c gunicorn.conf.py wsgi:app``), Celery workers and a beat
(``celery_worker.py``), a fresh migrated PostgreSQL database, a private PostgreSQL
instance, a TCP proxy to simulate an outage of a shared service, and a
python-socketio client that records what it receives.

Every process is started in its own session and stopped by its pid/process group
(never by name). Logs go to files under the test's tmp dir; failures show the tail.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections import Counter
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from tasktracker.config import Config, TestConfig
from tests.conftest import RABBITMQ_URL, REDIS_URL, _create_postgres_database, require_service

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PASSWORD = "correct-horse-9"
JWT_SECRET = "deployment-tests-" + "x" * 40
_HASHING = ("PASSWORD_HASH_TIME_COST", "PASSWORD_HASH_MEMORY_COST", "PASSWORD_HASH_PARALLELISM")
#: The tests' cheap argon2 cost (TestConfig's) for the processes the tests start (:func:`base_env`).
CHEAP_HASHING = {name: str(getattr(TestConfig, name)) for name in _HASHING}
#: The production argon2 cost (config.py's defaults), for a test that needs slow requests.
FULL_HASHING = {name: str(getattr(Config, name)) for name in _HASHING}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.1):
    """Poll ``predicate`` until truthy or ``timeout`` seconds; returns its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


def tail(path: Path, n: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except FileNotFoundError:
        return "(no output)"


# --------------------------------------------------------------------------- services


def check_rabbitmq(url: str = RABBITMQ_URL) -> str:
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, timeout=3)
    except Exception as exc:  # noqa: BLE001
        require_service("RabbitMQ", f"{url}: {exc}")
    return url


def check_redis(url: str = REDIS_URL) -> str:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        require_service("Redis", f"{url}: {exc}")
    return url


def delete_queue(*names: str) -> None:
    """Delete the RabbitMQ queues *and* exchanges of these names, if they exist: a run's
    Celery queue (Celery declares a direct exchange of the same name) and its Socket.IO
    channel (a fanout exchange; kombu's per-server queues expire on their own)."""
    from kombu import Connection

    try:
        with Connection(RABBITMQ_URL, connect_timeout=3) as conn:
            channel = conn.default_channel
            for name in names:  # RabbitMQ deletes what does not exist without an error
                channel.queue_delete(name)
                channel.exchange_delete(name)
    except Exception:  # noqa: BLE001 - broker unreachable: nothing to clean
        pass


def delete_redis_keys(prefix: str) -> None:
    import redis

    r = redis.Redis.from_url(REDIS_URL)
    keys = list(r.scan_iter(match=f"{prefix}*"))
    if keys:
        r.delete(*keys)


def skip_unless_postgres(database_url: str) -> None:
    """These tests run the production stack: PostgreSQL half only."""
    if not database_url.startswith("postgresql"):
        pytest.skip("deployment/fault tests run real processes on PostgreSQL (the production "
                    "database); the SQLite half has nothing to add")


def base_env(**overrides: str) -> dict:
    """The environment of the app's processes: the caller's, minus app settings
    that would leak in, plus test-friendly defaults (:data:`CHEAP_HASHING` included)
    and ``overrides``."""
    prefixes = ("CELERY_", "SOCKETIO_", "REDIS_", "PRESENCE_", "DATABASE_", "SCAN_", "OUTBOX_",
                "GUNICORN_", "TASKTRACKER_", "JOBS_", "SCHEDULER_", "PASSWORD_HASH_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update({"TASKTRACKER_ENV": "development", "JWT_SECRET_KEY": JWT_SECRET, "FLASK_APP": "wsgi.py",
                "RATELIMIT_ENABLED": "false", "SCHEDULER_ENABLED": "false", "LOG_JSON": "false",
                "CELERY_BROKER_URL": "", "SOCKETIO_MESSAGE_QUEUE": "", "REDIS_URL": "",
                "SOCKETIO_ASYNC_MODE": "threading", "PYTHONUNBUFFERED": "1",
                "GUNICORN_LOG_LEVEL": "info", **CHEAP_HASHING})
    env.update(overrides)
    return env


def production_env(name: str, database_url: str, **overrides: str) -> dict:
    """:func:`base_env` for the production stack on ``database_url``: production mode,
    the tests' JWT secret, RabbitMQ (Celery broker and Socket.IO queue), Redis, and a
    Celery queue, Socket.IO channel, hot-cache channel and Redis key prefixes unique to
    this run (``tt-<name>-<run>``, ``tt-<name>:<run>:...``; :func:`clean_production_env`
    deletes them). Rate limits off, plain-text logs; ``overrides`` on top."""
    run = uuid.uuid4().hex[:10]
    keys = f"tt-{name}:{run}"
    return base_env(**{
        "TASKTRACKER_ENV": "production", "SECRET_KEY": JWT_SECRET, "JWT_SECRET_KEY": JWT_SECRET,
        "DATABASE_URL": database_url, "CELERY_BROKER_URL": RABBITMQ_URL,
        "CELERY_TASK_QUEUE": f"tt-{name}-{run}", "SOCKETIO_MESSAGE_QUEUE": RABBITMQ_URL,
        "SOCKETIO_CHANNEL": f"tt-{name}-sio-{run}", "REDIS_URL": REDIS_URL,
        "PRESENCE_KEY_PREFIX": f"{keys}:presence", "LIST_CACHE_KEY_PREFIX": f"{keys}:lists",
        "HOT_CACHE_CHANNEL": f"{keys}:hotcache", "RATELIMIT_ENABLED": "false", "LOG_JSON": "false",
        **overrides})


def clean_production_env(env: dict) -> None:
    """Delete the RabbitMQ queue/exchanges and the Redis keys of a :func:`production_env`."""
    delete_queue(env["CELERY_TASK_QUEUE"], env["SOCKETIO_CHANNEL"])
    delete_redis_keys(env["PRESENCE_KEY_PREFIX"].rsplit(":", 1)[0] + ":")


def migrate(database_url: str, log_dir: Path, env: dict | None = None, *, cli: bool = False) -> None:
    """The schema of ``database_url`` at the migrations' head.

    ``cli``: ``flask db upgrade`` in a subprocess with ``env``, as an operator runs it
    (tests/test_e2e_gunicorn.py; the README's production test runs the README's own
    commands). Otherwise Flask-Migrate's ``upgrade()`` in this process: the same
    revisions through the same ``migrations/env.py``, without starting an interpreter
    that imports the whole app again (2.3 s of CPU, a tenth of the process tests')."""
    if not cli:
        import flask_migrate

        from tasktracker import create_app, register_migrations
        from tasktracker.extensions import db

        app = create_app(TestConfig, {"SQLALCHEMY_DATABASE_URI": database_url})
        register_migrations(app)
        with app.app_context():
            try:
                with warnings.catch_warnings():  # SQLite's batch copies cannot reflect expression indexes
                    warnings.filterwarnings("ignore", "Skipped unsupported reflection", sa.exc.SAWarning)
                    flask_migrate.upgrade(directory=str(ROOT / "migrations"))
            finally:
                db.session.remove()
                db.engine.dispose()
        return
    log = log_dir / f"migrate-{uuid.uuid4().hex[:6]}.log"
    with open(log, "wb") as out:
        done = subprocess.run([str(BIN / "flask"), "db", "upgrade"], cwd=ROOT,
                              env={**(env or base_env()), "DATABASE_URL": database_url},
                              stdout=out, stderr=subprocess.STDOUT, timeout=120)
    if done.returncode != 0:
        pytest.fail(f"flask db upgrade failed:\n{tail(log)}")


def migrated_database(log_dir: Path, *, cli: bool = False) -> tuple[str, callable]:
    """A fresh PostgreSQL database on the shared server, migrated (:func:`migrate`,
    ``cli`` as there); returns (url, drop)."""
    url, drop = _create_postgres_database()
    try:
        migrate(url, log_dir, cli=cli)
    except BaseException:
        drop()
        raise
    return url, drop


# --------------------------------------------------------------------------- processes


class Proc:
    """A subprocess we started (own session, output to a log file); stopped by pid.
    ``stdin``/``stdout`` (e.g. ``subprocess.PIPE``) replace no input / the log file;
    stderr always goes to the log."""

    def __init__(self, name: str, args: list[str], env: dict, log_dir: Path, stdin=None, stdout=None):
        self.name = name
        self.log_path = log_dir / f"{name}-{uuid.uuid4().hex[:4]}.log"
        self._log = open(self.log_path, "wb")
        self.popen = subprocess.Popen(args, env=env, cwd=ROOT, stdin=stdin,
                                      stdout=self._log if stdout is None else stdout, stderr=self._log,
                                      start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, n: int = 40) -> str:
        return f"--- {self.name} ({self.log_path})\n{tail(self.log_path, n)}"

    def send(self, sig: int) -> None:
        """Send ``sig`` to the process we started (not its group)."""
        if self.alive():
            os.kill(self.popen.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
        """``sig`` to our process group, SIGKILL after ``timeout`` s; idempotent."""
        if self.alive():
            try:
                os.killpg(self.popen.pid, sig)
                self.popen.wait(timeout)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.popen.wait(10)
        else:  # the master is gone: make sure nothing of its group is left
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if not self._log.closed:
            self._log.close()


class Web(Proc):
    """``gunicorn -c gunicorn.conf.py wsgi:app`` on a free port (HOST/PORT env)."""

    def __init__(self, name: str, env: dict, log_dir: Path, **settings: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(name, [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"],
                         {**env, "HOST": "127.0.0.1", "PORT": str(self.port), **settings}, log_dir)

    def wait_ready(self, timeout: float = 30) -> "Web":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                pytest.fail(f"{self.name} exited:\n{self.log_tail()}")
            try:
                if requests.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        pytest.fail(f"{self.name} not ready after {timeout}s:\n{self.log_tail()}")


class CeleryProc(Proc):
    """``celery -A celery_worker.celery worker|beat``."""

    @classmethod
    def worker(cls, name: str, env: dict, log_dir: Path, wait: bool = True) -> "CeleryProc":
        """One worker thread (``--pool=threads -c 1``): no fork, and not the solo pool,
        whose acks wait for kombu's next poll, up to 10 s (``warn_if_solo_pool``)."""
        node = f"{name}-{uuid.uuid4().hex[:6]}@%h"
        proc = cls(name, [str(BIN / "celery"), "-A", "celery_worker.celery", "worker",
                          "--pool=threads", "--concurrency=1", "--loglevel=INFO", "-n", node,
                          "--without-gossip", "--without-mingle", "--without-heartbeat"], env, log_dir)
        if wait:
            proc.wait_ready()
        return proc

    @classmethod
    def beat(cls, env: dict, log_dir: Path) -> "CeleryProc":
        return cls("beat", [str(BIN / "celery"), "-A", "celery_worker.celery", "beat", "--loglevel=INFO",
                            "-s", str(log_dir / f"beat-schedule-{uuid.uuid4().hex[:6]}")], env, log_dir)

    def wait_ready(self, timeout: float = 45) -> None:
        ok = wait_for(lambda: not self.alive() or " ready." in self.log(), timeout)
        assert ok and self.alive(), f"{self.name} did not start:\n{self.log_tail()}"


class ApiServer(Proc):
    """A REST API process as production runs it: ``TASKTRACKER_ROLE=api granian --interface
    wsgi --host 127.0.0.1 --port <free> --workers N --blocking-threads 8 --no-ws wsgi:app``."""

    def __init__(self, name: str, env: dict, log_dir: Path, workers: int = 1, **settings: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(name, [str(BIN / "granian"), "--interface", "wsgi", "--host", "127.0.0.1",
                                "--port", str(self.port), "--workers", str(workers),
                                "--blocking-threads", "8", "--no-ws", "wsgi:app"],
                         {**env, "TASKTRACKER_ROLE": "api", **settings}, log_dir)

    wait_ready = Web.wait_ready


def gateway_settings(**settings: str) -> dict:
    """The environment additions of a real-time gateway (``TASKTRACKER_ROLE=gateway``,
    gevent) started by :class:`Web` (``gunicorn -c gunicorn.conf.py wsgi:app``)."""
    return {"TASKTRACKER_ROLE": "gateway", "SOCKETIO_ASYNC_MODE": "gevent", **settings}


def nginx_binary() -> str:
    """nginx from Debian's package; missing: fails under CI=true, else skips."""
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if not found:
        require_service("nginx", "no nginx binary on PATH or at /usr/sbin/nginx (apt-get install nginx)")
    return found


class Nginx(Proc):
    """``deploy/nginx.conf`` rendered into ``log_dir/<name>`` with its addresses replaced
    (listen 127.0.0.1:8080 -> a free port; the API upstream 127.0.0.1:8001 -> ``api_ports``;
    the gateways 127.0.0.1:8101/8102 -> ``gateway_ports``), run in the foreground:
    ``nginx -p <dir> -c <dir>/nginx.conf -g 'daemon off;'``."""

    CONF = ROOT / "deploy" / "nginx.conf"

    def __init__(self, name: str, log_dir: Path, api_ports: list[int], gateway_ports: list[int]):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.prefix = log_dir / f"{name}-{uuid.uuid4().hex[:4]}"
        self.prefix.mkdir()
        self.conf_path = self.prefix / "nginx.conf"
        self.conf_path.write_text(self.render(self.CONF.read_text(), self.port, api_ports, gateway_ports))
        super().__init__(name, [nginx_binary(), "-p", str(self.prefix), "-e", str(self.prefix / "error.log"),
                                "-c", str(self.conf_path), "-g", "daemon off;"], dict(os.environ), log_dir)

    @staticmethod
    def render(conf: str, port: int, api_ports: list[int], gateway_ports: list[int]) -> str:
        """The conf with the four addresses of deploy/nginx.conf replaced (text substitution).
        More API servers than one, or gateways than two, are added on the same line as the
        conf's last server of that upstream (``server a; server b;``); with one gateway the
        line of the second is left out."""
        for address in ("127.0.0.1:8080;", "127.0.0.1:8001;", "127.0.0.1:8101;", "127.0.0.1:8102;"):
            assert conf.count(address) == 1, f"deploy/nginx.conf: expected {address} once"
        assert api_ports and gateway_ports, "at least one API server and one gateway"
        if len(gateway_ports) == 1:
            conf = "".join(line for line in conf.splitlines(keepends=True)
                           if "server 127.0.0.1:8102;" not in line)
            conf = conf.replace("127.0.0.1:8101;", f"127.0.0.1:{gateway_ports[0]};")
            gateway_ports = []

        def servers(ports: list[int]) -> str:
            return " server ".join(f"127.0.0.1:{p};" for p in ports)

        conf = conf.replace("127.0.0.1:8080;", f"127.0.0.1:{port};")
        conf = conf.replace("127.0.0.1:8001;", servers(api_ports))
        if gateway_ports:
            conf = conf.replace("127.0.0.1:8101;", servers(gateway_ports[:1]))
            conf = conf.replace("127.0.0.1:8102;", servers(gateway_ports[1:]))
        return conf

    def log(self) -> str:
        errors = self.prefix / "error.log"
        return super().log() + (errors.read_text(errors="replace") if errors.exists() else "")

    def log_tail(self, n: int = 40) -> str:
        return (f"--- {self.name} ({self.log_path})\n{tail(self.log_path, n)}\n"
                f"--- {self.name} error.log\n{tail(self.prefix / 'error.log', n)}")

    def wait_ready(self, timeout: float = 15) -> "Nginx":
        """Listening and proxying: ``/health`` through it answers 200."""
        return Web.wait_ready(self, timeout)


class Stack:
    """Processes of one test (or module), stopped in reverse order by ``stop_all``."""

    def __init__(self, log_dir: Path, env: dict):
        self.log_dir = log_dir
        self.env = env
        self.procs: list[Proc] = []

    def add(self, proc: Proc) -> Proc:
        self.procs.append(proc)
        return proc

    def web(self, name: str, **settings: str) -> Web:
        return self.add(Web(name, self.env, self.log_dir, **settings)).wait_ready()

    def api(self, name: str, wait: bool = True, workers: int = 1, **settings: str) -> ApiServer:
        """A REST API process (granian, ``TASKTRACKER_ROLE=api``)."""
        proc = self.add(ApiServer(name, self.env, self.log_dir, workers=workers, **settings))
        return proc.wait_ready() if wait else proc

    def gateway(self, name: str, wait: bool = True, **settings: str) -> Web:
        """A real-time gateway (gunicorn gevent, ``TASKTRACKER_ROLE=gateway``)."""
        proc = self.add(Web(name, self.env, self.log_dir, **gateway_settings(**settings)))
        return proc.wait_ready() if wait else proc

    def nginx(self, api_ports: list[int], gateway_ports: list[int], name: str = "nginx") -> Nginx:
        return self.add(Nginx(name, self.log_dir, api_ports, gateway_ports)).wait_ready()

    def worker(self, name: str = "worker", wait: bool = True, **settings: str) -> CeleryProc:
        proc = CeleryProc.worker(name, {**self.env, **settings}, self.log_dir, wait=False)
        self.add(proc)
        if wait:
            proc.wait_ready()
        return proc

    def beat(self) -> CeleryProc:
        proc = self.add(CeleryProc.beat(self.env, self.log_dir))
        time.sleep(0.3)
        assert proc.alive(), f"beat did not start:\n{proc.log_tail()}"
        return proc

    def logs(self, n: int = 40) -> str:
        return "\n".join(p.log_tail(n) for p in self.procs)

    def stop_all(self) -> None:
        """Signal every process at once, then wait for each (SIGKILL past its timeout):
        their shutdowns overlap instead of adding up. Celery workers get SIGQUIT (cold;
        their test queue is deleted anyway), the rest SIGTERM."""
        for proc in reversed(self.procs):
            if proc.alive():
                cold = isinstance(proc, CeleryProc) and proc.name != "beat"
                try:
                    os.killpg(proc.pid, signal.SIGQUIT if cold else signal.SIGTERM)
                except ProcessLookupError:
                    pass
        # an idle worker may notice a signal only ~10 s later: SIGKILL 3 s after the first
        # signal (the rest 8 s), counted from one start so that the waits overlap too
        started = time.monotonic()
        for proc in reversed(self.procs):
            limit = 3 if isinstance(proc, CeleryProc) else 8
            proc.stop(signal.SIGTERM, timeout=max(0.1, started + limit - time.monotonic()))


def unique_name(prefix: str) -> str:
    """``prefix_<6 hex>``: a username or team name unique to this run."""
    return f"{prefix}_{uuid.uuid4().hex[:6]}"


def make_team(owner: "User", db: "Db", *members: "User") -> int:
    """A team created by ``owner`` over REST, ``members`` added by SQL; its id."""
    r = owner.request("POST", "/api/teams", json={"name": unique_name("team")})
    assert r.status_code == 201, r.text
    for m in members:
        db.add_member(r.json()["id"], m.id)
    return r.json()["id"]


# --------------------------------------------------------------------------- HTTP clients


class User:
    """A registered, logged-in user of a running server (REST over ``requests``)."""

    def __init__(self, base: str, username: str):
        self.base = base
        self.username = username
        r = requests.post(f"{base}/api/auth/register", timeout=15,
                          json={"username": username, "email": f"{username}@example.com",
                                "password": PASSWORD})
        assert r.status_code == 201, r.text
        self.id = r.json()["id"]
        r = requests.post(f"{base}/api/auth/login", json={"username": username, "password": PASSWORD},
                          timeout=15)
        assert r.status_code == 200, r.text
        self.access = r.json()["access_token"]

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.access}"}

    def request(self, method: str, path: str, base: str | None = None, **kwargs) -> requests.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        kwargs.setdefault("timeout", 15)
        return requests.request(method, f"{base or self.base}{path}", headers=headers, **kwargs)


class SioClient:
    """A python-socketio client (websocket) recording every event it receives.
    ``client_options`` go to ``socketio.Client`` (e.g. ``websocket_extra_options``)."""

    def __init__(self, name: str, **client_options):
        import socketio

        self.name = name
        self.sio = socketio.Client(reconnection=False, **client_options)
        self.events: list[tuple[str, object]] = []
        self.connect_errors: list = []
        self._cond = threading.Condition()

        @self.sio.on("*")
        def _any(event, *args):
            with self._cond:
                self.events.append((event, args[0] if args else None))
                self._cond.notify_all()

        @self.sio.on("connect_error")
        def _connect_error(data=None):
            self.connect_errors.append(data)

    def connect(self, url: str, token: str, transports: tuple[str, ...] = ("websocket",)) -> "SioClient":
        self.sio.connect(url, auth={"token": token}, transports=list(transports), wait_timeout=10)
        return self

    def named(self, name: str) -> list:
        with self._cond:
            return [data for event, data in self.events if event == name]

    def wait_for(self, name: str, count: int = 1, timeout: float = 10, where=None) -> list:
        def matching():
            return [d for d in self.named(name) if where is None or where(d)]

        deadline = time.monotonic() + timeout
        with self._cond:
            while len(matching()) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
        return matching()

    def clear(self) -> None:
        """Forget the events received so far."""
        with self._cond:
            self.events.clear()

    def close(self) -> None:
        if self.sio.connected:
            try:
                self.sio.disconnect()
            except Exception:  # noqa: BLE001 - its server may be dead (crash tests)
                pass


class SioClients:
    """The ``sockets`` fixture: ``sockets(name, **client_options)`` makes a
    :class:`SioClient`; ``close()`` closes every one made (idempotent)."""

    def __init__(self):
        self.made: list[SioClient] = []

    def __call__(self, name: str, **client_options) -> SioClient:
        self.made.append(SioClient(name, **client_options))
        return self.made[-1]

    def close(self) -> None:
        for client in self.made:
            client.close()


# --------------------------------------------------------------------------- database checks


class Db:
    """Direct access to a test database from the test process (fresh snapshot per query)."""

    def __init__(self, url: str):
        self.engine = sa.create_engine(url, pool_pre_ping=True)

    def scalar(self, sql: str, **params):
        with self.engine.connect() as conn:
            return conn.execute(sa.text(sql), params).scalar()

    def count(self, table: str, where: str = "TRUE", **params) -> int:
        return self.scalar(f"SELECT count(*) FROM {table} WHERE {where}", **params)

    def add_member(self, team_id: int, user_id: int, role: str = "member") -> None:
        from tasktracker.teams.models import TeamMember

        with self.engine.begin() as conn:
            conn.execute(sa.insert(TeamMember.__table__).values(team_id=team_id, user_id=user_id, role=role))

    def add_due_reminders(self, owner_id: int, assignee_id: int, tasks: int, per_task: int) -> list[int]:
        """``tasks`` tasks (owner != assignee: two recipients each) with ``per_task``
        reminders already due; returns the reminder ids."""
        from datetime import timedelta

        from tasktracker.core.types import utcnow
        from tasktracker.tasks.models import Reminder, Task

        past = utcnow() - timedelta(minutes=1)
        with self.engine.begin() as conn:
            task_ids = [conn.execute(sa.insert(Task.__table__).values(
                title=f"due {i}", owner_id=owner_id, assignee_id=assignee_id)
                .returning(Task.__table__.c.id)).scalar_one() for i in range(tasks)]
            rows = conn.execute(sa.insert(Reminder.__table__).returning(Reminder.__table__.c.id),
                                [{"task_id": t, "remind_at": past - timedelta(seconds=j)}
                                 for t in task_ids for j in range(per_task)]).scalars().all()
        return list(rows)

    def reminder_notifications(self) -> Counter:
        """(user_id, reminder_id) -> number of deadline_reminder notifications."""
        from tasktracker.notifications.models import Notification

        table = Notification.__table__
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(table.c.user_id, table.c.data)
                                .where(table.c.type == "deadline_reminder")).all()
        return Counter((user_id, data["reminder_id"]) for user_id, data in rows)

    def notifications(self, where: str = "TRUE", **params) -> list:
        with self.engine.connect() as conn:
            return conn.execute(sa.text(f"SELECT user_id, type, event_seq, task_id FROM notifications "
                                        f"WHERE {where} ORDER BY id"), params).all()

    def dispose(self) -> None:
        self.engine.dispose()


# --------------------------------------------------------------------------- TCP proxy


class TcpProxy:
    """A TCP proxy on 127.0.0.1 (threads) to ``target``: ``cut()`` resets every open
    connection and refuses new ones (accepted, then closed at once) until ``restore()``.
    Simulates an outage of a shared service without touching the service."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1"):
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._up = True
        self._closed = False
        self.accepted = 0
        threading.Thread(target=self._accept_loop, daemon=True, name="proxy-accept").start()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                up = self._up
            if not up:
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self._conns.update((client, upstream))
                self.accepted += 1
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with self._lock:
                    self._conns.discard(s)
                _reset(s)

    def cut(self) -> None:
        with self._lock:
            self._up = False
            conns, self._conns = list(self._conns), set()
        for s in conns:
            _reset(s)

    def restore(self) -> None:
        with self._lock:
            self._up = True

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._listener.close()


def _reset(s: socket.socket) -> None:
    # shutdown() first: close() alone does not wake a thread blocked in recv() on the
    # socket, and the peer would see nothing until then
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass


# --------------------------------------------------------------------------- private PostgreSQL


class PrivatePostgres:
    """A PostgreSQL instance of one test (``initdb`` in a tmp dir owned by ``postgres``,
    ``pg_ctl`` start/stop/restart on a free port): its restart never disturbs the shared
    cluster. Needs root (to run as ``postgres``) and the server binaries; else skips
    (or fails under CI=true)."""

    def __init__(self):
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if os.geteuid() != 0 or not bins or not shutil.which("runuser"):
            require_service("private PostgreSQL", "needs root, runuser and /usr/lib/postgresql/*/bin")
        self.bindir = Path(bins[-1]).parent
        # directly under /tmp: pytest's tmp dirs (0700, root) are not reachable by postgres
        self.dir = Path(tempfile.mkdtemp(prefix="tt-pg-"))
        shutil.chown(self.dir, "postgres", "postgres")
        self.port = free_port()
        self.log = self.dir / "server.log"
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self._run("initdb", "-D", str(self.dir / "data"), "-A", "trust", "-U", "postgres", "--no-sync")

    def _run(self, tool: str, *args: str, timeout: float = 60) -> None:
        done = subprocess.run(["runuser", "-u", "postgres", "--", str(self.bindir / tool), *args],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
        if done.returncode != 0:
            pytest.fail(f"{tool} {' '.join(args)} failed:\n{done.stdout.decode(errors='replace')}\n"
                        f"{tail(self.log)}")

    def _ctl(self, action: str, *extra: str) -> None:
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-l", str(self.log), "-w", "-t", "30",
                  "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off",
                  *extra, action)

    def start(self) -> None:
        self._ctl("start")

    def stop(self) -> None:
        self._ctl("stop", "-m", "fast")

    def restart(self) -> None:
        self._ctl("restart", "-m", "fast")

    def running(self) -> bool:
        return (self.dir / "data" / "postmaster.pid").exists()

    def create_database(self, name: str) -> str:
        engine = sa.create_engine(self.url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def cleanup(self) -> None:
        if self.running():
            try:
                self._run("pg_ctl", "-D", str(self.dir / "data"), "-w", "-t", "20", "stop", "-m", "immediate")
            except BaseException:  # noqa: BLE001 - best effort in teardown
                pass
        shutil.rmtree(self.dir, ignore_errors=True)


__all__ = ["ApiServer", "BIN", "CHEAP_HASHING", "CeleryProc", "Db", "FULL_HASHING", "Nginx", "PASSWORD",
           "PrivatePostgres", "Proc", "ROOT", "SioClient", "SioClients", "Stack", "TcpProxy", "User", "Web",
           "base_env", "check_rabbitmq", "check_redis", "delete_queue", "delete_redis_keys", "free_port",
           "gateway_settings", "migrate", "migrated_database", "nginx_binary", "skip_unless_postgres", "tail",
           "wait_for"]


def publish_to(app, monkeypatch, broker_url: str, queue: str) -> None:
    """Make the in-process test ``app`` a production-mode publisher for the rest of the
    test: its jobs (fan-out, deliveries, mail) go to Celery on ``broker_url``, queue
    ``queue`` (``monkeypatch`` restores the config afterwards)."""
    from tasktracker import jobs
    from tasktracker.config import celery_settings
    from tasktracker.jobs.setup import celery_init_app

    monkeypatch.setitem(app.extensions, "celery", app.extensions["celery"])
    monkeypatch.setitem(app.extensions, jobs._BROKER_DOWN_UNTIL, 0.0)
    monkeypatch.setitem(app.config, "CELERY_BROKER_URL", broker_url)
    monkeypatch.setitem(app.config, "CELERY", celery_settings(broker_url))
    monkeypatch.setitem(app.config, "CELERY_TASK_QUEUE", queue)
    celery_init_app(app)
    assert jobs.jobs_mode(app) == "celery"
