"""Socket.IO across real processes: two gunicorn servers (one threading, one gevent)
sharing RabbitMQ (Socket.IO message queue) and Redis (presence), a separate "worker"
process that emits through a write-only queue manager (as a Celery worker does),
real python-socketio clients over websocket. Needs PostgreSQL, RabbitMQ and Redis (skip, or fail under CI=true).

Every run uses its own Socket.IO channel (a fanout exchange) and presence key
prefix, so parallel runs do not see each other's messages.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest
import requests
import socketio

from tasktracker.auth.models import User
from tasktracker.extensions import db
from tasktracker.teams.models import TeamMember
from tests.conftest import RABBITMQ_URL, REDIS_URL
from tests.factories import TaskFactory, TeamFactory, add_member
from tests.procs import (
    ROOT, Proc, SioClient, Web, base_env, check_rabbitmq, check_redis, delete_queue, delete_redis_keys,
)

pytestmark = pytest.mark.integration

HEARTBEAT, TTL = 0.5, 2
#: The two production choices (``gunicorn -c gunicorn.conf.py``, one worker each):
#: server1 gthread (50 threads), server2 gevent.
THREADING = {"SOCKETIO_ASYNC_MODE": "threading", "GUNICORN_THREADS": "50", "GUNICORN_GRACEFUL_TIMEOUT": "2"}
GEVENT = {"SOCKETIO_ASYNC_MODE": "gevent", "GUNICORN_GRACEFUL_TIMEOUT": "2"}


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
    """A process without a Socket.IO server calling realtime.emit/sync_membership
    (commands on its stdin, one JSON answer per line on its stdout; stderr to the log)."""

    def __init__(self, env: dict, log_dir):
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
    check_redis()
    check_rabbitmq()
    run = uuid.uuid4().hex[:10]
    log_dir = tmp_path_factory.mktemp("realtime-procs")
    env = base_env(DATABASE_URL=url, SOCKETIO_MESSAGE_QUEUE=RABBITMQ_URL, SOCKETIO_CHANNEL=f"tt-test-{run}",
                   REDIS_URL=REDIS_URL, PRESENCE_KEY_PREFIX=f"tt-test:{run}",
                   PRESENCE_HEARTBEAT_SECONDS=str(HEARTBEAT), PRESENCE_SERVER_TTL_SECONDS=str(TTL),
                   JWT_SECRET_KEY=app.config["JWT_SECRET_KEY"])
    procs: list[Proc] = []
    try:
        # both production choices at once: server1 threads, server2 gevent
        s1, s2 = Web("server1", env, log_dir, **THREADING), Web("server2", env, log_dir, **GEVENT)
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
        delete_queue(env["SOCKETIO_CHANNEL"])  # its fanout exchange
        delete_redis_keys(f"tt-test:{run}:")


@pytest.fixture
def clients(stack, sockets):
    """``clients(name)``: a :class:`tests.procs.SioClient`; after the test, all are closed
    and the servers have forgotten them (user ids are reused by the next test)."""
    yield sockets
    sockets.close()
    from tasktracker.realtime.presence import RedisPresence

    presence = RedisPresence.from_url(REDIS_URL, stack["prefix"], TTL, server_id="test-observer")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and presence.redis.keys(f"{stack['prefix']}:u:*"):
        time.sleep(0.1)


def probe(worker: Worker, *recipients: tuple[SioClient, int]) -> None:
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
        bad.connect(s1.url, alice.refresh_token)
    assert bad.connect_errors and bad.connect_errors[0]["data"] == {"code": "invalid_token"}
    good = clients("good").connect(s1.url, alice.access_token)
    assert good.sio.call("task:subscribe", {"task_id": 123456}, timeout=5) == \
        {"ok": False, "error": "not_found"}


def test_worker_emit_reaches_clients_on_both_servers_once(stack, auth, clients):
    s1, s2 = stack["servers"]
    worker = stack["worker"]
    alice, bob, carol = auth.user("alice"), auth.user("bob"), auth.user("carol")
    team = TeamFactory(owner=model(alice))
    add_member(team, model(bob))
    task = TaskFactory(owner=model(alice), team_id=team.id)
    alice1 = clients("alice@s1").connect(s1.url, alice.access_token)
    alice2 = clients("alice@s2").connect(s2.url, alice.access_token)
    bob2 = clients("bob@s2").connect(s2.url, bob.access_token)
    carol1 = clients("carol@s1").connect(s1.url, carol.access_token)
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
    w = clients("watcher@s1").connect(s1.url, watcher.access_token)
    probe(stack["worker"], (w, watcher.id))

    def presence(server):
        r = requests.get(f"{server.url}/api/teams/{team.id}/presence", headers=watcher.headers, timeout=5)
        assert r.status_code == 200, r.text
        return {i["user_id"]: i for i in r.json()["items"]}[user.id]

    assert presence(s2)["online"] is False
    tab1 = clients("user@s1").connect(s1.url, user.access_token)
    tab2 = clients("user@s2").connect(s2.url, user.access_token)
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
    own1 = clients("owner@s1").connect(s1.url, owner.access_token)
    bob1 = clients("bob@s1").connect(s1.url, bob.access_token)
    bob2 = clients("bob@s2").connect(s2.url, bob.access_token)
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
    doomed = Web("server3", stack["env"], stack["log_dir"], **THREADING)
    stack["procs"].append(doomed)
    doomed.wait_ready()
    w = clients("watcher@s1").connect(s1.url, watcher.access_token)
    probe(stack["worker"], (w, watcher.id))
    clients("user@s3").connect(doomed.url, user.access_token)
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
