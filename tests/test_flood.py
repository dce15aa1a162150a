"""REST keeps answering under a connection flood, and the Engine.IO connection limits
(tasktracker/realtime/limits.py) hold, on real servers.

The flood: ``IDLE_WEBSOCKETS`` Engine.IO websockets opened without a token that never
send a Socket.IO CONNECT (they just sit), plus ``SLOW_HEADERS`` connections that send
part of a request's headers and then nothing. While they are open, ``SAMPLES`` requests
each to ``/health`` and to an authenticated ``GET /api/tasks`` (a new connection each)
must all answer 200 with a p99 under ``P99_LIMIT`` seconds.

- embedded mode (SQLite half): one ``gunicorn -c gunicorn.conf.py wsgi:app`` with the
  defaults (gevent, ``TASKTRACKER_ROLE=all``), ``SOCKETIO_MAX_CONNECTIONS_PER_IP=0`` so
  that every websocket stays open;
- production behind nginx (PostgreSQL half): deploy/nginx.conf in front of one REST
  API process (granian) and one gateway (gunicorn gevent);
- the limits (SQLite half, embedded servers): ``SOCKETIO_CONNECT_TIMEOUT_SECONDS=2``
  closes an idle unauthenticated connection (websocket and polling) in ~2-3 s while an
  authenticated client stays; ``SOCKETIO_MAX_CONNECTIONS_PER_IP=5`` refuses the 6th
  handshake from one address (401, polling and websocket) until one is closed.

In the flood tests the connect deadline is raised to 120 s, so that the idle websockets
stay open for the whole measurement (the deadline itself is tested on its own).
"""

from __future__ import annotations

import json
import math
import shutil
import socket
import time

import pytest
import requests
import websocket

from tests.procs import (
    SioClient, Stack, User, Web, base_env, check_rabbitmq, check_redis, clean_production_env, migrate,
    migrated_database, nginx_binary, production_env, skip_unless_postgres, unique_name,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

IDLE_WEBSOCKETS = 300
SLOW_HEADERS = 200
SAMPLES = 100
P99_LIMIT = 0.100  # seconds


def _skip_unless_sqlite(database_url: str) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("the embedded mode is SQLite (one process, no services); the PostgreSQL half "
                    "runs the flood behind nginx instead")


def _embedded_env(path, **settings: str) -> dict:
    return base_env(DATABASE_URL=f"sqlite:///{path}", UPLOAD_DIR=str(path.parent / f"{path.stem}-uploads"),
                    SOCKETIO_ASYNC_MODE="gevent",  # the default (base_env sets threading)
                    GUNICORN_GRACEFUL_TIMEOUT="2", **settings)


@pytest.fixture(scope="module")
def migrated_sqlite(database_url, tmp_path_factory):
    """A SQLite file migrated with ``flask db upgrade`` once per module (it takes seconds);
    each embedded server gets a copy. SQLite half only."""
    _skip_unless_sqlite(database_url)
    path = tmp_path_factory.mktemp("flood-sqlite") / "migrated.db"
    migrate(f"sqlite:///{path}", path.parent, _embedded_env(path))
    return path


def _embedded(migrated_sqlite, tmp_path, name: str, **settings: str) -> Web:
    """The embedded server (README ``make run``): one gunicorn with the defaults on a
    migrated SQLite file; ``settings`` on top."""
    path = tmp_path / f"{name}.db"
    shutil.copyfile(migrated_sqlite, path)
    return Web(name, _embedded_env(path, **settings), tmp_path)


# --------------------------------------------------------------------------- the flood


def _ws_url(port: int) -> str:
    return f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket"


def open_idle_websockets(port: int, count: int) -> list[websocket.WebSocket]:
    """``count`` Engine.IO websockets that read the server's open packet (``0{...}``: the
    server accepted them) and then never send anything, a Socket.IO CONNECT included."""
    sockets = []
    try:
        for _ in range(count):
            ws = websocket.create_connection(_ws_url(port), timeout=10)
            sockets.append(ws)
            opened = ws.recv()
            assert opened.startswith("0{") and '"sid"' in opened, opened
    except BaseException:
        close_all(sockets)
        raise
    return sockets


def open_slow_headers(port: int, count: int) -> list[socket.socket]:
    """``count`` connections that sent a request line and part of a header, then stop."""
    sockets = []
    try:
        for i in range(count):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            sockets.append(s)
            s.sendall(f"GET /api/tasks?slow={i} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ".encode())
    except BaseException:
        close_all(sockets)
        raise
    return sockets


def still_open(conn) -> bool:
    """True if the server has neither closed ``conn`` nor sent anything on it."""
    raw = conn.sock if isinstance(conn, websocket.WebSocket) else conn
    if raw is None:
        return False
    raw.setblocking(False)
    try:
        raw.recv(1, socket.MSG_PEEK)  # b"": closed; data: the server answered or closes
        return False
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        raw.settimeout(5)


def close_all(conns) -> None:
    """Drop the connections (TCP close, as a client that goes away: a websocket's
    ``close()`` would wait up to 3 s each for the server's close frame)."""
    for c in conns:
        try:
            if isinstance(c, websocket.WebSocket):
                c.shutdown()
            else:
                c.close()
        except Exception:  # noqa: BLE001
            pass


def p99(values: list[float]) -> float:
    """Nearest-rank 99th percentile."""
    ordered = sorted(values)
    return ordered[math.ceil(0.99 * len(ordered)) - 1]


def measure(url: str, headers: dict | None = None, samples: int = SAMPLES) -> tuple[list[int], list[float]]:
    """``samples`` sequential GETs of ``url``, each on a new connection: (statuses, seconds)."""
    statuses, seconds = [], []
    for _ in range(samples):
        start = time.perf_counter()
        r = requests.get(url, headers=headers or {}, timeout=5)
        seconds.append(time.perf_counter() - start)
        statuses.append(r.status_code)
    return statuses, seconds


def flood_and_measure(base: str, port: int, user: User) -> dict:
    """Open the flood on ``port``, measure ``base``'s REST while it is open, check it was
    still open afterwards; returns the figures. Closes the flood."""
    idle, slow = [], []
    try:
        idle = open_idle_websockets(port, IDLE_WEBSOCKETS)
        slow = open_slow_headers(port, SLOW_HEADERS)  # last: nginx drops them after 10 s
        time.sleep(0.2)
        assert all(still_open(c) for c in idle), "an idle websocket was closed before the measurement"
        assert all(still_open(c) for c in slow), "a slow-header connection was closed before the measurement"
        started = time.monotonic()
        health = measure(f"{base}/health")
        tasks = measure(f"{base}/api/tasks", user.headers)
        took = time.monotonic() - started
        figures = {"health_p99": p99(health[1]), "tasks_p99": p99(tasks[1]),
                   "health_max": max(health[1]), "tasks_max": max(tasks[1]), "took": took,
                   "idle_open": sum(still_open(c) for c in idle),
                   "slow_open": sum(still_open(c) for c in slow)}
        print(f"flood {base}: {figures}")
        assert health[0] == [200] * SAMPLES, health[0]
        assert tasks[0] == [200] * SAMPLES, tasks[0]
        # the flood really was there the whole time
        assert figures["idle_open"] == IDLE_WEBSOCKETS, figures
        assert figures["slow_open"] == SLOW_HEADERS, figures
        assert figures["health_p99"] < P99_LIMIT, figures
        assert figures["tasks_p99"] < P99_LIMIT, figures
        return figures
    finally:
        close_all(idle)
        close_all(slow)


def _user_with_tasks(base: str) -> User:
    user = User(base, unique_name("flood"))
    for i in range(5):
        r = user.request("POST", "/api/tasks", json={"title": f"task {i}"})
        assert r.status_code == 201, r.text
    r = user.request("GET", "/api/tasks")
    assert r.status_code == 200 and len(r.json()["items"]) == 5, r.text
    return user


def test_embedded_rest_answers_under_a_connection_flood(migrated_sqlite, tmp_path):
    web = _embedded(migrated_sqlite, tmp_path, "embedded-flood", SOCKETIO_MAX_CONNECTIONS_PER_IP="0",
                    SOCKETIO_CONNECT_TIMEOUT_SECONDS="120")
    try:
        web.wait_ready()
        user = _user_with_tasks(web.url)
        flood_and_measure(web.url, web.port, user)
        assert web.alive(), web.log_tail()
        # and afterwards, the same server still serves Socket.IO
        client = SioClient("after-flood").connect(web.url, user.access)
        try:
            assert client.sio.call("task:subscribe", {"task_id": "x"}, timeout=5) == \
                {"ok": False, "error": "invalid"}
        finally:
            client.close()
    finally:
        web.stop()


@pytest.fixture
def behind_nginx(database_url, tmp_path):
    """Production behind deploy/nginx.conf: nginx, one REST API process, one gateway
    (PostgreSQL, RabbitMQ, Redis; no Celery processes: nothing here needs them)."""
    skip_unless_postgres(database_url)
    check_rabbitmq()
    check_redis()
    nginx_binary()
    url, drop = migrated_database(tmp_path)
    env = production_env("flood", url,
        TRUSTED_PROXY_HOPS="1", GUNICORN_GRACEFUL_TIMEOUT="2", GUNICORN_ACCESS_LOG="/dev/null")
    stack = Stack(tmp_path, env)
    try:
        api = stack.api("api", wait=False)
        gateway = stack.gateway("gateway", wait=False, SOCKETIO_MAX_CONNECTIONS_PER_IP="0",
                                SOCKETIO_CONNECT_TIMEOUT_SECONDS="120")
        api.wait_ready()
        gateway.wait_ready()
        nginx = stack.nginx([api.port], [gateway.port])
        yield {"api": api, "gateway": gateway, "nginx": nginx, "stack": stack}
    finally:
        stack.stop_all()
        clean_production_env(env)
        drop()


def test_rest_behind_nginx_answers_under_a_connection_flood(behind_nginx):
    nginx = behind_nginx["nginx"]
    user = _user_with_tasks(nginx.url)
    flood_and_measure(nginx.url, nginx.port, user)
    for name in ("api", "gateway", "nginx"):
        assert behind_nginx[name].alive(), behind_nginx["stack"].logs()


# --------------------------------------------------------------------------- the limits


def _polling_handshake(base: str, **kwargs) -> requests.Response:
    return requests.get(f"{base}/socket.io/?EIO=4&transport=polling", timeout=5, **kwargs)


def _raw_polling_handshake(port: int, source: str) -> str:
    """A polling handshake from source address ``source``: the response's status line."""
    with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0)) as s:
        s.sendall(b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  b"Connection: close\r\n\r\n")
        return s.makefile("rb").readline().decode("latin-1").strip()


def _sid(response: requests.Response) -> str:
    assert response.status_code == 200 and response.text.startswith("0{"), response.text
    return json.loads(response.text[1:])["sid"]


def _closed_after(ws: websocket.WebSocket, start: float, limit: float) -> float | None:
    """Seconds from ``start`` until the server closed ``ws`` (Engine.IO close packet,
    close frame or EOF), reading for at most ``limit`` s; None if still open."""
    while time.monotonic() - start < limit:
        ws.settimeout(max(0.05, limit - (time.monotonic() - start)))
        try:
            data = ws.recv()
        except websocket.WebSocketTimeoutException:
            return None
        except (websocket.WebSocketConnectionClosedException, OSError):
            return time.monotonic() - start
        if data in ("", "1"):  # close frame / Engine.IO CLOSE packet
            return time.monotonic() - start
        if data == "2":  # Engine.IO PING (not within 2 s with the defaults): answer it
            ws.send("3")
    return None


def test_connect_deadline_closes_idle_unauthenticated_connections(migrated_sqlite, tmp_path):
    web = _embedded(migrated_sqlite, tmp_path, "deadline", SOCKETIO_CONNECT_TIMEOUT_SECONDS="2")
    client = SioClient("authenticated")
    idle = None
    try:
        web.wait_ready()
        user = User(web.url, unique_name("steady"))
        idle_start = time.monotonic()
        [idle] = open_idle_websockets(web.port, 1)
        polling_sid = _sid(_polling_handshake(web.url))
        client.connect(web.url, user.access)  # completes its Socket.IO connect: no deadline

        closed = _closed_after(idle, idle_start, limit=5.0)
        assert closed is not None, "the idle websocket was still open after 5 s"
        assert 1.9 <= closed <= 3.5, closed  # the 2 s deadline (swept every 0.5 s)
        # the unauthenticated polling session is gone too (were it alive, this GET would be
        # a long poll: the 5 s timeout would fail the test)
        time.sleep(max(0.0, idle_start + 3.5 - time.monotonic()))
        r = requests.get(f"{web.url}/socket.io/?EIO=4&transport=polling&sid={polling_sid}", timeout=5)
        assert r.status_code == 400, (r.status_code, r.text)

        time.sleep(max(0.0, idle_start + 4.0 - time.monotonic()))  # twice the deadline
        assert client.sio.connected
        assert client.sio.call("task:subscribe", {"task_id": "x"}, timeout=5) == \
            {"ok": False, "error": "invalid"}
        r = user.request("POST", "/api/tasks", json={"title": "still live"})
        assert r.status_code == 201, r.text
        r = user.request("GET", f"/api/tasks/{r.json()['id']}")
        assert client.sio.call("task:subscribe", {"task_id": r.json()["id"]}, timeout=5) == {"ok": True}
    finally:
        client.close()
        if idle is not None:
            idle.shutdown()
        web.stop()


def test_an_abandoned_polling_session_does_not_stop_the_deadline(migrated_sqlite, tmp_path):
    """Closing an abandoned long-polling session must not wait for a poll that never
    comes (python-engineio's ``disconnect`` does): the sweeper would hang, and every
    later idle connection of the process would stay open (found by the bench)."""
    web = _embedded(migrated_sqlite, tmp_path, "abandoned", SOCKETIO_CONNECT_TIMEOUT_SECONDS="2")
    idle = None
    try:
        web.wait_ready()
        abandoned = _sid(_polling_handshake(web.url))  # never polled again
        time.sleep(3.0)  # its deadline passes first: the sweeper closes it
        idle_start = time.monotonic()
        [idle] = open_idle_websockets(web.port, 1)
        closed = _closed_after(idle, idle_start, limit=6.0)
        assert closed is not None, "the sweeper is stuck: an idle websocket outlived its deadline"
        assert 1.9 <= closed <= 3.5, closed
        r = requests.get(f"{web.url}/socket.io/?EIO=4&transport=polling&sid={abandoned}", timeout=5)
        assert r.status_code == 400, (r.status_code, r.text)
    finally:
        if idle is not None:
            idle.shutdown()
        web.stop()


def test_per_address_cap_refuses_the_sixth_handshake(migrated_sqlite, tmp_path):
    web = _embedded(migrated_sqlite, tmp_path, "cap", SOCKETIO_MAX_CONNECTIONS_PER_IP="5",
                    SOCKETIO_CONNECT_TIMEOUT_SECONDS="60")
    ws = None
    try:
        web.wait_ready()
        sids = [_sid(_polling_handshake(web.url)) for _ in range(5)]
        sixth = _polling_handshake(web.url)
        assert sixth.status_code == 401, (sixth.status_code, sixth.text)
        with pytest.raises(websocket.WebSocketBadStatusException) as info:  # the same for a websocket
            websocket.create_connection(_ws_url(web.port), timeout=5)
        assert info.value.status_code == 401
        assert requests.get(f"{web.url}/health", timeout=5).status_code == 200  # REST is not capped

        # close one (Engine.IO CLOSE packet): a new one gets in, and only one
        r = requests.post(f"{web.url}/socket.io/?EIO=4&transport=polling&sid={sids.pop(0)}", data="1",
                          timeout=5)
        assert r.status_code == 200, r.text
        deadline = time.monotonic() + 5
        while (again := _polling_handshake(web.url)).status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        sids.append(_sid(again))
        assert _polling_handshake(web.url).status_code == 401

        # a websocket counts the same: close a polling one, open a websocket, the cap holds
        r = requests.post(f"{web.url}/socket.io/?EIO=4&transport=polling&sid={sids.pop(0)}", data="1",
                          timeout=5)
        assert r.status_code == 200, r.text
        deadline = time.monotonic() + 5
        while ws is None:
            try:
                [ws] = open_idle_websockets(web.port, 1)
            except websocket.WebSocketBadStatusException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        assert _polling_handshake(web.url).status_code == 401
        assert "refused a connection from 127.0.0.1: 5 open" in web.log(), web.log_tail()
        # per address: another client address (127.0.0.2 -> 127.0.0.1) is not refused
        assert _raw_polling_handshake(web.port, source="127.0.0.2").startswith("HTTP/1.1 200")
    finally:
        if ws is not None:
            ws.shutdown()
        web.stop()
