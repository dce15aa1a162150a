#!/usr/bin/env python
"""TaskTracker load driver: production stack on this machine, one command.

    .venv/bin/python bench/run.py                 # split topology, every step (~9 minutes)
    .venv/bin/python bench/run.py --quick         # shorter runs, fewer sockets (smoke test of the driver)
    .venv/bin/python bench/run.py --profile       # + py-spy of the REST workers (uncached list, POST)
    .venv/bin/python bench/run.py --only rest latency --sockets 0   # some steps
    .venv/bin/python bench/run.py --topology single                  # the former one-gunicorn stack

Default, ``--topology split`` (bench/split.py, the serving-architecture figures 1-8):
a fresh PostgreSQL database ``tt_bench_<random>`` migrated with ``flask db upgrade``;
on free 127.0.0.1 ports, with ``TASKTRACKER_ENV=production``: the REST API on granian
(``TASKTRACKER_ROLE=api``, ``--api-workers``/``--api-threads``), ``--gateways`` gevent
Socket.IO gateways (``TASKTRACKER_ROLE=gateway``), nginx with a copy of
``deploy/nginx.conf`` rendered in the log dir, Celery worker and beat, and the
yardstick Y (``bench/bare_app.py`` on one gunicorn gthread worker, 100 threads).
Steps: ``rest`` (1-4: list cached / 304 / uncached, POST; each directly and through
nginx), ``latency`` (5), ``flood`` (7, production), ``sockets`` (6, ``--sockets``),
``memory`` (8), ``embedded`` (7, one gunicorn with defaults on SQLite). Many-socket
clients: ``bench/sockets_client.py`` subprocesses. The Markdown table is printed and
written with the raw figures to ``results.md`` / ``results.json`` in the log dir.

``--topology single``: the former stack (one ``gunicorn -c gunicorn.conf.py wsgi:app``
serving REST and Socket.IO, a second one in the other async mode for the 1,000-socket
comparison) and its steps: list_reads posts socket_latency fanout_1000 reminders soak.

Both: RabbitMQ queue/exchange and Redis keys are unique to the run; measures with
``wrk`` (Lua scripts in ``bench/wrk``) and aiohttp / python-socketio ``AsyncClient``
(needs ``aiohttp``, installed in the venv for the bench only: ``.venv/bin/pip install
aiohttp``); every process started is stopped by pid (SIGTERM or SIGINT, then SIGKILL
of that pid's own process group after a timeout) -- never by name.

Every loop is bounded in count and time; all traffic goes to 127.0.0.1 (client source
addresses 127.0.0.2.. for the many-socket and flood steps).
Needs: PostgreSQL (``BENCH_POSTGRES_ADMIN``, default ``postgresql://postgres@127.0.0.1:5432/test``),
RabbitMQ (``BENCH_AMQP``, default guest on 127.0.0.1:5672), Redis (``BENCH_REDIS``,
default ``redis://127.0.0.1:6379``, db ``BENCH_REDIS_DB`` default 12), ``wrk`` and
``nginx`` on PATH.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import requests

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
PG_ADMIN = os.environ.get("BENCH_POSTGRES_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")
AMQP = os.environ.get("BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672//")
REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379")
REDIS_DB = int(os.environ.get("BENCH_REDIS_DB", "12"))
WRK = os.environ.get("WRK", "wrk")
PASSWORD = "bench-password-123"


def log(msg: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# --------------------------------------------------------------------------- processes

class Processes:
    """The processes this run started; :meth:`stop_all` stops them by pid."""

    def __init__(self, logdir: Path):
        self.logdir = logdir
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str], env: dict) -> subprocess.Popen:
        out = open(self.logdir / f"{name}.log", "wb")
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs.append((name, proc))
        log(f"started {name} pid={proc.pid}")
        return proc

    def stop(self, proc: subprocess.Popen, timeout: float = 20.0, sig: int = signal.SIGTERM) -> None:
        if proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            # the session we created has pgid == proc.pid: only our own children are in it
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(10)

    def stop_all(self) -> None:
        for name, proc in reversed(self.procs):
            self.stop(proc)
            log(f"stopped {name} pid={proc.pid} rc={proc.returncode}")


def children(pid: int) -> list[int]:
    """Descendant pids of ``pid`` (from /proc)."""
    parent_of = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent_of[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent_of.items() if pp == p]
        out += kids
        frontier += kids
    return out


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_ticks(pids: list[int]) -> tuple[int, int]:
    """(user, system) CPU clock ticks used so far by ``pids`` (all their threads)."""
    user = system = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        user, system = user + int(fields[11]), system + int(fields[12])
    return user, system


SERVICES = ("postgres", "redis-server", "beam.smp")  # PostgreSQL, Redis, RabbitMQ (shared with others)


def cpu_split() -> tuple[int, int, dict]:
    """(machine busy, this bench's processes, {service pid: ticks}) in CPU clock ticks so far.
    Ours: every live descendant of this process plus what the reaped ones used (cutime);
    services per pid, since PostgreSQL backends come and go."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    busy = sum(fields) - fields[3] - fields[4]  # minus idle, iowait
    me = Path("/proc/self/stat").read_text().rpartition(")")[2].split()
    ours = sum(int(x) for x in me[11:15]) + sum(cpu_ticks(children(os.getpid())))
    services = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() in SERVICES:
                    services.append(int(entry.name))
            except OSError:
                continue
    return busy, ours, {pid: sum(cpu_ticks([pid])) for pid in services}


def cpu_split_text(before: tuple, after: tuple, seconds: float) -> str:
    """'machine busy X% of N cores: bench A%, services B%, others C%' over ``seconds``
    (services: PostgreSQL, Redis, RabbitMQ, for everyone; a PostgreSQL backend that ended
    within the interval is lost, so counted in others)."""
    hz, n = os.sysconf("SC_CLK_TCK"), os.cpu_count() or 1
    cap = hz * seconds * n / 100 or 1
    busy, ours = after[0] - before[0], after[1] - before[1]
    svc = sum(t - before[2].get(pid, 0) for pid, t in after[2].items())
    return (f"machine busy {busy / cap:.0f}% of {n} cores: bench {ours / cap:.0f}%, services {svc / cap:.0f}%, "
            f"others {max(0, busy - ours - svc) / cap:.0f}%")


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited rc={proc.returncode}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


# --------------------------------------------------------------------------- wrk

def wrk(url: str, script: str, *, duration: int, conns: int = 16, threads: int = 2,
        env_extra: dict | None = None, server: subprocess.Popen | None = None) -> dict:
    """Run wrk; with ``server`` (a gunicorn master) also the CPU its workers spent per
    request (``cpu_user_ms``, ``cpu_sys_ms``: /proc ticks over the run / requests)."""
    env = dict(os.environ, **(env_extra or {}))
    workers = children(server.pid) if server is not None else []
    ticks0 = cpu_ticks(workers)
    argv = [WRK, f"-t{threads}", f"-c{conns}", f"-d{duration}s", "--timeout", "5s",
            "-s", f"bench/wrk/{script}", url]
    load_before = loadavg()
    split0, t0 = cpu_split(), time.monotonic()
    out = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=duration + 60)
    cpu = cpu_split_text(split0, cpu_split(), time.monotonic() - t0)
    line = next((l for l in out.stdout.splitlines() if l.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no result: {out.stdout}\n{out.stderr}")
    r = json.loads(line[len("BENCH_JSON "):])
    n5xx = next((l for l in out.stdout.splitlines() if l.startswith("BENCH_5XX ")), None)
    r["n5xx"] = int(n5xx.split()[1]) if n5xx else None
    n304 = next((l for l in out.stdout.splitlines() if l.startswith("BENCH_304 ")), None)
    r["n304"] = int(n304.split()[1]) if n304 else None
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    if workers and r["requests"]:
        ticks1, hz = cpu_ticks(workers), os.sysconf("SC_CLK_TCK")
        r["cpu_user_ms"] = (ticks1[0] - ticks0[0]) * 1000 / hz / r["requests"]
        r["cpu_sys_ms"] = (ticks1[1] - ticks0[1]) * 1000 / hz / r["requests"]
    r["p50_ms"], r["p99_ms"] = r["p50_us"] / 1000, r["p99_us"] / 1000
    r["errors"] = r["connect_errors"] + r["read_errors"] + r["write_errors"] + r["timeouts"] + r["non2xx"]
    r["load"] = f"{load_before} -> {loadavg()}, {cpu}"
    r["cmd"] = " ".join(argv)
    log(f"wrk {url} {script}: {r['rps']:.0f} req/s p50 {r['p50_ms']:.1f} ms p99 {r['p99_ms']:.1f} ms "
        f"errors {r['errors']} load {r['load']}")
    return r


# --------------------------------------------------------------------------- bench

class Bench:
    def __init__(self, args):
        self.args = args
        self.tag = secrets.token_hex(4)
        self.dbname = f"tt_bench_{self.tag}"
        self.logdir = Path(tempfile.mkdtemp(prefix=f"tt_bench_{self.tag}_"))
        self.procs = Processes(self.logdir)
        self.results: dict = {"rows": [], "notes": []}
        self.dur = 4 if args.quick else 10
        # the web server's async mode: the app's default unless the caller's environment sets one
        self.mode = os.environ.get("SOCKETIO_ASYNC_MODE", "gevent")  # the app's default (config.py)
        self.other_mode = "threading" if self.mode == "gevent" else "gevent"  # fan-out comparison
        self.pg = None

    # ------------------------------------------------------------------ setup
    def env(self, **extra) -> dict:
        env = dict(os.environ)
        env.update({
            "TASKTRACKER_ENV": "production",
            "JWT_SECRET_KEY": self.jwt_secret,
            "SECRET_KEY": self.secret,
            "DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{self.dbname}",
            "CELERY_BROKER_URL": AMQP,
            "SOCKETIO_MESSAGE_QUEUE": AMQP,
            # distinct names: Celery declares a *direct* exchange named after its queue,
            # the Socket.IO manager a *fanout* exchange named after its channel
            "CELERY_TASK_QUEUE": f"tt_bench_q_{self.tag}",
            "SOCKETIO_CHANNEL": f"tt_bench_sio_{self.tag}",
            "REDIS_URL": f"{REDIS}/{REDIS_DB}",
            "RATELIMIT_STORAGE_URI": f"{REDIS}/{REDIS_DB}",
            "PRESENCE_KEY_PREFIX": f"tt_bench_{self.tag}:presence",
            "FLASK_APP": "wsgi.py",
            # bench-only deviations from the defaults (docs/benchmarks.md says why):
            "JWT_ACCESS_TOKEN_EXPIRES": "3600",          # tokens outlive the run
            "SCAN_INTERVAL_SECONDS": str(self.args.scan_interval),
            "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
        })
        if self.args.workers > 1:  # the web and the bare server alike (README, "Several workers per host")
            env.update({"GUNICORN_WORKERS": str(self.args.workers), "SOCKETIO_TRANSPORTS": "websocket"})
        env.update(extra)
        return env

    def create_database(self) -> None:
        """The run's secrets, a fresh database migrated with ``flask db upgrade``, and
        ``self.pg``: an autocommit connection to it."""
        self.jwt_secret = secrets.token_urlsafe(48)
        self.secret = secrets.token_urlsafe(48)
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.dbname}"')
        log(f"database {self.dbname}; logs in {self.logdir}")
        rc = subprocess.run([str(BIN / "flask"), "db", "upgrade"], cwd=ROOT, timeout=120,
                            env=self.env(SCHEDULER_ENABLED="false"), capture_output=True, text=True)
        if rc.returncode:
            raise RuntimeError(f"flask db upgrade failed: {rc.stderr}")
        self.pg = psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{self.dbname}", autocommit=True)

    def setup(self) -> None:
        self.create_database()

        self.port = free_port()
        self.web = self.procs.start("web", [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"],
                                    self.env(PORT=str(self.port)))
        self.bare_port = free_port()
        self.bare = self.procs.start("bare", [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py",
                                              "bench.bare_app:app"], self.env(PORT=str(self.bare_port)))
        self.worker = self.procs.start("worker", [str(BIN / "celery"), "-A", "celery_worker.celery", "worker",
                                                  "--loglevel=info", "--hostname", f"bench-{self.tag}@%h"],
                                       self.env())
        self.beat = self.procs.start("beat", [str(BIN / "celery"), "-A", "celery_worker.celery", "beat",
                                              "--loglevel=info", "--schedule",
                                              str(self.logdir / "celerybeat-schedule")], self.env())
        self.base = f"http://127.0.0.1:{self.port}"
        self.bare_url = f"http://127.0.0.1:{self.bare_port}/bare"
        wait_http(self.base + "/health", self.web)
        wait_http(f"http://127.0.0.1:{self.bare_port}/health", self.bare)
        deadline = time.monotonic() + 60
        while "ready" not in (self.logdir / "worker.log").read_text(errors="replace"):
            if time.monotonic() > deadline or self.worker.poll() is not None:
                raise RuntimeError("celery worker did not become ready")
            time.sleep(0.5)

    def drop_run_state(self) -> None:
        """Drop what the run made outside its processes: the database (unless
        ``--keep-db``) and the RabbitMQ queue and exchanges of its Celery queue and
        Socket.IO channel. Never raises."""
        if not self.args.keep_db:
            try:
                with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')
            except Exception as exc:  # noqa: BLE001
                log(f"could not drop {self.dbname}: {exc!r}")
        try:
            from kombu import Connection

            with Connection(AMQP, connect_timeout=3) as amqp:
                channel = amqp.default_channel
                for name in (f"tt_bench_q_{self.tag}", f"tt_bench_sio_{self.tag}"):
                    channel.queue_delete(name)  # RabbitMQ deletes what does not exist without an error
                    channel.exchange_delete(name)
        except Exception as exc:  # noqa: BLE001
            log(f"could not delete the run's RabbitMQ queue/exchanges: {exc!r}")

    def user(self, name: str) -> dict:
        r = requests.post(self.base + "/api/auth/register", timeout=10,
                          json={"username": name, "email": f"{name}@bench.test", "password": PASSWORD})
        r.raise_for_status()
        r = requests.post(self.base + "/api/auth/login", timeout=10,
                          json={"email": f"{name}@bench.test", "password": PASSWORD})
        r.raise_for_status()
        body = r.json()
        return {"id": body["user"]["id"], "token": body["access_token"], "name": name}

    def seed(self) -> None:
        self.alice = self.user("alice")
        self.bob = self.user("bob")
        self.carol = self.user("carol")
        self.members = [self.user(f"member{i}") for i in range(8)]
        r = requests.post(self.base + "/api/teams", json={"name": "Bench team"}, timeout=10,
                          headers=self.auth(self.alice))
        r.raise_for_status()
        self.team_id = r.json()["id"]
        now = datetime.now(timezone.utc)
        with self.pg.cursor() as cur:
            for u in [self.bob, *self.members]:
                cur.execute("INSERT INTO team_members (team_id, user_id, role, joined_at) VALUES (%s, %s, 'member', %s)",
                            (self.team_id, u["id"], now))
            # alice's 100 visible tasks (personal)
            cur.execute("""INSERT INTO tasks (title, description, status, priority, owner_id, created_at,
                           updated_at, version)
                           SELECT 'Alice task ' || g, 'Seeded for the benchmark', 'todo', 'medium', %s,
                                  %s - g * interval '1 minute', %s - g * interval '1 minute', 1
                           FROM generate_series(1, 100) g""", (self.alice["id"], now, now))
        self.results["notes"].append("seeded 11 users over REST, team memberships and alice's 100 tasks by SQL")

    def auth(self, u: dict) -> dict:
        return {"Authorization": f"Bearer {u['token']}"}

    # ------------------------------------------------------------------ figures
    def row(self, figure, target, measured, ceiling="", ratio="", verdict="", detail=""):
        self.results["rows"].append(dict(figure=figure, target=target, measured=measured, ceiling=ceiling,
                                         ratio=ratio, verdict=verdict, detail=detail))

    def stable_etag(self, url: str) -> str:
        """The list's current ETag, read twice alike: a write in flight (a scan of the
        beat, say) is part of the data version, and a tag read then is never seen again."""
        etag = ""
        for _ in range(20):
            first = requests.get(url, headers=self.auth(self.alice), timeout=10).headers.get("ETag", "")
            etag = requests.get(url, headers=self.auth(self.alice), timeout=10).headers.get("ETag", "")
            if first == etag:
                break
            time.sleep(0.2)
        return etag

    def list_reads(self) -> None:
        url100 = f"{self.base}/api/tasks?per_page=100"
        r = requests.get(url100, headers=self.auth(self.alice), timeout=10)
        body = r.json()
        assert r.status_code == 200 and len(body["items"]) == 100, (r.status_code, str(body)[:300])
        etag = r.headers.get("ETag")
        cache_headers = {k: v for k, v in r.headers.items()
                         if k.lower() in ("etag", "cache-control", "x-cache", "last-modified")}
        self.results["list_headers"] = cache_headers
        tok = {"BENCH_TOKEN": self.alice["token"]}
        bare = wrk(self.bare_url, "get.lua", duration=self.dur, server=self.bare)
        api = wrk(url100, "get.lua", duration=self.dur, env_extra=tok, server=self.web)
        bare2 = wrk(self.bare_url, "get.lua", duration=self.dur, server=self.bare)
        ceiling = max(bare["rps"], bare2["rps"])
        self.results["bare_get"] = [bare, bare2]
        self.results["list100"] = api
        ratio = api["rps"] / ceiling
        ok = ratio >= 0.3 and api["p99_ms"] < 25 and api["errors"] == 0
        self.row("GET /api/tasks?per_page=100 (100 tasks), 16 conns", ">= 0.3x bare, p99 < 25 ms",
                 f"{api['rps']:.0f} req/s, p50 {api['p50_ms']:.1f} ms, p99 {api['p99_ms']:.1f} ms",
                 f"{ceiling:.0f} req/s (bare, p99 {min(bare['p99_ms'], bare2['p99_ms']):.1f} ms)",
                 f"{ratio:.2f}x", "met" if ok else "MISSED",
                 f"errors {api['errors']}, load {api['load']}; {cpu_per_request(api, bare)}")
        if etag:
            etag = self.stable_etag(url100)
            cond = wrk(url100, "get.lua", duration=self.dur,
                       env_extra={**tok, "BENCH_IF_NONE_MATCH": etag}, server=self.web)
            self.results["list100_conditional"] = cond
            r2 = cond["rps"] / ceiling
            self.row("same, cached (If-None-Match, repeated identical reads)", ">= 0.7x bare",
                     f"{cond['rps']:.0f} req/s, p50 {cond['p50_ms']:.1f} ms, p99 {cond['p99_ms']:.1f} ms",
                     f"{ceiling:.0f} req/s", f"{r2:.2f}x", "met" if r2 >= 0.7 else "MISSED",
                     f"{cond['n304']} of {cond['requests']} answered 304; "
                     f"non-2xx/3xx {cond['non2xx']}, load {cond['load']}; {cpu_per_request(cond, bare)}")
        else:
            self.row("same, cached", ">= 0.7x bare", "n/a: list responses carry no ETag/cache yet",
                     "", "", "not available", f"headers seen: {cache_headers}")

        # page of 20: 100 tasks in the table, then 100,000 more owned by others
        url20 = f"{self.base}/api/tasks?per_page=20"
        small = wrk(url20, "get.lua", duration=self.dur, env_extra=tok)
        t0 = time.monotonic()
        with self.pg.cursor() as cur:
            cur.execute("INSERT INTO teams (name, description, owner_id, created_at, updated_at) "
                        "VALUES ('Other team', '', %s, now(), now()) RETURNING id", (self.carol["id"],))
            other_team = cur.fetchone()[0]
            cur.execute("INSERT INTO team_members (team_id, user_id, role, joined_at) VALUES (%s, %s, 'owner', now())",
                        (other_team, self.carol["id"]))
            cur.execute("""INSERT INTO tasks (title, description, status, priority, owner_id, assignee_id, team_id,
                           created_at, updated_at, version)
                           SELECT 'Other task ' || g, 'Not visible to alice',
                                  (ARRAY['todo','in_progress','done'])[1 + g %% 3],
                                  (ARRAY['low','medium','high','urgent'])[1 + g %% 4],
                                  %s, CASE WHEN g %% 2 = 0 THEN %s END, CASE WHEN g %% 3 = 0 THEN %s END,
                                  now() - g * interval '1 second', now() - g * interval '1 second', 1
                           FROM generate_series(1, 100000) g""",
                        (self.carol["id"], self.carol["id"], other_team))
            cur.execute("ANALYZE")
            cur.execute("SELECT count(*) FROM tasks")
            total = cur.fetchone()[0]
        self.results["notes"].append(f"inserted 100,000 invisible tasks by SQL in {time.monotonic() - t0:.1f}s "
                                     f"(tasks table: {total} rows), then ANALYZE")
        r = requests.get(url20, headers=self.auth(self.alice), timeout=10)
        assert r.status_code == 200 and r.json()["total"] == 100, r.text[:300]
        big = wrk(url20, "get.lua", duration=self.dur, env_extra=tok)
        self.results["list20_small"], self.results["list20_big"] = small, big
        slow = max(small["rps"] / big["rps"], big["p50_ms"] / small["p50_ms"])
        self.row("GET /api/tasks?per_page=20, 100 visible of 100,100 tasks", "<= 2x slower than with 100 tasks",
                 f"{big['rps']:.0f} req/s, p50 {big['p50_ms']:.1f} ms, p99 {big['p99_ms']:.1f} ms",
                 f"{small['rps']:.0f} req/s, p50 {small['p50_ms']:.1f} ms (100 tasks in table)",
                 f"{slow:.2f}x slower", "met" if slow <= 2 else "MISSED",
                 f"load {small['load']} / {big['load']}")

    def posts(self) -> None:
        body = json.dumps({"title": "bench task", "description": "load", "priority": "high"})
        env = {"BENCH_TOKEN": self.alice["token"], "BENCH_BODY": body}
        bare = wrk(self.bare_url, "post.lua", duration=self.dur, env_extra={"BENCH_BODY": body}, server=self.bare)
        api = wrk(f"{self.base}/api/tasks", "post.lua", duration=self.dur, env_extra=env, server=self.web)
        self.results["bare_post"], self.results["post"] = bare, api
        settled, pending = self.wait_dispatched(60)
        ratio = api["rps"] / bare["rps"]
        ok = ratio >= 0.2 and api["p99_ms"] < 60 and api["errors"] == 0 and pending == 0
        self.row("POST /api/tasks, 16 conns", ">= 0.2x bare, p99 < 60 ms, all events dispatched",
                 f"{api['rps']:.0f} req/s, p50 {api['p50_ms']:.1f} ms, p99 {api['p99_ms']:.1f} ms; "
                 f"undispatched after settle: {pending}",
                 f"{bare['rps']:.0f} req/s (bare POST, p99 {bare['p99_ms']:.1f} ms)", f"{ratio:.2f}x",
                 "met" if ok else "MISSED",
                 f"{api['requests']} tasks created, errors {api['errors']}, all dispatched {settled:.1f}s "
                 f"after the run, load {api['load']}; {cpu_per_request(api, bare)}")

    def soak(self) -> None:
        """60 s of 200 concurrent mixed clients (11 users; reads, writes, status changes,
        notifications): zero 5xx expected. 4xx (e.g. 409 on an invalid transition,
        404 on a task another user cannot see) are part of the mix."""
        users = [self.alice, self.bob, self.carol, *self.members]
        duration = 10 if self.args.quick else 60
        env = {"BENCH_TOKENS": ",".join(u["token"] for u in users), "BENCH_MAX_TASK": "100"}
        r = wrk(self.base, "soak.lua", duration=duration, conns=200, threads=2, env_extra=env)
        ok = r["n5xx"] == 0  # the target; requests cut by wrk's 5 s client timeout are reported beside it
        self.results["soak"] = r
        self.row(f"soak: 200 concurrent mixed clients, {duration} s", "zero 5xx",
                 f"{r['requests']} requests, {r['rps']:.0f} req/s, p50 {r['p50_ms']:.1f} ms, "
                 f"p99 {r['p99_ms']:.1f} ms; 5xx: {r['n5xx']}, 4xx: {r['non2xx'] - r['n5xx']}, "
                 f"socket errors {r['connect_errors'] + r['read_errors'] + r['write_errors']}, "
                 f"cut by the client's 5 s timeout {r['timeouts']}", verdict="met" if ok else "MISSED", detail=f"load {r['load']}")

    def wait_dispatched(self, timeout: float) -> tuple[float, int]:
        t0 = time.monotonic()
        pending = -1
        while time.monotonic() - t0 < timeout:
            with self.pg.cursor() as cur:
                cur.execute("SELECT count(*) FROM events WHERE dispatched_at IS NULL")
                pending = cur.fetchone()[0]
            if pending == 0:
                break
            time.sleep(0.2)
        return time.monotonic() - t0, pending

    # ------------------------------------------------------------------ sockets
    async def _client(self, url: str, token: str, handlers: dict, timeout: float = 10.0):
        import socketio
        sio = socketio.AsyncClient(reconnection=False)
        for name, fn in handlers.items():
            sio.on(name, fn)
        try:
            await asyncio.wait_for(sio.connect(url, transports=["websocket"], auth={"token": token},
                                               wait_timeout=timeout), timeout + 2)
        except BaseException:
            try:
                await asyncio.wait_for(sio.shutdown(), 5)
            except BaseException:  # noqa: BLE001
                pass
            raise
        return sio

    async def _latency(self, n: int, gap: float, label: str, sock_url: str | None = None,
                       post_url: str | None = None, listener: dict | None = None, poster: dict | None = None,
                       team_id: int | None = None) -> dict:
        """``n`` sequential team-task POSTs by ``poster`` (default alice) to ``post_url``, each
        timed until ``listener`` (default bob), connected to ``sock_url``, gets task:created."""
        import aiohttp
        sock_url, post_url = sock_url or self.base, post_url or self.base
        listener, poster = listener or self.bob, poster or self.alice
        arrivals: dict[int, list[float]] = {}
        seqs: list[int] = []
        waiters: dict[int, asyncio.Event] = {}
        early: set[int] = set()

        async def on_created(data):
            t = time.perf_counter()
            tid = data.get("id")
            arrivals.setdefault(tid, []).append(t)
            seqs.append(data.get("seq"))
            if tid in waiters:
                waiters[tid].set()
            else:
                early.add(tid)

        sio = await self._client(sock_url, listener["token"], {"task:created": on_created})
        lat, post_ms, missing, retries = [], [], 0, 0
        sent_ids: list[int] = []
        body = {"title": "latency probe", "team_id": team_id or self.team_id}
        deadline = time.monotonic() + 120

        async def post(http) -> tuple[int, float]:
            """POST once, retried on a dropped connection with the same Idempotency-Key
            (as a real client would: the retry cannot create a second task)."""
            nonlocal retries
            key = secrets.token_hex(16)
            for attempt in range(3):
                try:
                    async with http.post(post_url + "/api/tasks", json=body,
                                         headers={"Idempotency-Key": key}) as resp:
                        t1 = time.perf_counter()
                        assert resp.status == 201, await resp.text()
                        return (await resp.json())["id"], t1
                except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError):
                    if attempt == 2:
                        raise
                    retries += 1
            raise AssertionError("unreachable")

        try:
            async with aiohttp.ClientSession(headers=self.auth(poster)) as http:
                for i in range(n):
                    if time.monotonic() > deadline:
                        break
                    t0 = time.perf_counter()
                    tid, t1 = await post(http)
                    sent_ids.append(tid)
                    post_ms.append((t1 - t0) * 1000)
                    ev = waiters.setdefault(tid, asyncio.Event())
                    if tid in early:
                        ev.set()
                    try:
                        await asyncio.wait_for(ev.wait(), 5)
                        lat.append((arrivals[tid][0] - t0) * 1000)
                    except asyncio.TimeoutError:
                        missing += 1
                        if missing >= 5 and not lat:
                            log(f"latency {label}: no event after 5 writes, giving up")
                            break
                    await asyncio.sleep(gap)
            # events not seen within 5 s: late or lost? wait up to 15 s more
            settle = time.monotonic() + 15
            while any(t not in arrivals for t in sent_ids) and time.monotonic() < settle:
                await asyncio.sleep(0.2)
            await asyncio.sleep(1.0)  # late duplicates
        finally:
            await sio.disconnect()
        dups = sum(len(v) - 1 for v in arrivals.values())
        sent = len(post_ms)
        lost = sum(1 for t in sent_ids if t not in arrivals)
        res = {"sent": sent, "received": len(lat), "missing": missing, "late": missing - lost,
               "lost": lost, "duplicates": dups, "post_retries": retries,
               "seq_unique": len(set(seqs)) == len(seqs),
               "p50_ms": statistics.median(lat) if lat else None,
               "p99_ms": quantile(lat, 0.99), "max_ms": max(lat) if lat else None,
               "post_p50_ms": statistics.median(post_ms) if post_ms else None}
        log(f"latency {label}: {res}")
        return res

    def socket_latency(self) -> None:
        n = 50 if self.args.quick else 200
        idle = asyncio.run(self._latency(n, 0.02, "idle"))
        self.results["latency_idle"] = idle
        ok = (idle["p50_ms"] is not None and idle["p50_ms"] < 10 and idle["p99_ms"] < 50
              and idle["missing"] == 0 and idle["duplicates"] == 0)  # missing: not within 5 s
        self.row(f"REST write -> Socket.IO task:created (worker fan-out), idle, {idle['sent']} writes",
                 "p50 < 10 ms, p99 < 50 ms, none lost/duplicated",
                 f"p50 {fmt(idle['p50_ms'])} ms, p99 {fmt(idle['p99_ms'])} ms, not within 5 s "
                 f"{idle['missing']} (late {idle['late']}, lost {idle['lost']}), dup {idle['duplicates']}", "", "", "met" if ok else "MISSED",
                 f"measured from POST sent to event received; POST itself p50 {fmt(idle['post_p50_ms'])} ms; "
                 f"seqs unique: {idle['seq_unique']}")
        # the same while POST load runs (alice's personal tasks; bob does not see them)
        body = json.dumps({"title": "background load"})
        dur = 20 if self.args.quick else 40
        argv = [WRK, "-t2", "-c16", f"-d{dur}s", "--timeout", "5s", "-s", "bench/wrk/post.lua",
                f"{self.base}/api/tasks"]
        bg = subprocess.Popen(argv, cwd=ROOT, env=dict(os.environ, BENCH_TOKEN=self.alice["token"], BENCH_BODY=body),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            time.sleep(2)
            load = asyncio.run(self._latency(n, 0.02, "under POST load"))
        finally:
            out, _ = bg.communicate(timeout=dur + 60)
        line = next((l for l in out.splitlines() if l.startswith("BENCH_JSON ")), "BENCH_JSON {}")
        bgres = json.loads(line[len("BENCH_JSON "):])
        bg_rps = bgres.get("requests", 0) / max(bgres.get("duration_us", 1) / 1e6, 1e-9)
        settled, pending = self.wait_dispatched(90)
        self.results["latency_load"] = load
        ok = (load["p99_ms"] is not None and load["p99_ms"] < 100 and load["missing"] == 0
              and load["duplicates"] == 0)
        self.row(f"same, while POST load runs (wrk -c16, {bg_rps:.0f} req/s)", "p99 < 100 ms, none lost/duplicated",
                 f"p50 {fmt(load['p50_ms'])} ms, p99 {fmt(load['p99_ms'])} ms, not within 5 s "
                 f"{load['missing']} (late {load['late']}, lost {load['lost']}), dup {load['duplicates']}", "", "", "met" if ok else "MISSED",
                 f"{load['sent']} writes ({load['post_retries']} retried after a dropped connection, "
                 f"same Idempotency-Key); POST itself p50 {fmt(load['post_p50_ms'])} ms; seqs unique: "
                 f"{load['seq_unique']}; undispatched after settle: {pending} ({settled:.1f}s)")

    async def _fanout(self, url: str, post_url: str, n: int, events: int) -> dict:
        import aiohttp
        users = [self.bob, *self.members, self.alice]
        got: dict[int, list[float]] = {}
        clients, failures = [], []
        sem = asyncio.Semaphore(50)

        def make_handler(idx):
            async def handler(data):
                got.setdefault(data.get("id"), []).append((idx, time.perf_counter()))
            return handler

        async def connect(i):
            async with sem:
                try:
                    clients.append(await self._client(url, users[i % len(users)]["token"],
                                                      {"task:created": make_handler(i)}, timeout=10))
                except Exception as exc:  # noqa: BLE001
                    failures.append(repr(exc)[:120])

        t0 = time.monotonic()
        try:
            await asyncio.wait_for(asyncio.gather(*(connect(i) for i in range(n))), 180)
        except asyncio.TimeoutError:
            failures.append("connect phase timed out after 180 s")
        connect_s = time.monotonic() - t0
        log(f"fan-out {url}: {len(clients)}/{n} connected in {connect_s:.1f}s ({len(failures)} failures)")
        res = {"connected": len(clients), "connect_s": connect_s, "failures": failures[:3], "events": []}
        await asyncio.sleep(1.0)
        try:
            if clients:
                async with aiohttp.ClientSession(headers=self.auth(self.alice),
                                                 timeout=aiohttp.ClientTimeout(total=10)) as http:
                    for _ in range(events):
                        t_post = time.perf_counter()
                        # written through the *other* server: the event reaches this one
                        # through the worker and the message queue
                        async with http.post(post_url + "/api/tasks",
                                             json={"title": "fan-out probe", "team_id": self.team_id}) as resp:
                            assert resp.status == 201, await resp.text()
                            tid = (await resp.json())["id"]
                        end = time.monotonic() + 10
                        while time.monotonic() < end and len(got.get(tid, [])) < len(clients):
                            await asyncio.sleep(0.01)
                        await asyncio.sleep(0.5)
                        arr = got.get(tid, [])
                        per_client = {}
                        for idx, _t in arr:
                            per_client[idx] = per_client.get(idx, 0) + 1
                        times = sorted(t for _i, t in arr)
                        res["events"].append({
                            "delivered": len(per_client), "duplicates": len(arr) - len(per_client),
                            "first_ms": (times[0] - t_post) * 1000 if times else None,
                            "all_ms": (times[-1] - t_post) * 1000 if times else None})
                        log(f"fan-out event: {res['events'][-1]}")
        finally:
            await asyncio.gather(*(c.disconnect() for c in clients), return_exceptions=True)
        return res

    def fanout_1000(self) -> None:
        n = 200 if self.args.quick else 1000
        # the web server in the other async mode beside the production one, for comparison
        other = self.other_mode
        oport = free_port()
        self.other_web = self.procs.start(f"web-{other}", [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py",
                                                          "wsgi:app"],
                                          self.env(PORT=str(oport), SOCKETIO_ASYNC_MODE=other))
        wait_http(f"http://127.0.0.1:{oport}/health", self.other_web)
        ourl = f"http://127.0.0.1:{oport}"
        label = {"gevent": "gevent (SOCKETIO_ASYNC_MODE=gevent)",
                 "threading": "threading (gthread, GUNICORN_THREADS=100 default)"}
        variants = [(label[self.mode] + ", the web server", self.base, ourl),
                    (label[other], ourl, self.base)]
        self.results["fanout"] = {}
        for label, url, post_url in variants:
            res = asyncio.run(self._fanout(url, post_url, n, 1 if self.args.quick else 3))
            self.results["fanout"][label] = res
            evs = res["events"]
            worst = max((e["all_ms"] or 1e9) for e in evs) if evs else None
            all_ok = bool(evs) and res["connected"] == n and all(
                e["delivered"] == n and e["duplicates"] == 0 and (e["all_ms"] or 1e9) < 1000 for e in evs)
            measured = (f"{res['connected']}/{n} connected ({res['connect_s']:.0f}s); " +
                        "; ".join(f"{e['delivered']} got it, last after {fmt(e['all_ms'])} ms"
                                  for e in evs) if evs else f"{res['connected']}/{n} connected; no event sent")
            self.row(f"team event to {n} sockets, {label}", "all delivered within 1 s", measured, "", "",
                     "met" if all_ok else "MISSED",
                     f"worst {fmt(worst)} ms from POST sent; dup "
                     f"{sum(e['duplicates'] for e in evs)}; failures {res['failures']}")
            # after 1,000 websockets the threading server must still answer
            try:
                ok = requests.get(url + "/health", timeout=10).status_code == 200
            except requests.RequestException:
                ok = False
            self.results["notes"].append(f"{label}: /health after the fan-out test -> {'200' if ok else 'no answer'}")

    def reminders(self) -> None:
        n = 1000 if self.args.quick else 10000
        received: dict[int, int] = {}
        times: list[float] = []

        async def run() -> dict:
            async def on_note(data):
                if data.get("type") == "deadline_reminder":
                    received[data["id"]] = received.get(data["id"], 0) + 1
                    times.append(time.time())

            sio = await self._client(self.base, self.bob["token"], {"notification:new": on_note})
            try:
                due = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=2)
                with self.pg.cursor() as cur:
                    cur.execute("""WITH t AS (
                                     INSERT INTO tasks (title, description, status, priority, owner_id,
                                                        created_at, updated_at, version)
                                     SELECT 'Reminder task ' || g, '', 'todo', 'medium', %s, now(), now(), 1
                                     FROM generate_series(1, %s) g RETURNING id)
                                   INSERT INTO reminders (task_id, remind_at, created_at)
                                   SELECT id, %s, now() FROM t""", (self.bob["id"], n, due))
                log(f"{n} reminders due at {due.isoformat()}")
                due_ts = due.timestamp()
                deadline = time.monotonic() + self.args.scan_interval + 90
                while time.monotonic() < deadline and len(received) < n:
                    await asyncio.sleep(0.2)
                await asyncio.sleep(2.0)
            finally:
                await sio.disconnect()
            with self.pg.cursor() as cur:
                cur.execute("SELECT count(*), count(DISTINCT event_seq), max(created_at) FROM notifications "
                            "WHERE type = 'deadline_reminder' AND user_id = %s", (self.bob["id"],))
                persisted, distinct_events, last_persisted = cur.fetchone()
                cur.execute("SELECT count(*), count(DISTINCT payload->>'reminder_id'), min(created_at) FROM events "
                            "WHERE type = 'reminder.due'")
                events, distinct_reminders, first_claim = cur.fetchone()
                cur.execute("SELECT count(*) FROM reminders WHERE sent_at IS NULL")
                unsent = cur.fetchone()[0]
            return {"n": n, "persisted": persisted, "distinct_events": distinct_events, "events": events,
                    "distinct_reminders": distinct_reminders, "unsent": unsent,
                    "pushed": len(received), "push_dups": sum(v - 1 for v in received.values()),
                    "first_claim_after_due_s": first_claim.timestamp() - due_ts if first_claim else None,
                    "persisted_after_due_s": last_persisted.timestamp() - due_ts if last_persisted else None,
                    "pushed_after_due_s": max(times) - due_ts if times else None,
                    "pushed_after_claim_s": (max(times) - first_claim.timestamp()) if times and first_claim else None}

        res = asyncio.run(run())
        self.results["reminders"] = res
        log(f"reminders: {res}")
        ok = (res["persisted"] == n and res["distinct_events"] == n and res["pushed"] == n
              and res["push_dups"] == 0 and res["pushed_after_due_s"] is not None and res["pushed_after_due_s"] < 30)
        self.row(f"{n:,} reminders due in the same second", "all persisted and pushed within 30 s, none twice",
                 f"persisted {res['persisted']}, pushed {res['pushed']} (dup {res['push_dups']}); "
                 f"last push {fmt(res['pushed_after_due_s'])} s after due "
                 f"({fmt(res['pushed_after_claim_s'])} s after the scan's first claim)",
                 "", "", "met" if ok else "MISSED",
                 f"SCAN_INTERVAL_SECONDS={self.args.scan_interval}: first claim "
                 f"{fmt(res['first_claim_after_due_s'])} s after due; last persisted "
                 f"{fmt(res['persisted_after_due_s'])} s after due; reminder.due events {res['events']} "
                 f"(distinct reminders {res['distinct_reminders']}), unsent {res['unsent']}")

    def memory(self) -> None:
        procs = [("web (gunicorn master)", self.web.pid), ("bare (gunicorn master)", self.bare.pid),
                 ("worker (celery main)", self.worker.pid), ("beat", self.beat.pid)]
        if getattr(self, "other_web", None):
            procs.append((f"web-{self.other_mode} (gunicorn master)", self.other_web.pid))
        mem = []
        for label, pid in procs:
            mem.append((label, pid, rss_mb(pid)))
            for child in children(pid):
                mem.append((f"  child of {label.split()[0]}", child, rss_mb(child)))
        self.results["memory"] = mem
        # the production processes (not the bare ceiling, nor the other-mode web of the fan-out test)
        app_procs = [m for m in mem if m[0].split()[0] not in ("bare", "web-threading", "web-gevent")
                     and not m[0].strip().startswith(("child of bare", "child of web-"))]
        worst = max((m[2] or 0) for m in app_procs)
        self.row("RSS per web/worker process after the load", "< 150 MB each",
                 ", ".join(f"{label.strip()} {rss:.0f} MB" for label, _pid, rss in app_procs if rss),
                 "", "", "met" if worst < 150 else "MISSED", f"largest {worst:.0f} MB")

    def profile(self) -> None:
        """py-spy the web worker (samples holding the GIL: the CPU the requests cost) while
        wrk reads the 100-task list, uncached then conditional (304); top frames by own time."""
        kids = children(self.web.pid)
        if not kids:
            return
        url = f"{self.base}/api/tasks?per_page=100"
        etag = self.stable_etag(url)
        for name, inm in (("list", ""), ("list_304", etag)):
            out = self.logdir / f"pyspy-{name}.txt"
            spy = subprocess.Popen([str(BIN / "py-spy"), "record", "-p", str(kids[0]), "-d", "8", "-r", "200",
                                    "--gil", "-f", "raw", "-o", str(out), "--nonblocking"],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            time.sleep(1)
            run = wrk(url, "get.lua", duration=8,
                      env_extra={"BENCH_TOKEN": self.alice["token"], "BENCH_IF_NONE_MATCH": inm})
            msg, _ = spy.communicate(timeout=60)
            if not out.exists():
                self.results["notes"].append(f"py-spy failed: {msg.strip()[-300:]}")
                return
            self.results[f"profile_{name}"] = [f"{run['rps']:.0f} req/s, {run['n304']} answered 304"]
            self.results[f"profile_{name}"] += summarize_profile(out)

    # ------------------------------------------------------------------ run
    def run(self) -> int:
        started = datetime.now(timezone.utc)
        try:
            self.setup()
            self.seed()
            steps = [self.list_reads, self.posts, self.socket_latency, self.fanout_1000, self.reminders,
                     self.soak]
            for step in steps:
                if self.args.only and step.__name__ not in self.args.only:
                    continue
                log(f"--- {step.__name__} (load {loadavg()})")
                try:
                    step()
                except Exception as exc:  # noqa: BLE001
                    log(f"{step.__name__} failed: {exc!r}")
                    self.row(step.__name__, "", f"driver error: {exc!r}"[:200], verdict="ERROR")
            self.memory()
            if self.args.profile:
                self.profile()
        finally:
            self.procs.stop_all()
            if self.pg is not None:
                self.pg.close()
            self.drop_run_state()
        self.report(started)
        return 0

    def report(self, started: datetime) -> None:
        cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                    if l.startswith("model name")), platform.processor())
        mem_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        lines = [f"Run {started:%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs ({cpu}), "
                 f"{mem_kb / 1024 / 1024:.1f} GiB RAM, load average now {loadavg()}; database {self.dbname}",
                 "", "| figure | target | measured | ceiling | ratio | verdict |", "|---|---|---|---|---|---|"]
        for r in self.results["rows"]:
            lines.append(f"| {r['figure']} | {r['target']} | {r['measured']} | {r['ceiling']} | {r['ratio']} "
                         f"| {r['verdict']} |")
        lines += ["", "Details:"] + [f"- {r['figure']}: {r['detail']}" for r in self.results["rows"] if r["detail"]]
        lines += [f"- {n}" for n in self.results["notes"]]
        if "memory" in self.results:
            lines += ["", "| process | pid | RSS MB |", "|---|---|---|"]
            lines += [f"| {label} | {pid} | {fmt(rss)} |" for label, pid, rss in self.results["memory"]]
        for name in ("list", "list_304"):
            if f"profile_{name}" in self.results:
                lines += ["", f"py-spy --gil (web worker, GET {name}):", "```", *self.results[f"profile_{name}"], "```"]
        print("\n".join(lines))
        (self.logdir / "results.json").write_text(json.dumps(self.results, default=str, indent=1))
        log(f"raw results: {self.logdir / 'results.json'}")


def summarize_profile(path: Path, top: int = 25) -> list[str]:
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for f in set(frames):
            incl[f] = incl.get(f, 0) + n
    out = [f"{total} samples; top own time:"]
    out += [f"{100 * c / total:5.1f}%  {f[:150]}" for f, c in sorted(own.items(), key=lambda x: -x[1])[:top]]
    out += ["top inclusive (tasktracker/ and sqlalchemy/ frames):"]
    picks = [(f, c) for f, c in incl.items() if "tasktracker/" in f or "marshmallow" in f or "sqlalchemy/orm" in f]
    out += [f"{100 * c / total:5.1f}%  {f[:150]}" for f, c in sorted(picks, key=lambda x: -x[1])[:top]]
    return out


def cpu_per_request(api: dict, bare: dict) -> str:
    """'web worker CPU per request: ... (bare: ...)' from two :func:`wrk` results."""
    def one(r: dict) -> str:
        if "cpu_user_ms" not in r:
            return "n/a"
        return f"{r['cpu_user_ms']:.2f} ms user + {r['cpu_sys_ms']:.2f} ms system"
    return f"web worker CPU per request {one(api)} (bare: {one(bare)})"


def quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def fmt(v) -> str:
    return "-" if v is None else f"{v:.1f}"


def _terminate(signum, _frame):
    raise SystemExit(128 + signum)  # run the finally: blocks (stop our processes, drop the db)


def main() -> int:
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--topology", choices=("split", "single"), default="split",
                   help="split (default): granian REST API + gevent gateways + nginx (bench/split.py); "
                        "single: the former one-gunicorn web process and its steps")
    p.add_argument("--quick", action="store_true", help="short runs, fewer writes/sockets/reminders")
    p.add_argument("--profile", action="store_true",
                   help="py-spy the REST workers (split: uncached list and POST runs; single: list, 304)")
    p.add_argument("--keep-db", action="store_true", help="keep the tt_bench_* database")
    p.add_argument("--scan-interval", type=float, default=10.0,
                   help="SCAN_INTERVAL_SECONDS of the beat (default 10; production default 60)")
    p.add_argument("--only", nargs="*", help="steps to run; split: rest latency flood sockets memory embedded; "
                                             "single: list_reads posts socket_latency fanout_1000 reminders soak")
    g = p.add_argument_group("split topology")
    g.add_argument("--skip", nargs="*", help="steps not to run (split)")
    g.add_argument("--api-workers", type=int, default=2, help="granian --workers of the REST API (default 2)")
    g.add_argument("--api-threads", type=int, default=8, help="granian --blocking-threads (default 8)")
    g.add_argument("--gateways", type=int, default=2, help="real-time gateway processes (default 2)")
    g.add_argument("--sockets", type=int, default=None,
                   help="websockets of figure 6 (default 10000, --quick 2000; 0 skips the step)")
    g.add_argument("--socket-addrs", type=int, default=8,
                   help="loopback source addresses 127.0.0.2.. for those sockets (default 8)")
    g.add_argument("--socket-procs", type=int, default=0, help="client processes (default: one per 2,500 sockets)")
    g.add_argument("--socket-concurrency", type=int, default=50,
                   help="handshakes in flight per client process (default 50)")
    g.add_argument("--gateway-worker-connections", type=int, default=0,
                   help="GUNICORN_WORKER_CONNECTIONS of the gateways in figure 6 (default: gunicorn.conf.py's)")
    g.add_argument("--flood-ws", type=int, default=None, help="idle websockets of figure 7 (default 2000)")
    g.add_argument("--flood-slow", type=int, default=None, help="slow-header connections of figure 7 (default 500)")
    g.add_argument("--flood-addr", default="127.0.0.200", help="source address of the flood (default 127.0.0.200)")
    g = p.add_argument_group("single topology")
    g.add_argument("--workers", type=int, default=1,
                   help="GUNICORN_WORKERS of the web and bare servers (>1: websocket transport only)")
    args = p.parse_args()
    if args.topology == "split":
        args.workers = 1  # Bench.env(): no GUNICORN_WORKERS for every process
        sys.path.insert(0, str(ROOT))
        from bench.split import SplitBench
        return SplitBench(args).run()
    return Bench(args).run()


if __name__ == "__main__":
    sys.exit(main())
