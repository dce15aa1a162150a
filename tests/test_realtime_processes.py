"""Socket.IO across real processes: two gunicorn servers (one threading, one gevent)
sharing RabbitMQ (Socket.IO message queue) and Redis (presence), a separate "worker"
process that emits through a write-only queue manager (as a Celery worker does),
real python-socketio clients over websocket. Needs PostgreSQL, RabbitMQ and Redis (skip, or fail under CI=true).

Every run uses its own Socket.IO channel (a fanout exchange) and presence key
prefix, so parallel runs do not see each other's messages.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests
import socketio

from tasktracker.auth.models import User
from tasktracker.extensions import db
from tasktracker.teams.models import TeamMember
from tests.procs import delete_queue
from tests.conftest import RABBITMQ_URL, REDIS_URL, require_service
from tests.factories import TaskFactory, TeamFactory, add_member

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = ROOT / ".venv" / "bin" / "gunicorn"
HEARTBEAT, TTL = 0.5, 2


def _check_services() -> None:
    import kombu
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        require_service("Redis", str(exc))
    try:
        with kombu.Connection(RABBITMQ_URL, connect_timeout=3) as conn:
            conn.connect()
    except Exception as exc:  # noqa: BLE001
        require_service("RabbitMQ", str(exc))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A subprocess we started (own session, output to a file); stopped by pid."""

    def __init__(self, name: str, args: list[str], env: dict, log_dir: Path, **kw):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.popen = subprocess.Popen(args, env=env, cwd=ROOT, stdout=kw.pop("stdout", self._log),
                                      stderr=self._log, start_new_session=True, **kw)

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def stop(self, sig=signal.SIGTERM, timeout: float = 10) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, sig)  # the group of the process we started
                self.popen.wait(timeout)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.popen.wait(5)
        self._log.close()


class Server(Proc):
    """``gunicorn -w 1 --threads 50`` (threading mode) or ``gunicorn -k gevent -w 1``."""

    def __init__(self, name: str, env: dict, log_dir: Path, mode: str = "threading"):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        worker = ["--threads", "50"] if mode == "threading" else ["-k", "gevent"]
        super().__init__(name, [str(GUNICORN), "-w", "1", *worker, "--graceful-timeout", "2",
                                "--no-control-socket", "-b", f"127.0.0.1:{self.port}", "wsgi:app"],
                         {**env, "SOCKETIO_ASYNC_MODE": mode}, log_dir)

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                pytest.fail(f"{self.name} exited:\n{self.log_tail()}")
            try:
                if requests.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        pytest.fail(f"{self.name} not ready after {timeout}s:\n{self.log_tail()}")


WORKER_SCRIPT = r"""
import json, sys
from tasktracker import create_app, realtime
from tasktracker.realtime.emitter import serves_sockets
app = create_app()
with app.app_context():
    print(json.dumps({"ready": True, "serves_sockets": serves_sockets()}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "emit":
            realtime.emit(cmd["event"], cmd["data"], cmd["rooms"])
        elif cmd["op"] == "sync":
            realtime.sync_membership(cmd["user_id"], cmd["team_id"], cmd["joined"])
        print(json.dumps({"done": cmd["op"]}), flush=True)
"""


class Worker(Proc):
    """A process without a Socket.IO server calling realtime.emit/sync_membership."""

    def __init__(self, env: dict, log_dir: Path):
        super().__init__("worker", [sys.executable, "-c", WORKER_SCRIPT], env, log_dir,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.hello = None
        self._lock = threading.Lock()

    def wait_ready(self, timeout: float = 30) -> None:
        line = self._readline(timeout)
        self.hello = json.loads(line)

    def _readline(self, timeout: float) -> str:
        result: list[bytes] = []
        reader = threading.Thread(target=lambda: result.append(self.popen.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        if not result or not result[0]:
            pytest.fail(f"worker did not answer:\n{self.log_tail()}")
        return result[0].decode()

    def call(self, **cmd) -> None:
        with self._lock:
            self.popen.stdin.write((json.dumps(cmd) + "\n").encode())
            self.popen.stdin.flush()
            assert json.loads(self._readline(15)) == {"done": cmd["op"]}

    def emit(self, event: str, data: dict, rooms: list[str]) -> None:
        self.call(op="emit", event=event, data=data, rooms=rooms)

    def sync(self, user_id: int, team_id: int, joined: bool) -> None:
        self.call(op="sync", user_id=user_id, team_id=team_id, joined=joined)


@pytest.fixture(scope="module")
def stack(app, tmp_path_factory):
    """Two gunicorn servers + one worker process on the test's PostgreSQL database."""
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    if url.startswith("sqlite"):
        pytest.skip("real-process tests share one PostgreSQL database (run in the postgresql half)")
    _check_services()
    run = uuid.uuid4().hex[:10]
    log_dir = tmp_path_factory.mktemp("realtime-procs")
    env = {**os.environ, "DATABASE_URL": url, "SOCKETIO_MESSAGE_QUEUE": RABBITMQ_URL,
           "SOCKETIO_CHANNEL": f"tt-test-{run}", "REDIS_URL": REDIS_URL,
           "PRESENCE_KEY_PREFIX": f"tt-test:{run}", "PRESENCE_HEARTBEAT_SECONDS": str(HEARTBEAT),
           "PRESENCE_SERVER_TTL_SECONDS": str(TTL), "SCHEDULER_ENABLED": "false",
           "SOCKETIO_ASYNC_MODE": "threading", "CELERY_BROKER_URL": "", "RATELIMIT_ENABLED": "false",
           "TASKTRACKER_ENV": "development", "JWT_SECRET_KEY": app.config["JWT_SECRET_KEY"],
           "PYTHONUNBUFFERED": "1"}
    procs: list[Proc] = []
    try:
        # both production choices at once: server1 threads, server2 gevent
        s1, s2 = Server("server1", env, log_dir), Server("server2", env, log_dir, mode="gevent")
        procs += [s1, s2]
        worker = Worker(env, log_dir)
        procs.append(worker)
        for proc in procs:
            proc.wait_ready()
        yield {"servers": (s1, s2), "worker": worker, "env": env, "log_dir": log_dir,
               "prefix": env["PRESENCE_KEY_PREFIX"], "procs": procs}
    finally:
        for proc in procs:
            proc.stop()
        import redis

        delete_queue(env["SOCKETIO_CHANNEL"])  # its fanout exchange
        r = redis.Redis.from_url(REDIS_URL)
        keys = list(r.scan_iter(match=f"tt-test:{run}:*"))
        if keys:
            r.delete(*keys)


class Client:
    """A real python-socketio client (websocket) recording every event it receives."""

    def __init__(self, name: str):
        self.name = name
        self.sio = socketio.Client(reconnection=False)
        self.events: list[tuple[str, object]] = []
        self.connect_errors: list = []
        self._cond = threading.Condition()

        @self.sio.on("*")
        def _any(event, *args):
            with self._cond:
                self.events.append((event, args[0] if args else None))
                self._cond.notify_all()

        @self.sio.on("connect_error")
        def _error(data=None):
            self.connect_errors.append(data)

    def connect(self, server: Server, token: str, **auth) -> "Client":
        self.sio.connect(server.url, auth={"token": token, **auth}, transports=["websocket"],
                         wait_timeout=10)
        return self

    def named(self, name: str) -> list:
        with self._cond:
            return [data for event, data in self.events if event == name]

    def wait_for(self, name: str, count: int = 1, timeout: float = 10) -> list:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len([1 for e, _ in self.events if e == name]) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
        return self.named(name)

    def clear(self) -> None:
        with self._cond:
            self.events.clear()

    def close(self) -> None:
        if self.sio.connected:
            try:
                self.sio.disconnect()
            except Exception:  # noqa: BLE001 - its server may be dead (crash test)
                pass


@pytest.fixture
def clients(stack):
    made: list[Client] = []

    def make(name: str) -> Client:
        c = Client(name)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()
    # wait for the servers to forget these connections (user ids are reused by the next test)
    from tasktracker.realtime.presence import RedisPresence

    presence = RedisPresence.from_url(REDIS_URL, stack["prefix"], TTL, server_id="test-observer")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and presence.redis.keys(f"{stack['prefix']}:u:*"):
        time.sleep(0.1)


def probe(worker: Worker, *recipients: tuple[Client, int]) -> None:
    """Wait until each server's queue listener delivers to these clients (a server starts
    listening on the queue at its first connection), then forget the probes."""
    for client, user_id in recipients:
        deadline = time.monotonic() + 15
        while not client.named("test:probe"):
            assert time.monotonic() < deadline, f"{client.name} never got a probe"
            worker.emit("test:probe", {"n": 1}, [f"user:{user_id}"])
            client.wait_for("test:probe", timeout=0.5)
    for client, _ in recipients:
        client.clear()


def model(session) -> User:
    return db.session.get(User, session.id)


def test_worker_runs_without_socketio_server(stack):
    assert stack["worker"].hello == {"ready": True, "serves_sockets": False}


def test_connect_refused_over_websocket(stack, auth, clients):
    s1, _ = stack["servers"]
    alice = auth.user("alice")
    bad = clients("bad")
    with pytest.raises(socketio.exceptions.ConnectionError):
        bad.connect(s1, alice.refresh_token)
    assert bad.connect_errors and bad.connect_errors[0]["data"] == {"code": "invalid_token"}
    good = clients("good").connect(s1, alice.access_token)
    assert good.sio.call("task:subscribe", {"task_id": 123456}, timeout=5) == \
        {"ok": False, "error": "not_found"}


def test_worker_emit_reaches_clients_on_both_servers_once(stack, auth, clients):
    s1, s2 = stack["servers"]
    worker = stack["worker"]
    alice, bob, carol = auth.user("alice"), auth.user("bob"), auth.user("carol")
    team = TeamFactory(owner=model(alice))
    add_member(team, model(bob))
    task = TaskFactory(owner=model(alice), team_id=team.id)
    alice1 = clients("alice@s1").connect(s1, alice.access_token)
    alice2 = clients("alice@s2").connect(s2, alice.access_token)
    bob2 = clients("bob@s2").connect(s2, bob.access_token)
    carol1 = clients("carol@s1").connect(s1, carol.access_token)
    assert alice1.sio.call("task:subscribe", {"task_id": task.id}, timeout=5) == {"ok": True}
    assert carol1.sio.call("task:subscribe", {"task_id": task.id}, timeout=5)["ok"] is False
    probe(worker, (alice1, alice.id), (alice2, alice.id), (bob2, bob.id), (carol1, carol.id))

    payload = {"id": task.id, "title": task.title, "actor_id": alice.id, "seq": 1}
    worker.emit("task:updated", payload, [f"task:{task.id}", f"team:{team.id}", f"user:{alice.id}"])

    for c in (alice1, alice2, bob2):
        assert c.wait_for("task:updated") == [payload], c.name
    time.sleep(1.0)  # any duplicate would have arrived by now
    for c in (alice1, alice2, bob2):
        assert c.named("task:updated") == [payload], c.name  # alice1 is in all three rooms: once
    assert carol1.named("task:updated") == []


def test_presence_across_servers(stack, auth, clients):
    s1, s2 = stack["servers"]
    watcher, user = auth.user("watcher"), auth.user("user")
    team = TeamFactory(owner=model(watcher))
    add_member(team, model(user))
    w = clients("watcher@s1").connect(s1, watcher.access_token)
    probe(stack["worker"], (w, watcher.id))

    def presence(server):
        r = requests.get(f"{server.url}/api/teams/{team.id}/presence", headers=watcher.headers, timeout=5)
        assert r.status_code == 200, r.text
        return {i["user_id"]: i for i in r.json()["items"]}[user.id]

    assert presence(s2)["online"] is False
    tab1 = clients("user@s1").connect(s1, user.access_token)
    tab2 = clients("user@s2").connect(s2, user.access_token)
    assert w.wait_for("presence:update") == [{"user_id": user.id, "online": True}]
    assert presence(s1)["online"] is True and presence(s2)["online"] is True

    tab1.close()
    time.sleep(1.0)
    assert presence(s1)["online"] is True  # still a tab on server 2
    tab2.close()
    updates = w.wait_for("presence:update", count=2)
    time.sleep(0.5)
    assert w.named("presence:update") == [{"user_id": user.id, "online": True},
                                          {"user_id": user.id, "online": False}]
    item = presence(s2)
    assert item["online"] is False and item["last_seen_at"].endswith("Z"), updates


def test_sync_membership_across_processes(stack, auth, clients):
    s1, s2 = stack["servers"]
    worker = stack["worker"]
    owner, bob = auth.user("owner"), auth.user("bob")
    team = TeamFactory(owner=model(owner))
    add_member(team, model(bob))
    own1 = clients("owner@s1").connect(s1, owner.access_token)
    bob1 = clients("bob@s1").connect(s1, bob.access_token)
    bob2 = clients("bob@s2").connect(s2, bob.access_token)
    probe(worker, (own1, owner.id), (bob1, bob.id), (bob2, bob.id))

    db.session.delete(db.session.get(TeamMember, (team.id, bob.id)))
    db.session.commit()
    worker.sync(bob.id, team.id, False)
    worker.emit("task:created", {"n": 1}, [f"team:{team.id}"])
    assert own1.wait_for("task:created") == [{"n": 1}]
    time.sleep(1.0)
    assert bob1.named("task:created") == [] and bob2.named("task:created") == []

    add_member(team, model(bob))
    worker.sync(bob.id, team.id, True)
    worker.emit("task:created", {"n": 2}, [f"team:{team.id}"])
    assert bob1.wait_for("task:created") == [{"n": 2}]
    assert bob2.wait_for("task:created") == [{"n": 2}]


def test_crashed_server_does_not_leave_users_online(stack, auth, clients):
    s1, _ = stack["servers"]
    watcher, user = auth.user("watcher"), auth.user("user")
    team = TeamFactory(owner=model(watcher))
    add_member(team, model(user))
    doomed = Server("server3", stack["env"], stack["log_dir"])
    stack["procs"].append(doomed)
    doomed.wait_ready()
    w = clients("watcher@s1").connect(s1, watcher.access_token)
    probe(stack["worker"], (w, watcher.id))
    clients("user@s3").connect(doomed, user.access_token)
    assert w.wait_for("presence:update") == [{"user_id": user.id, "online": True}]

    doomed.stop(signal.SIGKILL)  # crash: no disconnect handler runs
    updates = w.wait_for("presence:update", count=2, timeout=TTL + 10 * HEARTBEAT + 5)
    assert updates == [{"user_id": user.id, "online": True}, {"user_id": user.id, "online": False}]
    r = requests.get(f"{s1.url}/api/teams/{team.id}/presence", headers=watcher.headers, timeout=5)
    assert {i["user_id"]: i["online"] for i in r.json()["items"]} == {watcher.id: True, user.id: False}


def test_example_client_prints_events(stack, auth, clients):
    """examples/socket_client.py logs in over REST, connects and prints events with times."""
    s1, _ = stack["servers"]
    alice = auth.register("alice")
    example = Proc("example-client", [sys.executable, str(ROOT / "examples" / "socket_client.py"), s1.url,
                                      alice["email"], "correct-horse-9"], stack["env"], stack["log_dir"])
    stack["procs"].append(example)
    try:
        deadline = time.monotonic() + 20
        while "connected" not in example.log_path.read_text():
            assert example.popen.poll() is None and time.monotonic() < deadline, example.log_tail()
            time.sleep(0.2)
        payload = {"id": 1, "type": "deadline_reminder", "message": "Due soon", "seq": 42}
        deadline = time.monotonic() + 15
        while "notification:new" not in example.log_path.read_text():  # until its server listens
            assert time.monotonic() < deadline, example.log_tail()
            stack["worker"].emit("notification:new", payload, [f"user:{alice['id']}"])
            time.sleep(0.5)
        line = next(ln for ln in example.log_path.read_text().splitlines() if "notification:new" in ln)
        stamp, _, rest = line.partition("  ")
        assert stamp.endswith("Z") and "T" in stamp
        assert json.loads(rest.split(None, 1)[1]) == payload
    finally:
        example.stop()
