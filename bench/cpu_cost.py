"""CPU time per request, in process: what one request costs the web process in
Python, whatever else the (shared, noisy) machine is doing.

    .venv/bin/python bench/cpu_cost.py [--n 1000] [--rounds 5] [--profile list_hit [--pyinstrument]] [--parts]

Builds the production app (``ProductionConfig``) on a fresh PostgreSQL database
with Redis (list cache) and no broker traffic, seeds one user with 100 tasks,
and drives it with Flask's test client (WSGI, no sockets, no gunicorn) beside
the bare route of ``bench/bare_app.py``. For each request kind it prints the
process CPU time per request (``time.process_time``, ms) and the wall time, in
rounds that interleave the kinds (min and median over rounds).
``--profile KIND`` prints the top functions of that kind under cProfile; ``--parts``
times the pieces of an authenticated list request on their own (token decoding,
login-session check, data version, a bare connection round trip).

Kinds: ``bare`` (GET /bare), ``list_miss`` (GET /api/tasks?per_page=100 with the
read cache's store switched off: rendered every time), ``list_hit`` (same, cached
body), ``list_304`` (same with If-None-Match), ``post`` (POST /api/tasks).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import secrets
import sys
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PG_ADMIN = os.environ.get("BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/14")


def build(dbname: str):
    os.environ.update({
        "TASKTRACKER_ENV": "production",
        "JWT_SECRET_KEY": secrets.token_urlsafe(48),
        "SECRET_KEY": secrets.token_urlsafe(48),
        "DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{dbname}",
        "CELERY_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672//",
        "SOCKETIO_MESSAGE_QUEUE": "amqp://guest:guest@127.0.0.1:5672//",
        "REDIS_URL": REDIS,
        "RATELIMIT_STORAGE_URI": REDIS,
        "LIST_CACHE_KEY_PREFIX": f"{dbname}:lists",
        "LOG_JSON": "false",
        "JOBS_INLINE": "false",
        # POST publishes its fan-out job to RabbitMQ as in production; nobody consumes
        # it: a queue of this run's own, deleted at the end
        "CELERY_TASK_QUEUE": f"{dbname}_q",
        "SOCKETIO_CHANNEL": f"{dbname}_sio",
    })
    from tasktracker import create_app
    from tasktracker.core.db import import_all_models
    from tasktracker.extensions import db

    app = create_app()
    import_all_models()
    with app.app_context():
        db.create_all()
    return app


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000, help="requests per kind (over all rounds)")
    p.add_argument("--rounds", type=int, default=5, help="rounds interleaving the kinds")
    p.add_argument("--profile", help="cProfile this kind and print its top functions")
    p.add_argument("--pyinstrument", action="store_true", help="profile with pyinstrument (sampling)")
    p.add_argument("--parts", action="store_true",
                   help="also time the pieces of an authenticated list request on their own")
    args = p.parse_args()
    if args.pyinstrument:
        global Profiler
        from pyinstrument import Profiler

    dbname = f"tt_cpu_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    try:
        return run(dbname, args)
    finally:
        from kombu import Connection

        with Connection(os.environ["CELERY_BROKER_URL"]) as amqp:
            amqp.default_channel.queue_delete(f"{dbname}_q")
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def run(dbname: str, args) -> int:
    import logging

    logging.disable(logging.WARNING)
    app = build(dbname)
    from bench.bare_app import app as bare

    client, bare_client = app.test_client(), bare.test_client()
    r = client.post("/api/auth/register", json={"username": "alice", "email": "alice@cpu.test",
                                                "password": "correct horse battery"})
    assert r.status_code == 201, r.get_json()
    r = client.post("/api/auth/login", json={"email": "alice@cpu.test", "password": "correct horse battery"})
    token = r.get_json()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    for i in range(100):
        assert client.post("/api/tasks", json={"title": f"Task {i}", "priority": "medium"},
                           headers=auth).status_code == 201

    url = "/api/tasks?per_page=100"
    etag = {"value": ""}  # the current ETag (POSTs change it), taken before each list_304 batch
    kinds = {
        "bare": lambda: bare_client.get("/bare"),
        "list_miss": lambda: client.get(url, headers=auth),
        "list_hit": lambda: client.get(url, headers=auth),
        "list_304": lambda: client.get(url, headers={**auth, "If-None-Match": etag["value"]}),
        "post": lambda: client.post("/api/tasks", json={"title": "Bench", "priority": "low"}, headers=auth),
    }
    expected = {"bare": 200, "list_miss": 200, "list_hit": 200, "list_304": 304, "post": 201}

    from tasktracker.tasks import cache as list_cache

    def timed(kind: str, n: int, profile: bool = False) -> tuple[float, float]:
        """(CPU ms, wall ms) per request of ``n`` requests of ``kind``."""
        fn = kinds[kind]
        if kind == "list_miss":  # the same request with the read cache's store switched off
            with app.app_context():
                store = list_cache.get_store()
            app.extensions[list_cache._EXTENSION_KEY] = list_cache.NullStore()
        if kind == "list_304":
            etag["value"] = client.get(url, headers=auth).headers["ETag"]
        prof = None
        if profile:
            prof = Profiler(interval=0.0002) if args.pyinstrument else cProfile.Profile()
        try:
            for _ in range(10):  # warm up
                assert fn().status_code == expected[kind]
            c0, w0 = time.process_time(), time.perf_counter()
            if prof:
                prof.start() if args.pyinstrument else prof.enable()
            for _ in range(n):
                r = fn()
                assert r.status_code == expected[kind], (kind, r.status_code, r.get_data()[:200])
            if prof:
                prof.stop() if args.pyinstrument else prof.disable()
            cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        finally:
            if kind == "list_miss":
                app.extensions[list_cache._EXTENSION_KEY] = store
        if prof and args.pyinstrument:
            print(prof.output_text(show_all=False, color=False))
        elif prof:
            out = io.StringIO()
            pstats.Stats(prof, stream=out).sort_stats(os.environ.get("BENCH_SORT", "cumulative")) \
                .print_stats(int(os.environ.get("BENCH_TOP", "45")))
            print(out.getvalue())
        return 1000 * cpu / n, 1000 * wall / n

    # rounds interleave the kinds, so a burst of load elsewhere hits all of them alike;
    # the minimum over rounds is the least disturbed figure
    per_round = max(1, args.n // args.rounds)
    results: dict[str, list] = {kind: [] for kind in kinds}
    for _ in range(args.rounds):
        for kind in kinds:
            results[kind].append(timed(kind, per_round))
    print(f"{args.rounds} rounds x {per_round} requests; CPU and wall ms per request")
    print(f"{'kind':10s} {'cpu min':>8s} {'cpu med':>8s} {'wall min':>9s} {'wall med':>9s}  cpu/bare")
    bare = min(c for c, _ in results["bare"])
    for kind, values in results.items():
        cpus, walls = [c for c, _ in values], [w for _, w in values]
        print(f"{kind:10s} {min(cpus):8.3f} {statistics.median(cpus):8.3f} "
              f"{min(walls):9.3f} {statistics.median(walls):9.3f}  {min(cpus) / bare:7.1f}x")
    if args.profile:
        timed(args.profile, args.n, profile=True)
    if args.parts:
        parts(app, token, args.n)
    return 0


def parts(app, token: str, n: int) -> None:
    """CPU ms of the pieces every authenticated list request runs (``--parts``), each
    on its own, ``n`` times, inside one request context."""
    from flask_jwt_extended import decode_token

    from tasktracker.auth.tokens import session_user
    from tasktracker.extensions import db
    from tasktracker.tasks.cache import data_version

    with app.test_request_context("/api/tasks", headers={"Authorization": f"Bearer {token}"}):
        claims = decode_token(token)

        def session_check():
            session_user(claims["sid"], claims["sub"])
            db.session.remove()

        def version():
            data_version()
            db.session.remove()

        def both():
            session_user(claims["sid"], claims["sub"])
            data_version()
            db.session.remove()

        def ping():
            with db.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")

        pieces = [
            ("decode_token (Flask-JWT-Extended: signature, expiry, claims)", lambda: decode_token(token)),
            ("login-session check: checkout (pre-ping), 1 query, close", session_check),
            ("data version: checkout (pre-ping), 1 query, close", version),
            ("both in one session (what a list request does)", both),
            ("Core connect + SELECT 1 + close", ping),
        ]
        print(f"parts, {n} calls each; CPU ms per call")
        for label, fn in pieces:
            for _ in range(20):
                fn()
            c0 = time.process_time()
            for _ in range(n):
                fn()
            print(f"  {label:62s} {1000 * (time.process_time() - c0) / n:.3f}")


if __name__ == "__main__":
    sys.exit(main())
