"""Read cache and entity tags of the task lists (``GET /api/tasks``, ``/api/tasks/search``).

Why a list can be cached at all: every change that can alter a task list
writes an event in the same transaction (:mod:`tasktracker.events`, the
catalog), so the newest event ``seq`` is a *data version*. A list response is
fully determined by (caller id, caller role, endpoint, normalized query
string, data version); :func:`list_etag` hashes exactly these into a strong
entity tag, and the rendered JSON is stored under that tag. A write makes a new
version, hence new tags: nothing is ever invalidated, stale entries simply stop
being asked for and expire.

On PostgreSQL a sequence value is taken at INSERT, not at COMMIT: a
transaction may hold ``seq`` 10 uncommitted while ``seq`` 11 is already
visible. :func:`data_version` therefore also names the transactions that are
writing in this database at that moment (their xids, from ``pg_stat_activity``:
read-only transactions have none), so the version read while 10 was pending
differs from the one read after it committed. Why this is enough: a list is
rendered *after* its version is read; a body that misses a writer's change was
rendered while that writer was in progress, hence the writer was in progress
when the version was read too (or wrote nothing yet, and then its ``seq`` comes
later and raises the max). Writers of other databases on the same server are
not listed, so they don't turn hits into misses (the snapshot's own
``pg_snapshot_xip`` lists the whole server's). ``pg_stat_activity`` shows the
xids of sessions of the same role (or all, with ``pg_read_all_stats``): every
writer of the database must connect as the app's role, as the documented
deployment does. SQLite serialises writers, so ``max(seq)`` alone is exact there.

Stores (:func:`get_store`, one per app, chosen from the config):

- ``LIST_CACHE_TTL_SECONDS`` = 0: no server-side cache (tags and 304 still work);
- ``REDIS_URL`` set: Redis, ``SET ... EX`` with the TTL, keys ``<LIST_CACHE_KEY_PREFIX>:<tag>``,
  behind an in-process LRU of ``LIST_CACHE_MAX_ENTRIES`` bodies (:class:`TieredStore`);
  any Redis error is logged and the request is computed as if the cache were
  empty (Redis is then skipped for :data:`RedisStore.RETRY_AFTER_SECONDS`);
- otherwise: a bounded in-process LRU (``LIST_CACHE_MAX_ENTRIES``) with the same TTL.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from flask import current_app

from tasktracker.core.db import is_postgresql
from tasktracker.core.hotcache import VERSION, hot_state
from tasktracker.events.models import Event
from tasktracker.extensions import db

log = logging.getLogger(__name__)

_EXTENSION_KEY = "tasktracker_list_cache"


# --------------------------------------------------------------------------- version and tags


# plain SQL run as is (exec_driver_sql: no statement object to build and key per request)
_PG_VERSION = (
    "SELECT e.seq, e.created_at, "
    "(SELECT coalesce(string_agg(backend_xid::text, ',' ORDER BY backend_xid::text), '') "
    " FROM pg_stat_activity WHERE datname = current_database() "
    " AND backend_xid IS NOT NULL AND pid <> pg_backend_pid()) "
    "FROM (SELECT 1) AS one LEFT JOIN "
    "(SELECT seq, created_at FROM events ORDER BY seq DESC LIMIT 1) AS e ON true")


def data_version() -> str:
    """The global data version: ``"<max seq>@<its created_at>"``, on PostgreSQL
    followed by ``"/<xids of this database's transactions writing now>"``.

    From the hot cache (:mod:`tasktracker.core.hotcache`) in the common case: every
    commit that writes an event drops it in every process (a read then sees the
    new version within the broadcast delay, at once in the writing process, and
    never later than ``HOT_CACHE_TTL_SECONDS``); the in-flight xids keep the
    argument above valid for versions read before such a commit.
    """
    return hot_state().lookup(VERSION, None, read_data_version)


def read_data_version() -> str:
    """:func:`data_version` from the database: one statement (a backward index scan of
    ``events.seq``, one row). The event's time makes versions unique even if the
    events table is emptied and its sequence restarts (tests, a restore).
    PostgreSQL reads ``pg_stat_activity`` once per transaction."""
    if not is_postgresql():
        row = db.session.execute(
            sa.select(Event.seq, Event.created_at).order_by(Event.seq.desc()).limit(1)).first()
        return f"{row[0]}@{row[1].isoformat()}" if row else "0"
    row = db.session.connection().exec_driver_sql(_PG_VERSION).one()
    return f"{row[0] or 0}@{row[1]}/{row[2]}"


def _canonical(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in sorted(value.items())}
    return value


def list_etag(user_id: int, role: str, endpoint: str, args: dict, version: str) -> str:
    """The strong entity tag (with its quotes) of a list response.

    ``args`` is the *loaded* query string (defaults applied, times parsed), so
    equivalent query strings (``per_page=20`` or nothing, reordered parameters,
    other UTC offsets of one instant) share a tag.
    """
    material = json.dumps([user_id, role, endpoint, _canonical(args), version],
                          sort_keys=True, separators=(",", ":"), default=str)
    return '"L' + hashlib.sha256(material.encode()).hexdigest()[:40] + '"'


def if_none_match_matches(header: str | None, etag: str) -> bool:
    """RFC 7232 §3.2: ``*`` or any listed tag equal to ``etag`` (weak comparison:
    a ``W/`` prefix is ignored). A missing or malformed header never matches."""
    if not header:
        return False
    if header.strip() == "*":
        return True
    for part in header.split(","):
        tag = part.strip()
        if tag.startswith("W/"):
            tag = tag[2:]
        if tag == etag:
            return True
    return False


# --------------------------------------------------------------------------- stores


class NullStore:
    """No server-side cache (``LIST_CACHE_TTL_SECONDS=0``)."""

    def get(self, key: str) -> bytes | None:
        return None

    def set(self, key: str, value: bytes) -> None:
        return None


class LocalStore:
    """A thread-safe in-process LRU of at most ``max_entries`` bodies, each kept
    ``ttl`` seconds (embedded mode)."""

    def __init__(self, ttl: int, max_entries: int = 256):
        self.ttl = ttl
        self.max_entries = max(1, max_entries)
        self._data: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                return None
            if entry[0] <= time.monotonic():
                del self._data[key]
                return None
            self._data.move_to_end(key)
            return entry[1]

    def set(self, key: str, value: bytes) -> None:
        with self._lock:
            self._data[key] = (time.monotonic() + self.ttl, value)
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


class RedisStore:
    """Redis ``GET``/``SET ... EX``; never raises: an outage means a cache miss."""

    #: After a Redis error, requests skip Redis for this long (no timeout per request).
    RETRY_AFTER_SECONDS = 5.0

    def __init__(self, url: str, ttl: int, prefix: str, timeout: float = 0.5):
        import redis

        self.ttl = ttl
        self.prefix = prefix
        self.client = redis.Redis.from_url(url, socket_timeout=timeout,
                                           socket_connect_timeout=timeout)
        self._down_until = 0.0

    def _available(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, op: str) -> None:
        self._down_until = time.monotonic() + self.RETRY_AFTER_SECONDS
        log.warning("list cache: Redis %s failed; computing without the cache for %.0f s",
                    op, self.RETRY_AFTER_SECONDS, exc_info=True)

    def get(self, key: str) -> bytes | None:
        if not self._available():
            return None
        try:
            return self.client.get(f"{self.prefix}:{key}")
        except Exception:  # noqa: BLE001 - any Redis/socket error is a miss
            self._failed("GET")
            return None

    def set(self, key: str, value: bytes) -> None:
        if not self._available():
            return
        try:
            self.client.set(f"{self.prefix}:{key}", value, ex=self.ttl)
        except Exception:  # noqa: BLE001
            self._failed("SET")


class TieredStore:
    """An in-process :class:`LocalStore` in front of a shared store (Redis): a body is
    looked up here first, then in the shared store (and kept here). Safe because a
    key is the entity tag of the body, which names its data version: a body never
    changes under its key, so a local copy can never be stale (REST processes skip
    the Redis round trip on a repeated read)."""

    def __init__(self, local: LocalStore, shared):
        self.local = local
        self.shared = shared

    def get(self, key: str) -> bytes | None:
        body = self.local.get(key)
        if body is None:
            body = self.shared.get(key)
            if body is not None:
                self.local.set(key, body)
        return body

    def set(self, key: str, value: bytes) -> None:
        self.local.set(key, value)
        self.shared.set(key, value)


def get_store():
    """The list cache of the current app (created on first use from its config)."""
    extensions = current_app.extensions
    store = extensions.get(_EXTENSION_KEY)
    if store is None:
        config = current_app.config
        ttl = int(config.get("LIST_CACHE_TTL_SECONDS", 60))
        if ttl <= 0:
            store = NullStore()
        elif config.get("REDIS_URL"):
            store = TieredStore(LocalStore(ttl, int(config.get("LIST_CACHE_MAX_ENTRIES", 256))),
                                RedisStore(config["REDIS_URL"], ttl,
                                           config.get("LIST_CACHE_KEY_PREFIX", "tasktracker:lists")))
        else:
            store = LocalStore(ttl, int(config.get("LIST_CACHE_MAX_ENTRIES", 256)))
        extensions[_EXTENSION_KEY] = store
    return store
