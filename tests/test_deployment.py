"""The production deployment end to end, as README "Production" runs it: two web
processes (``gunicorn -c gunicorn.conf.py wsgi:app``), two Celery workers and one
beat (``celery_worker.py``) with ``TASKTRACKER_ENV=production``, on a fresh
PostgreSQL database migrated with ``flask db upgrade``, RabbitMQ (broker and
Socket.IO message queue) and Redis (presence).

Each run has its own Celery queue, Socket.IO channel and presence key prefix (deleted
afterwards), so it never sees other runs' messages. PostgreSQL half only.
"""

from __future__ import annotations

import time

import pytest
import requests

from tests.procs import (
    Db, Stack, User, check_rabbitmq, check_redis, clean_production_env, make_team, migrated_database,
    production_env, skip_unless_postgres, unique_name, wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]  # hard bound incl. setup/teardown


@pytest.fixture(scope="module")
def deployment(database_url, tmp_path_factory):
    skip_unless_postgres(database_url)
    check_rabbitmq()
    check_redis()
    log_dir = tmp_path_factory.mktemp("deployment")
    url, drop = migrated_database(log_dir)
    env = production_env("deploy", url,
        PRESENCE_HEARTBEAT_SECONDS="0.5", PRESENCE_SERVER_TTL_SECONDS="2", SCAN_INTERVAL_SECONDS="1", OUTBOX_REDISPATCH_AFTER_SECONDS="2",
        SCAN_BATCH_SIZE="100", GUNICORN_GRACEFUL_TIMEOUT="3", GUNICORN_THREADS="40")
    stack = Stack(log_dir, env)
    db = Db(url)
    try:
        web1, web2 = stack.web("web1"), stack.web("web2")
        stack.worker("worker1")
        stack.worker("worker2")
        stack.beat()
        yield {"web1": web1, "web2": web2, "stack": stack, "db": db}
    finally:
        stack.stop_all()
        db.dispose()
        clean_production_env(env)
        drop()




def test_ready_reports_database_and_broker(deployment):
    for web in (deployment["web1"], deployment["web2"]):
        r = requests.get(f"{web.url}/ready", timeout=10)
        assert r.status_code == 200, r.text
        assert r.json() == {"status": "ready", "checks": {"database": "ok", "broker": "ok"}}


def test_change_through_web2_reaches_socket_on_web1(deployment, sockets):
    web1, web2, db = deployment["web1"], deployment["web2"], deployment["db"]
    alice, bob = User(web2.url, unique_name("alice")), User(web1.url, unique_name("bob"))
    team_id = make_team(alice, db, bob)
    bob1 = sockets("bob@web1").connect(web1.url, bob.access)

    # web1 starts listening on the Socket.IO queue with its first connection: warm up
    # with team tasks until one arrives (each write goes web2 -> RabbitMQ -> worker -> web1)
    def warmed():
        r = alice.request("POST", "/api/tasks", json={"title": "warm-up", "team_id": team_id})
        assert r.status_code == 201, r.text
        return bob1.wait_for("task:created", timeout=2)

    assert wait_for(warmed, timeout=30, interval=0), deployment["stack"].logs()
    time.sleep(1)
    bob1.events.clear()

    r = alice.request("POST", "/api/tasks", json={"title": "Made on web2", "team_id": team_id,
                                                  "assignee_id": bob.id})
    assert r.status_code == 201, r.text
    task = r.json()
    created = bob1.wait_for("task:created", where=lambda d: d["id"] == task["id"], timeout=15)
    notes = bob1.wait_for("notification:new", where=lambda d: d["task_id"] == task["id"], timeout=15)
    time.sleep(1.5)  # a duplicate would have arrived by now
    created = [d for d in bob1.named("task:created") if d["id"] == task["id"]]
    notes = [d for d in bob1.named("notification:new") if d["task_id"] == task["id"]]
    assert len(created) == 1, (created, deployment["stack"].logs())
    assert created[0]["title"] == "Made on web2" and created[0]["actor_id"] == alice.id
    assert created[0]["seq"] > 0
    assert [n["type"] for n in notes] == ["task_assigned"], notes
    # the same notification over REST, through the other server
    r = bob.request("GET", "/api/notifications", base=web2.url)
    assert [(n["id"], n["type"]) for n in r.json()["items"] if n["task_id"] == task["id"]] == \
        [(notes[0]["id"], "task_assigned")]


def test_presence_across_both_web_processes(deployment, sockets):
    web1, web2, db = deployment["web1"], deployment["web2"], deployment["db"]
    watcher, mate = User(web1.url, unique_name("watcher")), User(web2.url, unique_name("mate"))
    team_id = make_team(watcher, db, mate)
    w = sockets("watcher@web1").connect(web1.url, watcher.access)

    def online(web) -> bool:
        r = watcher.request("GET", f"/api/teams/{team_id}/presence", base=web.url)
        assert r.status_code == 200, r.text
        return {i["user_id"]: i["online"] for i in r.json()["items"]}[mate.id]

    assert online(web1) is False and online(web2) is False
    tab1 = sockets("mate@web1").connect(web1.url, mate.access)
    tab2 = sockets("mate@web2").connect(web2.url, mate.access)
    def mates() -> list:  # (the watcher's own connection is reported to the team too)
        return [d for d in w.named("presence:update") if d["user_id"] == mate.id]

    assert w.wait_for("presence:update", timeout=10, where=lambda d: d["user_id"] == mate.id) == \
        [{"user_id": mate.id, "online": True}], deployment["stack"].logs()
    assert online(web1) and online(web2)

    tab1.close()
    time.sleep(1.5)
    assert online(web1) and online(web2)  # still connected on web2
    assert mates() == [{"user_id": mate.id, "online": True}]
    tab2.close()
    w.wait_for("presence:update", count=2, timeout=10, where=lambda d: d["user_id"] == mate.id)
    time.sleep(1.0)
    assert mates() == [{"user_id": mate.id, "online": True},
                                          {"user_id": mate.id, "online": False}]
    assert not online(web1) and not online(web2)


def test_two_workers_deliver_each_due_reminder_exactly_once(deployment, sockets):
    web1, web2, db = deployment["web1"], deployment["web2"], deployment["db"]
    stack = deployment["stack"]
    owner, assignee = User(web1.url, unique_name("owner")), User(web2.url, unique_name("assignee"))
    o1 = sockets("owner@web1").connect(web1.url, owner.access)
    a2 = sockets("assignee@web2").connect(web2.url, assignee.access)
    time.sleep(1)  # both servers listen on the queue

    reminder_ids = db.add_due_reminders(owner.id, assignee.id, tasks=20, per_task=10)  # 200 due
    expected = {(u, r) for u in (owner.id, assignee.id) for r in reminder_ids}
    where_mine = f"task_id IN (SELECT task_id FROM reminders WHERE id IN ({','.join(map(str, reminder_ids))}))"

    def settled():
        return (db.count("notifications", f"type = 'deadline_reminder' AND {where_mine}") >= len(expected)
                and db.count("reminders", f"sent_at IS NULL AND {where_mine}") == 0
                and db.count("events", "dispatched_at IS NULL") == 0)

    assert wait_for(settled, timeout=40, interval=0.5), stack.logs()
    time.sleep(2.5)  # two more beats: nothing new
    per_reminder = db.reminder_notifications()
    mine = {k: v for k, v in per_reminder.items() if k[1] in set(reminder_ids)}
    assert set(mine) == expected
    assert set(mine.values()) == {1}, [k for k, v in mine.items() if v > 1][:10]
    assert db.count("events", "type = 'reminder.due'") == len(reminder_ids)

    # pushed live, once each, to the owner on web1 and the assignee on web2
    for client, user in ((o1, owner), (a2, assignee)):
        got = client.wait_for("notification:new", count=len(reminder_ids), timeout=10,
                              where=lambda d: d["type"] == "deadline_reminder")
        ids = [d["id"] for d in got]
        assert len(ids) == len(reminder_ids) == len(set(ids)), (client.name, len(ids), len(set(ids)))
    # both workers took part (the fan-out and scans are spread over the queue)
    workers = [p for p in stack.procs if p.name.startswith("worker")]
    assert all("succeeded" in p.log() for p in workers), stack.logs()
