"""In-process cache of hot-path state, invalidated across processes by broadcast.

The request path in the common case touches no database for its checks
(DESIGN.md, "Modes"): a login session's state (the blocklist check) and the
list data version are read once, kept in this process, and dropped when any
process commits a change to them.

- :class:`HotCache` holds ``(namespace, key) -> value`` entries, each kept at
  most ``ttl`` seconds (``HOT_CACHE_TTL_SECONDS``; the fallback that bounds
  staleness when the broadcast is down).
- :func:`invalidate` (after a commit) drops the named entries in this process at
  once and publishes them on the Redis channel ``HOT_CACHE_CHANNEL``; every
  other process's subscriber drops them on receipt (milliseconds).
- While the subscription is not established (Redis down, reconnecting) the
  cache still serves entries younger than ``ttl``; on every (re)subscription
  the whole cache is dropped, since messages may have been missed. So a
  revoked session is refused everywhere within the broadcast delay, and never
  later than ``ttl`` after the revocation, even while Redis is down.

Without ``REDIS_URL`` (embedded mode: one process) the invalidation is local only.
``HOT_CACHE_TTL_SECONDS=0`` turns the cache off (every lookup reads the database).

A lookup that raced an invalidation must not store what it read before it:
:meth:`HotCache.generation` is read before the database read and passed to
:meth:`HotCache.put`, which stores nothing if that namespace was invalidated
in between.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Callable, Hashable

from flask import Flask, current_app

log = logging.getLogger(__name__)

_EXTENSION_KEY = "tt_hotcache"

#: Namespaces used by the app: login sessions with their user's row (key: the session
#: id; any change to a user or a session drops the whole namespace), the data version
#: (key: None), and the ids of users whose sessions or rows changed (nothing is cached
#: under it: listeners, such as the real-time gateways, re-check those users' connections).
SESSIONS = "s"
VERSION = "v"
USERS = "u"

MISSING = object()


class HotCache:
    """Thread-safe ``(namespace, key) -> value`` entries with a TTL (seconds).

    ``ttl`` <= 0 disables it: :meth:`get` always misses and :meth:`put` stores
    nothing. Values are treated as immutable by callers.
    """

    def __init__(self, ttl: float, max_entries: int = 100_000):
        self.ttl = float(ttl)
        self.max_entries = max_entries
        self._data: dict[tuple[str, Hashable], tuple[float, Any]] = {}
        self._generations: dict[str, int] = {}
        self._lock = threading.Lock()
        #: Whether the cross-process subscription is up (informational: /ready, tests).
        self.subscribed = False
        #: Callables ``(message)`` run after every applied invalidation, local or received;
        #: ``message`` is ``{namespace: [keys] | None}`` (``{USERS: None, ...}`` after a
        #: (re)subscription: everything may have changed). They must not block.
        self.listeners: list[Callable[[dict], None]] = []

    @property
    def enabled(self) -> bool:
        return self.ttl > 0

    def generation(self, namespace: str) -> int:
        """A counter that grows on every invalidation of ``namespace``."""
        return self._generations.get(namespace, 0)

    def get(self, namespace: str, key: Hashable) -> Any:
        """The cached value, or :data:`MISSING` (absent, expired or disabled)."""
        entry = self._data.get((namespace, key))
        if entry is None:
            return MISSING
        if entry[0] <= time.monotonic():
            self._data.pop((namespace, key), None)
            return MISSING
        return entry[1]

    def put(self, namespace: str, key: Hashable, value: Any, generation: int) -> None:
        """Store ``value`` unless ``namespace`` was invalidated since ``generation``
        was read (the value may predate that invalidation)."""
        if not self.enabled:
            return
        with self._lock:
            if self._generations.get(namespace, 0) != generation:
                return
            if len(self._data) >= self.max_entries:
                self._data.clear()
            self._data[(namespace, key)] = (time.monotonic() + self.ttl, value)

    def drop(self, namespace: str, keys=None) -> None:
        """Drop ``keys`` of ``namespace`` (all of it when ``keys`` is None)."""
        with self._lock:
            self._generations[namespace] = self._generations.get(namespace, 0) + 1
            if keys is None:
                for entry_key in [k for k in self._data if k[0] == namespace]:
                    del self._data[entry_key]
            else:
                for key in keys:
                    self._data.pop((namespace, key), None)

    def clear(self) -> None:
        """Drop everything (after a (re)subscription: messages may have been missed)."""
        with self._lock:
            for namespace in list(self._generations) + [SESSIONS, VERSION, USERS]:
                self._generations[namespace] = self._generations.get(namespace, 0) + 1
            self._data.clear()
        self._notify({SESSIONS: None, VERSION: None, USERS: None})

    def apply(self, message: dict) -> None:
        """Apply an invalidation message ``{namespace: [keys] | null}``, then tell the listeners."""
        for namespace, keys in message.items():
            if isinstance(namespace, str):
                self.drop(namespace, keys if isinstance(keys, list) else None)
        self._notify(message)

    def _notify(self, message: dict) -> None:
        for listener in list(self.listeners):
            try:
                listener(message)
            except Exception:  # noqa: BLE001 - a listener never breaks invalidation
                log.exception("hot cache: invalidation listener failed")


class Broadcaster:
    """Redis pub/sub of invalidation messages: :meth:`publish`, and a daemon
    subscriber (thread, or greenlet under gevent) that applies what the other
    processes publish to ``cache``. Never raises: a Redis error is logged and
    the fallback TTL applies."""

    RECONNECT_SECONDS = 1.0

    def __init__(self, cache: HotCache, url: str, channel: str):
        import redis

        self.cache = cache
        self.channel = channel
        self.client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0,
                                           health_check_interval=10)
        self._started = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        # set by the first subscription, or by the first attempt that failed (Redis down:
        # nothing to wait for, the TTL bound applies from the start)
        self._first_attempt = threading.Event()

    def publish(self, message: dict) -> None:
        try:
            self.client.publish(self.channel, json.dumps(message, separators=(",", ":")))
        except Exception:  # noqa: BLE001 - the TTL bounds staleness while Redis is down
            log.warning("hot cache: publishing an invalidation failed; other processes "
                        "will see it within %.0f s (TTL)", self.cache.ttl, exc_info=True)

    #: The first lookup of a process waits up to this long for the subscription, so that
    #: what other processes publish right after it is not missed (then the TTL bound
    #: applies); it stops waiting as soon as the first attempt has failed.
    FIRST_SUBSCRIPTION_WAIT_SECONDS = 1.0

    def ensure_started(self) -> None:
        """Start the subscriber once per process (call after a fork, e.g. on first use);
        the first call waits up to :data:`FIRST_SUBSCRIPTION_WAIT_SECONDS` for it, or
        until its first attempt has failed (Redis unreachable)."""
        if self._started:
            return
        with self._lock:
            if self._started:
                return
            thread = threading.Thread(target=self._run, name="hotcache-subscriber", daemon=True)
            thread.start()
            self._first_attempt.wait(self.FIRST_SUBSCRIPTION_WAIT_SECONDS)
            self._started = True

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            pubsub = None
            try:
                pubsub = self.client.pubsub(ignore_subscribe_messages=False)
                pubsub.subscribe(self.channel)
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        self.cache.clear()  # anything published while we were away is lost
                        self.cache.subscribed = True
                        self._first_attempt.set()
                    elif message["type"] == "message":
                        try:
                            payload = json.loads(message["data"])
                        except ValueError:
                            continue
                        if isinstance(payload, dict):
                            self.cache.apply(payload)
            except Exception:  # noqa: BLE001 - reconnect; the TTL bounds staleness meanwhile
                if self.cache.subscribed:
                    log.warning("hot cache: invalidation subscription lost; retrying",
                                exc_info=True)
                self.cache.subscribed = False
                self._first_attempt.set()
                time.sleep(self.RECONNECT_SECONDS)
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:  # noqa: BLE001
                        pass


class HotState:
    """The app's :class:`HotCache` and, with ``REDIS_URL``, its :class:`Broadcaster`."""

    def __init__(self, cache: HotCache, broadcaster: Broadcaster | None):
        self.cache = cache
        self.broadcaster = broadcaster

    def listen(self, listener: Callable[[dict], None]) -> None:
        """Run ``listener(message)`` after every invalidation this process applies (local
        commits and other processes' broadcasts). Starts the subscriber."""
        self.cache.listeners.append(listener)
        if self.broadcaster is not None:
            self.broadcaster.ensure_started()

    def lookup(self, namespace: str, key: Hashable, load: Callable[[], Any]) -> Any:
        """The cached value of ``(namespace, key)``, or ``load()``'s, then cached."""
        if not self.cache.enabled:
            return load()
        if self.broadcaster is not None:
            self.broadcaster.ensure_started()
        value = self.cache.get(namespace, key)
        if value is MISSING:
            generation = self.cache.generation(namespace)
            value = load()
            self.cache.put(namespace, key, value, generation)
        return value

    def invalidate(self, message: dict) -> None:
        """Drop ``{namespace: [keys] | None}`` here at once and in every other process.

        Without the cache (``HOT_CACHE_TTL_SECONDS=0``) the message is still
        broadcast: listeners (revocation of live sockets) depend on it."""
        self.cache.apply(message)
        if self.broadcaster is not None:
            self.broadcaster.publish(message)


def init_hotcache(app: Flask) -> HotState:
    """Create the app's hot cache from ``HOT_CACHE_TTL_SECONDS``, ``REDIS_URL`` and
    ``HOT_CACHE_CHANNEL``."""
    cache = HotCache(app.config["HOT_CACHE_TTL_SECONDS"])
    broadcaster = None
    if app.config.get("REDIS_URL"):
        broadcaster = Broadcaster(cache, app.config["REDIS_URL"], app.config["HOT_CACHE_CHANNEL"])
    state = app.extensions[_EXTENSION_KEY] = HotState(cache, broadcaster)
    return state


def hot_state(app: Flask | None = None) -> HotState:
    """The :class:`HotState` of ``app`` (default: the current app)."""
    return (app or current_app).extensions[_EXTENSION_KEY]


# --------------------------------------------------------------------------- after-commit invalidation

_PENDING_KEY = "tt_hotcache_pending"


def defer_invalidation(session, namespace: str, keys: list | None = None) -> None:
    """Invalidate ``namespace`` (``keys``, or all of it) once ``session`` commits
    (nothing on rollback). ``session`` is a SQLAlchemy ``Session``."""
    pending: dict = session.info.setdefault(_PENDING_KEY, {})
    if keys is None or pending.get(namespace, []) is None:
        pending[namespace] = None
    else:
        pending.setdefault(namespace, []).extend(keys)


def _after_commit(session) -> None:
    message = session.info.pop(_PENDING_KEY, None)
    if not message:
        return
    try:
        hot_state().invalidate(message)
    except RuntimeError:  # no app context: nothing cached in this process to drop
        pass


def _after_rollback(session, previous_transaction) -> None:
    if previous_transaction.parent is None:  # the outermost transaction, not a savepoint
        session.info.pop(_PENDING_KEY, None)


def register_invalidation_hooks() -> None:
    """Publish deferred invalidations after every commit (idempotent)."""
    from sqlalchemy import event as sa_event
    from sqlalchemy.orm import Session

    if not sa_event.contains(Session, "after_commit", _after_commit):
        sa_event.listen(Session, "after_commit", _after_commit)
        sa_event.listen(Session, "after_soft_rollback", _after_rollback)
