"""Presence shared through Redis: two stores with distinct server ids stand for two
server processes (real Redis; unavailable -> skip, or fail under CI=true)."""

from __future__ import annotations

import uuid

import pytest

from tasktracker.realtime.presence import MemoryPresence, RedisPresence
from tests.conftest import REDIS_URL, require_service


@pytest.fixture
def prefix():
    return f"tt-test:{uuid.uuid4().hex[:10]}"


@pytest.fixture
def servers(prefix):
    """Two RedisPresence stores ("server A" and "server B") on one key prefix."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        require_service("Redis", str(exc))
    a = RedisPresence.from_url(REDIS_URL, prefix, ttl_seconds=30, server_id="server-a")
    b = RedisPresence.from_url(REDIS_URL, prefix, ttl_seconds=30, server_id="server-b")
    yield a, b
    a.clear()


def test_online_until_last_tab_closes_across_servers(servers):
    a, b = servers
    assert a.online([7, 8]) == set()
    assert a.add(7, "sid-a1") is True          # first connection: became online
    assert b.add(7, "sid-b1") is False         # second tab elsewhere: no change
    assert a.add(7, "sid-a2") is False
    assert b.online([7, 8]) == {7}
    assert a.remove("sid-a1") == (7, False)
    assert b.remove("sid-b1") == (7, False)
    assert b.online([7]) == {7}
    assert a.remove("sid-a2") == (7, True)     # last one anywhere: became offline
    assert a.online([7]) == set()
    assert a.remove("sid-a2") == (None, False)  # unknown / already closed: no change


def test_remove_only_knows_its_own_connections(servers):
    a, b = servers
    a.add(3, "sid-x")
    assert b.remove("sid-x") == (None, False)
    assert b.online([3]) == {3}
    assert a.user_of("sid-x") == 3 and b.user_of("sid-x") is None


def test_dead_server_entries_are_ignored_at_once_and_reaped_once(servers, prefix):
    a, b = servers
    a.add(1, "a-1")
    a.add(2, "a-2")
    b.add(2, "b-2")
    a.redis.delete(f"{prefix}:s:server-a")     # server A crashed: its heartbeat key expired

    assert b.online([1, 2]) == {2}             # reads ignore dead entries (without removing them)
    assert b.heartbeat() == ([], [1])          # reaped: 1 lost their last connection, 2 has one on B
    assert b.heartbeat() == ([], [])           # claimed once
    assert b.online([1, 2]) == {2}
    assert b.remove("b-2") == (2, True)        # 2's last connection: reported by the close


def test_close_after_server_death_reports_offline_once(servers, prefix):
    """A tab on a dead server and one on a live server: the live close is not "last"
    (a dead entry remains); the reap that removes it is, so offline is sent once."""
    a, b = servers
    a.add(5, "a-5")
    b.add(5, "b-5")
    a.redis.delete(f"{prefix}:s:server-a")
    assert b.remove("b-5") == (5, False)
    assert b.online([5]) == set()
    assert b.heartbeat() == ([], [5])
    assert b.add(5, "b-5bis") is True          # next connection: online again


def test_paused_server_is_reaped_then_reasserts(servers, prefix):
    a, b = servers
    a.add(6, "a-6")
    a.redis.delete(f"{prefix}:s:server-a")     # A paused past the TTL...
    assert b.heartbeat() == ([], [6])          # ...and was reaped: 6 reported offline
    assert b.online([6]) == set()
    assert a.heartbeat() == ([6], [])          # A wakes up: its connection is back, reported online
    assert b.online([6]) == {6}
    assert a.heartbeat() == ([], [])
    assert a.remove("a-6") == (6, True)


def test_failed_remove_is_retried_by_the_heartbeat(servers, monkeypatch):
    a, b = servers
    a.add(11, "a-11")
    real_remove = a._remove

    def broken(*args, **kwargs):
        raise ConnectionError("redis down")

    monkeypatch.setattr(a, "_remove", broken)
    with pytest.raises(ConnectionError):
        a.remove("a-11")
    assert b.online([11]) == {11}               # still recorded in Redis
    monkeypatch.setattr(a, "_remove", real_remove)
    assert a.heartbeat() == ([], [11])          # retried, and the user went offline
    assert b.online([11]) == set()


def test_server_ids_are_unique_per_store_without_fixed_id(prefix):
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    one, two = RedisPresence(client, prefix, 30), RedisPresence(client, prefix, 30)
    assert one.server_id != two.server_id and one.server_id == one.server_id


def test_memory_presence():
    p = MemoryPresence()
    assert p.add(1, "s1") is True and p.add(1, "s2") is False
    assert p.online([1, 2]) == {1}
    assert p.remove("s1") == (1, False)
    assert p.remove("s2") == (1, True)
    assert p.remove("s2") == (None, False)
    assert p.online([1]) == set() and p.heartbeat() == ([], [])
