"""The rich task list against the plain one, same run (issue 12, docs/benchmarks.md).

    .venv/bin/python bench/task_model.py [--duration 10] [--rounds 3] [--workers 2]

A fresh PostgreSQL database migrated with ``flask db upgrade``; two users, each
with 100 personal tasks seeded by SQL: ``rich`` (every task carries 5 labels and
a 10-item checklist) and ``plain`` (none). The REST API runs as in production
(``TASKTRACKER_ROLE=api`` on granian, ``--workers``, Redis for the caches) and
``wrk -t2 -c16`` reads ``GET /api/tasks?per_page=100`` as each user, rounds
interleaved (rich, plain, rich, plain...), twice:

- ``uncached``: ``LIST_CACHE_TTL_SECONDS=0`` (no stored bodies: every request
  renders the page: the statements and the JSON), the costly path;
- ``cached``: production defaults (the body comes from the in-process LRU / Redis).

Prints, for each, req/s and p50/p99 of both users per round, and the ratio
plain/rich of the medians (the target: rich within 1.3x of plain, i.e. ratio
<= 1.3). Uses bench/run.py's process and wrk helpers; everything it starts is
stopped by pid.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import BIN, Bench, free_port, log, loadavg, wait_http, wrk  # noqa: E402


class TaskModelBench(Bench):
    """One run: database, seed, then the two phases (see the module docstring)."""

    def __init__(self, args):
        super().__init__(argparse.Namespace(quick=False, keep_db=False, scan_interval=10.0, **vars(args)))
        self.dur = args.duration

    def start_api(self, **extra):
        port = free_port()
        argv = [str(BIN / "granian"), "--interface", "wsgi", "--host", "127.0.0.1", "--port", str(port),
                "--workers", str(self.args.workers), "--blocking-threads", "8", "--no-ws",
                "--log-level", "warning", "wsgi:app"]
        proc = self.procs.start(f"api-{len(self.procs.procs)}", argv,
                                self.env(TASKTRACKER_ROLE="api", **extra))
        self.base = f"http://127.0.0.1:{port}"
        wait_http(self.base + "/health", proc)
        return proc

    def seed_tasks(self) -> None:
        now = datetime.now(timezone.utc)
        with self.pg.cursor() as cur:
            for user in (self.rich, self.plain):
                cur.execute("""INSERT INTO tasks (title, description, status, priority, owner_id,
                               created_at, updated_at, version, recurrence_index)
                               SELECT %s || ' task ' || g, 'Seeded for the benchmark', 'todo', 'medium', %s,
                                      %s - g * interval '1 minute', %s - g * interval '1 minute', 1, 1
                               FROM generate_series(1, 100) g""",
                            (user["name"], user["id"], now, now))
            cur.execute("""INSERT INTO labels (name, color, user_id, created_at)
                           SELECT 'label ' || g, '#336699', %s, %s FROM generate_series(1, 5) g""",
                        (self.rich["id"], now))
            cur.execute("""INSERT INTO task_labels (task_id, label_id)
                           SELECT t.id, l.id FROM tasks t JOIN labels l ON l.user_id = t.owner_id
                           WHERE t.owner_id = %s""", (self.rich["id"],))
            cur.execute("""INSERT INTO checklist_items (task_id, text, done, position, created_at)
                           SELECT t.id, 'Checklist item ' || g, g %% 3 = 0, g - 1, %s
                           FROM tasks t, generate_series(1, 10) g WHERE t.owner_id = %s""",
                        (now, self.rich["id"]))

    def phase(self, name: str, **env) -> dict:
        server = self.start_api(**env)
        url = f"{self.base}/api/tasks?per_page=100"
        for user in (self.rich, self.plain):
            body = requests.get(url, headers=self.auth(user), timeout=10).json()
            items = body["items"]
            assert len(items) == 100, body
            if user is self.rich:
                assert all(len(t["labels"]) == 5 and len(t["checklist"]) == 10 for t in items)
            else:
                assert all(not t["labels"] and not t["checklist"] for t in items)
        runs: dict[str, list] = {"rich": [], "plain": []}
        for _ in range(self.args.rounds):
            for who, user in (("rich", self.rich), ("plain", self.plain)):
                runs[who].append(wrk(url, "get.lua", duration=self.dur, server=server,
                                     env_extra={"BENCH_TOKEN": user["token"]}))
        self.procs.stop(server)
        rps = {who: statistics.median(r["rps"] for r in rs) for who, rs in runs.items()}
        p99 = {who: statistics.median(r["p99_ms"] for r in rs) for who, rs in runs.items()}
        cpu = {who: statistics.median(r.get("cpu_user_ms", 0) + r.get("cpu_sys_ms", 0) for r in rs)
               for who, rs in runs.items()}
        errors = sum(r["errors"] for rs in runs.values() for r in rs)
        return {"name": name, "runs": runs, "rps": rps, "p99": p99, "cpu": cpu, "errors": errors,
                "ratio": rps["plain"] / rps["rich"] if rps["rich"] else float("inf")}

    def main(self) -> int:
        started = datetime.now(timezone.utc)
        try:
            self.create_database()
            bootstrap = self.start_api()
            self.rich, self.plain = self.user("rich"), self.user("plain")
            self.procs.stop(bootstrap)
            self.seed_tasks()
            phases = [self.phase("uncached", LIST_CACHE_TTL_SECONDS="0"), self.phase("cached")]
        finally:
            self.procs.stop_all()
            if self.pg is not None:
                self.pg.close()
            self.drop_run_state()
        print(f"\nRun {started:%Y-%m-%d %H:%M} UTC, {platform.node()} ({platform.machine()}, "
              f"{self.cpu_count()} CPUs), granian --workers {self.args.workers}, wrk -t2 -c16 "
              f"-d{self.dur}s x {self.args.rounds} rounds each, interleaved; load now {loadavg()}")
        print("| list (100 tasks) | rich: 5 labels + 10 items each | plain | plain/rich | target |")
        print("|---|---|---|---|---|")
        for p in phases:
            verdict = "met" if p["ratio"] <= 1.3 and not p["errors"] else "MISSED"
            print(f"| {p['name']} | {p['rps']['rich']:.0f} req/s, p99 {p['p99']['rich']:.1f} ms, "
                  f"{p['cpu']['rich']:.2f} ms CPU/req | {p['rps']['plain']:.0f} req/s, p99 "
                  f"{p['p99']['plain']:.1f} ms, {p['cpu']['plain']:.2f} ms CPU/req | "
                  f"{p['ratio']:.2f}x | <= 1.3x: {verdict} |")
            for who in ("rich", "plain"):
                print(f"  {p['name']} {who}: " + ", ".join(f"{r['rps']:.0f}" for r in p["runs"][who])
                      + f" req/s; errors {sum(r['errors'] for r in p['runs'][who])}")
        return 0 if all(p["ratio"] <= 1.3 and not p["errors"] for p in phases) else 1

    @staticmethod
    def cpu_count() -> int:
        import os

        return os.cpu_count() or 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per user and phase (default 3)")
    p.add_argument("--workers", type=int, default=2, help="granian --workers (default 2)")
    p.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    bench = TaskModelBench(args)
    log(f"logs in {bench.logdir}")
    return bench.main()


if __name__ == "__main__":
    sys.exit(main())
