"""Several gunicorn workers on one host (``GUNICORN_WORKERS``, ``SOCKETIO_TRANSPORTS``).

- gunicorn.conf.py, loaded as gunicorn loads it: one worker by default; more only
  with websocket-only Socket.IO, a message queue and no in-process scheduler, else
  gunicorn refuses to start with a message naming the settings to change.
- ``SOCKETIO_TRANSPORTS`` reaches python-engineio (``transports=``); a transport
  left out is refused with a 400.
- Integration (PostgreSQL, RabbitMQ, Redis; production mode): ONE gunicorn with two
  workers, websocket clients spread over both worker processes (checked in /proc:
  each worker's established sockets on the port, and in the Redis presence: one
  server id per process), a REST write reaches every client exactly once, and a
  long-polling handshake gets a 400, not a 500.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests

from tasktracker import create_app
from tasktracker.config import TestConfig, socketio_transports
from tasktracker.extensions import socketio
from tests.conftest import REDIS_URL
from tests.procs import (
    BIN, ROOT, SioClient, Stack, User, base_env, check_rabbitmq, check_redis, clean_production_env,
    free_port, migrated_database, production_env, skip_unless_postgres, wait_for,
)

CONF = ROOT / "gunicorn.conf.py"
QUEUE = "amqp://guest:guest@127.0.0.1:5672//"
# the settings gunicorn.conf.py reads; each test sets all of them
SETTINGS = ("GUNICORN_WORKERS", "SOCKETIO_TRANSPORTS", "SOCKETIO_MESSAGE_QUEUE", "CELERY_BROKER_URL",
            "SCHEDULER_ENABLED", "TASKTRACKER_ENV", "REDIS_URL", "RATELIMIT_ENABLED",
            "RATELIMIT_STORAGE_URI", "SOCKETIO_ASYNC_MODE")
SAFE = {"GUNICORN_WORKERS": "2", "SOCKETIO_TRANSPORTS": "websocket", "SOCKETIO_MESSAGE_QUEUE": QUEUE,
        "CELERY_BROKER_URL": QUEUE}


def load_conf(monkeypatch, **env: str):
    """gunicorn.conf.py executed as gunicorn does (a fresh module) with ``env``."""
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    spec = importlib.util.spec_from_file_location(f"gunicorn_conf_{uuid.uuid4().hex[:6]}", CONF)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeArbiter:
    """What the hooks use of gunicorn's arbiter: ``log`` and the ``num_workers`` property
    (whose setter calls the ``nworkers_changed`` hook, as gunicorn's does)."""

    def __init__(self, conf):
        self.conf = conf
        self.log = logging.getLogger("test.gunicorn")
        self._num_workers = None

    @property
    def num_workers(self):
        return self._num_workers

    @num_workers.setter
    def num_workers(self, value):
        old, self._num_workers = self._num_workers, value
        self.conf.nworkers_changed(self, value, old)


# --------------------------------------------------------------------------- gunicorn.conf.py


def test_one_worker_by_default(monkeypatch):
    conf = load_conf(monkeypatch)
    # the embedded default is one gevent process (idle connections cost greenlets)
    assert conf.workers == 1 and conf.worker_class == "gevent" and conf.worker_connections == 10000
    assert load_conf(monkeypatch, SOCKETIO_ASYNC_MODE="threading").worker_class == "gthread"
    FakeArbiter(conf).num_workers = 1  # embedded defaults are fine with one worker
    assert conf.multiworker_problems(1) == []


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5", ""])
def test_workers_must_be_a_positive_integer(monkeypatch, value):
    with pytest.raises(ValueError, match=r"GUNICORN_WORKERS must be an integer >= 1, not "):
        load_conf(monkeypatch, GUNICORN_WORKERS=value)


def test_bad_transports_refused_at_config_load(monkeypatch):
    with pytest.raises(ValueError, match="SOCKETIO_TRANSPORTS must be a comma-separated list"):
        load_conf(monkeypatch, SOCKETIO_TRANSPORTS="websockets")


@pytest.mark.parametrize("override, named, not_named", [
    ({"SOCKETIO_TRANSPORTS": "polling,websocket"}, ["SOCKETIO_TRANSPORTS=websocket"],
     ["SOCKETIO_MESSAGE_QUEUE", "SCHEDULER_ENABLED"]),
    ({"SOCKETIO_TRANSPORTS": "polling"}, ["SOCKETIO_TRANSPORTS=websocket"], ["SOCKETIO_MESSAGE_QUEUE"]),
    ({"SOCKETIO_MESSAGE_QUEUE": ""}, ["set SOCKETIO_MESSAGE_QUEUE"], ["SOCKETIO_TRANSPORTS"]),
    # queue set but embedded jobs: the in-process scheduler would start in every worker
    ({"CELERY_BROKER_URL": ""}, ["CELERY_BROKER_URL", "SCHEDULER_ENABLED=false"],
     ["SOCKETIO_MESSAGE_QUEUE", "SOCKETIO_TRANSPORTS"]),
    # the embedded defaults: all three
    ({"SOCKETIO_TRANSPORTS": "polling,websocket", "SOCKETIO_MESSAGE_QUEUE": "", "CELERY_BROKER_URL": ""},
     ["SOCKETIO_TRANSPORTS=websocket", "set SOCKETIO_MESSAGE_QUEUE", "SCHEDULER_ENABLED=false"], []),
])
def test_two_workers_refused_with_what_to_set(monkeypatch, override, named, not_named):
    conf = load_conf(monkeypatch, **{**SAFE, **override})
    assert conf.workers == 2
    with pytest.raises(RuntimeError, match="refusing to run 2 gunicorn workers") as info:
        FakeArbiter(conf).num_workers = conf.workers  # Arbiter.setup at start-up
    message = str(info.value)
    for words in named:
        assert words in message, message
    for words in not_named:
        assert words not in message, message
    assert "GUNICORN_WORKERS=1" in message  # the other way out


def test_two_workers_allowed_websocket_only_with_queue(monkeypatch, caplog):
    conf = load_conf(monkeypatch, **SAFE)
    assert conf.workers == 2 and conf.multiworker_problems(2) == []
    arbiter = FakeArbiter(conf)
    with caplog.at_level(logging.WARNING, logger="test.gunicorn"):
        arbiter.num_workers = conf.workers
    assert arbiter.num_workers == 2
    # no REDIS_URL: allowed, with a warning about per-worker presence
    assert any("presence is tracked per worker" in r.getMessage() for r in caplog.records)
    # embedded jobs are fine when the scheduler is off (nothing runs per worker)
    conf = load_conf(monkeypatch, **{**SAFE, "CELERY_BROKER_URL": "", "SCHEDULER_ENABLED": "false"})
    assert conf.multiworker_problems(2) == []


def test_production_settings_allow_two_workers(monkeypatch):
    """Production never runs the in-process scheduler: websocket-only + queue suffice."""
    conf = load_conf(monkeypatch, **SAFE, TASKTRACKER_ENV="production", REDIS_URL=REDIS_URL)
    assert conf.multiworker_problems(2) == [] and conf.multiworker_problems(8) == []


def test_cli_workers_and_sigttin_are_checked_too(monkeypatch, caplog):
    """The hook sees the effective count (``-w 3`` overrides GUNICORN_WORKERS); a later
    SIGTTIN above one worker is logged and undone instead of killing the server."""
    conf = load_conf(monkeypatch)  # embedded defaults, GUNICORN_WORKERS unset
    with pytest.raises(RuntimeError, match="refusing to run 3 gunicorn workers"):
        FakeArbiter(conf).num_workers = 3
    arbiter = FakeArbiter(conf)
    arbiter.num_workers = 1
    with caplog.at_level(logging.ERROR, logger="test.gunicorn"):
        arbiter.num_workers += 1  # Arbiter.handle_ttin
    assert arbiter.num_workers == 1
    assert any("refusing to run 2 gunicorn workers" in r.getMessage() for r in caplog.records)


@pytest.mark.integration  # a real gunicorn process
def test_gunicorn_exits_with_the_message(tmp_path):
    """The real command: exit status 1 and ``Error: refusing ...`` before binding the port."""
    port = free_port()
    env = base_env(GUNICORN_WORKERS="2", HOST="127.0.0.1", PORT=str(port),
                   DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}")
    started = time.monotonic()
    done = subprocess.run([str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert "Error: refusing to run 2 gunicorn workers" in done.stderr
    assert "SOCKETIO_TRANSPORTS=websocket" in done.stderr and "Listening at" not in done.stderr
    assert time.monotonic() - started < 30


# --------------------------------------------------------------------------- SOCKETIO_TRANSPORTS


def test_transports_setting_parsed():
    assert socketio_transports("polling,websocket") == ["polling", "websocket"]
    assert socketio_transports(" WebSocket ,, websocket ") == ["websocket"]
    assert socketio_transports(["websocket", "polling"]) == ["websocket", "polling"]
    for bad in ("", " , ", "ws", "polling;websocket", "websocket,flash"):
        with pytest.raises(ValueError, match=r"SOCKETIO_TRANSPORTS .* polling and websocket"):
            socketio_transports(bad)


def test_transports_reach_engineio_and_polling_is_refused():
    app = create_app(TestConfig)
    assert socketio.server.eio.transports == ["polling", "websocket"]
    app = create_app(TestConfig, {"SOCKETIO_TRANSPORTS": "websocket"})
    assert socketio.server.eio.transports == ["websocket"]
    r = app.test_client().get("/socket.io/?EIO=4&transport=polling")
    assert r.status_code == 400 and b"Invalid transport" in r.data
    with pytest.raises(ValueError, match="SOCKETIO_TRANSPORTS"):
        create_app(TestConfig, {"SOCKETIO_TRANSPORTS": "long-polling"})


# --------------------------------------------------------------------------- one host, two workers


def _children(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (from /proc/<pid>/stat)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
            found.append(int(entry))
    return sorted(found)


def _established(pid: int, port: int) -> int:
    """Established TCP connections on local ``port`` held open by process ``pid``."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            link = os.readlink(fd)
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    count = 0
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01" and fields[9] in inodes:
                count += 1
    return count


@pytest.fixture
def host(database_url, tmp_path):
    """ONE gunicorn with two workers (websocket only) + one Celery worker, production mode."""
    skip_unless_postgres(database_url)
    if not Path("/proc/self/net/tcp").exists():
        pytest.skip("the worker-spread check reads /proc (Linux)")
    check_rabbitmq()
    check_redis()
    url, drop = migrated_database(tmp_path)
    env = production_env("mw", url,
        GUNICORN_THREADS="20", GUNICORN_GRACEFUL_TIMEOUT="3")
    stack = Stack(tmp_path, env)
    try:
        worker = stack.worker("celery", wait=False)  # boots while gunicorn does
        web = stack.web("web", GUNICORN_WORKERS="2", SOCKETIO_TRANSPORTS="websocket")
        worker.wait_ready()
        yield {"web": web, "stack": stack, "prefix": env["PRESENCE_KEY_PREFIX"]}
    finally:
        stack.stop_all()
        clean_production_env(env)
        drop()


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_two_workers_one_host_websocket_clients(host):
    import redis
    import socketio as socketio_client

    web, stack = host["web"], host["stack"]
    workers = wait_for(lambda: len(_children(web.pid)) == 2 and _children(web.pid), timeout=15)
    assert workers and len(workers) == 2, stack.logs()
    # both have loaded the app: until then the first one accepts every connection, and
    # past its 20 threads (one per websocket) a handshake waits in its queue beyond the
    # client's 5 s timeout (seen under load)
    assert wait_for(lambda: all(f"Worker ready (pid: {pid})" in web.log() for pid in workers), timeout=30), \
        stack.logs()
    alice = User(web.url, f"alice_{uuid.uuid4().hex[:6]}")

    # Connect websocket clients, a few at a time and concurrently (so both workers are
    # awake in accept), until both worker processes hold some; at most 24.
    clients: list[SioClient] = []
    per_worker: dict[int, int] = {}
    try:
        while len(clients) < 24:
            batch = [SioClient(f"c{len(clients) + i}") for i in range(4)]
            threads = [threading.Thread(target=c.connect, args=(web.url, alice.access)) for c in batch]
            for t in threads:
                t.start()
            for t in threads:
                t.join(20)
            clients += batch
            assert all(c.sio.connected and c.sio.transport() == "websocket" for c in clients)
            # REST connections close (keep-alive timeout: later under load); the websockets
            # stay: one per client in all
            def spread() -> dict:
                counts = {p: _established(p, web.port) for p in workers}
                return counts if sum(counts.values()) == len(clients) else {}

            per_worker = wait_for(spread, timeout=15) or {p: _established(p, web.port) for p in workers}
            if len(clients) >= 8 and all(per_worker.values()):
                break
        assert sum(per_worker.values()) == len(clients), (per_worker, len(clients))
        assert all(per_worker.values()), f"all websockets landed in one worker: {per_worker}"

        # Presence (Redis) saw the connections on two servers (one server id per process).
        r = redis.Redis.from_url(REDIS_URL, decode_responses=True)
        entries = r.smembers(f"{host['prefix']}:u:{alice.id}")
        assert len(entries) == len(clients)
        assert len({entry.split()[0] for entry in entries}) == 2, entries

        # Each worker subscribes to the Socket.IO queue with its first connection:
        # warm up until a task event has reached every client, then start clean.
        def everyone_got_one():
            resp = alice.request("POST", "/api/tasks", json={"title": "warm-up"})
            assert resp.status_code == 201, resp.text
            deadline = time.monotonic() + 3
            return all(c.wait_for("task:created", timeout=max(0.0, deadline - time.monotonic()))
                       for c in clients)

        assert wait_for(everyone_got_one, timeout=30, interval=0), stack.logs()
        time.sleep(1)
        for c in clients:
            c.events.clear()

        resp = alice.request("POST", "/api/tasks", json={"title": "seen by every worker"})
        assert resp.status_code == 201, resp.text
        task_id = resp.json()["id"]
        for c in clients:
            assert c.wait_for("task:created", where=lambda d: d["id"] == task_id, timeout=10), \
                (c.name, stack.logs())
        time.sleep(1.5)  # a duplicate would have arrived by now
        counts = [len([d for d in c.named("task:created") if d["id"] == task_id]) for c in clients]
        assert counts == [1] * len(clients), counts

        # Long-polling is refused cleanly: a 400 from Engine.IO, not a 500.
        resp = requests.get(f"{web.url}/socket.io/?EIO=4&transport=polling", timeout=10)
        assert resp.status_code == 400 and "Invalid transport" in resp.text, resp.text
        polling = socketio_client.Client(reconnection=False)
        with pytest.raises(socketio_client.exceptions.ConnectionError):
            polling.connect(web.url, auth={"token": alice.access}, transports=["polling"], wait_timeout=5)
        assert web.alive() and requests.get(f"{web.url}/health", timeout=5).status_code == 200
        assert _children(web.pid) == workers  # no worker died on the way
    finally:
        for c in clients:
            c.close()
