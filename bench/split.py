"""The split production topology for bench/run.py (the default, ``--topology split``).

Started on free 127.0.0.1 ports, all on this machine, with the production
environment of :meth:`bench.run.Bench.env`:

- the REST API: ``TASKTRACKER_ROLE=api granian --interface wsgi --workers W
  --blocking-threads T --no-ws wsgi:app`` (``--api-workers``, ``--api-threads``);
- ``--gateways`` G real-time gateways: ``TASKTRACKER_ROLE=gateway SOCKETIO_ASYNC_MODE=gevent
  gunicorn -c gunicorn.conf.py wsgi:app``;
- nginx with a copy of ``deploy/nginx.conf`` rendered in the run's log dir: the four
  addresses of the shipped file (listen, the API, the two gateways) replaced by the
  run's ports, one gateway line per gateway, nothing else changed;
  ``nginx -p <logdir>/nginx -e <logdir>/nginx/error.log -c <that conf> -g 'daemon off;'``;
- the app processes behind nginx get ``TRUSTED_PROXY_HOPS=1``;
- Celery worker and beat; the yardstick Y (``bench/bare_app.py`` on one gunicorn gthread
  worker with 100 threads), measured before and after the REST figures, the larger kept.

Steps (``--only``/``--skip``; always run in this order): ``rest`` (figures 1-4, each
directly against the API process and through nginx), ``latency`` (5), ``flood`` (7,
production), ``sockets`` (6, ``--sockets N``; 0 skips it), ``memory`` (8), ``embedded``
(7, embedded mode: one ``gunicorn -c gunicorn.conf.py wsgi:app`` on SQLite).

Many-connection clients run in ``bench/sockets_client.py`` subprocesses.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import platform
import queue
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import requests

from bench.run import (BIN, PASSWORD, cpu_split, cpu_split_text, PG_ADMIN, ROOT, WRK, Bench, children, cpu_per_request, cpu_ticks, fmt, free_port,
                       loadavg, log, quantile, rss_mb, summarize_profile, wait_http, wrk)

STEPS = ("rest", "latency", "flood", "sockets", "memory", "embedded")
PY = str(BIN / "python")

# keys of Bench.env() that make a process a production one: dropped for embedded mode
PRODUCTION_KEYS = ("TASKTRACKER_ENV", "DATABASE_URL", "CELERY_BROKER_URL", "SOCKETIO_MESSAGE_QUEUE",
                   "CELERY_TASK_QUEUE", "SOCKETIO_CHANNEL", "REDIS_URL", "RATELIMIT_STORAGE_URI",
                   "PRESENCE_KEY_PREFIX", "JWT_SECRET_KEY", "SECRET_KEY", "TASKTRACKER_ROLE",
                   "SOCKETIO_ASYNC_MODE", "TRUSTED_PROXY_HOPS", "LIST_CACHE_TTL_SECONDS",
                   "SOCKETIO_MAX_CONNECTIONS_PER_IP", "SOCKETIO_CONNECT_TIMEOUT_SECONDS",
                   "GUNICORN_WORKERS", "GUNICORN_THREADS", "GUNICORN_WORKER_CONNECTIONS",
                   "SOCKETIO_TRANSPORTS", "SCHEDULER_ENABLED", "SCAN_INTERVAL_SECONDS")


def proc_stat() -> list[int]:
    return [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]


def established(port: int) -> int:
    """ESTABLISHED TCP connections whose local port is ``port`` (the server side)."""
    hexport = f"{port:04X}"
    n = 0
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] == "01" and f[1].rsplit(":", 1)[1] == hexport:
                n += 1
    return n


def tree_rss(pid: int) -> list[tuple[int, float | None]]:
    return [(p, rss_mb(p)) for p in [pid, *children(pid)]]


class Child:
    """A bench/sockets_client.py process: JSON lines out, commands in."""

    def __init__(self, bench: "SplitBench", name: str, cfg: dict):
        path = bench.logdir / f"{name}.json"
        path.write_text(json.dumps(cfg))
        self.name = name
        self.err = open(bench.logdir / f"{name}.log", "wb")
        self.proc = subprocess.Popen([PY, str(ROOT / "bench" / "sockets_client.py"), str(path)], cwd=ROOT,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err,
                                     text=True, bufsize=1, start_new_session=True)
        bench.children_started.append(self)
        log(f"started {name} pid={self.proc.pid}")
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                self.lines.put(json.loads(line))
            except ValueError:
                pass
        self.lines.put(None)

    def expect(self, kind: str, timeout: float) -> dict | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = self.lines.get(timeout=max(0.05, min(1.0, deadline - time.monotonic())))
            except queue.Empty:
                continue
            if msg is None:
                return None
            if msg.get("type") == kind:
                return msg
        return None

    def send(self, cmd: str) -> None:
        try:
            self.proc.stdin.write(cmd + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError, OSError):
            pass

    def stop(self, timeout: float = 60) -> dict | None:
        bye = None
        if self.proc.poll() is None:
            self.send("quit")
            bye = self.expect("bye", timeout)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
        return bye


class HealthSampler(threading.Thread):
    """``n`` sequential GETs of each URL (a new connection each, ``timeout`` s), ``gap`` apart."""

    def __init__(self, urls: list[str], n: int, gap: float, timeout: float = 5.0):
        super().__init__(daemon=True)
        self.urls, self.n, self.gap, self.timeout = urls, n, gap, timeout
        self.res = {u: {"codes": {}, "ms": []} for u in urls}

    def run(self):
        deadline = time.monotonic() + self.n * (self.gap + self.timeout * len(self.urls)) + 5
        for _ in range(self.n):
            if time.monotonic() > deadline:
                break
            for u in self.urls:
                t0 = time.perf_counter()
                try:
                    code = str(requests.get(u, timeout=self.timeout, headers={"Connection": "close"}).status_code)
                except requests.RequestException as exc:
                    code = exc.__class__.__name__
                r = self.res[u]
                r["codes"][code] = r["codes"].get(code, 0) + 1
                r["ms"].append((time.perf_counter() - t0) * 1000)
            time.sleep(self.gap)

    def summary(self, url: str) -> dict:
        r = self.res[url]
        ms = r["ms"]
        return {"n": len(ms), "ok": r["codes"].get("200", 0), "codes": r["codes"],
                "p50_ms": quantile(ms, 0.5), "p99_ms": quantile(ms, 0.99), "max_ms": max(ms) if ms else None}


class PgSampler(threading.Thread):
    """PostgreSQL connections once a second (all databases, and this run's), the maximum
    per step: the gateways' pools under a connect storm meet ``max_connections``."""

    def __init__(self, dsn: str, dbname: str):
        super().__init__(daemon=True)
        self.dsn, self.dbname = dsn, dbname
        self.step = "setup"
        self.peaks: dict[str, list[int]] = {}
        self.max_connections = None
        self.stop_event = threading.Event()

    def run(self):
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                self.max_connections = int(conn.execute("SHOW max_connections").fetchone()[0])
                while not self.stop_event.wait(1.0):
                    total, ours = conn.execute("SELECT count(*), count(*) FILTER (WHERE datname = %s) "
                                               "FROM pg_stat_activity WHERE backend_type = 'client backend'",
                                               (self.dbname,)).fetchone()
                    peak = self.peaks.setdefault(self.step, [0, 0])
                    peak[0], peak[1] = max(peak[0], total), max(peak[1], ours)
        except Exception as exc:  # noqa: BLE001 - diagnostics only
            log(f"pg sampler stopped: {exc!r}")

    def text(self) -> str:
        return (f"PostgreSQL client connections, peak per step (all databases / this run's; max_connections "
                f"{self.max_connections}): " + ", ".join(f"{k} {v[0]}/{v[1]}" for k, v in self.peaks.items()))


class SplitBench(Bench):
    def __init__(self, args):
        super().__init__(args)
        self.children_started: list[Child] = []
        self.gateways: list[tuple[int, subprocess.Popen]] = []
        self.gateway_variant = None
        self.nginx = None
        self.api_nocache = None
        n = args.sockets if args.sockets is not None else (2000 if args.quick else 10000)
        self.n_sockets = n
        self.flood_ws = args.flood_ws if args.flood_ws is not None else (500 if args.quick else 2000)
        self.flood_slow = args.flood_slow if args.flood_slow is not None else (100 if args.quick else 500)
        self.results["config"] = {
            "api_workers": args.api_workers, "api_threads": args.api_threads, "gateways": args.gateways,
            "sockets": n, "socket_addrs": args.socket_addrs, "flood_ws": self.flood_ws,
            "flood_slow": self.flood_slow, "wrk": f"-t2 -c16 -d{self.dur}s", "quick": args.quick}

    # ------------------------------------------------------------------ processes
    def api_argv(self, port: int) -> list[str]:
        return [str(BIN / "granian"), "--interface", "wsgi", "--host", "127.0.0.1", "--port", str(port),
                "--workers", str(self.args.api_workers), "--blocking-threads", str(self.args.api_threads),
                "--no-ws", "--log-level", "warning", "wsgi:app"]

    def start_api(self, name: str, **extra) -> tuple[int, subprocess.Popen]:
        port = free_port()
        proc = self.procs.start(name, self.api_argv(port),
                                self.env(TASKTRACKER_ROLE="api", TRUSTED_PROXY_HOPS="1", **extra))
        return port, proc

    def gateway_env(self, variant: str) -> dict:
        env = {"TASKTRACKER_ROLE": "gateway", "SOCKETIO_ASYNC_MODE": "gevent", "HOST": "127.0.0.1",
               "TRUSTED_PROXY_HOPS": "1"}
        if variant == "many":  # figure 6: the per-address cap and gevent's connection pool raised
            env["SOCKETIO_MAX_CONNECTIONS_PER_IP"] = "100000"
            if self.args.gateway_worker_connections:  # else gunicorn.conf.py's default
                env["GUNICORN_WORKER_CONNECTIONS"] = str(self.args.gateway_worker_connections)
        return env

    def ensure_gateways(self, variant: str) -> None:
        """The G gateways with the environment ``variant`` ("default": production defaults;
        "many": figure 6's raised limits), restarted on the same ports when it changes."""
        if self.gateway_variant == variant and all(p.poll() is None for _, p in self.gateways):
            return
        ports = [port for port, _ in self.gateways] or self.gateway_ports
        for _, proc in self.gateways:
            self.procs.stop(proc, sig=signal.SIGINT)  # quick shutdown: websockets never end by themselves
            log(f"stopped gateway pid={proc.pid} rc={proc.returncode}")
        self.gateways = []
        env = self.gateway_env(variant)
        for i, port in enumerate(ports):
            proc = self.procs.start(f"gateway{i + 1}-{variant}", [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py",
                                                                  "wsgi:app"], self.env(PORT=str(port), **env))
            self.gateways.append((port, proc))
        for port, proc in self.gateways:
            wait_http(f"http://127.0.0.1:{port}/health", proc)
        self.gateway_variant = variant
        self.results["notes"].append(
            f"gateways ({variant}): " + " ".join(f"{k}={v}" for k, v in env.items()))

    def render_nginx(self, name: str, listen: int, api_port: int) -> tuple[Path, Path]:
        src = (ROOT / "deploy" / "nginx.conf").read_text()
        prefix = self.logdir / name
        prefix.mkdir(exist_ok=True)

        def sub_once(text: str, old: str, new: str) -> str:
            if text.count(old) != 1:
                raise RuntimeError(f"deploy/nginx.conf: expected one {old!r}, found {text.count(old)}")
            return text.replace(old, new)

        text = sub_once(src, "listen 127.0.0.1:8080;", f"listen 127.0.0.1:{listen};")
        text = sub_once(text, "server 127.0.0.1:8001;", f"server 127.0.0.1:{api_port};")
        lines = text.splitlines(keepends=True)
        gw = [i for i, l in enumerate(lines) if re.search(r"server 127\.0\.0\.1:81\d\d;", l)]
        if len(gw) != 2 or gw[1] != gw[0] + 1:
            raise RuntimeError(f"deploy/nginx.conf: expected the two gateway lines (8101, 8102), found {len(gw)}")
        template = lines[gw[0]]
        new = [re.sub(r"127\.0\.0\.1:81\d\d", f"127.0.0.1:{port}", template) for port in self.gateway_ports]
        lines[gw[0]:gw[1] + 1] = new
        conf = prefix / "nginx.conf"
        conf.write_text("".join(lines))
        return prefix, conf

    def start_nginx(self, name: str, api_port: int) -> tuple[int, subprocess.Popen]:
        port = free_port()
        prefix, conf = self.render_nginx(name, port, api_port)
        proc = self.procs.start(name, ["nginx", "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(conf),
                                       "-g", "daemon off;"], dict(os.environ))
        return port, proc

    def setup(self) -> None:
        self.create_database()

        self.port, self.api = self.start_api("api")
        self.web = self.api  # Bench helpers (profile, memory) name it web
        self.gateway_ports = [free_port() for _ in range(self.args.gateways)]
        self.ensure_gateways("default")
        self.nginx_port, self.nginx = self.start_nginx("nginx", self.port)
        self.bare_port = free_port()
        self.bare = self.procs.start("bare", [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "bench.bare_app:app"],
                                     self.env(PORT=str(self.bare_port), SOCKETIO_ASYNC_MODE="threading",
                                              GUNICORN_THREADS="100", GUNICORN_WORKERS="1"))
        self.worker = self.procs.start("worker", [str(BIN / "celery"), "-A", "celery_worker.celery", "worker",
                                                  "--loglevel=info", "--hostname", f"bench-{self.tag}@%h"], self.env())
        self.beat = self.procs.start("beat", [str(BIN / "celery"), "-A", "celery_worker.celery", "beat",
                                              "--loglevel=info", "--schedule",
                                              str(self.logdir / "celerybeat-schedule")], self.env())
        self.base = f"http://127.0.0.1:{self.port}"          # the REST API, directly
        self.front = f"http://127.0.0.1:{self.nginx_port}"   # nginx: the production entry point
        self.bare_url = f"http://127.0.0.1:{self.bare_port}/bare"
        wait_http(self.base + "/health", self.api)
        wait_http(self.front + "/health", self.nginx)
        wait_http(f"http://127.0.0.1:{self.bare_port}/health", self.bare)
        deadline = time.monotonic() + 60
        while "ready" not in (self.logdir / "worker.log").read_text(errors="replace"):
            if time.monotonic() > deadline or self.worker.poll() is not None:
                raise RuntimeError("celery worker did not become ready")
            time.sleep(0.5)
        # routing check that opens no Engine.IO session (an abandoned polling session would
        # count against the per-address cap and the connect deadline of a gateway)
        r = requests.get(self.front + "/socket.io/?EIO=4&transport=bench-invalid", timeout=5)
        r2 = requests.get(self.base + "/socket.io/?EIO=4&transport=bench-invalid", timeout=5)
        self.results["notes"].append(f"/socket.io/ with an invalid transport through nginx -> {r.status_code} "
                                     f"(a gateway's Engine.IO); on the REST API directly -> {r2.status_code} "
                                     f"(api role: no endpoint)")
        self.results["notes"].append(
            f"processes: api (granian) pid {self.api.pid} on {self.port} ({self.args.api_workers} workers x "
            f"{self.args.api_threads} blocking threads, workers {children(self.api.pid)}); gateways "
            + ", ".join(f"pid {p.pid} on {port}" for port, p in self.gateways)
            + f"; nginx pid {self.nginx.pid} on {self.nginx_port}; bare pid {self.bare.pid}")

    def user(self, name: str) -> dict:
        """Register and log in ``name`` as a client at a per-run address (X-Forwarded-For; the
        API trusts one proxy hop): the per-address login limit lives in Redis, which the
        runs share, so back-to-back runs from 127.0.0.1 would get 429s."""
        hdr = {"X-Forwarded-For": self.seed_addr}
        r = requests.post(self.base + "/api/auth/register", timeout=10, headers=hdr,
                          json={"username": name, "email": f"{name}@bench.test", "password": PASSWORD})
        r.raise_for_status()
        r = requests.post(self.base + "/api/auth/login", timeout=10, headers=hdr,
                          json={"email": f"{name}@bench.test", "password": PASSWORD})
        r.raise_for_status()
        body = r.json()
        return {"id": body["user"]["id"], "token": body["access_token"], "name": name}

    def seed(self) -> None:
        self.seed_addr = "10.{}.{}.{}".format(*secrets.token_bytes(3))
        super().seed()  # alice's 100 tasks; "Bench team" (owner alice) with bob and the members
        # the real-time team: bob (owner) and the 8 members, not alice, so that the team
        # events of figures 5-6 never change what alice's list shows (figures 1-3, 6, 7)
        r = requests.post(self.base + "/api/teams", json={"name": "Realtime team"}, timeout=10,
                          headers=self.auth(self.bob))
        r.raise_for_status()
        self.rt_team = r.json()["id"]
        with self.pg.cursor() as cur:
            for u in self.members:
                cur.execute("INSERT INTO team_members (team_id, user_id, role, joined_at) "
                            "VALUES (%s, %s, 'member', now())", (self.rt_team, u["id"]))
        self.rt_users = [self.bob, *self.members]
        self.results["notes"].append("team 'Realtime team' (bob + 8 members) for figures 5-6; "
                                     "POST load (4) as carol (personal tasks, no team)")

    # ------------------------------------------------------------------ rows
    def frow(self, no: str, figure, target, measured, ceiling="", ratio="", verdict="", detail=""):
        self.row(figure, target, measured, ceiling, ratio, verdict, detail)
        self.results["rows"][-1]["no"] = no

    def rest_row(self, no: str, label: str, r: dict, y: float, factor: float, p99: float,
                 extra_ok: bool = True, extra: str = "", bare: dict | None = None) -> None:
        ratio = r["rps"] / y if y else 0
        ok = ratio >= factor and r["p99_ms"] < p99 and r["errors"] == 0 and extra_ok
        self.frow(no, label, f">= {factor:g}·Y, p99 < {p99:g} ms",
                  f"{r['rps']:.0f} req/s, p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms",
                  f"{y:.0f} req/s", f"{ratio:.2f}·Y", "met" if ok else "MISSED",
                  f"{r['requests']} requests, errors {r['errors']}{extra}; load {r['load']}; "
                  f"{cpu_per_request(r, bare or {})}".replace("web worker", "REST workers'"))

    # ------------------------------------------------------------------ profile
    def start_profile(self, name: str, server: subprocess.Popen, duration: int) -> list:
        if not self.args.profile:
            return []
        spies = []
        for i, pid in enumerate(children(server.pid)):
            out = self.logdir / f"pyspy-{name}-w{i}.txt"
            spy = subprocess.Popen([str(BIN / "py-spy"), "record", "-p", str(pid), "-d", str(duration), "-r", "100",
                                    "--gil", "-f", "raw", "-o", str(out), "--nonblocking"],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            spies.append((pid, out, spy))

        def dump():
            time.sleep(duration / 2)
            for pid, _out, _spy in spies[:1]:
                d = subprocess.run([str(BIN / "py-spy"), "dump", "-p", str(pid), "--nonblocking"],
                                   capture_output=True, text=True, timeout=30)
                (self.logdir / f"pyspy-{name}-dump.txt").write_text(d.stdout + d.stderr)
        t = threading.Thread(target=dump, daemon=True)
        t.start()
        spies.append(t)
        return spies

    def finish_profile(self, name: str, spies: list, run: dict) -> None:
        if not spies:
            return
        dumper = spies.pop()
        dumper.join(60)
        raw = self.logdir / f"pyspy-{name}.txt"
        text, msgs = "", []
        for pid, out, spy in spies:
            msg, _ = spy.communicate(timeout=60)
            if out.exists():
                text += out.read_text()
            else:
                msgs.append(f"pid {pid}: {msg.strip()[-200:]}")
        summary = [f"{run['rps']:.0f} req/s during the profile; workers {[s[0] for s in spies]}"]
        if msgs:
            summary.append("py-spy failed for " + "; ".join(msgs))
        if text:
            raw.write_text(text)
            summary += summarize_profile(raw)
        dump = self.logdir / f"pyspy-{name}-dump.txt"
        if dump.exists():
            threads = [l for l in dump.read_text().splitlines() if l.startswith("Thread ")]
            summary.append(f"py-spy dump of one worker mid-run: {len(threads)} threads "
                           f"({sum('idle' in l for l in threads)} idle); full dump in {dump.name}")
        self.results[f"profile_{name}"] = summary

    # ------------------------------------------------------------------ 1-4
    def rest(self) -> None:
        d = self.dur
        tok = {"BENCH_TOKEN": self.alice["token"]}
        path = "/api/tasks?per_page=100"
        for base in (self.base, self.front):
            r = requests.get(base + path, headers=self.auth(self.alice), timeout=10)
            assert r.status_code == 200 and len(r.json()["items"]) == 100, (base, r.status_code, r.text[:300])
        y1 = wrk(self.bare_url, "get.lua", duration=d, server=self.bare)
        runs = {}
        runs["cached_d"] = wrk(self.base + path, "get.lua", duration=d, env_extra=tok, server=self.api)
        runs["cached_n"] = wrk(self.front + path, "get.lua", duration=d, env_extra=tok, server=self.api)
        etag = self.stable_etag(self.base + path)
        etag_n = requests.get(self.front + path, headers=self.auth(self.alice), timeout=10).headers.get("ETag")
        if etag_n != etag:
            self.results["notes"].append(f"ETag through nginx {etag_n!r} differs from the direct one {etag!r}")
        inm = {**tok, "BENCH_IF_NONE_MATCH": etag}
        runs["cond_d"] = wrk(self.base + path, "get.lua", duration=d, env_extra=inm, server=self.api)
        runs["cond_n"] = wrk(self.front + path, "get.lua", duration=d, env_extra=inm, server=self.api)

        # 3: a second REST server without the list cache, and an nginx in front of it
        nport, self.api_nocache = self.start_api("api-nocache", LIST_CACHE_TTL_SECONDS="0")
        ngport, ng2 = self.start_nginx("nginx-nocache", nport)
        try:
            wait_http(f"http://127.0.0.1:{nport}/health", self.api_nocache)
            wait_http(f"http://127.0.0.1:{ngport}/health", ng2)
            for _ in range(20):  # warm both workers (imports, pools)
                requests.get(f"http://127.0.0.1:{nport}{path}", headers=self.auth(self.alice), timeout=10)
            spies = self.start_profile("list_uncached", self.api_nocache, d)
            runs["unc_d"] = wrk(f"http://127.0.0.1:{nport}{path}", "get.lua", duration=d, env_extra=tok,
                                server=self.api_nocache)
            self.finish_profile("list_uncached", spies, runs["unc_d"])
            runs["unc_n"] = wrk(f"http://127.0.0.1:{ngport}{path}", "get.lua", duration=d, env_extra=tok,
                                server=self.api_nocache)
            self.results["rss_api_nocache"] = tree_rss(self.api_nocache.pid)
        finally:
            self.procs.stop(ng2)
            self.procs.stop(self.api_nocache)

        # 4: POST as carol (personal tasks: alice's list and the real-time team do not change)
        body = json.dumps({"title": "bench task", "description": "load", "priority": "high"})
        penv = {"BENCH_TOKEN": self.carol["token"], "BENCH_BODY": body}
        settles = {}
        for key, base in (("post_d", self.base), ("post_n", self.front)):
            spies = self.start_profile("post", self.api, d) if key == "post_d" else []
            runs[key] = wrk(base + "/api/tasks", "post.lua", duration=d, env_extra=penv, server=self.api)
            self.finish_profile("post", spies, runs[key])
            settles[key] = self.wait_dispatched(60)
        bare_post = wrk(self.bare_url, "post.lua", duration=d, env_extra={"BENCH_BODY": body}, server=self.bare)
        y2 = wrk(self.bare_url, "get.lua", duration=d, server=self.bare)
        y = max(y1["rps"], y2["rps"])
        self.y = y
        self.results["Y"] = [y1, y2]
        self.results["bare_post"] = bare_post
        self.results["rest"] = runs
        self.results["notes"].append(
            f"Y (bare GET /bare, gunicorn gthread 1x100): {y1['rps']:.0f} req/s before (p99 {y1['p99_ms']:.1f} ms), "
            f"{y2['rps']:.0f} after (p99 {y2['p99_ms']:.1f} ms): Y = {y:.0f}; bare POST {bare_post['rps']:.0f} req/s "
            f"(for reference only)")
        via = {"d": "direct to granian", "n": "through nginx"}
        for k in ("d", "n"):
            self.rest_row(f"1{k}", f"GET /api/tasks?per_page=100 (100 tasks), list cache, {via[k]}",
                          runs[f"cached_{k}"], y, 1.5, 25, bare=y1)
        for k in ("d", "n"):
            c = runs[f"cond_{k}"]
            share = (c["n304"] or 0) / max(c["requests"], 1)
            self.rest_row(f"2{k}", f"same, If-None-Match -> 304, {via[k]}", c, y, 2, 25,
                          extra_ok=share >= 0.95, extra=f", {c['n304']} answered 304 ({100 * share:.1f}%)", bare=y1)
        for k in ("d", "n"):
            self.rest_row(f"3{k}", f"same, uncached (LIST_CACHE_TTL_SECONDS=0), {via[k]}",
                          runs[f"unc_{k}"], y, 0.75, 25, bare=y1)
        for k in ("d", "n"):
            settled, pending = settles[f"post_{k}"]
            self.rest_row(f"4{k}", f"POST /api/tasks, {via[k]}", runs[f"post_{k}"], y, 0.25, 60,
                          extra_ok=pending == 0,
                          extra=f"; undispatched events after the settle: {pending} ({settled:.1f}s)", bare=y1)

    # ------------------------------------------------------------------ 5
    def latency(self) -> None:
        self.ensure_gateways("default")
        n = 50 if self.args.quick else 200
        kw = dict(sock_url=self.front, post_url=self.front, listener=self.bob, poster=self.members[0],
                  team_id=self.rt_team)
        idle = asyncio.run(self._latency(n, 0.02, "idle", **kw))
        self.results["latency_idle"] = idle
        ok = (idle["p50_ms"] is not None and idle["p50_ms"] < 10 and idle["p99_ms"] < 50
              and idle["lost"] == 0 and idle["missing"] == 0 and idle["duplicates"] == 0)
        self.frow("5a", f"REST write -> Socket.IO task:created through nginx, idle, {idle['sent']} sequential POSTs",
                  "p50 < 10 ms, p99 < 50 ms, 0 lost, 0 dup",
                  f"p50 {fmt(idle['p50_ms'])} ms, p99 {fmt(idle['p99_ms'])} ms, max {fmt(idle['max_ms'])} ms; "
                  f"lost {idle['lost']}, late {idle['late']}, dup {idle['duplicates']}", "", "",
                  "met" if ok else "MISSED",
                  f"from POST sent (nginx -> granian) to the event on bob's socket (nginx -> gateway); POST itself "
                  f"p50 {fmt(idle['post_p50_ms'])} ms; seqs unique {idle['seq_unique']}")
        # the same while (4)'s POST load runs through nginx (carol's personal tasks)
        body = json.dumps({"title": "background load", "description": "load", "priority": "high"})
        dur = 120
        argv = [WRK, "-t2", "-c16", f"-d{dur}s", "--timeout", "5s", "-s", "bench/wrk/post.lua", f"{self.front}/api/tasks"]
        bg = subprocess.Popen(argv, cwd=ROOT, env=dict(os.environ, BENCH_TOKEN=self.carol["token"], BENCH_BODY=body),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        load_before = loadavg()
        try:
            time.sleep(2)
            load = asyncio.run(self._latency(n, 0.02, "under POST load", **kw))
        finally:
            if bg.poll() is None:
                bg.send_signal(signal.SIGINT)  # wrk stops and prints its summary
            try:
                out, _ = bg.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(bg.pid, signal.SIGKILL)
                out, _ = bg.communicate(timeout=10)
        line = next((l for l in out.splitlines() if l.startswith("BENCH_JSON ")), "BENCH_JSON {}")
        bgres = json.loads(line[len("BENCH_JSON "):])
        bg_rps = bgres.get("requests", 0) / max(bgres.get("duration_us", 1) / 1e6, 1e-9)
        settled, pending = self.wait_dispatched(90)
        load["background"] = bgres
        self.results["latency_load"] = load
        ok = (load["p99_ms"] is not None and load["p99_ms"] < 100 and load["lost"] == 0 and load["missing"] == 0
              and load["duplicates"] == 0)
        self.frow("5b", f"same, while (4)'s POST load runs through nginx (wrk -c16, {bg_rps:.0f} req/s)",
                  "p99 < 100 ms, 0 lost, 0 dup",
                  f"p50 {fmt(load['p50_ms'])} ms, p99 {fmt(load['p99_ms'])} ms, max {fmt(load['max_ms'])} ms; "
                  f"lost {load['lost']}, late {load['late']}, dup {load['duplicates']}", "", "",
                  "met" if ok else "MISSED",
                  f"{load['sent']} writes ({load['post_retries']} retried, same Idempotency-Key); POST itself p50 "
                  f"{fmt(load['post_p50_ms'])} ms; background POST p99 {bgres.get('p99_us', 0) / 1000:.1f} ms, "
                  f"errors {sum(bgres.get(k, 0) for k in ('connect_errors', 'read_errors', 'write_errors', 'timeouts', 'non2xx'))}; "
                  f"undispatched after settle {pending} ({settled:.1f}s); load {load_before} -> {loadavg()}")

    # ------------------------------------------------------------------ 7
    def _flood(self, label: str, url: str, list_url: str, health_urls: list[str], token: str,
               server: subprocess.Popen | None) -> dict:
        """Idle REST baseline, then the flood from 127.0.0.<flood addr>; during it a wrk run
        of GET list and the /health samples."""
        tok = {"BENCH_TOKEN": token}
        short = max(3, self.dur // 2)
        idle = wrk(list_url, "get.lua", duration=short, env_extra=tok, server=server)
        cfg = {"mode": "flood", "url": url, "addr": self.args.flood_addr, "ws": self.flood_ws,
               "slow": self.flood_slow, "concurrency": 200, "handshake_timeout": 10, "max_reopen": 20,
               "open_budget": 60, "max_life": 300}
        child = Child(self, f"flood-{label}", cfg)
        res = {"idle": idle}
        try:
            ready = child.expect("ready", 90)
            if ready is None:
                raise RuntimeError(f"flood client gave no ready line (see flood-{label}.log)")
            res["ready"] = ready
            log(f"flood {label} ready after {ready['open_s']:.1f}s: ws {ready['ws']['open']} open, "
                f"slow {ready['slow']['open']} open")
            child.send("window")
            n = 50 if self.args.quick else 200
            sampler = HealthSampler(health_urls, n, gap=max(0.0, (self.dur + 2) / n - 0.01))
            sampler.start()
            during = wrk(list_url, "get.lua", duration=self.dur, env_extra=tok, server=server)
            sampler.join(self.dur + n * 5 * len(health_urls) + 30)
            child.send("status")
            status = child.expect("status", 20)
        finally:
            bye = child.stop(60)
        res.update(during=during, health={u: sampler.summary(u) for u in health_urls}, status=status, final=bye)
        log(f"flood {label}: REST p99 {during['p99_ms']:.1f} ms; health {res['health']}; final {bye}")
        return res

    def flood_row(self, no: str, label: str, res: dict, extra: str = "") -> None:
        during, health = res["during"], res["health"]
        first = next(iter(health.values()))
        st = res.get("status") or res.get("final") or {}
        ws, slow, win = st.get("ws", {}), st.get("slow", {}), st.get("window", {})
        ok = (during["p99_ms"] < 100 and during["errors"] == 0 and first["n"] > 0 and first["ok"] == first["n"])
        refused_ws = sum(ws.get("refused", {}).values())
        self.frow(no, f"flood {self.flood_ws} idle unauthenticated websockets + {self.flood_slow} slow-header "
                      f"connections, {label}",
                  "REST p99 < 100 ms, /health 200 throughout",
                  f"GET list p99 {during['p99_ms']:.1f} ms ({during['rps']:.0f} req/s, errors {during['errors']}; "
                  f"idle before: p99 {res['idle']['p99_ms']:.1f} ms); /health {first['ok']}/{first['n']} 200, "
                  f"p99 {fmt(first['p99_ms'])} ms; websockets accepted {ws.get('accepted')}, refused {refused_ws}, "
                  f"open during the window {win.get('ws_min')}-{win.get('ws_max')}; slow-header connected "
                  f"{slow.get('connected')}, open {win.get('slow_min')}-{win.get('slow_max')}",
                  "", "", "met" if ok else "MISSED",
                  f"websockets: {ws.get('attempts')} attempts (re-opened after a server close), refused by reason "
                  f"{ws.get('refused')}, closed by the server after accepting {ws.get('closed_by_server')} "
                  f"(median lifetime {fmt(ws.get('lifetime_median_s'))} s); slow-header: {slow.get('attempts')} "
                  f"attempts, not connected {slow.get('refused')}, closed by the server {slow.get('closed_by_server')} "
                  f"(median after {fmt(slow.get('lifetime_median_s'))} s, answers {slow.get('answers')}); "
                  f"opening took {res['ready']['open_s']:.1f}s; health samples "
                  + "; ".join(f"{u}: {h['codes']} p99 {fmt(h['p99_ms'])} ms max {fmt(h['max_ms'])} ms"
                              for u, h in health.items())
                  + f"; load {during['load']}{extra}")

    def flood(self) -> None:
        self.ensure_gateways("default")
        urls = [self.front + "/health"] + [f"http://127.0.0.1:{p}/health" for p, _ in self.gateways]
        res = self._flood("production", self.front, self.front + "/api/tasks?per_page=100", urls,
                          self.alice["token"], self.api)
        self.results["flood_production"] = res
        self.flood_row("7a", f"production (through nginx, from {self.args.flood_addr}, "
                             f"SOCKETIO_MAX_CONNECTIONS_PER_IP default 50)", res,
                       "; /health sampled through nginx (answered by the API) and on each gateway directly")

    def embedded(self) -> None:
        """Figure 7 in embedded mode: one gunicorn with defaults on a SQLite file."""
        env = {k: v for k, v in os.environ.items() if k not in PRODUCTION_KEYS}
        db = self.logdir / "embedded.db"
        env.update({"DATABASE_URL": f"sqlite:///{db}", "FLASK_APP": "wsgi.py", "JWT_ACCESS_TOKEN_EXPIRES": "3600",
                    "UPLOAD_DIR": str(self.logdir / "embedded-uploads"), "PATH": f"{BIN}:{os.environ.get('PATH', '')}"})
        rc = subprocess.run([str(BIN / "flask"), "db", "upgrade"], cwd=ROOT, env=env, timeout=120,
                            capture_output=True, text=True)
        if rc.returncode:
            raise RuntimeError(f"embedded flask db upgrade failed: {rc.stderr[-500:]}")
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        for variant, cap in (("default cap (50)", None), ("SOCKETIO_MAX_CONNECTIONS_PER_IP=0", "0")):
            e = dict(env, PORT=str(port))
            if cap is not None:
                e["SOCKETIO_MAX_CONNECTIONS_PER_IP"] = cap
            proc = self.procs.start(f"embedded-cap{cap or 'default'}", [str(BIN / "gunicorn"), "-c",
                                                                       "gunicorn.conf.py", "wsgi:app"], e)
            try:
                wait_http(base + "/health", proc)
                if not hasattr(self, "emb_user"):
                    self.emb_user = self._embedded_seed(base)
                res = self._flood(f"embedded-{cap or 'default'}", base, base + "/api/tasks?per_page=100",
                                  [base + "/health"], self.emb_user["token"], proc)
                res["rss"] = tree_rss(proc.pid)
            finally:
                self.procs.stop(proc, sig=signal.SIGINT)
            self.results[f"flood_embedded_{cap or 'default'}"] = res
            self.flood_row("7b" if cap is None else "7c", f"embedded mode ({variant}, direct from "
                           f"{self.args.flood_addr})", res,
                           f"; embedded server: gunicorn.conf.py defaults, SQLite, no broker, TASKTRACKER_ENV unset; RSS after {', '.join(f'{fmt(r)} MB' for _, r in res['rss'])}")

    def _embedded_seed(self, base: str) -> dict:
        name = "embalice"
        requests.post(base + "/api/auth/register", timeout=10,
                      json={"username": name, "email": f"{name}@bench.test", "password": "bench-password-123"}
                      ).raise_for_status()
        r = requests.post(base + "/api/auth/login", timeout=10,
                          json={"email": f"{name}@bench.test", "password": "bench-password-123"})
        r.raise_for_status()
        user = {"token": r.json()["access_token"], "id": r.json()["user"]["id"]}
        with requests.Session() as s:
            s.headers["Authorization"] = f"Bearer {user['token']}"
            for i in range(100):
                s.post(base + "/api/tasks", json={"title": f"Embedded task {i}", "priority": "medium"},
                       timeout=10).raise_for_status()
            n = len(s.get(base + "/api/tasks?per_page=100", timeout=10).json()["items"])
        self.results["notes"].append(f"embedded: migrated SQLite {self.logdir / 'embedded.db'}, one user, 100 tasks "
                                     f"over REST (list shows {n})")
        return user

    # ------------------------------------------------------------------ 6
    def sockets(self) -> None:
        n = self.n_sockets
        if n <= 0:
            return
        self.ensure_gateways("many")
        tok = {"BENCH_TOKEN": self.alice["token"]}
        list_url = self.front + "/api/tasks?per_page=100"
        short = self.dur
        idle = wrk(list_url, "get.lua", duration=short, env_extra=tok, server=self.api)
        nproc = self.args.socket_procs or max(1, math.ceil(n / 2500))
        addrs, probes = self.balanced_addrs(self.args.socket_addrs)
        tokens = [u["token"] for u in self.rt_users]
        kids = []
        t0 = time.monotonic()
        for k in range(nproc):
            share = n // nproc + (1 if k < n % nproc else 0)
            my_addrs = addrs[k::nproc] or addrs
            kids.append(Child(self, f"sockets{k}", {
                "mode": "sockets", "url": self.front, "addrs": my_addrs, "n": share, "tokens": tokens,
                "concurrency": self.args.socket_concurrency, "timeout": 30, "connect_budget": 400,
                "max_life": 1200}))
        res: dict = {"n": n, "procs": nproc, "addrs": addrs, "probes": probes, "idle": idle, "events": []}
        try:
            readies = [kid.expect("ready", 420) for kid in kids]
            connect_s = time.monotonic() - t0
            res["ready"] = readies
            connected = sum((r or {}).get("connected", 0) for r in readies)
            errors: dict = {}
            retried: dict = {}  # failed connect attempts that the client retried (as real clients do)
            for r in readies:
                for k, v in ((r or {}).get("errors") or {}).items():
                    errors[k] = errors.get(k, 0) + v
                for k, v in ((r or {}).get("retried") or {}).items():
                    retried[k] = retried.get(k, 0) + v
            res["retried"] = retried
            done = sorted(t for r in readies for t in (r or {}).pop("done_at", []))
            step = max(1, n // 10)
            # seconds since the clients started until each tenth of the sockets was connected
            res["connect_timeline"] = {i: round(done[i - 1] - t0, 1) for i in range(step, len(done) + 1, step)}
            res.update(connected=connected, connect_s=connect_s, errors=errors)
            res["per_gateway"] = {port: established(port) for port, _ in self.gateways}
            log(f"sockets: {connected}/{n} connected in {connect_s:.1f}s; per gateway {res['per_gateway']}; "
                f"errors {errors}")
            time.sleep(2)
            res["during"] = wrk(list_url, "get.lua", duration=short, env_extra=tok, server=self.api)
            with requests.Session() as http:
                http.headers.update(self.auth(self.members[0]))
                for _ in range(1 if self.args.quick else 3):
                    t_post = time.monotonic()
                    r = http.post(self.front + "/api/tasks", json={"title": "fan-out probe", "team_id": self.rt_team},
                                  timeout=10)
                    r.raise_for_status()
                    tid = r.json()["id"]
                    reports = []
                    deadline = time.monotonic() + 15
                    while time.monotonic() < deadline:
                        time.sleep(0.5)
                        for kid in kids:
                            kid.send(f"report {tid}")
                        reports = [kid.expect("report", 10) or {} for kid in kids]
                        if sum(r.get("delivered", 0) for r in reports) >= sum(r.get("open", 0) for r in reports):
                            break
                    lasts = [r["last"] for r in reports if r.get("last")]
                    firsts = [r["first"] for r in reports if r.get("first")]
                    ev = {"tid": tid, "delivered": sum(r.get("delivered", 0) for r in reports),
                          "open": sum(r.get("open", 0) for r in reports),
                          "duplicates": sum(r.get("duplicates", 0) for r in reports),
                          "first_ms": (min(firsts) - t_post) * 1000 if firsts else None,
                          "all_ms": (max(lasts) - t_post) * 1000 if lasts else None}
                    res["events"].append(ev)
                    log(f"sockets event: {ev}")
                    time.sleep(1)
            rss = []
            for port, proc in self.gateways:
                rss += [(f"gateway :{port}", pid, r) for pid, r in tree_rss(proc.pid)]
            res["rss"] = rss
            res["rss_total_mb"] = sum(r or 0 for _, _, r in rss)
            for kid in kids:
                kid.send("status")
            res["status_end"] = [kid.expect("status", 20) for kid in kids]
        finally:
            t1 = time.monotonic()
            res["bye"] = [kid.stop(90) for kid in kids]
            res["close_s"] = time.monotonic() - t1
            # 10,000 disconnects keep the gateways busy (presence, last_seen_at): wait for
            # them to settle, bounded, so that the next step is not measured on top of it
            res["gateway_settle_s"] = self.wait_quiet([p for _, p in self.gateways], 60)
        # the idle value again, after: how much the machine's noise alone moves it
        res["idle_after"] = wrk(list_url, "get.lua", duration=short, env_extra=tok, server=self.api)
        self.results["sockets"] = res
        evs = res["events"]
        worst = max((e["all_ms"] or 1e9) for e in evs) if evs else None
        ok = (bool(evs) and res["connected"] == n and
              all(e["delivered"] == n and e["duplicates"] == 0 and (e["all_ms"] or 1e9) < 2000 for e in evs))
        self.frow("6a", f"{n:,} authenticated websockets through nginx over {len(self.gateways)} gateways: "
                        "a team event reaches all", "all within 2 s, 0 dup",
                  f"{res['connected']}/{n} connected in {res['connect_s']:.0f}s; "
                  + "; ".join(f"{e['delivered']} got it, last after {fmt(e['all_ms'])} ms" for e in evs),
                  "", "", "met" if ok else "MISSED",
                  f"{nproc} client processes, source addresses {' '.join(addrs)} (picked by probing nginx's hash for an even "
                  f"split); connected by time (sockets: s) {res.get('connect_timeline')}; connections per gateway "
                  f"(ESTABLISHED on its port) {res['per_gateway']}; connect errors {res['errors']} (after up to 3 attempts; retried attempts {res.get('retried', {})}); first arrival "
                  + ", ".join(f"{fmt(e['first_ms'])} ms" for e in evs)
                  + f"; dup {sum(e['duplicates'] for e in evs)}; closing all took {res['close_s']:.1f}s, gateways "
                  f"quiet after {fmt(res['gateway_settle_s'])} s more; gateway env: "
                  + " ".join(f"{k}={v}" for k, v in self.gateway_env("many").items()))
        during = res.get("during")
        if during:
            ratio = during["p99_ms"] / idle["p99_ms"] if idle["p99_ms"] else 0
            self.frow("6b", f"REST GET list through nginx while the {res['connected']:,} sockets are connected",
                      "p99 <= 2x idle", f"p99 {during['p99_ms']:.1f} ms (idle {idle['p99_ms']:.1f} ms), "
                      f"{during['rps']:.0f} req/s (idle {idle['rps']:.0f})", "", f"{ratio:.2f}x idle",
                      "met" if ratio <= 2 and during["errors"] == 0 else "MISSED",
                      f"wrk -c16 -d{short}s; errors {during['errors']} (idle {idle['errors']}); idle again after the "
                      f"sockets closed: p99 {res['idle_after']['p99_ms']:.1f} ms, {res['idle_after']['rps']:.0f} req/s "
                      f"(the machine's noise); load idle {idle['load']}, connected {during['load']}")
        self.frow("6c", f"RSS of all gateway processes with {res['connected']:,} sockets", "< 1.5 GB together",
                  f"{res['rss_total_mb']:.0f} MB", "", "", "met" if res["rss_total_mb"] < 1536 else "MISSED",
                  ", ".join(f"{label} pid {pid} {fmt(r)} MB" for label, pid, r in res["rss"]))

    def probe_gateway(self, addr: str) -> int | None:
        """The gateway port nginx's address hash picks for clients at ``addr``: a websocket
        upgrade from there, then which gateway holds one more ESTABLISHED connection."""
        before = {port: established(port) for port, _ in self.gateways}
        with socket.create_connection(("127.0.0.1", self.nginx_port), timeout=5, source_address=(addr, 0)) as sock:
            key = base64.b64encode(secrets.token_bytes(16)).decode()
            sock.sendall((f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                          f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
            head = sock.recv(4096)
            if b" 101 " not in head.split(b"\r\n", 1)[0]:
                return None
            after = {port: established(port) for port, _ in self.gateways}
            for _ in range(20):  # the upstream connection may trail the 101 by a moment
                if sum(after.values()) > sum(before.values()):
                    break
                time.sleep(0.05)
                after = {port: established(port) for port, _ in self.gateways}
        grown = [port for port in before if after[port] > before[port]]
        for _ in range(40):  # wait for that connection to go before the next probe
            if sum(established(port) for port in before) <= sum(before.values()):
                break
            time.sleep(0.05)
        return grown[0] if len(grown) == 1 else None

    def balanced_addrs(self, k: int) -> tuple[list[str], dict]:
        """``k`` source addresses 127.0.0.2.. that nginx's hash spreads evenly over the
        gateways (probed one by one, at most 8k candidates); the first ``k`` if probing fails."""
        gws = [port for port, _ in self.gateways]
        want = {port: k // len(gws) + (1 if i < k % len(gws) else 0) for i, port in enumerate(gws)}
        picked, probes = [], {}
        for i in range(min(250, 8 * k)):
            if len(picked) >= k:
                break
            addr = f"127.0.0.{2 + i}"
            if addr == self.args.flood_addr:
                continue
            try:
                port = self.probe_gateway(addr)
            except OSError:
                port = None
            probes[addr] = port
            if port in want and want[port] > 0:
                want[port] -= 1
                picked.append(addr)
        if len(picked) < k:
            self.results["notes"].append(f"balanced_addrs: probing found {len(picked)} of {k}; probes {probes}")
            picked = [f"127.0.0.{2 + i}" for i in range(k)]
        return picked, probes

    def wait_quiet(self, procs: list[subprocess.Popen], timeout: float) -> float | None:
        """Seconds until ``procs`` (and children) use < 10% CPU over 1 s; None after ``timeout``."""
        t0 = time.monotonic()
        hz = os.sysconf("SC_CLK_TCK")
        pids = [p.pid for p in procs] + [c for p in procs for c in children(p.pid)]
        while time.monotonic() - t0 < timeout:
            a = sum(cpu_ticks(pids))
            time.sleep(1)
            if (sum(cpu_ticks(pids)) - a) / hz < 0.1:
                return time.monotonic() - t0
        return None

    # ------------------------------------------------------------------ 8
    def memory(self) -> None:
        mem = [("api (granian master)", self.api.pid, rss_mb(self.api.pid))]
        mem += [("  api worker", c, rss_mb(c)) for c in children(self.api.pid)]
        for port, proc in self.gateways:
            mem += [(f"gateway :{port} (gunicorn master)", proc.pid, rss_mb(proc.pid))]
            mem += [("  gateway worker", c, rss_mb(c)) for c in children(proc.pid)]
        for label, proc in (("nginx master", self.nginx), ("worker (celery main)", self.worker), ("beat", self.beat),
                            ("bare (gunicorn master)", self.bare)):
            mem += [(label, proc.pid, rss_mb(proc.pid))]
            mem += [(f"  child of {label.split()[0]}", c, rss_mb(c)) for c in children(proc.pid)]
        self.results["memory"] = mem
        api = [m for m in mem if m[0].strip().startswith("api")]
        worst = max((m[2] or 0) for m in api)
        extra = ""
        if self.results.get("rss_api_nocache"):
            extra = "; the uncached REST server after (3): " + ", ".join(
                f"pid {p} {fmt(r)} MB" for p, r in self.results["rss_api_nocache"])
        self.frow("8", "RSS per REST process after the load (granian master, each worker)", "< 150 MB each",
                  ", ".join(f"{label.strip()} {fmt(rss)} MB" for label, _pid, rss in api), "", "",
                  "met" if worst < 150 else "MISSED", f"largest {worst:.0f} MB{extra}")

    # ------------------------------------------------------------------ run
    def run(self) -> int:
        started = datetime.now(timezone.utc)
        self.results["load_at_start"] = loadavg()
        stat0, t0, split0 = proc_stat(), time.monotonic(), cpu_split()
        selected = [s for s in STEPS if (not self.args.only or s in self.args.only)
                    and s not in (self.args.skip or [])]
        if self.n_sockets <= 0 and "sockets" in selected:
            selected.remove("sockets")
        self.results["steps"] = selected
        self.pgs = PgSampler(PG_ADMIN, self.dbname)
        self.pgs.start()
        try:
            self.setup()
            self.seed()
            for name in selected:
                log(f"--- {name} (load {loadavg()})")
                self.pgs.step = name
                s0 = time.monotonic()
                try:
                    getattr(self, name)()
                except Exception as exc:  # noqa: BLE001
                    log(f"{name} failed: {exc!r}")
                    import traceback
                    traceback.print_exc()
                    self.frow("!", name, "", f"driver error: {exc!r}"[:300], verdict="ERROR")
                self.results.setdefault("step_seconds", {})[name] = round(time.monotonic() - s0, 1)
        finally:
            self.pgs.stop_event.set()
            self.pgs.join(5)
            self.results["notes"].append(self.pgs.text())
            for kid in self.children_started:
                if kid.proc.poll() is None:
                    kid.stop(10)
            self.procs.stop_all()
            if self.pg is not None:
                self.pg.close()
            self.drop_run_state()
        self.results["cpu_split"] = cpu_split_text(split0, cpu_split(), time.monotonic() - t0)
        stat1 = proc_stat()
        delta = [b - a for a, b in zip(stat0, stat1)]
        total = sum(delta) or 1
        # /proc/stat cpu: user nice system idle iowait irq softirq steal ...
        self.results["cpu_over_run"] = {"busy_pct": round(100 * (total - delta[3] - delta[4]) / total, 1),
                                        "steal_pct": round(100 * delta[7] / total, 1) if len(delta) > 7 else None,
                                        "seconds": round(time.monotonic() - t0, 1)}
        self.report(started)
        return 0

    def report(self, started: datetime) -> None:
        cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                    if l.startswith("model name")), platform.processor())
        mem_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        c = self.results["cpu_over_run"]
        cfg = self.results["config"]
        lines = [f"Run {started:%Y-%m-%d %H:%M} UTC (split topology: granian REST API {cfg['api_workers']} workers x "
                 f"{cfg['api_threads']} threads, {cfg['gateways']} gevent gateways, nginx), {os.cpu_count()} CPUs "
                 f"({cpu}), {mem_kb / 1024 / 1024:.1f} GiB RAM; load average before {self.results['load_at_start']}, "
                 f"after {loadavg()}; CPU busy {c['busy_pct']}% (steal {c['steal_pct']}%) over the "
                 f"{c['seconds']:.0f} s run ({self.results['cpu_split']}); wrk {cfg['wrk']}; steps {' '.join(self.results['steps'])}; "
                 f"database {self.dbname}",
                 "", "| # | figure | target | measured | Y | ratio | verdict |", "|---|---|---|---|---|---|---|"]

        def key(r):
            no = r.get("no", "~")
            m = re.match(r"(\d+)(.*)", no)
            return (int(m.group(1)), m.group(2)) if m else (99, no)
        rows = sorted(self.results["rows"], key=key)
        for r in rows:
            lines.append(f"| {r.get('no', '')} | {r['figure']} | {r['target']} | {r['measured']} | {r['ceiling']} "
                         f"| {r['ratio']} | {r['verdict']} |")
        lines += ["", "Details:"] + [f"- {r.get('no', '')} {r['figure']}: {r['detail']}" for r in rows if r["detail"]]
        lines += [f"- {n}" for n in self.results["notes"]]
        lines += [f"- step durations (s): {self.results.get('step_seconds')}"]
        if "memory" in self.results:
            lines += ["", "| process | pid | RSS MB |", "|---|---|---|"]
            lines += [f"| {label} | {pid} | {fmt(rss)} |" for label, pid, rss in self.results["memory"]]
        for name in ("list_uncached", "post"):
            if f"profile_{name}" in self.results:
                lines += ["", f"py-spy --gil (REST workers, {name}):", "```", *self.results[f"profile_{name}"], "```"]
        text = "\n".join(lines)
        print(text)
        (self.logdir / "results.md").write_text(text + "\n")
        (self.logdir / "results.json").write_text(json.dumps(self.results, default=str, indent=1))
        log(f"results: {self.logdir / 'results.md'} and results.json")
