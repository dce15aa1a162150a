"""Email benchmarks (issue 14, docs/benchmarks.md "Email"):

    .venv/bin/python bench/mail_burst.py [--users 10000] [--mail-workers 2] [--concurrency 2]
                                    [--posts 300] [--rounds 3]

1. **Reminder burst.** A fresh PostgreSQL database (``flask db upgrade``); ``--users``
   users, each with a task and a committed ``deadline_reminder`` notification whose
   mail row is due now (seeded by SQL, as the fan-out writes them: one outbox row and
   its link per notification). An aiosmtpd sink in its own process
   (bench/smtp_sink.py) records each message's ``Message-ID``. Then ``--workers``
   Celery worker processes (prefork, ``--concurrency`` each) and one beat
   (``scan_mail`` every second, ``MAIL_SEND_CONCURRENCY`` = workers x concurrency
   ``deliver_mail`` tasks per scan) start; the clock runs from the beat's start until
   the sink has every message. Target: all handed to SMTP within 60 s, none twice.
2. **Request path.** The REST API (granian, production mode) and one worker;
   ``POST /api/tasks`` with ``assignee_id`` (an assignment: the fan-out writes a
   notification and, mail on, its outbox row), ``--posts`` sequential requests per
   round, rounds interleaved: *mail on* (the assignee has ``task_assigned`` email on,
   MAIL_SERVER is the sink, the workers send) and *mail off* (the assignee turned
   ``task_assigned`` off: no outbox row). p50/p99 of each, side by side.

Reuses bench/run.py's process helpers (everything is stopped by pid, the database
dropped).
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named email.py (the name): run as a script, its directory comes
# first on sys.path and would shadow the standard library's ``email`` package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import os
import platform
import statistics
import time
from datetime import datetime, timezone

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import BIN, Bench, free_port, log, loadavg, quantile, wait_http  # noqa: E402


class EmailBench(Bench):
    def __init__(self, args):
        super().__init__(argparse.Namespace(quick=False, keep_db=False, scan_interval=1.0, workers=1, **vars(args)))
        self.sink_file = self.logdir / "sink.txt"

    # ------------------------------------------------------------------ helpers
    def mail_env(self, **extra) -> dict:
        return self.env(MAIL_SERVER="127.0.0.1", MAIL_PORT=str(self.sink_port),
                        MAIL_DEFAULT_SENDER="TaskTracker <no-reply@bench.test>",
                        PUBLIC_BASE_URL="https://tasks.bench.test", **extra)

    def received(self) -> list[str]:
        if not self.sink_file.exists():
            return []
        return [line for line in self.sink_file.read_text().splitlines() if line]

    def start_sink(self) -> None:
        self.sink_port = free_port()
        self.sink = self.procs.start("smtp-sink", [str(BIN / "python"), "bench/smtp_sink.py", str(self.sink_port),
                                                   str(self.sink_file)], self.env())
        deadline = time.monotonic() + 20
        while "smtp sink on" not in (self.logdir / "smtp-sink.log").read_text(errors="replace"):
            if time.monotonic() > deadline or self.sink.poll() is not None:
                raise RuntimeError("smtp sink did not start")
            time.sleep(0.1)

    def start_workers(self, n: int, concurrency: int, **extra) -> list:
        procs = []
        for i in range(n):
            name = f"worker{i}-{len(self.procs.procs)}"
            procs.append(self.procs.start(name, [str(BIN / "celery"), "-A", "celery_worker.celery", "worker",
                                                 "--loglevel=info", "--pool=prefork",
                                                 f"--concurrency={concurrency}", "-n", f"{name}-{self.tag}@%h",
                                                 "--without-gossip", "--without-mingle", "--without-heartbeat"],
                                          self.mail_env(**extra)))
        for i, proc in enumerate(procs):
            deadline = time.monotonic() + 90
            logfile = self.logdir / f"{self.procs.procs[-len(procs) + i][0]}.log"
            while "ready" not in logfile.read_text(errors="replace"):
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"worker did not start: {logfile.read_text()[-2000:]}")
                time.sleep(0.2)
        return procs

    def start_beat(self, **extra):
        return self.procs.start(f"beat-{len(self.procs.procs)}",
                                [str(BIN / "celery"), "-A", "celery_worker.celery", "beat", "--loglevel=warning",
                                 "--schedule", str(self.logdir / f"beat-{len(self.procs.procs)}")],
                                self.mail_env(**extra))

    # ------------------------------------------------------------------ 1. burst
    def seed_burst(self, n: int) -> None:
        now = datetime.now(timezone.utc)
        with self.pg.cursor() as cur:
            cur.execute("""INSERT INTO users (username, email, password_hash, full_name, role, timezone, active,
                                              email_verified, created_at, updated_at)
                           SELECT 'burst' || g, 'burst' || g || '@bench.test', 'x', 'Burst ' || g, 'member',
                                  (ARRAY['UTC','Europe/Paris','America/New_York','Asia/Tokyo'])[1 + g %% 4],
                                  true, false, %s, %s
                           FROM generate_series(1, %s) g""", (now, now, n))
            cur.execute("""INSERT INTO tasks (title, description, status, priority, owner_id, assignee_id, due_at,
                                              created_at, updated_at, version, recurrence_index)
                           SELECT 'Burst task ' || u.id, '', 'todo', 'medium', u.id, u.id,
                                  %s + interval '1 hour', %s, %s, 1, 1
                           FROM users u WHERE u.username LIKE 'burst%%'""", (now, now, now))
            cur.execute("""INSERT INTO events (type, actor_id, task_id, payload, created_at, dispatched_at)
                           SELECT 'reminder.due', NULL, t.id, '{}', %s, %s FROM tasks t
                           WHERE t.title LIKE 'Burst task %%'""", (now, now))
            cur.execute("""INSERT INTO notifications (user_id, event_seq, type, message, task_id, data, created_at)
                           SELECT t.owner_id, e.seq, 'deadline_reminder',
                                  'Reminder: "' || t.title || '" is due soon', t.id, '{}', %s
                           FROM events e JOIN tasks t ON t.id = e.task_id WHERE e.type = 'reminder.due'""", (now,))
            cur.execute("""INSERT INTO outgoing_emails (user_id, to_address, kind, dedupe_key, context, status,
                                                        attempts, next_attempt_at, created_at)
                           SELECT n.user_id, u.email, 'notification', 'notification:' || n.id, '{}', 'pending', 0,
                                  %s, %s
                           FROM notifications n JOIN users u ON u.id = n.user_id""", (now, now))
            cur.execute("""INSERT INTO outgoing_email_notifications (email_id, notification_id)
                           SELECT o.id, n.id FROM outgoing_emails o
                           JOIN notifications n ON o.dedupe_key = 'notification:' || n.id""")
            cur.execute("ANALYZE")

    def burst(self) -> dict:
        n = self.args.users
        self.seed_burst(n)
        parallel = self.args.mail_workers * self.args.concurrency
        workers = self.start_workers(self.args.mail_workers, self.args.concurrency, MAIL_SEND_CONCURRENCY=str(parallel))
        started = time.monotonic()
        beat = self.start_beat(MAIL_SEND_CONCURRENCY=str(parallel))
        marks, last, deadline = {}, 0, started + 600
        while time.monotonic() < deadline:
            count = len(self.received())
            if count != last:
                last = count
            for m in (1000, n // 2, n):
                if count >= m and m not in marks:
                    marks[m] = time.monotonic() - started
            if count >= n:
                break
            time.sleep(0.2)
        elapsed = time.monotonic() - started
        time.sleep(3)  # a few more scans: anything sent twice would show now
        ids = self.received()
        with self.pg.cursor() as cur:
            statuses = dict(cur.execute("SELECT status, count(*) FROM outgoing_emails GROUP BY status").fetchall())
        self.procs.stop(beat)
        for w in workers:
            self.procs.stop(w)
        return {"n": n, "elapsed": elapsed, "marks": marks, "received": len(ids), "unique": len(set(ids)),
                "statuses": statuses, "rate": len(set(ids)) / elapsed if elapsed else 0.0, "parallel": parallel}

    # ------------------------------------------------------------------ 2. request path
    def start_api(self):
        port = free_port()
        argv = [str(BIN / "granian"), "--interface", "wsgi", "--host", "127.0.0.1", "--port", str(port),
                "--workers", "1", "--blocking-threads", "8", "--no-ws", "--log-level", "warning", "wsgi:app"]
        proc = self.procs.start(f"api-{len(self.procs.procs)}", argv, self.mail_env(TASKTRACKER_ROLE="api"))
        self.base = f"http://127.0.0.1:{port}"
        wait_http(self.base + "/health", proc)
        return proc

    def request_path(self) -> dict:
        with self.pg.cursor() as cur:  # the burst's rows are done with; keep the tables small again
            cur.execute("TRUNCATE outgoing_email_notifications, outgoing_emails, notifications, events, tasks "
                        "RESTART IDENTITY CASCADE")
        api = self.start_api()
        workers = self.start_workers(1, 2, MAIL_SEND_CONCURRENCY="2")
        beat = self.start_beat(MAIL_SEND_CONCURRENCY="2")
        owner, on, off = self.user("owner"), self.user("mailon"), self.user("mailoff")
        r = requests.patch(self.base + "/api/auth/profile/notification-settings", headers=self.auth(off),
                           json={"email": {"task_assigned": False}}, timeout=10)
        r.raise_for_status()
        session = requests.Session()
        session.headers.update(self.auth(owner))
        times: dict[str, list[float]] = {"mail on": [], "mail off": []}

        def post(assignee: dict) -> float:
            t0 = time.perf_counter()
            resp = session.post(self.base + "/api/tasks", json={"title": "Assigned", "assignee_id": assignee["id"]},
                                timeout=10)
            took = time.perf_counter() - t0
            assert resp.status_code == 201, resp.text
            return took * 1000

        for _ in range(50):  # warm-up
            post(on), post(off)
        for _ in range(self.args.rounds):
            for label, who in (("mail on", on), ("mail off", off)):
                times[label] += [post(who) for _ in range(self.args.posts)]
        deadline = time.monotonic() + 180
        expected = 50 + self.args.rounds * self.args.posts  # mail-on assignments, batched per 60 s
        with self.pg.cursor() as cur:
            while time.monotonic() < deadline:
                rows = dict(cur.execute("SELECT status, count(*) FROM outgoing_emails GROUP BY status").fetchall())
                linked = cur.execute("SELECT count(*) FROM outgoing_email_notifications").fetchone()[0]
                if linked >= expected:
                    break
                time.sleep(1)
        self.procs.stop(beat)
        for w in workers:
            self.procs.stop(w)
        self.procs.stop(api)
        return {"times": times, "rows": rows, "linked": linked, "expected": expected}

    def main(self) -> int:
        started = datetime.now(timezone.utc)
        try:
            self.create_database()
            self.start_sink()
            burst = self.burst()
            path = self.request_path()
        finally:
            self.procs.stop_all()
            if self.pg is not None:
                self.pg.close()
            self.drop_run_state()
        print(f"\nRun {started:%Y-%m-%d %H:%M} UTC, {platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs); "
              f"load now {loadavg()}")
        b = burst
        met = b["unique"] == b["n"] and b["received"] == b["unique"] and b["elapsed"] <= 60
        print(f"| reminder burst | {b['n']} due at once | {self.args.mail_workers} worker processes x "
              f"{self.args.concurrency} | all {b['unique']}/{b['n']} in {b['elapsed']:.1f} s "
              f"({b['rate']:.0f} msg/s); 1000 at {b['marks'].get(1000, float('nan')):.1f} s, half at "
              f"{b['marks'].get(b['n'] // 2, float('nan')):.1f} s | twice: {b['received'] - b['unique']} | "
              f"rows {b['statuses']} | <= 60 s, none twice: {'met' if met else 'MISSED'} |")
        for label, values in path["times"].items():
            print(f"| POST /api/tasks (assignment), {label} | {len(values)} requests | p50 "
                  f"{statistics.median(values):.2f} ms | p90 {quantile(values, 0.9):.2f} ms | p99 "
                  f"{quantile(values, 0.99):.2f} ms |")
        print(f"  mail-on notifications carried by outbox rows: {path['linked']}/{path['expected']}; "
              f"rows {path['rows']}")
        return 0 if met else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=10000)
    p.add_argument("--mail-workers", type=int, default=2, help="Celery worker processes for the burst")
    p.add_argument("--concurrency", type=int, default=2, help="prefork children per worker")
    p.add_argument("--posts", type=int, default=300, help="sequential POSTs per round and case")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    bench = EmailBench(args)
    log(f"logs in {bench.logdir}")
    return bench.main()


if __name__ == "__main__":
    sys.exit(main())
