"""The split production deployment (README "Production", deploy/nginx.conf): nginx in
front of two REST API processes (granian, ``TASKTRACKER_ROLE=api``) and two real-time
gateways (gunicorn gevent, ``TASKTRACKER_ROLE=gateway``), one Celery worker and one
beat, on a fresh migrated PostgreSQL database, RabbitMQ and Redis.

- a token issued by one REST process works on the other, and through nginx;
- a REST write reaches websocket clients on both gateways and through nginx, once each;
- a long-polling-only client works through nginx (sticky by client address);
- presence is shared by the gateways and read right by the REST processes;
- ``/socket.io/`` is a 404 on a REST process;
- a logout is refused by the other REST process within 1 s (hot-cache broadcast), and
  within 5 s while the broadcast is down (a third REST process reaches Redis through a
  TcpProxy that the test cuts; HOT_CACHE_TTL_SECONDS bounds staleness);
- a same-origin websocket through nginx on its own port is accepted (nginx forwards
  ``Host``/``X-Forwarded-Host`` with the port: the gateways' origin check compares them).

Unique Celery queue, Socket.IO channel, hot-cache channel and Redis key prefixes per run
(deleted afterwards). PostgreSQL half only.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import pytest
import requests
import socketio
import websocket

from tests.conftest import REDIS_URL
from tests.procs import (
    Db, PASSWORD, SioClient, Stack, TcpProxy, User, check_rabbitmq, check_redis, clean_production_env,
    make_team, migrated_database, nginx_binary, production_env, skip_unless_postgres, unique_name, wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]  # hard bound incl. setup/teardown

def _redis_via(port: int) -> str:
    """REDIS_URL with its address replaced by 127.0.0.1:``port`` (the same database number)."""
    return urlsplit(REDIS_URL)._replace(netloc=f"127.0.0.1:{port}").geturl()


@pytest.fixture(scope="module")
def split(database_url, tmp_path_factory):
    skip_unless_postgres(database_url)
    check_rabbitmq()
    check_redis()
    nginx_binary()
    log_dir = tmp_path_factory.mktemp("split")
    url, drop = migrated_database(log_dir)
    env = production_env("split", url,
        PRESENCE_HEARTBEAT_SECONDS="0.5", PRESENCE_SERVER_TTL_SECONDS="2", OUTBOX_REDISPATCH_AFTER_SECONDS="2",
        TRUSTED_PROXY_HOPS="1", GUNICORN_GRACEFUL_TIMEOUT="3",
        # nothing here waits for a scan (no reminder; events go out after their commit): the
        # beat's five scan tasks a second at 1 s were a tenth of the module's CPU
        SCAN_INTERVAL_SECONDS="5")
    stack = Stack(log_dir, env)
    db = Db(url)
    redis_proxy = TcpProxy(urlsplit(REDIS_URL).port or 6379, urlsplit(REDIS_URL).hostname)
    try:
        # started together, then waited for: the start-up is the bulk of this module's time
        api1, api2 = stack.api("api1", wait=False), stack.api("api2", wait=False)
        # not behind nginx: the REST process whose Redis (so its hot-cache broadcast) is cut
        api3 = stack.api("api3-redis-proxy", wait=False, REDIS_URL=_redis_via(redis_proxy.port))
        gw1, gw2 = stack.gateway("gateway1", wait=False), stack.gateway("gateway2", wait=False)
        stack.worker("worker", wait=False)
        beat = stack.beat()
        for proc in stack.procs:
            if proc is not beat:
                proc.wait_ready()
        nginx = stack.nginx([api1.port, api2.port], [gw1.port, gw2.port])
        yield {"api1": api1, "api2": api2, "api3": api3, "gw1": gw1, "gw2": gw2, "nginx": nginx,
               "stack": stack, "db": db, "redis_proxy": redis_proxy}
    finally:
        stack.stop_all()
        redis_proxy.close()
        db.dispose()
        clean_production_env(env)
        drop()




def _warm_up(split, creator: User, team_id: int, clients: list[SioClient]) -> None:
    """A gateway subscribes to the Socket.IO queue with its first connection: post team
    tasks until every client has received one, then forget what they received."""
    def warmed():
        r = creator.request("POST", "/api/tasks", json={"title": "warm-up", "team_id": team_id})
        assert r.status_code == 201, r.text
        time.sleep(0.5)
        return all(c.named("task:created") for c in clients)

    assert wait_for(warmed, timeout=30, interval=0), split["stack"].logs()
    time.sleep(0.5)
    for c in clients:
        with c._cond:
            c.events.clear()


def _profile(user: User, base: str, token: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return user.request("GET", "/api/auth/profile", base=base, headers=headers, timeout=5).status_code


# --------------------------------------------------------------------------- REST across processes


def test_token_from_one_rest_process_works_on_the_other_and_through_nginx(split):
    api1, api2, nginx = split["api1"], split["api2"], split["nginx"]
    ann = User(api1.url, unique_name("ann"))  # registered and logged in on api1
    for base in (api1.url, api2.url):
        r = ann.request("GET", "/api/auth/profile", base=base)
        assert r.status_code == 200, (base, r.text)
        assert r.json()["id"] == ann.id
    # nginx spreads the API over both upstream servers (round robin)
    assert [_profile(ann, nginx.url) for _ in range(6)] == [200] * 6

    # and the other way: a token issued on api2 (through its own login) works on api1
    r = requests.post(f"{api2.url}/api/auth/login", json={"username": ann.username, "password": PASSWORD},
                      timeout=10)
    assert r.status_code == 200, r.text
    token2 = r.json()["access_token"]
    assert _profile(ann, api1.url, token2) == 200
    r = ann.request("POST", "/api/tasks", base=api2.url, json={"title": "made on api2"})
    assert r.status_code == 201, r.text
    r = ann.request("GET", f"/api/tasks/{r.json()['id']}", base=api1.url)
    assert r.status_code == 200 and r.json()["title"] == "made on api2", r.text


def test_socketio_endpoint_is_404_on_rest_processes(split):
    for api in (split["api1"], split["api2"]):
        r = requests.get(f"{api.url}/socket.io/?EIO=4&transport=polling", timeout=5)
        assert r.status_code == 404, r.text
        with pytest.raises(websocket.WebSocketBadStatusException) as info:
            websocket.create_connection(f"ws://127.0.0.1:{api.port}/socket.io/?EIO=4&transport=websocket",
                                        timeout=5)
        assert info.value.status_code == 404
    # through nginx the same path reaches a gateway: an Engine.IO handshake
    r = requests.get(f"{split['nginx'].url}/socket.io/?EIO=4&transport=polling", timeout=5)
    assert r.status_code == 200 and r.text.startswith("0{"), r.text


# --------------------------------------------------------------------------- real time across gateways


def test_rest_event_reaches_both_gateways_and_nginx_once_each(split, sockets):
    gw1, gw2, nginx, db = split["gw1"], split["gw2"], split["nginx"], split["db"]
    alice, bob = User(split["api1"].url, unique_name("alice")), User(split["api2"].url, unique_name("bob"))
    team_id = make_team(alice, db, bob)
    clients = [sockets("bob@gateway1").connect(gw1.url, bob.access),
               sockets("bob@gateway2").connect(gw2.url, bob.access),
               sockets("bob@nginx").connect(nginx.url, bob.access)]
    assert all(c.sio.transport() == "websocket" for c in clients)
    _warm_up(split, alice, team_id, clients)

    # through nginx (so one of the REST processes) -> outbox -> worker -> queue -> gateways
    r = alice.request("POST", "/api/tasks", base=nginx.url,
                      json={"title": "for every gateway", "team_id": team_id, "assignee_id": bob.id})
    assert r.status_code == 201, r.text
    task_id = r.json()["id"]
    for c in clients:
        assert c.wait_for("task:created", timeout=15, where=lambda d: d["id"] == task_id), \
            (c.name, split["stack"].logs())
        assert c.wait_for("notification:new", timeout=15, where=lambda d: d["task_id"] == task_id), c.name
    time.sleep(1.5)  # a duplicate would have arrived by now
    for c in clients:
        created = [d for d in c.named("task:created") if d["id"] == task_id]
        notes = [d for d in c.named("notification:new") if d["task_id"] == task_id]
        assert len(created) == 1, (c.name, created)
        assert created[0]["title"] == "for every gateway" and created[0]["actor_id"] == alice.id
        assert [n["type"] for n in notes] == ["task_assigned"], (c.name, notes)


def test_long_polling_client_through_nginx(split, sockets):
    nginx, db = split["nginx"], split["db"]
    carol, dave = User(nginx.url, unique_name("carol")), User(nginx.url, unique_name("dave"))
    team_id = make_team(carol, db, dave)
    poller = sockets("dave@nginx-polling").connect(nginx.url, dave.access, transports=("polling",))
    assert poller.sio.transport() == "polling"
    _warm_up(split, carol, team_id, [poller])
    time.sleep(1.0)  # several long-poll round trips, each of which must reach the same gateway

    r = carol.request("POST", "/api/tasks", base=nginx.url, json={"title": "over long-polling",
                                                                  "team_id": team_id})
    assert r.status_code == 201, r.text
    task_id = r.json()["id"]
    # (a solo-pool worker once took none of its queue's messages for 10 s at a time here:
    # tests/procs.py's workers run the threads pool, see jobs.setup.warn_if_solo_pool)
    got = poller.wait_for("task:created", timeout=15, where=lambda d: d["id"] == task_id)
    assert [d["title"] for d in got] == ["over long-polling"], split["stack"].logs()
    time.sleep(1.0)
    assert len([d for d in poller.named("task:created") if d["id"] == task_id]) == 1
    assert poller.sio.connected and poller.sio.transport() == "polling"


def test_presence_across_gateways(split, sockets):
    gw1, gw2, db = split["gw1"], split["gw2"], split["db"]
    apis = (split["api1"], split["api2"], split["nginx"])
    watcher, mate = User(split["api1"].url, unique_name("watcher")), User(split["api2"].url, unique_name("mate"))
    team_id = make_team(watcher, db, mate)
    w = sockets("watcher@gateway1").connect(gw1.url, watcher.access)

    def online() -> list[bool]:
        states = []
        for api in apis:
            r = watcher.request("GET", f"/api/teams/{team_id}/presence", base=api.url)
            assert r.status_code == 200, r.text
            states.append({i["user_id"]: i["online"] for i in r.json()["items"]}[mate.id])
        return states

    def mates() -> list:
        return [d for d in w.named("presence:update") if d["user_id"] == mate.id]

    assert online() == [False, False, False]
    tab = sockets("mate@gateway2").connect(gw2.url, mate.access)  # gateway 2 only
    assert w.wait_for("presence:update", timeout=10, where=lambda d: d["user_id"] == mate.id) == \
        [{"user_id": mate.id, "online": True}], split["stack"].logs()
    assert online() == [True, True, True]

    tab.close()
    w.wait_for("presence:update", count=2, timeout=10, where=lambda d: d["user_id"] == mate.id)
    time.sleep(1.0)  # nothing more
    assert mates() == [{"user_id": mate.id, "online": True}, {"user_id": mate.id, "online": False}]
    assert online() == [False, False, False]


# --------------------------------------------------------------------------- revocation (hot cache)


def _first_refusal(user: User, base: str, token: str, since: float, limit: float) -> float | None:
    """Seconds from ``since`` until ``base`` first answers 401 to ``token`` (polling every
    50 ms, at most ``limit`` s); None if it never did."""
    while time.monotonic() - since < limit:
        status = _profile(user, base, token)
        if status == 401:
            return time.monotonic() - since
        assert status == 200, status
        time.sleep(0.05)
    return None


@pytest.mark.parametrize("via, other", [("api1", "api2"), ("api2", "api1")])
def test_logout_is_refused_by_the_other_rest_process_within_1s(split, sockets, via, other):
    rest_via, rest_other = split[via], split[other]
    eve = User(rest_via.url, unique_name("eve"))
    token = eve.access
    for api in (rest_via, rest_other):  # cached in both processes
        assert _profile(eve, api.url) == 200
    assert _profile(eve, rest_other.url) == 200

    start = time.monotonic()
    r = eve.request("POST", "/api/auth/logout")
    assert r.status_code == 204, r.text
    elapsed = _first_refusal(eve, rest_other.url, token, start, limit=5.0)
    assert elapsed is not None and elapsed < 1.0, f"{other} refused after {elapsed} s (contract: < 1 s)"
    print(f"logout via {via}: refused by {other} after {elapsed:.3f} s")
    assert _profile(eve, rest_via.url, token) == 401
    # the gateways refuse it too
    late = sockets("eve@gateway2")
    refusals = []
    late.sio.on("connect_error", lambda data=None: refusals.append(data))
    with pytest.raises(socketio.exceptions.ConnectionError):
        late.connect(split["gw2"].url, token)
    assert not late.sio.connected
    assert [r.get("data", {}).get("code") for r in refusals] == ["invalid_token"], refusals


def test_logout_closes_open_sockets_on_both_gateways_within_1s(split, sockets):
    """Contract v1.1: logout closes the session's connections in every process within 1 s
    (the REST process that revokes broadcasts it; each gateway re-checks its sockets)."""
    mallory = User(split["api1"].url, unique_name("mallory"))
    on_gw1 = sockets("mallory@gateway1").connect(split["gw1"].url, mallory.access)
    on_gw2 = sockets("mallory@gateway2").connect(split["gw2"].url, mallory.access)
    assert on_gw1.sio.connected and on_gw2.sio.connected
    start = time.monotonic()
    assert mallory.request("POST", "/api/auth/logout").status_code == 204
    closed = wait_for(lambda: not on_gw1.sio.connected and not on_gw2.sio.connected, timeout=3, interval=0.02)
    elapsed = time.monotonic() - start
    assert closed, split["stack"].logs()
    assert elapsed < 1.0, f"sockets closed after {elapsed:.3f} s (contract: < 1 s)"
    print(f"logout: sockets on both gateways closed after {elapsed:.3f} s")


def test_logout_refused_within_5s_while_the_broadcast_is_down(split):
    """api3 reaches Redis through a proxy: cut it, so api3 neither hears the other
    processes' invalidations nor publishes its own. HOT_CACHE_TTL_SECONDS (3) bounds
    how long a revoked session is still accepted: never later than 5 s."""
    api1, api3, proxy = split["api1"], split["api3"], split["redis_proxy"]
    fay, gus = User(api1.url, unique_name("fay")), User(api1.url, unique_name("gus"))
    for user in (fay, gus):
        for api in (api1, api3):
            assert _profile(user, api.url) == 200  # cached in both
    proxy.cut()
    try:
        time.sleep(0.2)  # api3's subscription is down (its connections were reset)

        # (a) logout on api1 (whose broadcast api3 misses): api3 refuses within 5 s
        assert _profile(fay, api3.url) == 200  # accepted right before the logout
        start = time.monotonic()
        r = fay.request("POST", "/api/auth/logout", base=api1.url)
        assert r.status_code == 204, r.text
        assert _profile(fay, api1.url) == 401
        elapsed_a = _first_refusal(fay, api3.url, fay.access, start, limit=8.0)
        assert elapsed_a is not None and elapsed_a < 5.0, (elapsed_a, split["stack"].logs())

        # (b) logout on api3 (whose publish fails): api1 refuses within 5 s, api3 at once
        assert _profile(gus, api1.url) == 200 and _profile(gus, api3.url) == 200
        start = time.monotonic()
        r = gus.request("POST", "/api/auth/logout", base=api3.url)
        assert r.status_code == 204, r.text  # Redis down does not fail the logout
        assert _profile(gus, api3.url) == 401
        elapsed_b = _first_refusal(gus, api1.url, gus.access, start, limit=8.0)
        assert elapsed_b is not None and elapsed_b < 5.0, (elapsed_b, split["stack"].logs())
        print(f"broadcast down: refused by api3 after {elapsed_a:.2f} s, by api1 after {elapsed_b:.2f} s")
    finally:
        proxy.restore()

    # back up: api3 subscribes again (it retries every second), then hears broadcasts
    hal = User(api1.url, unique_name("hal"))

    def resubscribed() -> bool:
        probe = User(api1.url, unique_name("probe"))
        assert _profile(probe, api3.url) == 200
        start = time.monotonic()
        assert probe.request("POST", "/api/auth/logout").status_code == 204
        return (_first_refusal(probe, api3.url, probe.access, start, limit=1.0) or 9) < 1.0

    assert wait_for(resubscribed, timeout=15, interval=0.5), split["stack"].logs()
    assert _profile(hal, api3.url) == 200
    start = time.monotonic()
    assert hal.request("POST", "/api/auth/logout").status_code == 204
    elapsed = _first_refusal(hal, api3.url, hal.access, start, limit=5.0)
    assert elapsed is not None and elapsed < 1.0, elapsed


# --------------------------------------------------------------------------- origin check behind nginx


def test_same_origin_websocket_through_nginx(split):
    nginx = split["nginx"]
    ws = websocket.create_connection(f"ws://127.0.0.1:{nginx.port}/socket.io/?EIO=4&transport=websocket",
                                     timeout=5, origin=nginx.url)
    try:
        assert ws.recv().startswith("0{")
    finally:
        ws.close()
    # a browser's polling requests carry an Origin too
    r = requests.get(f"{nginx.url}/socket.io/?EIO=4&transport=polling", headers={"Origin": nginx.url},
                     timeout=5)
    assert r.status_code == 200 and r.text.startswith("0{"), r.text
    # another origin is still refused (no CORS_ORIGINS)
    r = requests.get(f"{nginx.url}/socket.io/?EIO=4&transport=polling",
                     headers={"Origin": "http://evil.example"}, timeout=5)
    assert r.status_code == 400, r.text
