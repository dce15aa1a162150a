"""Issue 13 figures (docs/benchmarks.md, "Integrations"): webhook throughput and an
outage, PAT against JWT auth cost, and the CSV export of 100,000 tasks.

    .venv/bin/python bench/integrations.py [--events 1000] [--hooks 5] [--outage 120]
                                           [--duration 10] [--rounds 3] [--csv-tasks 100000]

A fresh PostgreSQL database migrated with ``flask db upgrade``; the REST API as in
production (``TASKTRACKER_ROLE=api`` on granian, ``--workers``), Celery workers
(``--celery-procs`` prefork processes) and one beat on RabbitMQ, Redis for the caches;
``WEBHOOK_ALLOW_PRIVATE_TARGETS=true`` (the receiver is on 127.0.0.1). Steps:

1. ``throughput``: a team with ``--hooks`` webhooks, all pointing at one threaded
   HTTP receiver in this process (stdlib ``http.server``, HTTP/1.1 keep-alive; it
   checks every signature); ``--events`` team tasks created over REST by 8 client
   threads; the time until every delivery (events x hooks) has arrived, p50/p99 of
   commit-to-receipt (receipt time minus the body's ``created_at``, the event row's
   time inside the transaction: an upper bound of commit-to-receipt by the
   transaction's tail), and the CPU seconds each part used meanwhile.
2. ``outage``: the receiver's port and open connections closed, ``--events`` more tasks, ``--outage``
   seconds down, the receiver back on the same port: the time until everything
   arrived after it came back, and duplicates (a delivery id received twice with
   a 2xx answer).
3. ``auth``: ``GET /api/tasks?per_page=100`` with a JWT and with a PAT of the same
   user, ``wrk -t2 -c16``, rounds interleaved; CPU per request of the API workers.
4. ``csv``: 100,000 tasks seeded by SQL (labels on every tenth), ``GET
   /api/tasks/export.csv`` streamed by ``requests``; the time and the API worker's RSS
   (sampled every 20 ms) before and at its peak, on one granian worker.

Uses bench/run.py's process and wrk helpers; everything it starts is stopped by pid.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import (BIN, Bench, children, cpu_split, cpu_ticks, free_port, log, loadavg,  # noqa: E402
                       rss_mb, wait_http, wrk)
from tasktracker.webhooks import signing  # noqa: E402


class Receiver:
    """A threaded HTTP receiver on 127.0.0.1 that verifies signatures and records, per
    delivery id, each 2xx receipt's time (and the body's ``created_at``)."""

    def __init__(self):
        self.port = free_port()
        self.secrets: dict[str, str] = {}
        self.lock = threading.Lock()
        self.receipts: dict[int, list[float]] = {}
        self.created: dict[int, float] = {}
        self.bad_signatures = 0
        self.server = None
        self.connections: set = set()  # open (keep-alive) connections, closed by stop()

    def start(self) -> "Receiver":
        rec = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                with rec.lock:
                    rec.connections.add(self.connection)

            def finish(self):
                with rec.lock:
                    rec.connections.discard(self.connection)
                super().finish()

            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                now = time.time()
                ok = signing.verify(rec.secrets.get(self.path, ""), self.headers.get("X-TaskTracker-Timestamp"),
                                    body, self.headers.get("X-TaskTracker-Signature", ""))
                did = int(self.headers.get("X-TaskTracker-Delivery", "0"))
                with rec.lock:
                    if ok:
                        rec.receipts.setdefault(did, []).append(now)
                        created = json.loads(body)["created_at"]
                        rec.created[did] = datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
                    else:
                        rec.bad_signatures += 1
                self.send_response(200 if ok else 401)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):  # a sender closing a kept-alive connection
                if not isinstance(sys.exc_info()[1], ConnectionError):
                    super().handle_error(request, client_address)

        self.server = Server(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Close the port and every kept-alive connection (else their handler threads
        would go on answering the senders' pooled connections: no outage)."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        with self.lock:
            connections, self.connections = self.connections, set()
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def count(self, ids=None) -> int:
        with self.lock:
            return len(self.receipts) if ids is None else sum(1 for i in ids if i in self.receipts)

    def duplicates(self) -> int:
        with self.lock:
            return sum(len(t) - 1 for t in self.receipts.values())


class IntegrationsBench(Bench):
    def __init__(self, args):
        super().__init__(argparse.Namespace(quick=False, keep_db=False, scan_interval=2.0, **vars(args)))
        self.dur = args.duration

    def env(self, **extra) -> dict:
        return super().env(WEBHOOK_ALLOW_PRIVATE_TARGETS="true", WEBHOOK_SCAN_INTERVAL_SECONDS="2",
                           LOG_LEVEL="WARNING", **extra)

    def start_api(self, workers: int | None = None, **extra):
        port = free_port()
        argv = [str(BIN / "granian"), "--interface", "wsgi", "--host", "127.0.0.1", "--port", str(port),
                "--workers", str(workers or self.args.workers), "--blocking-threads", "8", "--no-ws",
                "--log-level", "warning", "wsgi:app"]
        proc = self.procs.start(f"api-{len(self.procs.procs)}", argv, self.env(TASKTRACKER_ROLE="api", **extra))
        self.base = f"http://127.0.0.1:{port}"
        wait_http(self.base + "/health", proc)
        return proc

    def start_workers(self) -> None:
        argv = [str(BIN / "celery"), "-A", "celery_worker.celery", "worker", "--loglevel=warning",
                "--concurrency", str(self.args.celery_procs), "--hostname", f"bench-{self.tag}@%h"]
        if self.args.profile:  # one process (solo pool) under cProfile: its main thread, not the send threads
            argv = [str(BIN / "python"), "-m", "cProfile", "-o", str(self.logdir / "worker.prof"), *argv,
                    "--pool=solo"]
        self.worker = self.procs.start("worker", argv, self.env())
        self.beat = self.procs.start("beat", [str(BIN / "celery"), "-A", "celery_worker.celery", "beat",
                                              "--loglevel=warning", "--schedule",
                                              str(self.logdir / "celerybeat-schedule")], self.env())
        time.sleep(8)  # prefork pool up (no readiness line at WARNING)

    # ------------------------------------------------------------------ webhooks
    def setup_team(self) -> None:
        r = requests.post(self.base + "/api/teams", json={"name": "Hooks"}, headers=self.auth(self.alice), timeout=10)
        r.raise_for_status()
        self.team_id = r.json()["id"]
        self.receiver = Receiver().start()
        for i in range(self.args.hooks):
            path = f"/hook{i}"
            r = requests.post(f"{self.base}/api/teams/{self.team_id}/webhooks", headers=self.auth(self.alice),
                              json={"url": f"http://127.0.0.1:{self.receiver.port}{path}",
                                    "events": ["task.created"]}, timeout=10)
            r.raise_for_status()
            self.receiver.secrets[path] = r.json()["secret"]

    def create_tasks(self, n: int, prefix: str) -> float:
        session = requests.Session()
        headers = self.auth(self.alice)

        def one(i: int) -> int:
            r = session.post(self.base + "/api/tasks", json={"title": f"{prefix} {i}", "team_id": self.team_id},
                             headers=headers, timeout=30)
            return r.status_code

        t0 = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(one, range(n)))
        bad = [c for c in codes if c != 201]
        assert not bad, f"{len(bad)} task creations failed: {bad[:5]}"
        return time.monotonic() - t0

    def delivery_ids(self) -> list[int]:
        with self.pg.cursor() as cur:
            cur.execute("SELECT id FROM webhook_deliveries ORDER BY id")
            return [r[0] for r in cur.fetchall()]

    def wait_all(self, expected: int, timeout: float) -> float | None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.receiver.count() >= expected:
                return time.monotonic() - t0
            time.sleep(0.05)
        return None

    def cpu_parts(self) -> dict[str, int]:
        """CPU clock ticks used so far by each part of the stack (its processes and
        their live children), this process (the client threads and the receiver), the
        shared services (PostgreSQL, RabbitMQ, Redis) and the whole machine."""
        parts = {name: sum(cpu_ticks([proc.pid, *children(proc.pid)])) for name, proc in self.procs.procs
                 if proc.poll() is None}
        busy, _, services = cpu_split()
        parts["bench (clients, receiver)"] = sum(cpu_ticks([os.getpid()]))
        parts["services"] = sum(services.values())
        parts["machine"] = busy
        return parts

    def throughput(self) -> dict:
        n, expected = self.args.events, self.args.events * self.args.hooks
        cpu_before = self.cpu_parts()
        start = time.monotonic()
        posting = self.create_tasks(n, "burst")
        waited = self.wait_all(expected, 180)
        total = time.monotonic() - start if waited is not None else None
        cpu_after = self.cpu_parts()
        hz = os.sysconf("SC_CLK_TCK")
        cpu_s = {k: (cpu_after[k] - cpu_before.get(k, 0)) / hz for k in cpu_after}
        cpu_s["others"] = cpu_s["machine"] - sum(v for k, v in cpu_s.items() if k != "machine")
        with self.receiver.lock:
            lat = sorted((min(t) - self.receiver.created[d]) * 1000 for d, t in self.receiver.receipts.items())
        rows = len(self.delivery_ids())
        return {"events": n, "deliveries": expected, "rows": rows, "received": self.receiver.count(),
                "posting_s": posting, "all_arrived_s": total, "p50_ms": _q(lat, 0.5), "p99_ms": _q(lat, 0.99),
                "max_ms": lat[-1] if lat else None, "duplicates": self.receiver.duplicates(),
                "bad_signatures": self.receiver.bad_signatures, "cpu_s": cpu_s}

    def outage(self) -> dict:
        before = set(self.delivery_ids())
        port = self.receiver.port
        self.receiver.stop()
        down_at = time.monotonic()
        posting = self.create_tasks(self.args.events, "outage")
        new = [i for i in self.delivery_ids() if i not in before]
        remaining = self.args.outage - (time.monotonic() - down_at)
        log(f"outage: {len(new)} deliveries written, receiver down for {self.args.outage}s")
        time.sleep(max(0.0, remaining))
        self.receiver.port = port
        self.receiver.start()
        up_at = time.monotonic()
        while self.receiver.count(new) < len(new) and time.monotonic() - up_at < 600:
            time.sleep(0.2)
        after_up = time.monotonic() - up_at
        with self.pg.cursor() as cur:
            cur.execute("SELECT status, count(*), max(attempts) FROM webhook_deliveries WHERE id = ANY(%s) "
                        "GROUP BY status", (new,))
            statuses = {s: (c, m) for s, c, m in cur.fetchall()}
        time.sleep(5)  # late duplicates would show here
        return {"written": len(new), "posting_s": posting, "arrived": self.receiver.count(new),
                "after_up_s": after_up, "duplicates": self.receiver.duplicates(), "statuses": statuses}

    # ------------------------------------------------------------------ auth cost
    def pat(self) -> str:
        r = requests.post(self.base + "/api/auth/tokens", json={"name": "bench", "scopes": ["read"]},
                          headers=self.auth(self.alice), timeout=10)
        r.raise_for_status()
        return r.json()["token"]

    def auth_cost(self, server) -> dict:
        url = f"{self.base}/api/tasks?per_page=100"
        tokens = {"jwt": self.alice["token"], "pat": self.pat()}
        for t in tokens.values():
            r = requests.get(url, headers={"Authorization": f"Bearer {t}"}, timeout=10)
            assert r.status_code == 200 and len(r.json()["items"]) == 100, r.status_code
        runs: dict[str, list] = {"jwt": [], "pat": []}
        for _ in range(self.args.rounds):
            for kind in ("jwt", "pat"):
                runs[kind].append(wrk(url, "get.lua", duration=self.dur, server=server,
                                      env_extra={"BENCH_TOKEN": tokens[kind]}))
        cpu = {k: statistics.median(r["cpu_user_ms"] + r["cpu_sys_ms"] for r in rs) for k, rs in runs.items()}
        rps = {k: statistics.median(r["rps"] for r in rs) for k, rs in runs.items()}
        errors = sum(r["errors"] for rs in runs.values() for r in rs)
        return {"cpu": cpu, "rps": rps, "errors": errors, "runs": runs}

    # ------------------------------------------------------------------ CSV
    def seed_csv(self) -> None:
        now = datetime.now(timezone.utc)
        with self.pg.cursor() as cur:
            cur.execute("""INSERT INTO tasks (title, description, status, priority, owner_id, due_at,
                           created_at, updated_at, version, recurrence_index)
                           SELECT 'CSV task ' || g, 'Exported by the benchmark, row ' || g, 'todo', 'medium', %s,
                                  %s + g * interval '1 minute', %s - g * interval '1 second',
                                  %s - g * interval '1 second', 1, 1
                           FROM generate_series(1, %s) g""",
                        (self.carol["id"], now, now, now, self.args.csv_tasks))
            cur.execute("INSERT INTO labels (name, color, user_id, created_at) VALUES ('export', '#336699', %s, %s) "
                        "RETURNING id", (self.carol["id"], now))
            label_id = cur.fetchone()[0]
            cur.execute("INSERT INTO task_labels (task_id, label_id) SELECT id, %s FROM tasks "
                        "WHERE owner_id = %s AND id %% 10 = 0", (label_id, self.carol["id"]))
            cur.execute("ANALYZE")

    def csv_export(self) -> dict:
        server = self.start_api(workers=1)
        workers = children(server.pid) or [server.pid]
        requests.get(self.base + "/api/tasks?per_page=1", headers=self.auth(self.carol), timeout=30)  # warm
        base_rss = sum(rss_mb(p) or 0 for p in workers)
        peak = [base_rss]
        stop = threading.Event()

        def sample():
            while not stop.wait(0.02):
                peak[0] = max(peak[0], sum(rss_mb(p) or 0 for p in workers))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.monotonic()
        first_byte = None
        size = lines = 0
        last = b""
        with requests.get(self.base + "/api/tasks/export.csv?sort=created_at", headers=self.auth(self.carol),
                          stream=True, timeout=300) as r:
            r.raise_for_status()
            for chunk in r.iter_content(65536):
                if first_byte is None:
                    first_byte = time.monotonic() - t0
                size += len(chunk)
                lines += (last + chunk).count(b"\r\n") - last.count(b"\r\n")  # a CRLF split across chunks
                last = chunk[-1:]
        elapsed = time.monotonic() - t0
        stop.set()
        sampler.join()
        self.procs.stop(server)
        return {"rows": lines - 1, "bytes": size, "seconds": elapsed, "first_byte_s": first_byte,
                "rss_before_mb": base_rss, "rss_peak_mb": peak[0], "rss_growth_mb": peak[0] - base_rss}

    # ------------------------------------------------------------------ main
    def main(self) -> int:
        started = datetime.now(timezone.utc)
        out: dict = {}
        try:
            self.create_database()
            server = self.start_api()
            self.alice, self.carol = self.user("alice"), self.user("carol")
            with self.pg.cursor() as cur:  # alice's 100 personal tasks for the auth-cost list
                cur.execute("""INSERT INTO tasks (title, description, status, priority, owner_id, created_at,
                               updated_at, version, recurrence_index)
                               SELECT 'Alice task ' || g, 'Seeded', 'todo', 'medium', %s, now(), now(), 1, 1
                               FROM generate_series(1, 100) g""", (self.alice["id"],))
            self.start_workers()
            self.setup_team()
            if "throughput" in self.args.only:
                out["throughput"] = self.throughput()
                log(f"throughput: {out['throughput']}")
            if "outage" in self.args.only:
                out["outage"] = self.outage()
                log(f"outage: {out['outage']}")
            self.receiver.stop()
            self.procs.stop(self.worker)
            self.procs.stop(self.beat)
            if self.args.profile:
                _print_profile(self.logdir / "worker.prof")
            if "auth" in self.args.only:
                out["auth"] = self.auth_cost(server)
            self.procs.stop(server)
            if "csv" in self.args.only:
                self.seed_csv()
                out["csv"] = self.csv_export()
                log(f"csv: {out['csv']}")
        finally:
            self.procs.stop_all()
            if self.pg is not None:
                self.pg.close()
            self.drop_run_state()
        self.report(started, out)
        (self.logdir / "results.json").write_text(json.dumps(out, default=str, indent=2))
        return 0

    def report(self, started, out: dict) -> None:
        a = self.args
        print(f"\nRun {started:%Y-%m-%d %H:%M} UTC, {platform.node()} ({platform.machine()}, "
              f"{_cpus()} CPUs), granian --workers {a.workers}, celery prefork x{a.celery_procs}, beat "
              f"(webhook scan every 2 s); load now {loadavg()}")
        if "throughput" in out:
            t = out["throughput"]
            verdict = "met" if t["all_arrived_s"] is not None and t["all_arrived_s"] <= 30 else "MISSED"
            print(f"throughput: {t['events']} events x {a.hooks} webhooks = {t['deliveries']} deliveries "
                  f"({t['rows']} rows, {t['received']} received); POSTs took {t['posting_s']:.1f} s; all arrived "
                  f"{_s(t['all_arrived_s'])} after the first POST (target 30 s: {verdict}); commit-to-receipt "
                  f"p50 {_ms(t['p50_ms'])}, p99 {_ms(t['p99_ms'])}, max {_ms(t['max_ms'])}; duplicates "
                  f"{t['duplicates']}, bad signatures {t['bad_signatures']}")
            print("  CPU seconds over it: " + ", ".join(f"{k} {v:.1f}" for k, v in t["cpu_s"].items()))
        if "outage" in out:
            o = out["outage"]
            print(f"outage: {o['written']} deliveries written while down ({o['posting_s']:.1f} s of POSTs), "
                  f"receiver down {a.outage} s; {o['arrived']}/{o['written']} arrived {o['after_up_s']:.1f} s "
                  f"after it came back; duplicates {o['duplicates']}; statuses {o['statuses']}")
        if "auth" in out:
            c = out["auth"]
            ratio = c["cpu"]["pat"] / c["cpu"]["jwt"] if c["cpu"]["jwt"] else float("inf")
            print(f"auth: GET /api/tasks?per_page=100 JWT {c['rps']['jwt']:.0f} req/s {c['cpu']['jwt']:.3f} ms "
                  f"CPU/req; PAT {c['rps']['pat']:.0f} req/s {c['cpu']['pat']:.3f} ms CPU/req; PAT/JWT "
                  f"{ratio:.2f} (target <= 1: {'met' if ratio <= 1.0 else 'MISSED'}); errors {c['errors']}")
            for k in ("jwt", "pat"):
                print(f"  {k}: " + ", ".join(f"{r['rps']:.0f} req/s {r['cpu_user_ms'] + r['cpu_sys_ms']:.3f} ms"
                                              for r in c["runs"][k]))
        if "csv" in out:
            v = out["csv"]
            print(f"csv: {v['rows']} rows, {v['bytes'] / 1e6:.1f} MB in {v['seconds']:.1f} s (first byte "
                  f"{(v['first_byte_s'] or 0):.2f} s); API worker RSS {v['rss_before_mb']:.1f} -> peak "
                  f"{v['rss_peak_mb']:.1f} MB (+{v['rss_growth_mb']:.1f} MB; target < 20 MB: "
                  f"{'met' if v['rss_growth_mb'] < 20 else 'MISSED'})")


def _print_profile(path: Path, top: int = 40) -> None:
    """The Celery worker's cProfile (``--profile``), top functions by cumulative time."""
    import pstats

    if path.exists():
        pstats.Stats(str(path)).sort_stats("cumulative").print_stats(top)


def _q(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return values[min(len(values) - 1, int(q * len(values)))]


def _ms(v) -> str:
    return "-" if v is None else f"{v:.0f} ms"


def _s(v) -> str:
    return "never (timeout)" if v is None else f"{v:.1f} s"


def _cpus() -> int:
    return os.cpu_count() or 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=1000)
    p.add_argument("--hooks", type=int, default=5)
    p.add_argument("--outage", type=float, default=120.0, help="seconds the receiver is down")
    p.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", type=int, default=2, help="granian --workers")
    p.add_argument("--celery-procs", type=int, default=4, help="celery worker --concurrency (prefork)")
    p.add_argument("--csv-tasks", type=int, default=100_000)
    p.add_argument("--only", nargs="+", default=["throughput", "outage", "auth", "csv"])
    p.add_argument("--profile", action="store_true",
                   help="run the Celery worker as one solo process under cProfile and print its profile")
    bench = IntegrationsBench(p.parse_args())
    log(f"logs in {bench.logdir}")
    return bench.main()


if __name__ == "__main__":
    sys.exit(main())
